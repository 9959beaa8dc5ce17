//! `POST /v1/chat/completions`: validate, render the chat template, tokenize, and hand the prompt to
//! the generation that chat shares with `/v1/completions` (`generation.rs`), in chat's wire shape.

use super::generation::{
    check_max_tokens, check_sampling, finite_logprob, generate, token_text, Answer, Constrained, Generation, Head,
    SamplingFields, Wire,
};
use super::json::AppJson;
use super::openai::*;
use super::unsupported::{none, refuse, refuse_in, Refusal};
use crate::auth::Caller;
use crate::engine::grammar::Grammar;
use crate::engine::{Engine, FinishReason, TokenLogprob};
use crate::error::ApiError;
use crate::loader::chat_template::TemplateMessage;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tracing::{field, Instrument};

/// OpenAI's limit on `top_logprobs`.
const MAX_TOP_LOGPROBS: i64 = 20;

/// A request checked against OpenAI's ranges, before it meets a model.
struct Checked {
    messages: Vec<TemplateMessage>,
    max_tokens: Option<usize>,
    generation: Generation,
}

/// Chat's fields that Wick knows and does not serve, with the values that ask for nothing it lacks.
fn refusals(req: &ChatCompletionRequest) -> Vec<Refusal<'_>> {
    const TOOLS: &str = "tool calling is not implemented yet.";
    const TEXT_ONLY: &str = "its chat models answer in text only.";
    let field = |param, value, harmless, why| Refusal { param, value, harmless, why };
    vec![
        field("tools", &req.tools, none, TOOLS),
        field("tool_choice", &req.tool_choice, none, TOOLS),
        field("parallel_tool_calls", &req.parallel_tool_calls, none, TOOLS),
        field("functions", &req.functions, none, TOOLS),
        field("function_call", &req.function_call, none, TOOLS),
        field("audio", &req.audio, none, TEXT_ONLY),
        field("modalities", &req.modalities, |v| *v == serde_json::json!(["text"]), TEXT_ONLY),
        field("prediction", &req.prediction, none, "predicted outputs are not implemented."),
        field("web_search_options", &req.web_search_options, none, "it has no web search."),
        field("reasoning_effort", &req.reasoning_effort, none, "its models have no reasoning setting."),
        field("verbosity", &req.verbosity, none, "its models have no verbosity setting."),
        field("store", &req.store, |v| *v == false, "it does not store completions."),
        field("metadata", &req.metadata, none, "metadata is kept with stored completions, and it stores none."),
        field(
            "service_tier",
            &req.service_tier,
            |v| v == "auto" || v == "default",
            "it has one service tier ('auto' and 'default' are accepted).",
        ),
        field("moderation", &req.moderation, none, "it does not moderate."),
        field(
            "prompt_cache_retention",
            &req.prompt_cache_retention,
            |v| v == "in_memory",
            "its prefix cache is in memory only.",
        ),
        field("prompt_cache_options", &req.prompt_cache_options, none, "its prefix cache takes no options."),
    ]
}

/// A message's fields that Wick knows and does not serve.
fn message_refusals(m: &ChatMessage) -> [Refusal<'_>; 6] {
    const TOOLS: &str = "tool calling is not implemented yet.";
    let field = |param, value, why| Refusal { param, value, harmless: none, why };
    [
        field("name", &m.name, "the model's chat template has no place for a participant's name."),
        field("tool_calls", &m.tool_calls, TOOLS),
        field("tool_call_id", &m.tool_call_id, TOOLS),
        field("function_call", &m.function_call, TOOLS),
        field("audio", &m.audio, "its chat models take text only."),
        field("refusal", &m.refusal, "an assistant's refusal has no place in the model's chat template."),
    ]
}

