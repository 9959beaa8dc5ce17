//! OpenAI's wire types for the endpoints Wick serves: the one copy in the codebase (the Responses
//! API's, which share little with these, are in `responses::types`).
//!
//! Request fields that may be `null` are `Option`s. Every request type lists every field of OpenAI's
//! (as the official Python client types them) and refuses the rest (`deny_unknown_fields`, answered
//! as OpenAI answers: "Unrecognized request argument supplied"). A field Wick knows but does not
//! serve is an `Unsupported`, refused by name when present (`api::unsupported`). The extensions that
//! peers take and benchmark harnesses send (`top_k`, `min_p`, `repetition_penalty`, `min_tokens`,
//! `ignore_eos`) are implemented.

use super::unsupported::Unsupported;
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    pub model: String,
    #[schema(schema_with = super::openapi::chat_messages)]
    pub messages: Vec<ChatMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<i64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<i64>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f32>,
    #[schema(schema_with = super::openapi::logit_bias)]
    pub logit_bias: Option<HashMap<String, f32>>,
    pub logprobs: Option<bool>,
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    /// Identify the end user; recorded in the request's log line.
    pub user: Option<String>,
    pub safety_identifier: Option<String>,
    /// A hint for OpenAI's prompt cache. Wick's prefix cache finds shared prefixes by their tokens,
    /// with no key needed, so the hint is satisfied without one.
    pub prompt_cache_key: Option<String>,
    // What peers (vLLM, llama.cpp) take beyond OpenAI's fields, as `CompletionRequest` does
    // (`SamplingFields` says what each does). Listed in each request, not flattened from one
    // struct: serde cannot refuse unknown fields beside a flattened one.
    /// 0 or -1: no cut.
    #[schema(minimum = -1)]
    pub top_k: Option<i64>,
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f32>,
    #[schema(exclusive_minimum = 0)]
    pub repetition_penalty: Option<f32>,
    #[schema(minimum = 0)]
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    // Fields Wick knows and does not serve (yet): each is refused by name when present, except
    // for the values that ask for nothing Wick lacks (`check` in chat.rs).
    pub tools: Option<Vec<Tool>>,
    /// "none", "auto", "required", or `{"type": "function", "function": {"name"}}`; checked by hand
    /// in `api::tools` so that each wrong shape gets its own message.
    #[schema(schema_with = super::openapi::tool_choice)]
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    #[schema(ignore)]
    pub functions: Unsupported,
    #[schema(ignore)]
    pub function_call: Unsupported,
    pub response_format: Option<ResponseFormat>,
    #[schema(ignore)]
    pub audio: Unsupported,
    #[schema(schema_with = super::openapi::modalities)]
    pub modalities: Unsupported,
    #[schema(ignore)]
    pub prediction: Unsupported,
    #[schema(ignore)]
    pub web_search_options: Unsupported,
    #[schema(ignore)]
    pub reasoning_effort: Unsupported,
    #[schema(ignore)]
    pub verbosity: Unsupported,
    #[schema(schema_with = super::openapi::only_false)]
    pub store: Unsupported,
    #[schema(ignore)]
    pub metadata: Unsupported,
    #[schema(schema_with = super::openapi::service_tier)]
    pub service_tier: Unsupported,
    #[schema(ignore)]
    pub moderation: Unsupported,
    #[schema(schema_with = super::openapi::prompt_cache_retention)]
    pub prompt_cache_retention: Unsupported,
    #[schema(ignore)]
    pub prompt_cache_options: Unsupported,
}

/// What the answer's content must be: text, any JSON object, or JSON valid for a schema. JSON is
/// enforced by grammar-constrained decoding (`engine::grammar`).
/// (A struct rather than an internally tagged enum, whose buffering would lose the path of an error
/// inside `json_schema`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatType,
    /// With `json_schema` only.
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatType {
    Text,
    JsonObject,
    JsonSchema,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// Labels the schema, as OpenAI requires; like `description`, it is not shown to the model.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    pub description: Option<String>,
    #[schema(schema_with = super::openapi::json_schema)]
    pub schema: Option<serde_json::Value>,
    /// Whether OpenAI enforces the schema exactly; Wick always does, so `false` changes nothing.
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    /// Whether stream chunks carry an obfuscation field to pad their size; Wick's never do.
    pub include_obfuscation: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

/// A message of any role; which fields a role takes is checked in `chat::check` (and stated per role
/// in the document, `openapi::chat_messages`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<MessageContent>,
    /// A participant's name: refused, since a chat template has no place for it.
    pub name: Unsupported,
    pub tool_calls: Option<Vec<MessageToolCall>>,
    pub tool_call_id: Option<String>,
    pub function_call: Unsupported,
    pub audio: Unsupported,
    pub refusal: Unsupported,
}

/// A tool the model may call. OpenAI's custom (free-text) tools are refused by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::function_type)]
    pub kind: String,
    pub function: Option<FunctionDefinition>,
    #[schema(ignore)]
    pub custom: Unsupported,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionDefinition {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema; a function without one takes no arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::json_schema)]
    pub parameters: Option<serde_json::Value>,
    /// Whether calls must follow `parameters` exactly (enforced by a grammar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A call in an earlier assistant message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageToolCall {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::function_type)]
    pub kind: String,
    pub function: Option<FunctionCall>,
    #[schema(ignore)]
    pub custom: Unsupported,
}

#[derive(Debug, Deserialize, Serialize, Clone, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    pub name: String,
    /// The JSON text of the arguments object.
    pub arguments: String,
}

/// A call in an answer, or its first streamed piece.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

