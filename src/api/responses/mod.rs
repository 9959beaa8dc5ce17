//! `POST /v1/responses`, OpenAI's Responses API: check the request, turn `instructions` and `input`
//! into the chat template's messages (`input.rs`), and hand the prompt to the generation chat uses
//! (`generation.rs`: the same engine, limits, usage accounting and metrics), with tools and
//! `text.format` enforced as chat's are, in the Responses API's own shape (`wire.rs`).
//!
//! Nothing is stored: a response cannot be fetched again or continued by id.

pub(crate) mod input;
pub mod types;
mod wire;

use super::chat::{schema_grammar, tokenize};
use super::generation::{check_max_tokens, check_sampling, generate, Constrained, Generation, Head, SamplingFields};
use super::json::{from_value, AppJson};
use super::openai::{FunctionDefinition, ResponseFormatType};
use super::tools::{Choice, ToolRequest, ToolUse};
use super::unsupported::{none, refuse, refuse_in, Refusal};
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::engine::grammar::Grammar;
use crate::engine::Engine;
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use std::time::Instant;
use tracing::{field, Instrument};
use types::*;
use wire::{new_id, ResponsesWire};

/// OpenAI's limits on `metadata`.
const METADATA_PAIRS: usize = 16;
const METADATA_KEY_CHARS: usize = 64;
const METADATA_VALUE_CHARS: usize = 512;

/// A request checked, before it meets a model.
struct Checked {
    conversation: input::Conversation,
    max_tokens: Option<usize>,
    generation: Generation,
    tools: Option<ToolRequest>,
    /// What `text.format` asks the answer to be.
    text_grammar: Option<Constrained>,
    settings: Settings,
}

fn bad<T>(message: String, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

/// The Responses API's fields that Wick knows and does not serve, with the values that ask for
/// nothing it lacks.
fn refusals(req: &ResponseRequest) -> Vec<Refusal<'_>> {
    const STATELESS: &str = "it stores no responses or conversations; send the whole conversation in 'input'.";
    let field = |param, value, harmless, why| Refusal { param, value, harmless, why };
    vec![
        field(
            "store",
            &req.store,
            |v| *v == false,
            "it stores no responses ('store' false is accepted, and leaving it out means the same here).",
        ),
        field("background", &req.background, |v| *v == false, "it answers in the foreground only."),
        field("background_options", &req.background_options, none, "it answers in the foreground only."),
        field("previous_response_id", &req.previous_response_id, none, STATELESS),
        field("conversation", &req.conversation, none, STATELESS),
        field("prompt", &req.prompt, none, "it keeps no prompt templates."),
        field("include", &req.include, |v| *v == json!([]), "it has nothing more to include in a response."),
        field(
            "top_logprobs",
            &req.top_logprobs,
            none,
            "log-probabilities are served on /v1/chat/completions, not here.",
        ),
        field("reasoning", &req.reasoning, asks_no_reasoning, "its models have no reasoning setting."),
        field(
            "truncation",
            &req.truncation,
            |v| v == "disabled",
            "it does not cut the input ('disabled' is accepted: an input over the context is a 400).",
        ),
        field(
            "service_tier",
            &req.service_tier,
            |v| v == "auto" || v == "default",
            "it has one service tier ('auto' and 'default' are accepted).",
        ),
        field(
            "prompt_cache_retention",
            &req.prompt_cache_retention,
            |v| v == "in_memory",
            "its prefix cache is in memory only.",
        ),
        field("prompt_cache_options", &req.prompt_cache_options, none, "its prefix cache takes no options."),
        field("context_management", &req.context_management, |v| *v == json!([]), "it does not compact the context."),
        field("moderation", &req.moderation, none, "it does not moderate."),
        field("access_programs", &req.access_programs, none, "it has no access programs."),
        field("image", &req.image, none, "its models take text only."),
    ]
}

/// `reasoning` with nothing set, or with effort `none`: what a model without reasoning does anyway.
fn asks_no_reasoning(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.iter().all(|(k, v)| v.is_null() || (k == "effort" && v == "none")))
}

