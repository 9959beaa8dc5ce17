//! `POST /v1/completions`, OpenAI's legacy Completions API: raw prompts, no chat template, so that
//! base models can be served. Tokenizes the prompts and hands them to the generation that it shares
//! with chat (`generation.rs`), in the `text_completion` wire shape.

use super::generation::{check_max_tokens, check_sampling, generate, text_deployment, Head, SamplingFields, Wire};
use super::json::AppJson;
use super::openai::*;
use super::unsupported::{none, refuse, Refusal};
use crate::auth::Caller;
use crate::engine::{Engine, FinishReason};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::{field, Instrument};

/// The `object` of bodies and streamed chunks alike.
const OBJECT: &str = "text_completion";

/// OpenAI's default `max_tokens` for completions (chat's is the rest of the context).
const DEFAULT_MAX_TOKENS: usize = 16;

fn bad<T>(message: impl Into<String>, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

/// Fields Wick does not implement are refused, naming them, rather than accepted and ignored.
fn refuse_unsupported(req: &CompletionRequest, n: usize) -> Result<(), ApiError> {
    refuse(&[
        Refusal { param: "logprobs", value: &req.logprobs, harmless: none, why: "log probabilities come later." },
        Refusal {
            param: "suffix",
            value: &req.suffix,
            harmless: none,
            why: "inserting text needs a fill-in-the-middle model.",
        },
    ])?;
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

pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let prompts = prompts(&req.prompt)?;
    let max_tokens = check_max_tokens(req.max_tokens, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
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
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed: req.seed,
        stop: req.stop.as_ref(),
        logit_bias: req.logit_bias.as_ref(),
        stream: req.stream,
        stream_options: req.stream_options.as_ref(),
    })?;
    refuse_unsupported(&req, generation.n)?;
    let deployment = text_deployment(&state, &caller, &req.model)?;
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
        Ok((ids, TextWire { echo: echo.then_some(texts), n }))
    };
    generate(&state, deployment, head, started, Some(max_tokens), generation, prepare).instrument(span).await
}

/// The `text_completion` shape, bodies and chunks alike.
struct TextWire {
    /// With `echo`: each prompt's text, which comes before its choices' completions.
    echo: Option<Vec<String>>,
    /// Choices per prompt: choice `i` belongs to prompt `i / n`.
    n: usize,
}

impl TextWire {
    fn piece(head: &Head, index: usize, text: String, finish: Option<FinishReason>) -> String {
        let choice = TextChoice { text, index, logprobs: None, finish_reason: finish.map(FinishReason::as_str) };
        head.chunk(OBJECT, vec![choice], None)
    }

    fn echoed(&self, index: usize) -> Option<&str> {
        self.echo.as_ref().map(|texts| texts[index / self.n].as_str())
    }
}

impl Wire for TextWire {
    const PROMPT_PARAM: &'static str = "prompt";

    /// With `echo`, each choice's stream starts with its prompt.
    fn opening(&self, head: &Head, index: usize) -> Option<String> {
        self.echoed(index).map(|prompt| Self::piece(head, index, prompt.to_string(), None))
    }

    fn text(&self, head: &Head, index: usize, text: String) -> String {
        Self::piece(head, index, text, None)
    }

    fn finish(&self, head: &Head, index: usize, reason: FinishReason) -> String {
        Self::piece(head, index, String::new(), Some(reason))
    }

    fn usage(&self, head: &Head, usage: Usage) -> String {
        head.chunk::<TextChoice>(OBJECT, vec![], Some(usage))
    }

    fn body(&self, head: &Head, choices: Vec<(String, FinishReason)>, usage: Usage) -> Response {
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(index, (completion, reason))| TextChoice {
                text: match self.echoed(index) {
                    Some(prompt) => format!("{prompt}{completion}"),
                    None => completion,
                },
                index,
                logprobs: None,
                finish_reason: Some(reason.as_str()),
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
