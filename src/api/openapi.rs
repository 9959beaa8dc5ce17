//! The OpenAPI 3.1 document served at `GET /openapi.json`. Each route's entry comes from its handler's
//! `#[utoipa::path]` and the request and response types it uses (registered together in
//! `api::router`, so that no route goes undocumented); this file holds what is shared: the document's
//! header and bearer scheme, the error bodies, the event-stream framing, and the schemas of fields
//! whose Rust type says less than the server checks (a string that takes a few values, JSON that must
//! be an object).
//!
//! The document says what Wick accepts, no more and no less: a field refused whatever its value is
//! left out (so a request holding it is invalid there too), and a field refused but for a few
//! harmless values lists just those. Rules JSON Schema cannot state (a prompt that outgrows the
//! context, `top_logprobs` without `logprobs`, a `tool_choice` naming no tool) are 400s in OpenAI's
//! shape.

use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wick",
        description = "An OpenAI-compatible inference server: OpenAI's endpoints under /v1 (inference keys) and \
                       the deployment management API under /sdk/v1 (management keys).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerKeys),
    components(schemas(ErrorBody, ManagementFailure, StreamEvent)),
    tags(
        (name = "inference", description = "OpenAI's API"),
        (name = "management", description = "Deployments: create, inspect, scale, list, delete"),
    ),
)]
pub struct Header;

/// `Authorization: Bearer <key>`: an inference key (`--api-key`) for /v1, a management key
/// (`--admin-key`) for /sdk/v1; neither is accepted in the other's place.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for scheme in ["inference", "management"] {
            components.add_security_scheme(scheme, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// OpenAI's error body (`api::error::ApiError`), on every failure of the /v1 API.
#[derive(ToSchema)]
#[allow(dead_code)] // described, not built: `ApiError::to_json` writes it
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, ...
    #[schema(rename = "type")]
    kind: String,
    /// The request field at fault, when one is.
    param: Option<String>,
    code: Option<String>,
}

/// The /v1 API's failures, as every operation there lists them.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum OpenAiErrors {
    #[response(status = "4XX", description = "Refused, in OpenAI's error shape")]
    Refused(ErrorBody),
    #[response(status = "5XX", description = "Failed, or unavailable (a model that could not load: 503)")]
    Failed(ErrorBody),
}

/// The management API's failures.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ManagementErrors {
    #[response(status = "4XX", description = "Refused: `code` is the status, `msg` says why")]
    Refused(ManagementFailure),
    #[response(status = "5XX", description = "The deployment store failed")]
    Failed(ManagementFailure),
}

/// The management API's failure body (`api::instances::Failure`): `code` is the HTTP status.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ManagementFailure {
    code: u16,
    msg: String,
}

/// One server-sent event of a streamed answer, as OpenAPI 3.1 describes an event stream: each
/// `data` is a JSON chunk of the endpoint's stream, the last one `[DONE]` (chat and completions).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    data: String,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

/// The document as served: utoipa writes `oneOf` for serde's untagged enums, whose first matching
/// variant wins, which is `anyOf` (a `prompt` of `[]` matches several variants, and `oneOf` would
/// call it invalid); and axum's catch-all `{*id}` is OpenAPI's `{id}`.
pub fn served(doc: Document) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).expect("the document serialises");
    rename_one_of(&mut value);
    if let Some(paths) = value.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let renamed: Vec<String> = paths.keys().filter(|k| k.contains("{*")).cloned().collect();
        for key in renamed {
            let item = paths.remove(&key).expect("listed");
            paths.insert(key.replace("{*", "{"), item);
        }
    }
    value
}

fn rename_one_of(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(variants) = map.remove("oneOf") {
                map.insert("anyOf".into(), variants);
            }
            map.values_mut().for_each(rename_one_of);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(rename_one_of),
        _ => {}
    }
}

// ---- Field schemas (`#[schema(schema_with = ...)]` in `api::openai`) ----

/// A string that takes one of `values`, or null.
fn nullable_strings(values: &[&str]) -> Schema {
    let values = values.iter().map(|v| serde_json::Value::from(*v)).chain([serde_json::Value::Null]);
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])).enum_values(Some(values)).into()
}

fn strings(values: &[&str]) -> Schema {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).into()
}

/// Chat's `messages`, at least one: each role with the fields it takes (`chat::check`).
pub fn chat_messages() -> Schema {
    let message = |roles: &[&str], extra: Option<(&str, RefOr<Schema>)>| {
        let mut m = ObjectBuilder::new()
            .property("role", strings(roles))
            .property("content", message_content())
            .required("role")
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
        if let Some((name, schema)) = extra {
            m = m.property(name, schema);
            if name == "tool_call_id" {
                m = m.required(name);
            }
        }
        m
    };
    let calls = ArrayBuilder::new().items(<crate::api::openai::MessageToolCall as PartialSchema>::schema());
    let any_message = AnyOfBuilder::new()
        .item(message(&["system", "developer", "user"], None))
        .item(message(&["assistant"], Some(("tool_calls", RefOr::T(calls.into())))))
        .item(message(
            &["tool"],
            Some(("tool_call_id", RefOr::T(ObjectBuilder::new().schema_type(Type::String).into()))),
        ));
    ArrayBuilder::new().items(RefOr::T(any_message.build().into())).min_items(Some(1)).into()
}

