//! Grammar-constrained decoding: structured outputs (`response_format` json_object and json_schema)
//! and, later, forced tool calls. The grammar engine is llguidance, the one llama.cpp, vLLM and
//! SGLang use: it compiles a JSON Schema (or a Lark grammar) and, token by token, says which of the
//! vocabulary's tokens may come next.
//!
//! Each constrained sequence owns a `Constraint`. Its next mask depends only on the tokens sampled so
//! far, so it is computed on a pool of its own (`MASK_POOL`) as soon as a token is sampled, while the
//! model runs the next batch step; sampling then finds it ready. The mask is exact for each
//! sequence alone, so a greedy constrained answer is the same alone or batched.

use super::{EngineError, EngineStats};
use crate::loader::tokenizer::TextTokenizer;
use crate::tool_calls::JSON_LAYOUT;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::Instant;

/// What a request constrains its answer to.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (`response_format` `json_object`).
    JsonObject,
    /// JSON valid for this schema (`json_schema`).
    JsonSchema(serde_json::Value),
    /// A Lark grammar in llguidance's dialect (forced tool calls, `crate::tool_calls`).
    Lark(String),
}

/// Threads for the masks, apart from the model's own pool: a mask computed there would wait behind
/// the batch step it is meant to overlap.
static MASK_POOL: LazyLock<rayon::ThreadPool> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("grammar-mask-{i}"))
        .build()
        .expect("starting the grammar mask threads")
});

/// llguidance's view of a model's vocabulary: every token's bytes in a trie.
struct Vocabulary {
    trie: TokTrie,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Only forced text is tokenized here, and Wick forces none (no fast-forward tokens), so the
    /// trie's greedy tokenization is enough; `tokenize_is_canonical` says it is not the model's own.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// Compiles grammars for one model's vocabulary. Built once per engine, on the first constrained
/// request (it indexes the whole vocabulary).
pub struct GrammarCompiler {
    factory: ParserFactory,
    stats: Arc<EngineStats>,
    /// Fresh matchers of the grammars compiled last, by their text: an application sends one schema
    /// again and again, and a copy costs far less than compiling it again.
    compiled: Mutex<Compiled>,
}

/// Up to `COMPILED_KEPT` matchers, the oldest dropped first.
#[derive(Default)]
struct Compiled {
    matchers: HashMap<String, Matcher>,
    order: VecDeque<String>,
}

const COMPILED_KEPT: usize = 64;

impl GrammarCompiler {
    pub fn new(tokenizer: &TextTokenizer, stats: Arc<EngineStats>) -> anyhow::Result<Self> {
        let words: Vec<Vec<u8>> =
            (0..tokenizer.vocab_size() as u32).map(|id| tokenizer.token_bytes(id).to_vec()).collect();
        // Control tokens have no bytes, so a grammar never asks for one; the end-of-generation ids are
        // what llguidance allows where the grammar may end.
        let eog = tokenizer.end_of_generation_ids();
        anyhow::ensure!(!eog.is_empty(), "the vocabulary has no end-of-generation token");
        let info = TokRxInfo::new(words.len() as u32, eog[0]);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eog);
        let env: llguidance::toktrie::TokEnv = Arc::new(Vocabulary { trie });
        let mut factory = ParserFactory::new_simple(&env)?;
        factory.set_stderr_log_level(0);
        Ok(Self { factory, stats, compiled: Mutex::default() })
    }

    /// A fresh constraint for one sequence, or why the grammar cannot be enforced (for the client).
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, EngineError> {
        let schema = match grammar {
            Grammar::JsonObject => serde_json::json!({"type": "object"}),
            Grammar::JsonSchema(schema) => schema.clone(),
            Grammar::Lark(lark) => {
                return self.constraint(format!("lark {lark}"), || TopLevelGrammar::from_lark(lark.clone()))
            }
        };
        let schema = match schema {
            serde_json::Value::Object(mut fields) => {
                if !fields.contains_key("x-guidance") {
                    fields.insert("x-guidance".into(), serde_json::from_str(JSON_LAYOUT).expect("valid JSON"));
                }
                serde_json::Value::Object(fields)
            }
            other => other,
        };
        self.constraint(format!("json {schema}"), || TopLevelGrammar::from_json_schema(schema))
    }

