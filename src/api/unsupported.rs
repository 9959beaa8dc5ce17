//! The fields of OpenAI's requests that Wick knows and does not serve. Each is refused with a 400
//! that names it when present, so that nothing a client sends is silently ignored; a field Wick
//! does not know at all is refused by the body parser (`json.rs`), as OpenAI refuses it.

use crate::api::error::ApiError;
use serde_json::Value;

/// A field refused when present: any JSON, so that the refusal names it rather than a type error.
pub type Unsupported = Option<Value>;

/// One field's refusal: its name (as a `param`), its value, the values that ask for nothing Wick
/// lacks (such as `response_format` `{"type": "text"}`), and why anything else is refused.
pub struct Refusal<'a> {
    pub param: &'a str,
    pub value: &'a Unsupported,
    pub harmless: fn(&Value) -> bool,
    pub why: &'a str,
}

/// No value is harmless.
pub fn none(_: &Value) -> bool {
    false
}

/// A 400 for the first field present (not `null`) with a value that is not harmless.
pub fn refuse(fields: &[Refusal]) -> Result<(), ApiError> {
    refuse_in("", fields)
}

/// The same for the fields of a part of the request, such as `messages[2]`.
pub fn refuse_in(parent: &str, fields: &[Refusal]) -> Result<(), ApiError> {
    for f in fields {
        match f.value {
            Some(v) if !v.is_null() && !(f.harmless)(v) => {
                let param = if parent.is_empty() { f.param.to_string() } else { format!("{parent}.{}", f.param) };
                return Err(ApiError::invalid_request(
                    format!("'{param}' is not supported by this server: {}", f.why),
                    Some(&param),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_the_first_field_present_unless_harmless() {
        let (absent, null, text, schema) =
            (None, Some(Value::Null), Some(json!({"type": "text"})), Some(json!({"type": "json_schema"})));
        let is_text = |v: &Value| v["type"] == "text";
        let field = |value, harmless| Refusal { param: "response_format", value, harmless, why: "no." };
        assert!(refuse(&[field(&absent, none), field(&null, none), field(&text, is_text)]).is_ok());
        let e = refuse(&[field(&text, is_text), field(&schema, is_text)]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        assert!(e.message.contains("'response_format' is not supported"), "{}", e.message);
        assert!(refuse(&[field(&text, none)]).is_err());
        let e = refuse_in("messages[2]", &[field(&schema, none)]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[2].response_format"));
    }
}