/// A message's `content`: text, or a list of parts (text only).
fn message_content() -> Schema {
    let parts = ArrayBuilder::new().items(<crate::api::openai::ContentPart as PartialSchema>::schema());
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(parts)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

pub fn function_type() -> Schema {
    strings(&["function"])
}

pub fn text_type() -> Schema {
    strings(&["text"])
}

/// `tool_choice`: "none", "auto", "required", or `{"type": "function", "function": {"name"}}`.
pub fn tool_choice() -> Schema {
    let name = ObjectBuilder::new()
        .property("name", ObjectBuilder::new().schema_type(Type::String))
        .required("name")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    let named = ObjectBuilder::new()
        .property("type", function_type())
        .property("function", name)
        .required("type")
        .required("function")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    AnyOfBuilder::new().item(nullable_strings(&["none", "auto", "required"])).item(named).build().into()
}

/// A JSON Schema (a function's `parameters`, a `json_schema` format's `schema`): an object, or null.
pub fn json_schema() -> Schema {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null])).into()
}

/// `logit_bias`: token ids (as strings) to a bias between -100 and 100.
pub fn logit_bias() -> Schema {
    let bias = ObjectBuilder::new().schema_type(Type::Number).minimum(Some(-100)).maximum(Some(100));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]+$"))))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(bias.into()))))
        .into()
}

/// A flag accepted only as false (or null): `store` (Wick stores nothing), `background`, a call's
/// `async`, a tool's `defer_loading`.
pub fn only_false() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
        .enum_values(Some([serde_json::Value::Bool(false), serde_json::Value::Null]))
        .into()
}

/// `[value]` and nothing else, or null.
fn just(value: &str) -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(RefOr::T(strings(&[value])))
        .min_items(Some(1))
        .max_items(Some(1))
        .into()
}

/// Chat's `modalities`: text only.
pub fn modalities() -> Schema {
    just("text")
}

pub fn service_tier() -> Schema {
    nullable_strings(&["auto", "default"])
}

pub fn prompt_cache_retention() -> Schema {
    nullable_strings(&["in_memory"])
}

pub fn audio_format() -> Schema {
    let names: Vec<&str> = crate::audio::AudioFormat::ALL.iter().map(|f| f.as_str()).collect();
    nullable_strings(&names)
}

pub fn stream_format() -> Schema {
    nullable_strings(&["audio", "sse"])
}

pub fn encoding_format() -> Schema {
    nullable_strings(&["float", "base64"])
}

// ---- The Responses API's fields (`api::responses::types`, `api::responses::input`) ----

/// `input`: one user message as a string, or a list of messages, earlier calls and their results.
pub fn responses_input() -> Schema {
    use crate::api::responses::input::{FunctionCallItem, FunctionCallOutputItem, MessageItem};
    let item = AnyOfBuilder::new()
        .item(<MessageItem as PartialSchema>::schema())
        .item(<FunctionCallItem as PartialSchema>::schema())
        .item(<FunctionCallOutputItem as PartialSchema>::schema());
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(RefOr::T(item.build().into())).min_items(Some(1)))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

/// A message's `content`, a call result's `output`: text, or a list of text parts.
pub fn responses_content() -> Schema {
    let parts = ArrayBuilder::new().items(<crate::api::responses::input::Part as PartialSchema>::schema());
    AnyOfBuilder::new().item(ObjectBuilder::new().schema_type(Type::String)).item(parts).build().into()
}

pub fn responses_role() -> Schema {
    strings(&["user", "system", "developer", "assistant"])
}

pub fn message_item_type() -> Schema {
    nullable_strings(&["message"])
}

pub fn function_call_type() -> Schema {
    strings(&["function_call"])
}

pub fn function_call_output_type() -> Schema {
    strings(&["function_call_output"])
}

pub fn text_part_type() -> Schema {
    strings(&["input_text", "output_text"])
}

/// `tools`: function tools, flat (`{"type": "function", "name", ...}`).
pub fn responses_tools() -> Schema {
    let tool = <crate::api::responses::types::FunctionTool as PartialSchema>::schema();
    ArrayBuilder::new().schema_type(SchemaType::from_iter([Type::Array, Type::Null])).items(tool).into()
}

/// `tool_choice`: "none", "auto", "required", or `{"type": "function", "name"}`.
pub fn responses_tool_choice() -> Schema {
    let named = ObjectBuilder::new()
        .property("type", function_type())
        .property("name", ObjectBuilder::new().schema_type(Type::String))
        .required("type")
        .required("name")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    AnyOfBuilder::new().item(nullable_strings(&["none", "auto", "required"])).item(named).build().into()
}

/// `metadata`: up to 16 pairs, keys up to 64 characters, values up to 512.
pub fn metadata() -> Schema {
    let value = ObjectBuilder::new().schema_type(Type::String).max_length(Some(512));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(64))))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(value.into()))))
        .max_properties(Some(16))
        .into()
}

/// `include`: nothing more to include, so only `[]`.
pub fn nothing_included() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(RefOr::T(strings(&["none"])))
        .max_items(Some(0))
        .into()
}

/// `reasoning`: accepted only when it asks for none (`{"effort": "none"}`, or nothing set).
pub fn no_reasoning() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property("effort", nullable_strings(&["none"]))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            ObjectBuilder::new().schema_type(Type::Null).into(),
        ))))
        .into()
}

pub fn truncation() -> Schema {
    nullable_strings(&["disabled"])
}

/// A call's `caller`: the model itself (`{"type": "direct"}`) only.
pub fn direct_caller() -> Schema {
    let direct = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property("type", strings(&["direct"]))
        .required("type")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    direct.into()
}

/// A tool's `allowed_callers`: `["direct"]` only.
pub fn direct_callers() -> Schema {
    just("direct")
}