fn check(req: &ResponseRequest) -> Result<Checked, ApiError> {
    refuse(&refusals(req))?;
    let conversation = input::conversation(req.instructions.as_deref(), req.input.as_ref())?;
    let max_tokens = check_max_tokens(req.max_output_tokens, "max_output_tokens")?;
    if req.max_tool_calls.is_some_and(|n| n < 0) {
        return bad("Invalid 'max_tool_calls': it must be at least 0.".into(), "max_tool_calls");
    }
    if req.stream_options.is_some() && req.stream != Some(true) {
        return bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
            "stream_options",
        );
    }
    let generation = check_sampling(SamplingFields {
        n: None,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        min_tokens: req.min_tokens,
        ignore_eos: req.ignore_eos,
        max_tokens,
        logprobs: None,
        presence_penalty: None,
        frequency_penalty: None,
        seed: None,
        stop: None,
        logit_bias: None,
        stream: req.stream,
        stream_options: None,
    })?;
    let metadata = req.metadata.clone().unwrap_or_default();
    if metadata.len() > METADATA_PAIRS
        || metadata
            .iter()
            .any(|(k, v)| k.chars().count() > METADATA_KEY_CHARS || v.chars().count() > METADATA_VALUE_CHARS)
    {
        return bad(
            format!("Invalid 'metadata': at most {METADATA_PAIRS} pairs, keys of at most {METADATA_KEY_CHARS} characters and values of at most {METADATA_VALUE_CHARS}."),
            "metadata",
        );
    }
    let text = req.text.as_ref();
    if let Some(text) = text {
        let verbosity = Refusal {
            param: "verbosity",
            value: &text.verbosity,
            harmless: none,
            why: "its models have no verbosity setting.",
        };
        refuse_in("text", &[verbosity])?;
    }
    let format = text.and_then(|t| t.format.clone());
    let text_grammar = check_format(format.as_ref())?;
    let (functions, echoed_tools) = check_tools(req.tools.as_deref().unwrap_or_default())?;
    let choice = req.tool_choice.as_ref().map(check_choice).transpose()?;
    let tools = if functions.is_empty() {
        // Without tools, a choice that needs none is what happens anyway.
        if matches!(choice, Some(Choice::Required | Choice::Named(_))) {
            return bad("'tool_choice' asks for a call, and there are no 'tools'.".into(), "tool_choice");
        }
        None
    } else {
        let at = |i| format!("tools[{i}]");
        Some(ToolRequest::new(functions, &at, choice, "tool_choice.name", req.parallel_tool_calls)?)
    };
    if text_grammar.is_some() && tools.as_ref().is_some_and(|t| t.choice != Choice::None) {
        return bad(
            "'text.format' json_object or json_schema together with 'tools' is not supported by this server: \
             ask for one grammar at a time."
                .into(),
            "text.format",
        );
    }
    let settings = Settings {
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        max_tool_calls: req.max_tool_calls,
        temperature: generation.sampling.temperature,
        top_p: generation.sampling.top_p,
        tools: echoed_tools,
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        text: EchoedText {
            format: format.unwrap_or(TextFormat {
                kind: ResponseFormatType::Text,
                name: None,
                schema: None,
                description: None,
                strict: None,
            }),
        },
        metadata,
        user: req.user.clone(),
        safety_identifier: req.safety_identifier.clone(),
        prompt_cache_key: req.prompt_cache_key.clone(),
        store: false,
        background: false,
        truncation: "disabled",
        service_tier: "default",
    };
    Ok(Checked { conversation, max_tokens, generation, tools, text_grammar, settings })
}

/// The grammar `text.format` asks for: none for text.
fn check_format(format: Option<&TextFormat>) -> Result<Option<Constrained>, ApiError> {
    let Some(f) = format else { return Ok(None) };
    let schema_fields = [
        ("name", f.name.is_some()),
        ("schema", f.schema.is_some()),
        ("description", f.description.is_some()),
        ("strict", f.strict.is_some()),
    ];
    if f.kind != ResponseFormatType::JsonSchema {
        if let Some((field, _)) = schema_fields.iter().find(|(_, given)| *given) {
            return bad(
                format!("'text.format.{field}' goes with 'text.format.type' 'json_schema' only."),
                &format!("text.format.{field}"),
            );
        }
    }
    match f.kind {
        ResponseFormatType::Text => Ok(None),
        ResponseFormatType::JsonObject => Ok(Some(Constrained { grammar: Grammar::JsonObject, param: "text.format" })),
        ResponseFormatType::JsonSchema => {
            let Some(name) = &f.name else {
                return bad("Missing required parameter: 'text.format.name'.".into(), "text.format.name");
            };
            schema_grammar(name, f.schema.as_ref(), "text.format.name", "text.format.schema").map(Some)
        }
    }
}