    /// A constraint for the grammar `key` names, compiled by `grammar` unless a matcher for it is kept.
    fn constraint(&self, key: String, grammar: impl FnOnce() -> TopLevelGrammar) -> Result<Constraint, EngineError> {
        let kept = self.compiled.lock().unwrap_or_else(|e| e.into_inner()).matchers.get(&key).map(Matcher::deep_clone);
        let matcher = match kept {
            Some(matcher) => matcher,
            None => {
                let parser =
                    self.factory.create_parser(grammar()).map_err(|e| EngineError::Unenforceable(e.to_string()))?;
                let matcher = Matcher::new(Ok(parser));
                if let Some(e) = matcher.get_error() {
                    return Err(EngineError::Unenforceable(e));
                }
                let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
                if compiled.order.len() >= COMPILED_KEPT {
                    let oldest = compiled.order.pop_front().expect("not empty");
                    compiled.matchers.remove(&oldest);
                }
                if compiled.matchers.insert(key.clone(), matcher.deep_clone()).is_none() {
                    compiled.order.push_back(key);
                }
                matcher
            }
        };
        let mut constraint = Constraint { state: State::Ready(Box::new(matcher)), stats: self.stats.clone() };
        constraint.prepare();
        Ok(constraint)
    }
}

/// One sequence's grammar state.
pub struct Constraint {
    state: State,
    stats: Arc<EngineStats>,
}

enum State {
    /// Waiting for the next token; its mask may not have been asked for yet.
    Ready(Box<Matcher>),
    /// The mask for the next token is being computed on the mask pool.
    Computing(mpsc::Receiver<(Box<Matcher>, anyhow::Result<SimpleVob>)>),
    /// The next token's mask.
    Masked(Box<Matcher>, SimpleVob),
    /// Broken: the mask thread went away, or the matcher failed.
    Failed(String),
}

impl Constraint {
    /// An independent copy, for another choice of the same request: the same matcher, and the same
    /// next mask once it is computed.
    pub fn fork(&mut self) -> Self {
        let state = match self.receive().map(|()| &self.state) {
            Ok(State::Masked(matcher, mask)) => State::Masked(Box::new(matcher.deep_clone()), mask.clone()),
            Ok(State::Ready(matcher)) => State::Ready(Box::new(matcher.deep_clone())),
            Ok(State::Failed(e)) => State::Failed(e.clone()),
            Ok(State::Computing(_)) => unreachable!("received above"),
            Err(e) => State::Failed(e),
        };
        let mut fork = Self { state, stats: self.stats.clone() };
        fork.prepare();
        fork
    }

    /// Starts computing the next token's mask in the background, if it is not already.
    fn prepare(&mut self) {
        let mut matcher = match std::mem::replace(&mut self.state, State::Failed(String::new())) {
            State::Ready(matcher) => matcher,
            other => {
                self.state = other;
                return;
            }
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let stats = self.stats.clone();
        MASK_POOL.spawn(move || {
            let started = Instant::now();
            let mask = matcher.compute_mask();
            stats.grammar_masks.fetch_add(1, Ordering::Relaxed);
            stats.grammar_mask_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let _ = tx.send((matcher, mask));
        });
        self.state = State::Computing(rx);
    }

    /// Sets every logit the grammar forbids next to -inf, waiting for the mask if it is not ready.
    /// Where the grammar may end, the end-of-generation tokens are allowed.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.receive()?;
        let mask = match &self.state {
            State::Masked(_, mask) => mask,
            State::Failed(e) => return Err(e.clone()),
            State::Ready(_) | State::Computing(_) => unreachable!("a mask is prepared after every token"),
        };
        for (id, logit) in logits.iter_mut().enumerate() {
            if id >= mask.len() || !mask.is_allowed(id as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Moves past the sampled `token`. Returns true when the grammar is complete and nothing may
    /// follow; otherwise the next mask is started.
    pub fn advance(&mut self, token: u32) -> Result<bool, String> {
        let mut matcher = self.take_matcher()?;
        matcher.consume_token(token).map_err(first_line)?;
        let done = matcher.is_stopped();
        self.state = State::Ready(matcher);
        if !done {
            self.prepare();
        }
        Ok(done)
    }

    /// Collects the mask being computed, if one is; the time this waits is what the batch step lost.
    fn receive(&mut self) -> Result<(), String> {
        if let State::Computing(rx) = &self.state {
            let started = Instant::now();
            let (matcher, mask) = rx.recv().map_err(|_| "the grammar mask thread stopped".to_string())?;
            self.stats.grammar_wait_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.state = match mask {
                Ok(mask) => State::Masked(matcher, mask),
                Err(e) => State::Failed(first_line(e)),
            };
        }
        Ok(())
    }

    fn take_matcher(&mut self) -> Result<Box<Matcher>, String> {
        self.receive()?;
        match std::mem::replace(&mut self.state, State::Failed("the grammar state was lost".into())) {
            State::Ready(m) | State::Masked(m, _) => Ok(m),
            State::Failed(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
            State::Computing(_) => unreachable!("received above"),
        }
    }
}

/// llguidance's errors carry the parser's whole state after their first line; the client gets that line.
fn first_line(e: anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
