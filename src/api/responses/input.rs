//! The Responses API's `instructions` and `input` as the chat template's messages: `instructions`
//! is a system message first; `input` a string (one user message) or a list of items. A message
//! item (with or without `"type": "message"`) keeps its role (`developer` is `system`, as on chat) and
//! its text; a `function_call` item joins the assistant message before it as a call (or makes one);
//! a `function_call_output` item is a `tool` message for a call made earlier in the input.
//!
//! Each item is read by its `type`, so that its errors name its place (`input[2].content[1].type`).

use crate::api::chat::template_call;
use crate::api::error::ApiError;
use crate::api::json::from_value;
use crate::api::unsupported::{none, refuse_in, Refusal, Unsupported};
use crate::loader::chat_template::TemplateMessage;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The conversation, and for each of its messages the request field that holds its content (for
/// the errors that name it).
pub struct Conversation {
    pub messages: Vec<TemplateMessage>,
    pub content_params: Vec<String>,
}

/// A message: `EasyInputMessage`, `Message` or (an earlier answer's) `ResponseOutputMessage`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageItem {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::openapi::message_item_type)]
    _kind: Option<String>,
    #[schema(schema_with = crate::api::openapi::responses_role)]
    role: String,
    /// A string or a list of parts, read by hand.
    #[schema(schema_with = crate::api::openapi::responses_content)]
    content: Value,
    /// An earlier output's `id` and `status` describe it; they ask for nothing.
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
    #[schema(ignore)]
    phase: Unsupported,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::openapi::text_part_type)]
    kind: String,
    text: Option<String>,
    /// An earlier output's annotations and log-probabilities describe it; they ask for nothing.
    #[serde(rename = "annotations")]
    _annotations: Option<Vec<Value>>,
    #[serde(rename = "logprobs")]
    _logprobs: Option<Vec<Value>>,
    #[schema(ignore)]
    prompt_cache_breakpoint: Unsupported,
    // The other kinds' payloads, present so that a part is refused by its kind.
    #[serde(rename = "image_url")]
    #[schema(ignore)]
    _image_url: Unsupported,
    #[serde(rename = "file_id")]
    #[schema(ignore)]
    _file_id: Unsupported,
    #[serde(rename = "detail")]
    #[schema(ignore)]
    _detail: Unsupported,
    #[serde(rename = "file_data")]
    #[schema(ignore)]
    _file_data: Unsupported,
    #[serde(rename = "file_url")]
    #[schema(ignore)]
    _file_url: Unsupported,
    #[serde(rename = "filename")]
    #[schema(ignore)]
    _filename: Unsupported,
    #[serde(rename = "refusal")]
    #[schema(ignore)]
    _refusal: Unsupported,
}

/// An earlier call, as the answer that made it gave it (`ResponseFunctionToolCall`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionCallItem {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::openapi::function_call_type)]
    _kind: String,
    call_id: String,
    name: String,
    arguments: String,
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
    #[schema(schema_with = crate::api::openapi::direct_caller)]
    caller: Unsupported,
    #[schema(ignore)]
    namespace: Unsupported,
    #[serde(rename = "async")]
    #[schema(schema_with = crate::api::openapi::only_false)]
    asynchronous: Unsupported,
}

/// A call's result.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionCallOutputItem {
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::openapi::function_call_output_type)]
    _kind: String,
    call_id: Option<String>,
    /// A string or a list of parts, read by hand.
    #[schema(schema_with = crate::api::openapi::responses_content)]
    output: Value,
    /// The called function's name: it must be the call's.
    name: Option<String>,
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
    #[schema(schema_with = crate::api::openapi::direct_caller)]
    caller: Unsupported,
    #[schema(ignore)]
    namespace: Unsupported,
}

