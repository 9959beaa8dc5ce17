//! One generated choice: its tokens, its KV cache blocks, its sampler and the state that turns its
//! tokens into text for the client.

use super::detok::Utf8Stream;
use super::grammar::Constraint;
use super::sampling::{token_logprobs, Sampler, SamplingParams};
use super::stop::StopMatcher;
use super::{EngineError, Event, FinishReason, TokenLogprob};
use crate::kv::BlockTable;
use crate::loader::tokenizer::TextTokenizer;
use tokio::sync::mpsc::UnboundedSender;

/// A request as the engine receives it: one prompt, `n` choices.
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub n: usize,
    /// Tokens each choice may generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// The grammar the answer must follow (structured outputs), compiled for this model.
    pub constraint: Option<Constraint>,
    pub events: UnboundedSender<Event>,
}

pub struct Sequence {
    pub choice: usize,
    /// The prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_tokens: usize,
    /// Its blocks in the KV pool, and how many of `tokens` they hold. A preempted sequence loses
    /// both and computes its tokens again when it is readmitted (shared blocks make that cheap).
    pub table: BlockTable,
    pub cached: usize,
    /// Prompt tokens found in the prefix cache at the first admission (not counting a readmission).
    pub cached_prompt: Option<usize>,
    sampler: Sampler,
    utf8: Utf8Stream,
    stop: StopMatcher,
    constraint: Option<Constraint>,
    /// Log-probabilities of tokens whose text has not been sent yet (when asked for).
    logprobs: Vec<TokenLogprob>,
    pub events: UnboundedSender<Event>,
    pub finish: Option<FinishReason>,
}

impl Sequence {
    /// Choice `choice` of `req`; the last choice takes the request's constraint, the others a copy.
    pub fn new(req: &mut GenerationRequest, choice: usize) -> Self {
        let constraint =
            if choice + 1 == req.n { req.constraint.take() } else { req.constraint.as_mut().map(Constraint::fork) };
        Self {
            choice,
            tokens: req.prompt.clone(),
            prompt_len: req.prompt.len(),
            max_tokens: req.max_tokens,
            table: BlockTable::default(),
            cached: 0,
            cached_prompt: None,
            sampler: Sampler::new(req.sampling.clone(), choice as u64, &req.prompt),
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(req.stop.clone()),
            constraint,
            logprobs: Vec::new(),
            events: req.events.clone(),
            finish: None,
        }
    }

    /// Tokens not yet in the KV cache: the prompt before the first step, then the last sampled token.
    pub fn pending(&self) -> &[u32] {
        &self.tokens[self.cached..]
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// The client went away: its receiver is dropped.
    pub fn is_abandoned(&self) -> bool {
        self.events.is_closed()
    }

    /// Samples the next token from this step's logits and sends the text it completes.
    /// `context` is the model's context length: a sequence ends when it is full.
    pub fn advance(&mut self, logits: &mut [f32], tokenizer: &TextTokenizer, context: usize) {
        if self.sampler.params().forbids_end(self.generated()) {
            for &id in tokenizer.end_of_generation_ids() {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(constraint) = &mut self.constraint {
            if let Err(e) = constraint.mask(logits) {
                return self.fail(&e);
            }
        }
        let token = self.sampler.sample(logits);
        self.tokens.push(token);
        if tokenizer.is_end_of_generation(token) {
            self.flush_text();
            return self.finish(FinishReason::Stop);
        }
        // A grammar that is complete lets nothing follow: the answer ends here.
        let grammar_done = match self.constraint.as_mut().map(|c| c.advance(token)) {
            Some(Err(e)) => return self.fail(&e),
            Some(Ok(done)) => done,
            None => false,
        };
        if let Some(top) = self.sampler.params().logprobs {
            let (logprob, best) = token_logprobs(logits, token, top);
            let bytes = |id: u32| tokenizer.token_bytes(id).to_vec();
            let top = best.into_iter().map(|(id, lp)| (bytes(id), lp)).collect();
            self.logprobs.push(TokenLogprob { bytes: bytes(token), logprob, top });
        }
        let text = self.utf8.push(tokenizer.token_bytes(token));
        let step = self.stop.push(&text);
        self.send_text(step.emit, step.stopped);
        if step.stopped {
            return self.finish(FinishReason::Stop);
        }
        if grammar_done {
            self.flush_text();
            return self.finish(FinishReason::Stop);
        }
        if self.generated() >= self.max_tokens || self.tokens.len() >= context {
            self.flush_text();
            self.finish(FinishReason::Length);
        }
    }

    /// Ends the sequence with an error of its own (its grammar failed); the batch goes on.
    fn fail(&mut self, message: &str) {
        let _ = self.events.send(Event::Error(EngineError::Failed(format!("constrained decoding failed: {message}"))));
        self.finish = Some(FinishReason::Stop);
    }

    /// Ends the sequence from outside a step (the scheduler), sending what text was held back.
    pub fn end(&mut self, reason: FinishReason) {
        self.flush_text();
        self.finish(reason);
    }

    /// Sends what was held back (a partial character, a false start of a stop string).
    fn flush_text(&mut self) {
        let tail = self.utf8.flush();
        let step = self.stop.push(&tail);
        let mut text = step.emit;
        if !step.stopped {
            text.push_str(&self.stop.flush());
        }
        self.send_text(text, true);
    }

    fn finish(&mut self, reason: FinishReason) {
        self.finish = Some(reason);
        let _ = self.events.send(Event::Done {
            choice: self.choice,
            reason,
            completion_tokens: self.generated(),
            cached_prompt_tokens: self.cached_prompt.unwrap_or(0),
        });
    }

    /// Sends `text` with the log-probabilities gathered since the last piece. The `last` piece
    /// carries them even with no text, so that every token generated is reported.
    fn send_text(&mut self, text: String, last: bool) {
        if !text.is_empty() || (last && !self.logprobs.is_empty()) {
            let logprobs = std::mem::take(&mut self.logprobs);
            let _ = self.events.send(Event::Text { choice: self.choice, text, logprobs });
        }
    }
}