fn check(req: &ChatCompletionRequest) -> Result<Checked, ApiError> {
    let bad = |msg: String, param: &str| Err(ApiError::invalid_request(msg, Some(param)));
    refuse(&refusals(req))?;
    if req.messages.is_empty() {
        return bad("'messages' must contain at least one message.".into(), "messages");
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        refuse_in(&format!("messages[{i}]"), &message_refusals(m))?;
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

    // `max_completion_tokens` is the newer name; when both are given it wins.
    let max_tokens = match req.max_completion_tokens {
        Some(_) => check_max_tokens(req.max_completion_tokens, "max_completion_tokens")?,
        None => check_max_tokens(req.max_tokens, "max_tokens")?,
    };
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
            return bad(
                format!("Invalid 'top_logprobs': {k}. It must be between 0 and {MAX_TOP_LOGPROBS}."),
                "top_logprobs",
            )
        }
        (false, Some(_)) => return bad("'top_logprobs' needs 'logprobs' set to true.".into(), "top_logprobs"),
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
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
        max_tokens,
        logprobs,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed: req.seed,
        stop: req.stop.as_ref(),
        logit_bias: req.logit_bias.as_ref(),
        stream: req.stream,
        stream_options: req.stream_options.as_ref(),
    })?;
    let mut generation = generation;
    generation.grammar = check_response_format(req.response_format.as_ref())?;
    Ok(Checked { messages, max_tokens, generation })
}

/// The grammar `response_format` asks for: none for text.
fn check_response_format(format: Option<&ResponseFormat>) -> Result<Option<Constrained>, ApiError> {
    let bad = |msg: String, param: &str| Err(ApiError::invalid_request(msg, Some(param)));
    let Some(format) = format else { return Ok(None) };
    let (grammar, param) = match (&format.kind, &format.json_schema) {
        (ResponseFormatType::JsonSchema, None) => {
            return bad(
                "Missing required parameter: 'response_format.json_schema'.".into(),
                "response_format.json_schema",
            )
        }
        (ResponseFormatType::Text | ResponseFormatType::JsonObject, Some(_)) => {
            return bad(
                "'response_format.json_schema' goes with 'response_format.type' 'json_schema' only.".into(),
                "response_format.json_schema",
            )
        }
        (ResponseFormatType::Text, None) => return Ok(None),
        (ResponseFormatType::JsonObject, None) => (Grammar::JsonObject, "response_format"),
        (ResponseFormatType::JsonSchema, Some(json_schema)) => {
            let name = &json_schema.name;
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return bad(
                    format!("Invalid 'response_format.json_schema.name': '{name}'. It must be 1 to 64 letters, digits, underscores or dashes."),
                    "response_format.json_schema.name",
                );
            }
            match &json_schema.schema {
                Some(schema @ (serde_json::Value::Object(_) | serde_json::Value::Bool(_))) => {
                    (Grammar::JsonSchema(schema.clone()), "response_format.json_schema.schema")
                }
                Some(_) => {
                    return bad(
                        "'response_format.json_schema.schema' must be a JSON Schema object.".into(),
                        "response_format.json_schema.schema",
                    )
                }
                None => {
                    return bad(
                        "'response_format.json_schema.schema' is required: Wick enforces the schema it is given."
                            .into(),
                        "response_format.json_schema.schema",
                    )
                }
            }
        }
    };
    Ok(Some(Constrained { grammar, param }))
}

/// The rendered conversation's token ids. A model without a chat template cannot take messages.
fn tokenize(engine: &Engine, model: &str, messages: &[TemplateMessage]) -> Result<Vec<u32>, ApiError> {
    let template = engine.template.as_ref().ok_or_else(|| {
        ApiError::invalid_request(
            format!(
                "The model `{model}` has no chat template, so it cannot take messages: send it a prompt on \
                 /v1/completions, or give its deployment a `chat_template`."
            ),
            Some("model"),
        )
    })?;
    let rendered = template.render(messages, true).map_err(|e| ApiError::invalid_request(e, Some("messages")))?;
    let internal = |e: anyhow::Error| ApiError::internal(e.to_string());
    let content = match rendered.content {
        Some(content) => content,
        // The template rewrote the content, so it cannot be told apart from the markup: a content
        // that holds a control token's text is refused rather than let through as that token.
        None => {
            for (i, m) in messages.iter().enumerate() {
                if let Some(token) = engine.tokenizer.control_token_in(&m.content).map_err(internal)? {
                    return Err(ApiError::invalid_request(
                        format!(
                            "This message holds `{token}`, a control token of `{model}`, whose chat template \
                             rewrites message content in a way that Wick cannot keep apart from the template's \
                             own markup; remove the control token from the content."
                        ),
                        Some(&format!("messages[{i}].content")),
                    ));
                }
            }
            Vec::new()
        }
    };
    engine.tokenizer.encode_chat(&rendered.text, &content).map_err(internal)
}

pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let checked = check(&req)?;
    let deployment = super::deployment_of_kind(&state, &caller, &req.model, crate::loader::ModelKind::Text)?;
    let head = Head {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        model: req.model.clone(),
        created: crate::unix_now(),
        include_usage: checked.generation.include_usage,
    };
    let span = tracing::info_span!(
        "chat",
        request_id = %head.id,
        model = %req.model,
        user = req.user.as_deref(),
        safety_identifier = req.safety_identifier.as_deref(),
        prompt_tokens = field::Empty,
        completion_tokens = field::Empty,
        ttft_ms = field::Empty,
        duration_ms = field::Empty,
    );
    let Checked { messages, max_tokens, generation } = checked;
    let prepare =
        |engine: &Engine| -> Result<_, ApiError> { Ok((vec![tokenize(engine, &req.model, &messages)?], ChatWire)) };
    generate(&state, deployment, head, started, max_tokens, generation, prepare).instrument(span).await
}

/// Chat's shape: `chat.completion` bodies and `chat.completion.chunk`s that open with the role.
struct ChatWire;

/// The `object` of streamed chunks (a body's is `chat.completion`).
const CHUNK_OBJECT: &str = "chat.completion.chunk";

impl ChatWire {
    fn delta(
        head: &Head,
        index: usize,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<FinishReason>,
    ) -> String {
        let choice = ChunkChoice { index, delta, logprobs, finish_reason: finish.map(FinishReason::as_str) };
        head.chunk(CHUNK_OBJECT, vec![choice], None)
    }

    fn logprobs(tokens: &[TokenLogprob]) -> ChatLogprobs {
        let content = tokens
            .iter()
            .map(|t| ChatTokenLogprob {
                token: token_text(&t.bytes),
                logprob: finite_logprob(t.logprob),
                bytes: t.bytes.clone(),
                top_logprobs: t
                    .top
                    .iter()
                    .map(|(bytes, logprob)| TopLogprob {
                        token: token_text(bytes),
                        logprob: finite_logprob(*logprob),
                        bytes: bytes.clone(),
                    })
                    .collect(),
            })
            .collect();
        ChatLogprobs { content, refusal: None }
    }
}

impl Wire for ChatWire {
    const PROMPT_PARAM: &'static str = "messages";

    fn opening(&self, head: &Head, index: usize) -> Option<String> {
        Some(Self::delta(head, index, Delta { role: Some("assistant"), content: Some(String::new()) }, None, None))
    }

    fn text(&self, head: &Head, index: usize, text: String, logprobs: Option<&[TokenLogprob]>) -> String {
        Self::delta(head, index, Delta { role: None, content: Some(text) }, logprobs.map(Self::logprobs), None)
    }

    fn finish(&self, head: &Head, index: usize, reason: FinishReason) -> String {
        Self::delta(head, index, Delta::default(), None, Some(reason))
    }

    fn usage(&self, head: &Head, usage: Usage) -> String {
        head.chunk::<ChunkChoice>(CHUNK_OBJECT, vec![], Some(usage))
    }

    fn body(&self, head: &Head, answers: Vec<Answer>, usage: Usage) -> Response {
        let choices = answers
            .into_iter()
            .enumerate()
            .map(|(index, a)| Choice {
                index,
                message: ResponseMessage { role: "assistant", content: a.text, refusal: None },
                logprobs: a.logprobs.as_deref().map(Self::logprobs),
                finish_reason: a.reason.as_str(),
            })
            .collect();
        axum::Json(ChatCompletion {
            id: head.id.clone(),
            object: "chat.completion",
            created: head.created,
            model: head.model.clone(),
            system_fingerprint: Some(crate::SYSTEM_FINGERPRINT.to_string()),
            choices,
            usage,
        })
        .into_response()
    }
}