fn bad<T>(message: String, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

fn direct(v: &Value) -> bool {
    *v == serde_json::json!({"type": "direct"})
}

/// The messages of `instructions` and `input`.
pub fn conversation(instructions: Option<&str>, input: Option<&Value>) -> Result<Conversation, ApiError> {
    let mut out = Conversation { messages: Vec::new(), content_params: Vec::new() };
    if let Some(instructions) = instructions {
        out.push(message("system", instructions.to_string()), "instructions".into());
    }
    let items = match input {
        None => return bad("Missing required parameter: 'input'.".into(), "input"),
        Some(Value::String(text)) => {
            out.push(message("user", text.clone()), "input".into());
            return Ok(out);
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return bad("'input' must contain at least one item.".into(), "input")
        }
        Some(Value::Array(items)) => items,
        Some(_) => return bad("Invalid 'input': expected a string or a list of items.".into(), "input"),
    };
    // Each earlier call's name, by its `call_id`.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = match item.get("type") {
            None => "message",
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return bad("An item's 'type' must be a string.".into(), &format!("{at}.type")),
        };
        match kind {
            "message" => {
                let m: MessageItem = from_value(item.clone(), &at)?;
                let phase = Refusal {
                    param: "phase",
                    value: &m.phase,
                    harmless: none,
                    why: "the model's chat template has no place for a message's phase.",
                };
                refuse_in(&at, &[phase])?;
                let role = match m.role.as_str() {
                    "developer" => "system",
                    r @ ("system" | "user" | "assistant") => r,
                    other => {
                        return bad(
                            format!("Invalid value: '{other}'. Supported roles are 'system', 'developer', 'user' and 'assistant'."),
                            &format!("{at}.role"),
                        )
                    }
                };
                let content = text_of(&m.content, &format!("{at}.content"))?;
                out.push(message(role, content), format!("{at}.content"));
            }
            "function_call" => {
                let c: FunctionCallItem = from_value(item.clone(), &at)?;
                refuse_in(
                    &at,
                    &[
                        Refusal { param: "caller", value: &c.caller, harmless: direct, why: PROGRAMS },
                        Refusal { param: "namespace", value: &c.namespace, harmless: none, why: NAMESPACES },
                        Refusal { param: "async", value: &c.asynchronous, harmless: is_false, why: ASYNC },
                    ],
                )?;
                let call = template_call(&c.call_id, &c.name, &c.arguments, &format!("{at}.arguments"))?;
                calls.push((c.call_id, c.name));
                // It joins the assistant's message before it, as chat's `tool_calls` do.
                match out.messages.last_mut() {
                    Some(last) if last.role == "assistant" => last.tool_calls.get_or_insert_with(Vec::new).push(call),
                    _ => {
                        let mut m = message("assistant", String::new());
                        m.tool_calls = Some(vec![call]);
                        out.push(m, format!("{at}.arguments"));
                    }
                }
            }
            "function_call_output" => {
                let o: FunctionCallOutputItem = from_value(item.clone(), &at)?;
                refuse_in(
                    &at,
                    &[
                        Refusal { param: "caller", value: &o.caller, harmless: direct, why: PROGRAMS },
                        Refusal { param: "namespace", value: &o.namespace, harmless: none, why: NAMESPACES },
                    ],
                )?;
                let Some(call_id) = o.call_id else {
                    return bad(format!("Missing required parameter: '{at}.call_id'."), &format!("{at}.call_id"));
                };
                let Some((_, name)) = calls.iter().find(|(id, _)| *id == call_id) else {
                    return bad(
                        format!("No tool call found for function call output with call_id {call_id}: its 'function_call' item must come before it in 'input'."),
                        &format!("{at}.call_id"),
                    );
                };
                if o.name.as_ref().is_some_and(|n| n != name) {
                    return bad(format!("The call {call_id} is of '{name}'."), &format!("{at}.name"));
                }
                let mut m = message("tool", text_of(&o.output, &format!("{at}.output"))?);
                m.tool_call_id = Some(call_id);
                out.push(m, format!("{at}.output"));
            }
            other => {
                let why = match other {
                    "item_reference" => "it stores no items to refer to; send the item itself.",
                    "reasoning" => "its models do not reason apart from their answer.",
                    _ => "it takes messages, 'function_call' and 'function_call_output' items only.",
                };
                return bad(
                    format!("Input items of type '{other}' are not supported by this server: {why}"),
                    &format!("{at}.type"),
                );
            }
        }
    }
    Ok(out)
}

const PROGRAMS: &str = "functions are called by the model itself ('direct'), never by a program.";
const NAMESPACES: &str = "its tools have no namespaces.";
const ASYNC: &str = "its calls are not asynchronous.";

fn is_false(v: &Value) -> bool {
    *v == Value::Bool(false)
}

