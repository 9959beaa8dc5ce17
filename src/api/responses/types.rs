//! The Responses API's wire types (as the official Python client types them: `openai.types.responses`).
//!
//! The request lists every field of the client's `ResponseCreateParams` and refuses the rest, as
//! `openai.rs` does for the other endpoints. `input` and `tools` hold items of many kinds, told apart
//! by their `type`: they are read by hand, item by item (`input.rs`, `mod.rs`), so that an error names
//! the item's place (`input[2].content[0].text`) rather than "did not match any variant".

use crate::api::openai::{FunctionDefinition, ResponseFormatType, Usage};
use crate::api::unsupported::Unsupported;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /v1/responses`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseRequest {
    pub model: String,
    /// A string (one user message) or a list of items.
    #[schema(schema_with = crate::api::openapi::responses_input)]
    pub input: Option<Value>,
    /// A system message before the input.
    pub instructions: Option<String>,
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<i64>,
    /// A limit on calls of OpenAI's built-in tools, which Wick has none of: any count is kept.
    #[schema(minimum = 0)]
    pub max_tool_calls: Option<i64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    pub stream: Option<bool>,
    pub stream_options: Option<ResponseStreamOptions>,
    /// Function tools (`{"type": "function", "name", ...}`, flat); other types are refused by theirs.
    #[schema(schema_with = crate::api::openapi::responses_tools)]
    pub tools: Option<Vec<Value>>,
    #[schema(schema_with = crate::api::openapi::responses_tool_choice)]
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextConfig>,
    /// Echoed in the response.
    #[schema(schema_with = crate::api::openapi::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Identify the end user; recorded in the request's log line and echoed.
    pub user: Option<String>,
    pub safety_identifier: Option<String>,
    /// Needs no key: the prefix cache finds shared prefixes by their tokens. Echoed.
    pub prompt_cache_key: Option<String>,
    // The peers' extensions, as chat and completions take them (`SamplingFields`).
    #[schema(minimum = -1)]
    pub top_k: Option<i64>,
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f32>,
    #[schema(exclusive_minimum = 0)]
    pub repetition_penalty: Option<f32>,
    #[schema(minimum = 0)]
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    // Fields Wick knows and does not serve: each is refused by name when present, except for the
    // values that ask for nothing Wick lacks (`refusals` in mod.rs).
    #[schema(schema_with = crate::api::openapi::only_false)]
    pub store: Unsupported,
    #[schema(schema_with = crate::api::openapi::only_false)]
    pub background: Unsupported,
    #[schema(ignore)]
    pub background_options: Unsupported,
    #[schema(ignore)]
    pub previous_response_id: Unsupported,
    #[schema(ignore)]
    pub conversation: Unsupported,
    #[schema(ignore)]
    pub prompt: Unsupported,
    #[schema(schema_with = crate::api::openapi::nothing_included)]
    pub include: Unsupported,
    #[schema(ignore)]
    pub top_logprobs: Unsupported,
    #[schema(schema_with = crate::api::openapi::no_reasoning)]
    pub reasoning: Unsupported,
    #[schema(schema_with = crate::api::openapi::truncation)]
    pub truncation: Unsupported,
    #[schema(schema_with = crate::api::openapi::service_tier)]
    pub service_tier: Unsupported,
    #[schema(schema_with = crate::api::openapi::prompt_cache_retention)]
    pub prompt_cache_retention: Unsupported,
    #[schema(ignore)]
    pub prompt_cache_options: Unsupported,
    #[schema(ignore)]
    pub context_management: Unsupported,
    #[schema(ignore)]
    pub moderation: Unsupported,
    #[schema(ignore)]
    pub access_programs: Unsupported,
    #[schema(ignore)]
    pub image: Unsupported,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseStreamOptions {
    /// Whether delta events carry an `obfuscation` field to pad their size; Wick's never do.
    pub include_obfuscation: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub format: Option<TextFormat>,
    #[schema(ignore)]
    pub verbosity: Unsupported,
}

/// `text.format`: chat's `response_format` with the schema's fields flat beside `type`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatType,
    /// With `json_schema` only, as are the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::openapi::json_schema)]
    pub schema: Option<Value>,
    /// Labels the schema; not shown to the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Wick always enforces the schema, so `false` changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A function tool: chat's `function` object, flat beside `type`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::openapi::function_type)]
    pub kind: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    pub description: Option<String>,
    #[schema(schema_with = crate::api::openapi::json_schema)]
    pub parameters: Option<Value>,
    /// The Responses API's default is true: calls must follow `parameters` exactly.
    pub strict: Option<bool>,
    /// Harmless as `["direct"]`: the model calls functions itself, never from a program.
    #[schema(schema_with = crate::api::openapi::direct_callers)]
    pub allowed_callers: Unsupported,
    /// Harmless as false: every tool is shown to the model from the start.
    #[schema(schema_with = crate::api::openapi::only_false)]
    pub defer_loading: Unsupported,
    #[schema(ignore)]
    pub output_schema: Unsupported,
    /// Harmless as false.
    #[serde(rename = "async")]
    #[schema(schema_with = crate::api::openapi::only_false)]
    pub asynchronous: Unsupported,
}

/// What the response echoes of the request, as OpenAI's does.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub max_tool_calls: Option<i64>,
    pub temperature: f32,
    pub top_p: f32,
    pub tools: Vec<EchoedTool>,
    #[schema(schema_with = crate::api::openapi::responses_tool_choice)]
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text: EchoedText,
    pub metadata: BTreeMap<String, String>,
    pub user: Option<String>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
    /// Always false: Wick stores no responses.
    pub store: bool,
    pub background: bool,
    pub truncation: &'static str,
    pub service_tier: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EchoedTool {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub function: FunctionDefinition,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EchoedText {
    pub format: TextFormat,
}

/// The response: its body, and what the stream's `response.*` events carry.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseObject<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'static str,
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub model: &'a str,
    #[schema(value_type = Vec<OutputItem>)]
    pub output: &'a [OutputItem],
    pub usage: Option<ResponseUsage>,
    #[serde(flatten)]
    #[schema(value_type = Settings)]
    pub settings: &'a Settings,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

/// An item of the answer: a message, or a call of a function.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        role: &'static str,
        /// `in_progress`, `completed` or `incomplete`, as are a call's.
        status: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    pub annotations: Vec<Value>,
    pub logprobs: Vec<Value>,
}

impl Default for OutputText {
    fn default() -> Self {
        Self { kind: "output_text", text: String::new(), annotations: Vec::new(), logprobs: Vec::new() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

/// `cached_tokens` were found in the prefix cache, not computed.
#[derive(Debug, Serialize, ToSchema)]
pub struct InputTokensDetails {
    pub cached_tokens: usize,
}

/// Wick's models do not reason apart from their answer: always 0.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

impl From<Usage> for ResponseUsage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens: u.prompt_tokens_details.cached_tokens },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputTokensDetails { reasoning_tokens: 0 },
            total_tokens: u.total_tokens,
        }
    }
}

/// A streamed event: its type (also the SSE event's name), its place in the stream, and its body.
#[derive(Debug, Serialize)]
pub struct Event<T> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sequence_number: usize,
    #[serde(flatten)]
    pub body: T,
}

/// `response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`.
#[derive(Debug, Serialize)]
pub struct ResponseEvent<'a> {
    pub response: ResponseObject<'a>,
}

/// `response.output_item.added` and `.done`.
#[derive(Debug, Serialize)]
pub struct ItemEvent<'a> {
    pub output_index: usize,
    pub item: &'a OutputItem,
}

/// `response.content_part.added` and `.done`.
#[derive(Debug, Serialize)]
pub struct PartEvent<'a> {
    pub item_id: &'a str,
    pub output_index: usize,
    pub content_index: usize,
    pub part: &'a OutputText,
}

/// `response.output_text.delta` (with `delta`) and `.done` (with `text`).
#[derive(Debug, Serialize)]
pub struct TextEvent<'a> {
    pub item_id: &'a str,
    pub output_index: usize,
    pub content_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    pub logprobs: Vec<Value>,
}

/// `response.function_call_arguments.delta` (with `delta`) and `.done` (with `arguments`).
#[derive(Debug, Serialize)]
pub struct ArgumentsEvent<'a> {
    pub item_id: &'a str,
    pub output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a str>,
}

/// `error`: the stream broke off.
#[derive(Debug, Serialize)]
pub struct ErrorEvent<'a> {
    pub code: Option<&'a str>,
    pub message: &'a str,
    pub param: Option<&'a str>,
}
