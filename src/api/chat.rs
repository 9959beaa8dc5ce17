//! `POST /v1/chat/completions`: validate, render the chat template, tokenize, hand the request to the
//! deployment's engine, and answer as one JSON body or as OpenAI's event stream.

use super::json::AppJson;
use super::openai::*;
use crate::auth::Caller;
use crate::deploy::Lease;
use crate::engine::sampling::SamplingParams;
use crate::engine::{Engine, Event, GenerationRequest, SubmitError};
use crate::error::ApiError;
use crate::loader::chat_template::TemplateMessage;
use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{field, Instrument, Span};

/// OpenAI's limit on choices per request.
const MAX_N: i64 = 128;

/// A request checked against OpenAI's ranges, before it meets a model.
struct Checked {
    messages: Vec<TemplateMessage>,
    max_tokens: Option<usize>,
    n: usize,
    stop: Vec<String>,
    sampling: SamplingParams,
    stream: bool,
    include_usage: bool,
}

fn check(req: &ChatCompletionRequest) -> Result<Checked, ApiError> {
    let bad = |msg: String, param: &str| Err(ApiError::invalid_request(msg, Some(param)));
    if req.messages.is_empty() {
        return bad("'messages' must contain at least one message.".into(), "messages");
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant" | "tool") => r,
            other => {
                return bad(
                    format!("Invalid value: '{other}'. Supported roles are 'system', 'developer', 'user', 'assistant' and 'tool'."),
                    &format!("messages[{i}].role"),
                )
            }
        };
        let content = match &m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => {
                            return bad("A text part needs 'text'.".into(), &format!("messages[{i}].content[{j}].text"))
                        }
                        (kind, _) => {
                            return bad(
                                format!("Content parts of type '{kind}' are not supported by this model; only 'text'."),
                                &format!("messages[{i}].content[{j}].type"),
                            )
                        }
                    }
                }
                text
            }
        };
        messages.push(TemplateMessage { role: role.to_string(), content });
    }

    let max_tokens = match (req.max_completion_tokens, req.max_tokens) {
        (Some(v), _) if v < 1 => {
            return bad(
                format!("Invalid 'max_completion_tokens': {v}. It must be at least 1."),
                "max_completion_tokens",
            )
        }
        (None, Some(v)) if v < 1 => {
            return bad(format!("Invalid 'max_tokens': {v}. It must be at least 1."), "max_tokens")
        }
        (Some(v), _) | (None, Some(v)) => Some(v as usize),
        (None, None) => None,
    };
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return bad(format!("Invalid 'n': {n}. It must be between 1 and {MAX_N}."), "n");
    }
    let in_range = |v: Option<f32>, lo: f32, hi: f32, name: &str| -> Result<(), ApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ApiError::invalid_request(
                format!("Invalid '{name}': {x}. It must be between {lo} and {hi}."),
                Some(name),
            )),
            _ => Ok(()),
        }
    };
    in_range(req.temperature, 0.0, 2.0, "temperature")?;
    in_range(req.top_p, 0.0, 1.0, "top_p")?;
    in_range(req.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    in_range(req.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    let top_k = match req.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => return bad(format!("Invalid 'top_k': {k}. It must be -1, 0 or positive."), "top_k"),
    };
    let stop = match &req.stop {
        None => vec![],
        Some(StopSpec::One(s)) => vec![s.clone()],
        Some(StopSpec::Many(v)) if v.len() > 4 => return bad("'stop' takes at most 4 sequences.".into(), "stop"),
        Some(StopSpec::Many(v)) => v.clone(),
    };
    let mut logit_bias = Vec::new();
    for (token, &bias) in req.logit_bias.iter().flatten() {
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
    if req.logprobs == Some(true) {
        return bad("'logprobs' is not supported yet.".into(), "logprobs");
    }
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
            "stream_options",
        );
    }
    Ok(Checked {
        messages,
        max_tokens,
        n: n as usize,
        stop,
        sampling: SamplingParams {
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            top_k,
            presence_penalty: req.presence_penalty.unwrap_or(0.0),
            frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: req.seed.map(|s| s as u64),
        },
        stream,
        include_usage: req.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// The prompt's token ids, ready for the engine.
fn tokenize(engine: &Engine, messages: &[TemplateMessage]) -> Result<Vec<u32>, ApiError> {
    let text = engine.template.render(messages, true).map_err(|e| ApiError::invalid_request(e, Some("messages")))?;
    let mut ids = engine.tokenizer.encode(&text, true).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(bos) = engine.tokenizer.add_bos {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    Ok(ids)
}

pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let checked = check(&req)?;
    // A key scoped away from a deployment is told it does not exist, as OpenAI does.
    let deployment = state
        .deployments
        .get(&req.model)
        .filter(|d| caller.scope.allows(d.name()))
        .ok_or_else(|| ApiError::model_not_found(&req.model))?;
    if deployment.spec.source.kind() != crate::loader::ModelKind::Chat {
        return Err(ApiError::invalid_request(
            format!("`{}` is a text-to-speech model: use /v1/audio/speech.", req.model),
            Some("model"),
        ));
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let span = tracing::info_span!(
        "chat",
        request_id = %id,
        model = %req.model,
        prompt_tokens = field::Empty,
        completion_tokens = field::Empty,
        ttft_ms = field::Empty,
        duration_ms = field::Empty,
    );
    async move {
        // Loads the deployment if it is in Standby; held until the answer is complete.
        let lease = deployment.acquire().await?;
        let engine = lease.chat().ok_or_else(|| ApiError::internal("a chat deployment without a chat engine"))?;
        let prompt = tokenize(engine, &checked.messages)?;
        let context = engine.context_length;
        let max_tokens = match checked.max_tokens {
            Some(m) if prompt.len() + m > context => {
                return Err(ApiError::context_length_exceeded(context, prompt.len(), m))
            }
            Some(m) => m,
            None if prompt.len() >= context => return Err(ApiError::context_length_exceeded(context, prompt.len(), 1)),
            None => context - prompt.len(),
        };
        if checked.n > engine.limits.max_batch_size {
            return Err(ApiError::invalid_request(
                format!(
                    "Invalid 'n': {}. This deployment runs at most {} sequences at once.",
                    checked.n, engine.limits.max_batch_size
                ),
                Some("n"),
            ));
        }
        Span::current().record("prompt_tokens", prompt.len());
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = prompt.len();
        engine
            .submit(GenerationRequest {
                prompt,
                n: checked.n,
                max_tokens,
                sampling: checked.sampling,
                stop: checked.stop,
                events: tx,
            })
            .map_err(|e| match e {
                SubmitError::QueueFull => ApiError::overloaded(1),
                SubmitError::Stopped => ApiError::model_unavailable(&req.model, "its engine stopped"),
            })?;
        let reply = Reply {
            id,
            model: req.model.clone(),
            created: crate::unix_now(),
            n: checked.n,
            prompt_tokens,
            started,
            span: Span::current(),
            metrics: state.deployments.metrics().clone(),
            completion_tokens: AtomicUsize::new(0),
            cached_tokens: AtomicUsize::new(0),
            last_token_at: Mutex::new(None),
            lease,
        };
        Ok(if checked.stream {
            reply.stream(rx, checked.include_usage)
        } else {
            reply.collect(rx).await?.into_response()
        })
    }
    .instrument(span)
    .await
}

/// What the answer needs besides the engine's events. Dropping it (the answer is complete, or the
/// client went away) accounts the request's usage and gives its lease back.
struct Reply {
    id: String,
    model: String,
    created: u64,
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

impl Drop for Reply {
    fn drop(&mut self) {
        let completion = self.completion_tokens.load(Ordering::Relaxed);
        self.lease.deployment().usage.add_request(self.prompt_tokens, completion);
        self.metrics.tokens(&self.model, self.prompt_tokens, completion);
    }
}

impl Reply {
    /// Time to first token on the first text event, the gap since the last one after that.
    fn record_text(&self) {
        let now = Instant::now();
        let mut last = self.last_token_at.lock().unwrap_or_else(|e| e.into_inner());
        match last.replace(now) {
            None => {
                let ttft = now - self.started;
                self.span.record("ttft_ms", ttft.as_millis() as u64);
                self.metrics.first_token(&self.model, ttft.as_secs_f64());
            }
            Some(previous) => self.metrics.inter_token(&self.model, (now - previous).as_secs_f64()),
        }
    }

    /// A choice ended. The prompt is counted once, so its cached part is the first choice's.
    fn record_done(&self, choice: usize, completion_tokens: usize, cached_prompt_tokens: usize) {
        self.completion_tokens.fetch_add(completion_tokens, Ordering::Relaxed);
        if choice == 0 {
            self.cached_tokens.store(cached_prompt_tokens, Ordering::Relaxed);
        }
    }

    fn record_end(&self, completion_tokens: usize) {
        self.span.record("completion_tokens", completion_tokens);
        self.span.record("duration_ms", self.started.elapsed().as_millis() as u64);
        self.span.in_scope(|| tracing::info!("chat completion finished"));
    }

    fn usage(&self, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: self.cached_tokens.load(Ordering::Relaxed) },
        }
    }

    async fn collect(self, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<axum::Json<ChatCompletion>, ApiError> {
        let mut texts = vec![String::new(); self.n];
        let mut reasons = vec![None; self.n];
        let mut completion_tokens = 0;
        while reasons.iter().any(Option::is_none) {
            match rx.recv().await {
                Some(Event::Text { choice, text }) => {
                    self.record_text();
                    texts[choice].push_str(&text);
                }
                Some(Event::Done { choice, reason, completion_tokens: c, cached_prompt_tokens }) => {
                    reasons[choice] = Some(reason);
                    completion_tokens += c;
                    self.record_done(choice, c, cached_prompt_tokens);
                }
                Some(Event::Error(e)) => return Err(ApiError::internal(e)),
                None => return Err(ApiError::internal("the engine dropped the request")),
            }
        }
        self.record_end(completion_tokens);
        let choices = texts
            .into_iter()
            .zip(reasons)
            .enumerate()
            .map(|(index, (content, reason))| Choice {
                index,
                message: ResponseMessage { role: "assistant", content, refusal: None },
                logprobs: None,
                finish_reason: reason.expect("all done").as_str(),
            })
            .collect();
        Ok(axum::Json(ChatCompletion {
            usage: self.usage(completion_tokens),
            id: self.id.clone(),
            object: "chat.completion",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(crate::SYSTEM_FINGERPRINT.to_string()),
            choices,
        }))
    }

    /// OpenAI's stream: a role chunk per choice, content chunks, a finish chunk per choice, the usage
    /// chunk (empty `choices`) when asked for, then `[DONE]`. Dropping the body drops `rx`, which is how
    /// the engine learns that the client has gone.
    fn stream(self, rx: mpsc::UnboundedReceiver<Event>, include_usage: bool) -> Response {
        let state = StreamState {
            rx,
            queue: (0..self.n)
                .map(|i| {
                    self.chunk(i, Delta { role: Some("assistant"), content: Some(String::new()) }, None, include_usage)
                })
                .collect(),
            remaining: self.n,
            completion_tokens: 0,
            include_usage,
            ended: false,
            reply: Arc::new(self),
        };
        let events = futures::stream::unfold(state, |mut st| async move {
            let data = st.next().await?;
            Some((Ok::<_, Infallible>(SseEvent::default().data(data)), st))
        });
        Sse::new(events).into_response()
    }

    fn chunk(&self, index: usize, delta: Delta, finish: Option<&'static str>, include_usage: bool) -> String {
        let chunk = ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: Some(crate::SYSTEM_FINGERPRINT),
            choices: vec![ChunkChoice { index, delta, logprobs: None, finish_reason: finish }],
            usage: include_usage.then_some(None),
        };
        serde_json::to_string(&chunk).expect("chunks serialise")
    }
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    queue: VecDeque<String>,
    remaining: usize,
    completion_tokens: usize,
    include_usage: bool,
    ended: bool,
    reply: Arc<Reply>,
}

impl StreamState {
    /// The next `data:` payload, or `None` when the stream is over.
    async fn next(&mut self) -> Option<String> {
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
            match self.rx.recv().await {
                Some(Event::Text { choice, text }) => {
                    r.record_text();
                    let delta = Delta { role: None, content: Some(text) };
                    self.queue.push_back(r.chunk(choice, delta, None, self.include_usage));
                }
                Some(Event::Done { choice, reason, completion_tokens, cached_prompt_tokens }) => {
                    self.completion_tokens += completion_tokens;
                    r.record_done(choice, completion_tokens, cached_prompt_tokens);
                    self.remaining -= 1;
                    self.queue.push_back(r.chunk(choice, Delta::default(), Some(reason.as_str()), self.include_usage));
                }
                Some(Event::Error(e)) => {
                    self.queue.push_back(ApiError::internal(e).to_json().to_string());
                    self.ended = true;
                }
                None => {
                    self.queue.push_back(ApiError::internal("the engine dropped the request").to_json().to_string());
                    self.ended = true;
                }
            }
        }
    }

    fn finish(&mut self) {
        let r = &self.reply;
        r.record_end(self.completion_tokens);
        if self.include_usage {
            let chunk = ChatCompletionChunk {
                id: &r.id,
                object: "chat.completion.chunk",
                created: r.created,
                model: &r.model,
                system_fingerprint: Some(crate::SYSTEM_FINGERPRINT),
                choices: vec![],
                usage: Some(Some(r.usage(self.completion_tokens))),
            };
            self.queue.push_back(serde_json::to_string(&chunk).expect("chunks serialise"));
        }
        self.queue.push_back("[DONE]".to_string());
        self.ended = true;
    }
}
