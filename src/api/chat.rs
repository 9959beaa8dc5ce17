//! `POST /v1/chat/completions`: validate, render the chat template, tokenize, and hand the prompt to
//! the generation that chat shares with `/v1/completions` (`generation.rs`), in chat's wire shape.

use super::generation::{
    check_max_tokens, check_sampling, finite_logprob, generate, token_text, Answer, Chunk, Constrained, Generation,
    Head, SamplingFields, Wire,
};
use super::json::AppJson;
use super::openai::*;
use super::tools::{self, ToolReader, ToolRequest, ToolUse};
use super::unsupported::{none, refuse, refuse_in, Refusal};
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::engine::grammar::Grammar;
use crate::engine::{Engine, FinishReason, TokenLogprob};
use crate::loader::chat_template::TemplateMessage;
use crate::tool_calls::{CallParser, Piece};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::sync::Mutex;
use std::time::Instant;
use tracing::{field, Instrument};

/// OpenAI's limit on `top_logprobs`.
const MAX_TOP_LOGPROBS: i64 = 20;

/// A request checked against OpenAI's ranges, before it meets a model.
struct Checked {
    messages: Vec<TemplateMessage>,
    max_tokens: Option<usize>,
    generation: Generation,
    tools: Option<ToolRequest>,
    /// What `response_format` asks the answer to be.
    response_grammar: Option<Constrained>,
}

/// Chat's fields that Wick knows and does not serve, with the values that ask for nothing it lacks.
fn refusals(req: &ChatCompletionRequest) -> Vec<Refusal<'_>> {
    const FUNCTIONS: &str = "the deprecated functions API is not served; use 'tools' and 'tool_choice'.";
    const TEXT_ONLY: &str = "its chat models answer in text only.";
    let field = |param, value, harmless, why| Refusal { param, value, harmless, why };
    vec![
        field("functions", &req.functions, none, FUNCTIONS),
        field("function_call", &req.function_call, none, FUNCTIONS),
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
fn message_refusals(m: &ChatMessage) -> [Refusal<'_>; 4] {
    let field = |param, value, why| Refusal { param, value, harmless: none, why };
    [
        field("name", &m.name, "the model's chat template has no place for a participant's name."),
        field("function_call", &m.function_call, "the deprecated functions API is not served; use 'tool_calls'."),
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
        let tool_calls = match (&m.tool_calls, role) {
            (None, _) => None,
            (Some(calls), "assistant") => Some(template_tool_calls(calls, i)?),
            (Some(_), _) => {
                return bad("Only assistant messages carry 'tool_calls'.".into(), &format!("messages[{i}].tool_calls"))
            }
        };
        match (&m.tool_call_id, role) {
            (None, "tool") => {
                return bad(
                    "Missing required parameter: 'tool_call_id'.".into(),
                    &format!("messages[{i}].tool_call_id"),
                )
            }
            (Some(_), r) if r != "tool" => {
                return bad("Only tool messages carry 'tool_call_id'.".into(), &format!("messages[{i}].tool_call_id"))
            }
            _ => {}
        }
        messages.push(TemplateMessage {
            role: role.to_string(),
            content,
            tool_calls,
            tool_call_id: m.tool_call_id.clone(),
        });
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
    let response_grammar = check_response_format(req.response_format.as_ref())?;
    let tools = tools::check(req)?;
    if response_grammar.is_some() && tools.as_ref().is_some_and(|t| t.choice != tools::Choice::None) {
        return bad(
            "'response_format' json_object or json_schema together with 'tools' is not supported by this server: \
             ask for one grammar at a time."
                .into(),
            "response_format",
        );
    }
    Ok(Checked { messages, max_tokens, generation, tools, response_grammar })
}

/// An assistant's earlier calls as Hugging Face's templates read them.
fn template_tool_calls(calls: &[MessageToolCall], i: usize) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let (Some(f), "function", None) = (&call.function, call.kind.as_str(), &call.custom) else {
            return Err(ApiError::invalid_request(
                "Wick serves function tool calls only: 'type' 'function' with a 'function'.",
                Some(&format!("{param}.type")),
            ));
        };
        out.push(template_call(&call.id, &f.name, &f.arguments, &format!("{param}.function.arguments"))?);
    }
    Ok(out)
}

/// One earlier call as Hugging Face's templates read it: the arguments as a JSON object rather than
/// OpenAI's string (`arguments_param` names that string, for the error when it is not JSON).
pub(super) fn template_call(
    id: &str,
    name: &str,
    arguments: &str,
    arguments_param: &str,
) -> Result<serde_json::Value, ApiError> {
    let arguments: serde_json::Value = serde_json::from_str(arguments).map_err(|e| {
        ApiError::invalid_request(format!("The call's 'arguments' are not JSON: {e}."), Some(arguments_param))
    })?;
    Ok(serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
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
            return schema_grammar(
                &json_schema.name,
                json_schema.schema.as_ref(),
                "response_format.json_schema.name",
                "response_format.json_schema.schema",
            )
            .map(Some)
        }
    };
    Ok(Some(Constrained { grammar, param }))
}

