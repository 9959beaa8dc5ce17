//! What `/v1/chat/completions`, `/v1/completions` and `/v1/responses` share, so that all behave alike:
//! the checks of the sampling fields, the way to a deployment's engine (scope, kind, lease, context
//! and batch limits, the queue), and the answer as one JSON body or as OpenAI's event stream. Each
//! endpoint brings its own wire shape (`Wire`) and its own prompt tokens.

use super::openai::{PromptTokensDetails, StopSpec, StreamChunk, StreamOptions, Usage};
use crate::api::error::ApiError;
use crate::deploy::{Deployment, Lease};
use crate::engine::grammar::Grammar;
use crate::engine::sampling::SamplingParams;
use crate::engine::{Engine, EngineError, Event, FinishReason, GenerationRequest, TokenLogprob};
use crate::AppState;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Span;

/// OpenAI's limit on choices per prompt.
const MAX_N: i64 = 128;

/// The request fields both endpoints take, borrowed from either request.
pub struct SamplingFields<'a> {
    pub n: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// The peers' extensions (vLLM's; llama.cpp's too but `min_tokens`); `SamplingParams` says what
    /// each does.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    /// The request's token limit, which `min_tokens` may not pass.
    pub max_tokens: Option<usize>,
    /// Log-probabilities asked for, with this many of the likeliest tokens' (checked by the
    /// endpoint: each has its own field and range).
    pub logprobs: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<&'a StopSpec>,
    pub logit_bias: Option<&'a HashMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<&'a StreamOptions>,
}

/// Those fields checked against OpenAI's ranges.
pub struct Generation {
    /// Choices per prompt.
    pub n: usize,
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
}

/// A grammar, with the request field it came from (named when the grammar cannot be enforced).
pub struct Constrained {
    pub grammar: Grammar,
    pub param: &'static str,
}