impl Conversation {
    fn push(&mut self, message: TemplateMessage, content_param: String) {
        self.messages.push(message);
        self.content_params.push(content_param);
    }
}

fn message(role: &str, content: String) -> TemplateMessage {
    TemplateMessage { role: role.to_string(), content, tool_calls: None, tool_call_id: None }
}

/// A message's content or a call's output: a string, or a list of text parts (`at` names it).
fn text_of(content: &Value, at: &str) -> Result<String, ApiError> {
    let parts = match content {
        Value::String(text) => return Ok(text.clone()),
        Value::Array(parts) => parts,
        _ => return bad(format!("Invalid '{at}': expected a string or a list of content parts."), at),
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let part: Part = from_value(part.clone(), &at)?;
        let breakpoint = Refusal {
            param: "prompt_cache_breakpoint",
            value: &part.prompt_cache_breakpoint,
            harmless: none,
            why: "its prefix cache finds shared prefixes by their tokens, with no breakpoints.",
        };
        refuse_in(&at, &[breakpoint])?;
        match (part.kind.as_str(), part.text) {
            ("input_text" | "output_text", Some(t)) => text.push_str(&t),
            ("input_text" | "output_text", None) => {
                return bad(format!("Missing required parameter: '{at}.text'."), &format!("{at}.text"))
            }
            (kind, _) => {
                return bad(
                    format!("Content parts of type '{kind}' are not supported by this model; only 'input_text' and 'output_text'."),
                    &format!("{at}.type"),
                )
            }
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(instructions: Option<&str>, input: Value) -> String {
        conversation(instructions, Some(&input)).err().expect("refused").param.unwrap()
    }

    #[test]
    fn items_become_the_templates_messages() {
        let call = json!({"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\": 1}"});
        let input = json!([
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me see.", "annotations": [], "logprobs": []}]},
            call,
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ]);
        let c = conversation(Some("Rules."), Some(&input)).unwrap();
        let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "tool"]);
        assert_eq!(c.messages[2].content, "ab");
        assert_eq!(c.messages[3].content, "Let me see.");
        let calls = c.messages[3].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"], json!({"name": "f", "arguments": {"a": 1}}));
        assert_eq!(c.messages[4].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(
            c.content_params,
            ["instructions", "input[0].content", "input[1].content", "input[2].content", "input[4].output"]
        );

        let c = conversation(None, Some(&json!("Hi."))).unwrap();
        assert_eq!((c.messages[0].role.as_str(), c.messages[0].content.as_str()), ("user", "Hi."));
        // A call with no message before it makes one.
        let c = conversation(None, Some(&json!([{"role": "user", "content": "x"}, call]))).unwrap();
        assert_eq!(c.messages[1].role, "assistant");
    }

    #[test]
    fn what_cannot_be_served_is_refused_by_its_place() {
        let user = |content: Value| json!([{"role": "user", "content": content}]);
        assert_eq!(refused(None, json!({"probe": 1})), "input");
        assert_eq!(refused(None, json!([])), "input");
        assert_eq!(
            refused(
                None,
                user(json!([{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "x"}]))
            ),
            "input[0].content[1].type"
        );
        assert_eq!(refused(None, user(json!([{"type": "input_text"}]))), "input[0].content[0].text");
        assert_eq!(
            refused(None, user(json!([{"type": "input_text", "text": "a", "nope": 1}]))),
            "input[0].content[0].nope"
        );
        assert_eq!(refused(None, json!([{"role": "tool", "content": "x"}])), "input[0].role");
        assert_eq!(
            refused(None, json!([{"role": "assistant", "content": "x", "phase": "commentary"}])),
            "input[0].phase"
        );
        assert_eq!(refused(None, json!([{"type": "item_reference", "id": "msg_1"}])), "input[0].type");
        assert_eq!(
            refused(None, json!([{"type": "function_call_output", "call_id": "c", "output": "x"}])),
            "input[0].call_id"
        );
        let call = json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"});
        assert_eq!(refused(None, json!([call])), "input[0].arguments");
        let call = json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "namespace": "n"});
        assert_eq!(refused(None, json!([call])), "input[0].namespace");
        let call = json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"});
        let result = json!({"type": "function_call_output", "call_id": "c", "name": "g", "output": "x"});
        assert_eq!(refused(None, json!([call, result])), "input[1].name");
        assert!(conversation(None, None).is_err());
    }
}
