//! `POST /v1/completions`, OpenAI's legacy Completions API: raw prompts, no chat template, so that
//! base models can be served. Tokenizes the prompts and hands them to the generation that it shares
//! with chat (`generation.rs`), in the `text_completion` wire shape.

use super::generation::{
    check_max_tokens, check_sampling, finite_logprob, generate, token_text, Answer, Chunk, Head, SamplingFields, Wire,
};
use super::json::AppJson;
use super::openai::*;
use super::unsupported::{none, refuse, Refusal};
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::engine::{Engine, FinishReason, TokenLogprob};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::sync::Mutex;
use std::time::Instant;
use tracing::{field, Instrument};

/// The `object` of bodies and streamed chunks alike.
const OBJECT: &str = "text_completion";

/// OpenAI's default `max_tokens` for completions (chat's is the rest of the context).
const DEFAULT_MAX_TOKENS: usize = 16;
/// OpenAI's limit on the legacy `logprobs`.
const MAX_LOGPROBS: i64 = 5;

fn bad<T>(message: impl Into<String>, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

/// Fields Wick does not implement are refused, naming them, rather than accepted and ignored.
fn refuse_unsupported(req: &CompletionRequest, n: usize) -> Result<(), ApiError> {
    refuse(&[Refusal {
        param: "suffix",
        value: &req.suffix,
        harmless: none,
        why: "inserting text needs a fill-in-the-middle model.",
    }])?;
    if req.echo == Some(true) && req.logprobs.is_some() {
        return bad(
            "'logprobs' with 'echo' is not supported: the prompt's log-probabilities are not computed.",
            "logprobs",
        );
    }
    match req.best_of {
        None | Some(1) => Ok(()),
        Some(b) if b == n as i64 => Ok(()),
        Some(b) => bad(
            format!("Invalid 'best_of': {b}. Only 1 or 'n' ({n}) is supported: candidates are not ranked."),
            "best_of",
        ),
    }
}

/// The prompts as given: texts, or token ids not yet checked against the vocabulary.
enum Prompts {
    Texts(Vec<String>),
    Tokens(Vec<Vec<i64>>),
}

fn prompts(prompt: &Prompt) -> Result<Prompts, ApiError> {
    let prompts = match prompt {
        Prompt::Text(t) => Prompts::Texts(vec![t.clone()]),
        Prompt::Texts(v) => Prompts::Texts(v.clone()),
        Prompt::Tokens(ids) => Prompts::Tokens(vec![ids.clone()]),
        Prompt::TokenLists(v) => Prompts::Tokens(v.clone()),
    };
    let empty = match &prompts {
        Prompts::Texts(v) => v.is_empty(),
        Prompts::Tokens(v) => v.is_empty() || v.iter().any(Vec::is_empty),
    };
    if empty {
        return bad("'prompt' must not be empty.", "prompt");
    }
    Ok(prompts)
}

/// Each prompt's token ids, and its text for `echo`. Texts are tokenized as raw prompts (the
/// model's BOS rule, no template); token ids must be in the vocabulary, and echo as their text.
fn tokenize(engine: &Engine, prompts: Prompts) -> Result<Vec<(Vec<u32>, String)>, ApiError> {
    let tokenizer = &engine.tokenizer;
    match prompts {
        Prompts::Texts(texts) => texts
            .into_iter()
            .map(|text| {
                let ids = tokenizer.encode_prompt(&text).map_err(|e| ApiError::internal(e.to_string()))?;
                if ids.is_empty() {
                    return bad("'prompt' must not be empty: an empty text has no tokens for this model.", "prompt");
                }
                Ok((ids, text))
            })
            .collect(),
        Prompts::Tokens(lists) => {
            let vocab = tokenizer.vocab_size();
            lists
                .into_iter()
                .map(|list| {
                    let ids = list
                        .iter()
                        .map(|&id| match u32::try_from(id) {
                            Ok(id) if (id as usize) < vocab => Ok(id),
                            _ => bad(
                                format!("Invalid token id in 'prompt': {id}. This model's ids are 0 to {}.", vocab - 1),
                                "prompt",
                            ),
                        })
                        .collect::<Result<Vec<u32>, ApiError>>()?;
                    let text = tokenizer.decode(&ids);
                    Ok((ids, text))
                })
                .collect()
        }
    }
}

/// `POST /v1/completions`
#[utoipa::path(post, path = "/v1/completions", operation_id = "createCompletion", tag = "inference", security(("inference" = [])), request_body(content = CompletionRequest, examples(
        ("plain" = (value = json!({"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 8, "logprobs": 2, "echo": true}))),
        ("streamed" = (value = json!({"model": "smollm2-135m-instruct", "prompt": ["One", "Two"], "max_tokens": 8, "n": 2, "stream": true, "stream_options": {"include_usage": true}}))),
    )), responses(
        (status = 200, description = "The completion, or with `stream: true` its chunks as server-sent events",
            content((crate::api::openai::TextCompletion = "application/json"), (crate::api::openapi::StreamEvent = "text/event-stream"))),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let prompts = prompts(&req.prompt)?;
    let max_tokens = check_max_tokens(req.max_tokens, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
    let logprobs = match req.logprobs {
        Some(k) if !(0..=MAX_LOGPROBS).contains(&k) => {
            return bad(format!("Invalid 'logprobs': {k}. It must be between 0 and {MAX_LOGPROBS}."), "logprobs")
        }
        k => k.map(|k| k as usize),
    };
    let generation = check_sampling(SamplingFields {
        n: req.n,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        min_tokens: req.min_tokens,
        ignore_eos: req.ignore_eos,
        max_tokens: Some(max_tokens),
        logprobs,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed: req.seed,
        stop: req.stop.as_ref(),
        logit_bias: req.logit_bias.as_ref(),
        stream: req.stream,
        stream_options: req.stream_options.as_ref(),
    })?;
    refuse_unsupported(&req, generation.n)?;
    let deployment = super::deployment_of_kind(&state, &caller, &req.model, crate::loader::ModelKind::Text)?;
    let head = Head {
        id: format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
        model: req.model.clone(),
        created: crate::unix_now(),
        include_usage: generation.include_usage,
    };
    let span = tracing::info_span!(
        "completion",
        request_id = %head.id,
        model = %req.model,
        user = req.user.as_deref(),
        prompt_tokens = field::Empty,
        completion_tokens = field::Empty,
        ttft_ms = field::Empty,
        duration_ms = field::Empty,
    );
    let (echo, n) = (req.echo.unwrap_or(false), generation.n);
    let prepare = |engine: &Engine| -> Result<_, ApiError> {
        let (ids, texts): (Vec<_>, Vec<_>) = tokenize(engine, prompts)?.into_iter().unzip();
        let choices = ids.len() * n;
        Ok((ids, TextWire::new(echo.then_some(texts), n, choices), None))
    };
    generate(&state, deployment, head, started, Some(max_tokens), generation, prepare).instrument(span).await
}

/// The `text_completion` shape, bodies and chunks alike.
struct TextWire {
    /// With `echo`: each prompt's text, which comes before its choices' completions.
    echo: Option<Vec<String>>,
    /// Choices per prompt: choice `i` belongs to prompt `i / n`.
    n: usize,
    /// Each streamed choice's characters so far, where its next token's `text_offset` is.
    offsets: Mutex<Vec<usize>>,
}

impl TextWire {
    fn new(echo: Option<Vec<String>>, n: usize, choices: usize) -> Self {
        Self { echo, n, offsets: Mutex::new(vec![0; choices]) }
    }

    fn piece(
        head: &Head,
        index: usize,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish: Option<FinishReason>,
    ) -> Chunk {
        let choice = TextChoice { text, index, logprobs, finish_reason: finish.map(FinishReason::as_str) };
        head.chunk(OBJECT, vec![choice], None)
    }

    /// The legacy shape of `tokens`, the first starting at character `offset` of the choice's text;
    /// returns the offset after the last.
    fn logprobs(tokens: &[TokenLogprob], mut offset: usize) -> (CompletionLogprobs, usize) {
        let mut out = CompletionLogprobs::default();
        for t in tokens {
            let token = token_text(&t.bytes);
            out.text_offset.push(offset);
            offset += token.chars().count();
            out.tokens.push(token);
            out.token_logprobs.push(finite_logprob(t.logprob));
            let top = t.top.iter().map(|(bytes, logprob)| (token_text(bytes), finite_logprob(*logprob)));
            out.top_logprobs.push(TokenMap(top.collect()));
        }
        (out, offset)
    }

    fn echoed(&self, index: usize) -> Option<&str> {
        self.echo.as_ref().map(|texts| texts[index / self.n].as_str())
    }
}

impl Wire for TextWire {
    const PROMPT_PARAM: &'static str = "prompt";

    /// With `echo`, each choice's stream starts with its prompt.
    fn opening(&self, head: &Head, index: usize) -> Option<Chunk> {
        let prompt = self.echoed(index)?;
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())[index] = prompt.chars().count();
        Some(Self::piece(head, index, prompt.to_string(), None, None))
    }

    fn text(&self, head: &Head, index: usize, text: String, logprobs: Option<&[TokenLogprob]>) -> Vec<Chunk> {
        let logprobs = logprobs.map(|tokens| {
            let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
            let (logprobs, next) = Self::logprobs(tokens, offsets[index]);
            offsets[index] = next;
            logprobs
        });
        vec![Self::piece(head, index, text, logprobs, None)]
    }

    fn finish(&self, head: &Head, index: usize, reason: FinishReason) -> Vec<Chunk> {
        vec![Self::piece(head, index, String::new(), None, Some(reason))]
    }

    fn end(&self, head: &Head, usage: Usage) -> Vec<Chunk> {
        head.end::<TextChoice>(OBJECT, usage)
    }

    fn body(&self, head: &Head, answers: Vec<Answer>, usage: Usage) -> Response {
        let choices = answers
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                let prompt = self.echoed(index).unwrap_or("");
                TextChoice {
                    logprobs: a.logprobs.map(|tokens| Self::logprobs(&tokens, prompt.chars().count()).0),
                    text: format!("{prompt}{}", a.text),
                    index,
                    finish_reason: Some(a.reason.as_str()),
                }
            })
            .collect();
        axum::Json(TextCompletion {
            id: head.id.clone(),
            object: OBJECT,
            created: head.created,
            model: head.model.clone(),
            system_fingerprint: Some(crate::SYSTEM_FINGERPRINT.to_string()),
            choices,
            usage,
        })
        .into_response()
    }
}