fn bad<T>(message: String, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

/// `max_tokens` (or chat's `max_completion_tokens`, named by `param`): at least 1 when given.
pub fn check_max_tokens(value: Option<i64>, param: &str) -> Result<Option<usize>, ApiError> {
    match value {
        Some(v) if v < 1 => bad(format!("Invalid '{param}': {v}. It must be at least 1."), param),
        v => Ok(v.map(|v| v as usize)),
    }
}

pub fn check_sampling(f: SamplingFields<'_>) -> Result<Generation, ApiError> {
    let n = f.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return bad(format!("Invalid 'n': {n}. It must be between 1 and {MAX_N}."), "n");
    }
    let in_range = |v: Option<f32>, lo: f32, hi: f32, name: &str| -> Result<(), ApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => {
                bad(format!("Invalid '{name}': {x}. It must be between {lo} and {hi}."), name)
            }
            _ => Ok(()),
        }
    };
    in_range(f.temperature, 0.0, 2.0, "temperature")?;
    in_range(f.top_p, 0.0, 1.0, "top_p")?;
    in_range(f.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    in_range(f.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    in_range(f.min_p, 0.0, 1.0, "min_p")?;
    let repetition_penalty = f.repetition_penalty.unwrap_or(1.0);
    if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
        return bad(
            format!("Invalid 'repetition_penalty': {repetition_penalty}. It must be above 0."),
            "repetition_penalty",
        );
    }
    let min_tokens = match (f.min_tokens, f.max_tokens) {
        (Some(m), _) if m < 0 => {
            return bad(format!("Invalid 'min_tokens': {m}. It must be at least 0."), "min_tokens")
        }
        (Some(m), Some(max)) if m as usize > max => {
            return bad(format!("Invalid 'min_tokens': {m}. It must not exceed the token limit, {max}."), "min_tokens")
        }
        (m, _) => m.unwrap_or(0) as usize,
    };
    let top_k = match f.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => return bad(format!("Invalid 'top_k': {k}. It must be -1, 0 or positive."), "top_k"),
    };
    let stop = match f.stop {
        None => vec![],
        Some(StopSpec::One(s)) => vec![s.clone()],
        Some(StopSpec::Many(v)) if v.len() > 4 => return bad("'stop' takes at most 4 sequences.".into(), "stop"),
        Some(StopSpec::Many(v)) => v.clone(),
    };
    let mut logit_bias = Vec::new();
    for (token, &bias) in f.logit_bias.into_iter().flatten() {
        let Ok(id) = token.parse::<u32>() else {
            return bad(format!("Invalid key in 'logit_bias': '{token}' is not a token id."), "logit_bias");
        };
        if !(-100.0..=100.0).contains(&bias) {
            return bad(
                format!("Invalid value in 'logit_bias' for {token}: {bias}. It must be between -100 and 100."),
                "logit_bias",
            );
        }
        logit_bias.push((id, bias));
    }
    let stream = f.stream.unwrap_or(false);
    if f.stream_options.is_some() && !stream {
        return bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
            "stream_options",
        );
    }
    Ok(Generation {
        n: n as usize,
        stop,
        sampling: SamplingParams {
            temperature: f.temperature.unwrap_or(1.0),
            top_p: f.top_p.unwrap_or(1.0),
            top_k,
            presence_penalty: f.presence_penalty.unwrap_or(0.0),
            frequency_penalty: f.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: f.seed.map(|s| s as u64),
            repetition_penalty,
            min_p: f.min_p.unwrap_or(0.0),
            min_tokens,
            ignore_eos: f.ignore_eos.unwrap_or(false),
            logprobs: f.logprobs,
        },
        stream,
        include_usage: f.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// The parts of an answer that every chunk repeats.
pub struct Head {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// Whether streamed chunks carry `usage` (null until the last).
    pub include_usage: bool,
}

/// One server-sent event: its `data`, and its `event` name where the API names its events (the
/// Responses API does; chat's and completions' chunks go unnamed).
pub struct Chunk {
    pub event: Option<&'static str>,
    pub data: String,
}

impl From<String> for Chunk {
    fn from(data: String) -> Self {
        Self { event: None, data }
    }
}

impl Head {
    /// A streamed chunk of `object` with `choices`, and `usage` where the client asked for it.
    pub fn chunk<C: serde::Serialize>(&self, object: &'static str, choices: Vec<C>, usage: Option<Usage>) -> Chunk {
        let chunk = StreamChunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: Some(crate::SYSTEM_FINGERPRINT),
            choices,
            usage: self.include_usage.then_some(usage),
        };
        serde_json::to_string(&chunk).expect("chunks serialise").into()
    }

    /// How chat's and completions' streams end: the chunk of `object` with the usage and no choices
    /// where the client asked for it, then `[DONE]`.
    pub fn end<C: serde::Serialize>(&self, object: &'static str, usage: Usage) -> Vec<Chunk> {
        let mut chunks = Vec::with_capacity(2);
        if self.include_usage {
            chunks.push(self.chunk::<C>(object, vec![], Some(usage)));
        }
        chunks.push(Chunk::from("[DONE]".to_string()));
        chunks
    }
}

/// One choice's whole answer.
pub struct Answer {
    pub text: String,
    pub reason: FinishReason,
    /// Each generated token's, when the request asked for them.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// A token as the API names it: its bytes as text (a token that ends inside a UTF-8 character
/// shows U+FFFD; its `bytes` are exact).
pub fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// OpenAI reports a token the model cannot produce (its logit masked) as -9999, as JSON has no
/// minus infinity.
pub fn finite_logprob(logprob: f32) -> f32 {
    logprob.max(-9999.0)
}

/// One endpoint's shape on the wire.
pub trait Wire: Send + Sync + 'static {
    /// The request field a too-long prompt is blamed on.
    const PROMPT_PARAM: &'static str;
    /// What a stream opens with, before any choice's opening (the Responses API: the response
    /// created and in progress).
    fn start(&self, _head: &Head) -> Vec<Chunk> {
        Vec::new()
    }
    /// What a streamed choice opens with, if anything (chat: its role).
    fn opening(&self, head: &Head, index: usize) -> Option<Chunk>;
    /// The streamed chunks for a piece of choice `index`'s text, with its tokens' log-probabilities
    /// when the request asked for them (none while the text is held back, as a tool call is).
    fn text(&self, head: &Head, index: usize, text: String, logprobs: Option<&[TokenLogprob]>) -> Vec<Chunk>;
    /// The streamed chunks that end choice `index`: what was held back, then the finish.
    fn finish(&self, head: &Head, index: usize, reason: FinishReason) -> Vec<Chunk>;
    /// The streamed chunks after every choice finished, with the request's usage (chat and
    /// completions: `Head::end`).
    fn end(&self, head: &Head, usage: Usage) -> Vec<Chunk>;
    /// The streamed chunks that tell of an error in the middle of the stream, which ends it.
    fn error(&self, _head: &Head, error: ApiError) -> Vec<Chunk> {
        vec![error.to_json().to_string().into()]
    }
    /// The whole answer: each choice's, in index order.
    fn body(&self, head: &Head, answers: Vec<Answer>, usage: Usage) -> Response;
}

/// Sends the prompts to the leased replica's engine, `n` choices each, and answers. The choices of
/// prompt `p` get indexes `p * n ..`, as OpenAI numbers them. `prepare` turns the request into
/// prompt tokens with the loaded model's tokenizer, its wire shape, and the grammar the answers must
/// follow, if any.
pub async fn generate<W: Wire>(
    state: &AppState,
    deployment: Arc<Deployment>,
    head: Head,
    started: Instant,
    max_tokens: Option<usize>,
    generation: Generation,
    prepare: impl FnOnce(&Engine) -> Result<(Vec<Vec<u32>>, W, Option<Constrained>), ApiError>,
) -> Result<Response, ApiError> {
    // Loads the deployment if it is in Standby; held until the answer is complete.
    let lease = deployment.acquire().await?;
    let engine = lease.chat().ok_or_else(|| ApiError::internal("a text deployment without a text engine"))?;
    let (prompts, wire, grammar) = prepare(engine)?;
    let context = engine.context_length;
    let n = generation.n;
    if n > engine.limits.max_batch_size {
        return Err(ApiError::invalid_request(
            format!(
                "Invalid 'n': {n}. This deployment runs at most {} sequences at once.",
                engine.limits.max_batch_size
            ),
            Some("n"),
        ));
    }
    if prompts.len() > engine.limits.max_queue {
        // It could never be queued whole: a 429 would have the client retry for ever.
        return Err(ApiError::invalid_request(
            format!(
                "{} prompts in one request; this deployment queues at most {}.",
                prompts.len(),
                engine.limits.max_queue
            ),
            Some(W::PROMPT_PARAM),
        ));
    }
    // The server's cap (`--max-completion-tokens`), then the context, bound each completion.
    let cap = engine.limits.max_completion_tokens.unwrap_or(usize::MAX);
    if let Some(m) = max_tokens.filter(|&m| m > cap) {
        return Err(ApiError::invalid_request(
            format!("Invalid 'max_tokens': {m}. This server generates at most {cap} tokens per completion."),
            Some("max_tokens"),
        ));
    }
    let mut budgets = Vec::with_capacity(prompts.len());
    for prompt in &prompts {
        let len = prompt.len();
        budgets.push(match max_tokens {
            Some(m) if len + m > context => {
                return Err(ApiError::context_length_exceeded(W::PROMPT_PARAM, context, len, m))
            }
            Some(m) => m,
            None if len >= context => return Err(ApiError::context_length_exceeded(W::PROMPT_PARAM, context, len, 1)),
            None => (context - len).min(cap),
        });
    }
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    Span::current().record("prompt_tokens", prompt_tokens);
    let mut receivers = Vec::with_capacity(prompts.len());
    let compiler = match grammar {
        Some(c) => Some((engine.grammars().await.map_err(|e| ApiError::engine(&head.model, e))?, c)),
        None => None,
    };
    for (prompt, max_tokens) in prompts.into_iter().zip(budgets) {
        // Every prompt has the same grammar: only the first can fail to compile, before any is queued.
        let constraint = match &compiler {
            Some((compiler, c)) => Some(compiler.compile(&c.grammar).map_err(|e| match e {
                EngineError::Unenforceable(why) => {
                    ApiError::invalid_request(format!("'{}' cannot be enforced: {why}", c.param), Some(c.param))
                }
                other => ApiError::engine(&head.model, other),
            })?),
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        engine
            .submit(GenerationRequest {
                prompt,
                n,
                max_tokens,
                sampling: generation.sampling.clone(),
                stop: generation.stop.clone(),
                constraint,
                events: tx,
            })
            // The prompts already queued are dropped with their receivers.
            .map_err(|e| ApiError::engine(&head.model, e))?;
        receivers.push(rx);
    }
    let reply = Reply {
        logprobs: generation.sampling.logprobs.is_some(),
        choices: receivers.len() * n,
        n,
        head,
        wire,
        prompt_tokens,
        started,
        span: Span::current(),
        metrics: state.deployments.metrics().clone(),
        completion_tokens: AtomicUsize::new(0),
        cached_tokens: AtomicUsize::new(0),
        last_token_at: Mutex::new(None),
        lease,
    };
    let events = merge(receivers, n);
    Ok(if generation.stream { reply.stream(events) } else { reply.collect(events).await? })
}

/// Every prompt's events as one stream, each choice renumbered to its place in the answer. Dropping
/// the stream drops the receivers, which is how the engine learns that the client has gone.
fn merge(receivers: Vec<mpsc::UnboundedReceiver<Event>>, n: usize) -> BoxStream<'static, Event> {
    let streams = receivers.into_iter().enumerate().map(|(prompt, rx)| {
        let first = prompt * n;
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(move |event| match event {
                Event::Text { choice, text, logprobs } => Event::Text { choice: first + choice, text, logprobs },
                Event::Done { choice, reason, completion_tokens, cached_prompt_tokens } => {
                    Event::Done { choice: first + choice, reason, completion_tokens, cached_prompt_tokens }
                }
                Event::Error(e) => Event::Error(e),
            })
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}

/// What the answer needs besides the engine's events. Dropping it (the answer is complete, or the
/// client went away) accounts the request's usage and gives its lease back.
struct Reply<W: Wire> {
    head: Head,
    wire: W,
    /// Whether the request asked for log-probabilities.
    logprobs: bool,
    /// Choices in all, and per prompt.
    choices: usize,
    n: usize,
    prompt_tokens: usize,
    started: Instant,
    span: Span,
    metrics: Arc<crate::metrics::Metrics>,
    completion_tokens: AtomicUsize,
    cached_tokens: AtomicUsize,
    last_token_at: Mutex<Option<Instant>>,
    lease: Lease,
}

impl<W: Wire> Drop for Reply<W> {
    fn drop(&mut self) {
        let completion = self.completion_tokens.load(Ordering::Relaxed);
        self.lease.deployment().usage.add_request(self.prompt_tokens, completion);
        self.metrics.tokens(&self.head.model, self.prompt_tokens, completion);
    }
}

impl<W: Wire> Reply<W> {
    /// Time to first token on the first text event, the gap since the last one after that.
    fn record_text(&self) {
        let now = Instant::now();
        let mut last = self.last_token_at.lock().unwrap_or_else(|e| e.into_inner());
        match last.replace(now) {
            None => {
                let ttft = now - self.started;
                self.span.record("ttft_ms", ttft.as_millis() as u64);
                self.metrics.first_token(&self.head.model, ttft.as_secs_f64());
            }
            Some(previous) => self.metrics.inter_token(&self.head.model, (now - previous).as_secs_f64()),
        }
    }

    /// A choice ended. Each prompt is counted once, so its cached part is its first choice's.
    fn record_done(&self, choice: usize, completion_tokens: usize, cached_prompt_tokens: usize) {
        self.completion_tokens.fetch_add(completion_tokens, Ordering::Relaxed);
        if choice.is_multiple_of(self.n) {
            self.cached_tokens.fetch_add(cached_prompt_tokens, Ordering::Relaxed);
        }
    }

    fn record_end(&self, completion_tokens: usize) {
        self.span.record("completion_tokens", completion_tokens);
        self.span.record("duration_ms", self.started.elapsed().as_millis() as u64);
        self.span.in_scope(|| tracing::info!("completion finished"));
    }

    fn usage(&self, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: self.cached_tokens.load(Ordering::Relaxed) },
        }
    }

    async fn collect(self, mut events: BoxStream<'static, Event>) -> Result<Response, ApiError> {
        let mut texts = vec![String::new(); self.choices];
        let mut logprobs = vec![Vec::new(); self.choices];
        let mut reasons = vec![None; self.choices];
        let mut completion_tokens = 0;
        while reasons.iter().any(Option::is_none) {
            match events.next().await {
                Some(Event::Text { choice, text, logprobs: l }) => {
                    self.record_text();
                    texts[choice].push_str(&text);
                    logprobs[choice].extend(l);
                }
                Some(Event::Done { choice, reason, completion_tokens: c, cached_prompt_tokens }) => {
                    reasons[choice] = Some(reason);
                    completion_tokens += c;
                    self.record_done(choice, c, cached_prompt_tokens);
                }
                Some(Event::Error(e)) => return Err(ApiError::engine(&self.head.model, e)),
                None => return Err(ApiError::internal("the engine dropped the request")),
            }
        }
        self.record_end(completion_tokens);
        let answers = texts
            .into_iter()
            .zip(reasons)
            .zip(logprobs)
            .map(|((text, reason), logprobs)| Answer {
                text,
                reason: reason.expect("all done"),
                logprobs: self.logprobs.then_some(logprobs),
            })
            .collect();
        Ok(self.wire.body(&self.head, answers, self.usage(completion_tokens)))
    }

    /// OpenAI's stream: the wire's start, each choice's opening, text chunks, the chunks that finish
    /// each choice, then the wire's end (chat's and completions': the usage chunk, with empty
    /// `choices`, when asked for, then `[DONE]`).
    fn stream(self, events: BoxStream<'static, Event>) -> Response {
        let state = StreamState {
            events,
            queue: self
                .wire
                .start(&self.head)
                .into_iter()
                .chain((0..self.choices).filter_map(|i| self.wire.opening(&self.head, i)))
                .collect(),
            remaining: self.choices,
            completion_tokens: 0,
            ended: false,
            reply: self,
        };
        let events = futures::stream::unfold(state, |mut st| async move {
            let chunk = st.next().await?;
            // The name first, as OpenAI writes it.
            let event = match chunk.event {
                Some(name) => SseEvent::default().event(name),
                None => SseEvent::default(),
            };
            Some((Ok::<_, Infallible>(event.data(chunk.data)), st))
        });
        Sse::new(events).into_response()
    }
}

struct StreamState<W: Wire> {
    events: BoxStream<'static, Event>,
    queue: VecDeque<Chunk>,
    remaining: usize,
    completion_tokens: usize,
    ended: bool,
    reply: Reply<W>,
}

impl<W: Wire> StreamState<W> {
    /// The next event, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Chunk> {
        loop {
            if let Some(data) = self.queue.pop_front() {
                return Some(data);
            }
            if self.ended {
                return None;
            }
            if self.remaining == 0 {
                self.finish();
                continue;
            }
            let r = &self.reply;
            match self.events.next().await {
                Some(Event::Text { choice, text, logprobs }) => {
                    r.record_text();
                    let logprobs = r.logprobs.then_some(logprobs.as_slice());
                    self.queue.extend(r.wire.text(&r.head, choice, text, logprobs));
                }
                Some(Event::Done { choice, reason, completion_tokens, cached_prompt_tokens }) => {
                    self.completion_tokens += completion_tokens;
                    r.record_done(choice, completion_tokens, cached_prompt_tokens);
                    self.remaining -= 1;
                    self.queue.extend(r.wire.finish(&r.head, choice, reason));
                }
                Some(Event::Error(e)) => {
                    self.queue.extend(r.wire.error(&r.head, ApiError::engine(&r.head.model, e)));
                    self.ended = true;
                }
                None => {
                    self.queue.extend(r.wire.error(&r.head, ApiError::internal("the engine dropped the request")));
                    self.ended = true;
                }
            }
        }
    }

    fn finish(&mut self) {
        let r = &self.reply;
        r.record_end(self.completion_tokens);
        self.queue.extend(r.wire.end(&r.head, r.usage(self.completion_tokens)));
        self.ended = true;
    }
}