/// The grammar of a JSON Schema format: its `name` checked (`name_param` names it) and its `schema`
/// (`schema_param`) required. Chat's `response_format` and the Responses API's `text.format` share it.
pub(super) fn schema_grammar(
    name: &str,
    schema: Option<&serde_json::Value>,
    name_param: &'static str,
    schema_param: &'static str,
) -> Result<Constrained, ApiError> {
    let bad = |msg: String, param: &str| Err(ApiError::invalid_request(msg, Some(param)));
    if !tools::is_valid_name(name) {
        return bad(
            format!("Invalid '{name_param}': '{name}'. It must be 1 to 64 letters, digits, underscores or dashes."),
            name_param,
        );
    }
    match schema {
        Some(schema @ (serde_json::Value::Object(_) | serde_json::Value::Bool(_))) => {
            Ok(Constrained { grammar: Grammar::JsonSchema(schema.clone()), param: schema_param })
        }
        Some(_) => bad(format!("'{schema_param}' must be a JSON Schema object."), schema_param),
        None => bad(format!("'{schema_param}' is required: Wick enforces the schema it is given."), schema_param),
    }
}

/// The rendered conversation's token ids. A model without a chat template cannot take messages.
/// `prompt_param` is the request field that holds the conversation (chat's `messages`), and
/// `content_param(i)` the field that holds message `i`'s content, for the errors that name them.
pub(super) fn tokenize(
    engine: &Engine,
    model: &str,
    messages: &[TemplateMessage],
    tools: Option<&[serde_json::Value]>,
    prompt_param: &str,
    content_param: &dyn Fn(usize) -> String,
) -> Result<Vec<u32>, ApiError> {
    let template = engine.template.as_ref().ok_or_else(|| {
        ApiError::invalid_request(
            format!(
                "The model `{model}` has no chat template, so it cannot take messages: send it a prompt on \
                 /v1/completions, or give its deployment a `chat_template`."
            ),
            Some("model"),
        )
    })?;
    let rendered =
        template.render(messages, tools, true).map_err(|e| ApiError::invalid_request(e, Some(prompt_param)))?;
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
                        Some(&content_param(i)),
                    ));
                }
            }
            Vec::new()
        }
    };
    engine.tokenizer.encode_chat(&rendered.text, &content).map_err(internal)
}

/// `POST /v1/chat/completions`
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "createChatCompletion", tag = "inference", security(("inference" = [])), request_body(content = ChatCompletionRequest, examples(
        ("plain" = (value = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}))),
        ("streamed" = (value = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}], "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2}))),
        ("json_schema" = (value = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "A city?"}], "max_tokens": 24, "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}}))),
        ("tool_call" = (value = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 32, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], "tool_choice": "required"}))),
    )), responses(
        (status = 200, description = "The completion, or with `stream: true` its chunks as server-sent events",
            content((crate::api::openai::ChatCompletion = "application/json"), (crate::api::openapi::StreamEvent = "text/event-stream"))),
        crate::api::openapi::OpenAiErrors,
))]
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
    let Checked { messages, max_tokens, generation, tools, response_grammar } = checked;
    let choices = generation.n;
    let prepare = |engine: &Engine| -> Result<_, ApiError> {
        let template_format = engine.template.as_ref().and_then(|t| t.tool_format);
        let tool_use = tools.as_ref().map(|t| t.plan(template_format)).transpose()?;
        let template_tools = tool_use.as_ref().and_then(|u| u.template_tools.as_deref());
        let content_param = |i| format!("messages[{i}].content");
        let prompt = tokenize(engine, &req.model, &messages, template_tools, "messages", &content_param)?;
        let (grammar, reader) = match tool_use {
            Some(ToolUse { grammar, reader, .. }) => (grammar.or(response_grammar), reader),
            None => (response_grammar, None),
        };
        Ok((vec![prompt], ChatWire::new(reader, choices), grammar))
    };
    generate(&state, deployment, head, started, max_tokens, generation, prepare).instrument(span).await
}

/// Chat's shape: `chat.completion` bodies and `chat.completion.chunk`s that open with the role. With
/// tools, each choice's text is read for calls as it streams (`tool_calls::CallParser`).
struct ChatWire {
    reader: Option<ToolReader>,
    streams: Mutex<Vec<StreamedCalls>>,
}

/// A streamed choice's calls so far.
struct StreamedCalls {
    parser: CallParser,
    calls: usize,
    /// Log-probabilities of tokens whose text is held back (inside a call), for the next chunk.
    logprobs: Vec<TokenLogprob>,
}

/// The `object` of streamed chunks (a body's is `chat.completion`).
const CHUNK_OBJECT: &str = "chat.completion.chunk";