/// A streamed piece of a call: the id, type and name come first, then the arguments.
#[derive(Debug, Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Serialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A string or a list of parts, told apart by hand rather than by `#[serde(untagged)]`, whose one
/// error ("did not match any variant") would hide which field of which part was wrong.
impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self::Text(s)),
            parts @ serde_json::Value::Array(_) => {
                serde_json::from_value(parts).map(Self::Parts).map_err(D::Error::custom)
            }
            other => Err(D::Error::custom(format!("expected a string or an array of content parts, got {other}"))),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::text_type)]
    pub kind: String,
    pub text: Option<String>,
    /// The other kinds' payloads, present so that a part is refused by its kind (`check`).
    #[schema(ignore)]
    pub image_url: Unsupported,
    #[schema(ignore)]
    pub input_audio: Unsupported,
    #[schema(ignore)]
    pub file: Unsupported,
    #[schema(ignore)]
    pub refusal: Unsupported,
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// OpenAI's breakdown of the prompt: `cached_tokens` were found in the prefix cache, not computed.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Default, ToSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    pub index: usize,
    pub message: ResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseMessage {
    pub role: &'static str,
    /// Null when the answer is tool calls alone.
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ResponseToolCall>>,
}

/// A streamed chunk of either endpoint: `chat.completion.chunk` with `ChunkChoice`s, or
/// `text_completion` with `TextChoice`s.
#[derive(Debug, Serialize)]
pub struct StreamChunk<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub system_fingerprint: Option<&'a str>,
    pub choices: Vec<C>,
    /// Present (as null until the last chunk) only when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize, Default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// `POST /v1/completions`: OpenAI's legacy Completions API, for base models and raw prompts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<i64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    /// The peers' extensions, as in `ChatCompletionRequest`.
    #[schema(minimum = -1)]
    pub top_k: Option<i64>,
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f32>,
    #[schema(exclusive_minimum = 0)]
    pub repetition_penalty: Option<f32>,
    #[schema(minimum = 0)]
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    #[schema(minimum = 1, maximum = 128)]
    pub n: Option<i64>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f32>,
    #[schema(schema_with = super::openapi::logit_bias)]
    pub logit_bias: Option<HashMap<String, f32>>,
    pub user: Option<String>,
    /// Whether the prompt's text comes before the completion in `text`.
    pub echo: Option<bool>,
    /// Refused unless absent, 1 or equal to `n`: Wick does not rank candidates.
    #[schema(minimum = 1, maximum = 128)]
    pub best_of: Option<i64>,
    /// How many of the likeliest tokens to report beside each sampled one's log-probability (0 to 5).
    #[schema(minimum = 0, maximum = 5)]
    pub logprobs: Option<i64>,
    /// Refused when present: insertion needs a fill-in-the-middle model.
    #[schema(ignore)]
    pub suffix: Unsupported,
}

/// A completion prompt in each shape OpenAI takes: one text, several, one list of token ids, or
/// several such lists.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    /// Signed, so that a negative id is refused as outside the vocabulary rather than as a type error.
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TextCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<TextChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TextChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    /// Null in a streamed chunk until the choice's last one.
    pub finish_reason: Option<&'static str>,
}

/// A choice's (or a chunk's) log-probabilities in chat's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// The legacy Completions API's log-probabilities: one entry per token in each list.
#[derive(Debug, Serialize, Default, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<TokenMap>,
    /// Where each token starts in the choice's `text`, in characters (the echoed prompt included).
    pub text_offset: Vec<usize>,
}

/// Tokens and their log-probabilities as one JSON object, likeliest first.
#[derive(Debug, ToSchema)]
#[schema(value_type = HashMap<String, f32>)]
pub struct TokenMap(pub Vec<(String, f32)>);

impl Serialize for TokenMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(token, logprob)| (token, logprob)))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// What the deployment serves (vllm bench serve reads `data[0].root`).
    pub root: String,
    pub parent: Option<String>,
    /// Wick's own: the deployment's lifecycle state (Standby, Loading, Running, Unloading).
    pub status: &'static str,
}

/// `POST /v1/audio/speech`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeechRequest {
    pub model: String,
    #[schema(min_length = 1, max_length = 4096)]
    pub input: String,
    pub voice: String,
    #[schema(schema_with = super::openapi::audio_format)]
    pub response_format: Option<String>,
    #[schema(minimum = 0.25, maximum = 4.0)]
    pub speed: Option<f64>,
    /// `audio` (a chunked body, the default) or `sse`.
    #[schema(schema_with = super::openapi::stream_format)]
    pub stream_format: Option<String>,
    /// gpt-4o-mini-tts's style instructions: refused unless empty, since each voice here has one style.
    #[schema(max_length = 0)]
    pub instructions: Option<String>,
}

/// Usage in the last event of an SSE speech stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeechUsage {
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub total_tokens: usize,
}

// ---- Embeddings ----

/// `POST /v1/embeddings`. Unknown fields are refused (a field Wick would ignore is a 400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64`: each vector's little-endian f32 bytes, base64-encoded.
    #[schema(schema_with = super::openapi::encoding_format)]
    pub encoding_format: Option<String>,
    /// Accepted only when it equals the model's size: Wick does not shorten vectors.
    #[schema(minimum = 1)]
    pub dimensions: Option<i64>,
    pub user: Option<String>,
}

/// Embedding input in each shape OpenAI takes: one text, several, one list of token ids, or several
/// such lists.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    /// Signed, so that a negative id is refused as outside the vocabulary rather than as a type error.
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Embedding {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

/// A vector as `encoding_format` asks: numbers, or a base64 string.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}