/// The function tools, as chat's functions and as the response echoes them. Each other type is
/// refused by its `type`.
fn check_tools(tools: &[Value]) -> Result<(Vec<FunctionDefinition>, Vec<EchoedTool>), ApiError> {
    let mut functions = Vec::with_capacity(tools.len());
    let mut echoed = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        match tool.get("type") {
            Some(Value::String(kind)) if kind == "function" => {}
            Some(Value::String(kind)) => {
                return bad(
                    format!("Invalid '{at}.type': '{kind}'. Wick serves function tools only."),
                    &format!("{at}.type"),
                )
            }
            _ => return bad(format!("Missing required parameter: '{at}.type'."), &format!("{at}.type")),
        }
        let t: FunctionTool = from_value(tool.clone(), &at)?;
        let field = |param, value, harmless, why| Refusal { param, value, harmless, why };
        refuse_in(
            &at,
            &[
                field(
                    "allowed_callers",
                    &t.allowed_callers,
                    |v| *v == json!(["direct"]),
                    "the model calls functions itself, never a program.",
                ),
                field(
                    "defer_loading",
                    &t.defer_loading,
                    |v| *v == false,
                    "every tool is shown to the model from the start.",
                ),
                field("output_schema", &t.output_schema, none, "it has no use for a function's output schema."),
                field("async", &t.asynchronous, |v| *v == false, "its calls are not asynchronous."),
            ],
        )?;
        let function = FunctionDefinition {
            name: t.name,
            description: t.description,
            parameters: t.parameters,
            // The Responses API's functions are strict unless told otherwise (chat's are not).
            strict: Some(t.strict.unwrap_or(true)),
        };
        echoed.push(EchoedTool { kind: "function", function: function.clone() });
        functions.push(function);
    }
    Ok((functions, echoed))
}

/// `tool_choice`: "none", "auto", "required" or `{"type": "function", "name"}`.
fn check_choice(v: &Value) -> Result<Choice, ApiError> {
    match v {
        Value::String(s) => Choice::of_option(s, "tool_choice"),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => match o.get("name") {
                Some(Value::String(name)) if o.len() == 2 => Ok(Choice::Named(name.clone())),
                Some(Value::String(_)) => {
                    bad("A named 'tool_choice' takes 'type' and 'name' only.".into(), "tool_choice")
                }
                _ => bad("Missing required parameter: 'tool_choice.name'.".into(), "tool_choice.name"),
            },
            Some(other) => bad(
                format!(
                    "'tool_choice' of type '{other}' is not supported by this server: it serves function tools only."
                ),
                "tool_choice.type",
            ),
            None => bad(
                "Invalid 'tool_choice': use 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ..}."
                    .into(),
                "tool_choice",
            ),
        },
        _ => bad(
            "Invalid 'tool_choice': use 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ..}.".into(),
            "tool_choice",
        ),
    }
}

/// `POST /v1/responses`
#[utoipa::path(post, path = "/v1/responses", operation_id = "createResponse", tag = "inference", security(("inference" = [])),
    request_body(content = ResponseRequest, examples(
        ("plain" = (value = json!({"model": "smollm2-135m-instruct", "input": "Say hi.", "max_output_tokens": 8}))),
        ("streamed" = (value = json!({"model": "smollm2-135m-instruct", "instructions": "Be brief.", "input": [{"role": "user", "content": "Say hi."}], "max_output_tokens": 8, "stream": true}))),
        ("tool_call" = (value = json!({"model": "smollm2-135m-instruct", "input": "Weather in Paris?", "max_output_tokens": 32, "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}], "tool_choice": "required"}))),
    )),
    responses(
        (status = 200, description = "The response, or with `stream: true` its typed events (`event:` names the type)",
            content((ResponseObject = "application/json"), (crate::api::openapi::StreamEvent = "text/event-stream"))),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn responses(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<ResponseRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let checked = check(&req)?;
    let deployment = super::deployment_of_kind(&state, &caller, &req.model, crate::loader::ModelKind::Text)?;
    let head = Head { id: new_id("resp"), model: req.model.clone(), created: crate::unix_now(), include_usage: false };
    let span = tracing::info_span!(
        "responses",
        request_id = %head.id,
        model = %req.model,
        user = req.user.as_deref(),
        safety_identifier = req.safety_identifier.as_deref(),
        prompt_tokens = field::Empty,
        completion_tokens = field::Empty,
        ttft_ms = field::Empty,
        duration_ms = field::Empty,
    );
    let Checked { conversation, max_tokens, generation, tools, text_grammar, settings } = checked;
    let stream = generation.stream;
    let prepare = |engine: &Engine| -> Result<_, ApiError> {
        let template_format = engine.template.as_ref().and_then(|t| t.tool_format);
        let tool_use = tools.as_ref().map(|t| t.plan(template_format)).transpose()?;
        let template_tools = tool_use.as_ref().and_then(|u| u.template_tools.as_deref());
        let params = &conversation.content_params;
        let content_param = |i: usize| params[i].clone();
        let prompt = tokenize(engine, &req.model, &conversation.messages, template_tools, "input", &content_param)?;
        let (grammar, reader) = match tool_use {
            Some(ToolUse { grammar, reader, .. }) => (grammar.or(text_grammar), reader),
            None => (text_grammar, None),
        };
        Ok((vec![prompt], ResponsesWire::new(reader, settings, stream), grammar))
    };
    generate(&state, deployment, head, started, max_tokens, generation, prepare).instrument(span).await
}