/// OpenAI's finish reason: a choice that stopped after calling tools finished with `tool_calls`.
fn finish_reason(reason: FinishReason, calls: usize) -> &'static str {
    match reason {
        FinishReason::Stop if calls > 0 => "tool_calls",
        other => other.as_str(),
    }
}

impl ChatWire {
    fn new(reader: Option<ToolReader>, choices: usize) -> Self {
        let streams = match reader {
            Some(r) => (0..choices)
                .map(|_| StreamedCalls { parser: CallParser::new(r.format), calls: 0, logprobs: Vec::new() })
                .collect(),
            None => Vec::new(),
        };
        Self { reader, streams: Mutex::new(streams) }
    }

    fn delta(
        head: &Head,
        index: usize,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<&'static str>,
    ) -> Chunk {
        let choice = ChunkChoice { index, delta, logprobs, finish_reason: finish };
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

    /// The chunks for pieces read from choice `index`'s stream: text as content, each call as its
    /// id, type and name, then its arguments. Held-back log-probabilities ride on the first chunk.
    fn pieces(
        &self,
        head: &Head,
        index: usize,
        pieces: Vec<Piece>,
        stream: &mut StreamedCalls,
        logprobs: bool,
    ) -> Vec<Chunk> {
        let parallel = self.reader.is_some_and(|r| r.parallel);
        let mut chunks = Vec::new();
        let take_logprobs =
            |stream: &mut StreamedCalls| logprobs.then(|| Self::logprobs(&std::mem::take(&mut stream.logprobs)));
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    let lp = take_logprobs(stream);
                    chunks.push(Self::delta(
                        head,
                        index,
                        Delta { content: Some(text), ..Default::default() },
                        lp,
                        None,
                    ));
                }
                Piece::Call(_) if !parallel && stream.calls > 0 => {}
                Piece::Call(call) => {
                    let call = tools::response_call(call);
                    let opening = ToolCallDelta {
                        index: stream.calls,
                        id: Some(call.id),
                        kind: Some("function"),
                        function: FunctionCallDelta { name: Some(call.function.name), arguments: String::new() },
                    };
                    let arguments = ToolCallDelta {
                        index: stream.calls,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: call.function.arguments },
                    };
                    stream.calls += 1;
                    let lp = take_logprobs(stream);
                    for (delta, lp) in [(opening, lp), (arguments, None)] {
                        let delta = Delta { tool_calls: Some(vec![delta]), ..Default::default() };
                        chunks.push(Self::delta(head, index, delta, lp, None));
                    }
                }
            }
        }
        chunks
    }
}

impl Wire for ChatWire {
    const PROMPT_PARAM: &'static str = "messages";

    fn opening(&self, head: &Head, index: usize) -> Option<Chunk> {
        let delta = Delta { role: Some("assistant"), content: Some(String::new()), ..Default::default() };
        Some(Self::delta(head, index, delta, None, None))
    }

    fn text(&self, head: &Head, index: usize, text: String, logprobs: Option<&[TokenLogprob]>) -> Vec<Chunk> {
        if self.reader.is_none() {
            let delta = Delta { content: Some(text), ..Default::default() };
            return vec![Self::delta(head, index, delta, logprobs.map(Self::logprobs), None)];
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let stream = &mut streams[index];
        stream.logprobs.extend(logprobs.unwrap_or_default().iter().cloned());
        let pieces = stream.parser.push(&text);
        self.pieces(head, index, pieces, stream, logprobs.is_some())
    }

    fn finish(&self, head: &Head, index: usize, reason: FinishReason) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut calls = 0;
        if self.reader.is_some() {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            let stream = &mut streams[index];
            let pieces = stream.parser.finish();
            let logprobs = !stream.logprobs.is_empty();
            chunks = self.pieces(head, index, pieces, stream, logprobs);
            calls = stream.calls;
        }
        chunks.push(Self::delta(head, index, Delta::default(), None, Some(finish_reason(reason, calls))));
        chunks
    }

    fn end(&self, head: &Head, usage: Usage) -> Vec<Chunk> {
        head.end::<ChunkChoice>(CHUNK_OBJECT, usage)
    }

    fn body(&self, head: &Head, answers: Vec<Answer>, usage: Usage) -> Response {
        let choices = answers
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                let (content, tool_calls) = match self.reader {
                    Some(reader) => {
                        let read = reader.read(&a.text);
                        (read.content, (!read.calls.is_empty()).then_some(read.calls))
                    }
                    None => (Some(a.text), None),
                };
                let calls = tool_calls.as_ref().map_or(0, Vec::len);
                Choice {
                    index,
                    message: ResponseMessage { role: "assistant", content, refusal: None, tool_calls },
                    logprobs: a.logprobs.as_deref().map(Self::logprobs),
                    finish_reason: finish_reason(a.reason, calls),
                }
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
