//! `AppJson`: a JSON body extractor whose every failure (wrong content type, malformed JSON, a missing
//! or mistyped field, a body too large) answers in OpenAI's error shape, naming the offending `param`.

use crate::api::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::invalid_request(
                format!(
                    "Invalid Content-Type header ({}): expected application/json.",
                    if content_type.is_empty() { "missing" } else { content_type }
                ),
                None,
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            let mut e = ApiError::invalid_request(format!("Could not read the request body: {rejection}"), None);
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                e.status = StatusCode::PAYLOAD_TOO_LARGE;
            }
            e
        })?;
        parse(&bytes).map(AppJson)
    }
}

/// Parses a JSON body into `T`, mapping serde's errors to OpenAI-style 400s.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(
            format!("We could not parse the JSON body of your request ({e}). The API expects a JSON payload."),
            None,
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid_request("The request body must be a JSON object.", None));
    }
    from_value(value, "")
}

/// A part of the request read as `T`, its errors named as `parse` names them, from `at` (where the
/// part is in the request, such as `input[2]`; empty for the whole body). For the parts whose shape
/// depends on their contents, read by hand.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = join(at, &e.path().to_string());
        let inner = e.into_inner().to_string();
        // A field the request type does not list: OpenAI's own words for it.
        // The path ends with the field itself, except inside a value deserialized by hand
        // (`MessageContent`), where it stops at that value.
        if let Some(field) = inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            let param = if path.ends_with(field) { path } else { join(&path, field) };
            return ApiError::invalid_request(format!("Unrecognized request argument supplied: {param}"), Some(&param));
        }
        // serde reports a missing field at its parent's path; name the field itself.
        let param = match inner.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            Some(field) => join(&path, field),
            None => path,
        };
        let message = match inner.strip_prefix("missing field `") {
            Some(_) => format!("Missing required parameter: '{param}'."),
            None => format!("Invalid value for '{param}': {inner}"),
        };
        ApiError::invalid_request(message, Some(&param))
    })
}

/// `path` (serde_path_to_error's: `.` for the root, `a.b[0].c` below it) inside `at`.
fn join(at: &str, path: &str) -> String {
    match (at, path) {
        (at, ".") => at.to_string(),
        ("", path) => path.to_string(),
        (at, path) if path.starts_with('[') => format!("{at}{path}"),
        (at, path) => format!("{at}.{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        messages: Vec<Msg>,
    }
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn errors_name_the_param() {
        let e = parse::<Req>(br#"{"messages": []}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = parse::<Req>(br#"{"model": 3, "messages": []}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = parse::<Req>(br#"{"model": "m", "messages": [{}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse::<Req>(br#"{"model": "m", "messages": [], "temprature": 1}"#).unwrap_err();
        assert_eq!(e.message, "Unrecognized request argument supplied: temprature");
        assert_eq!(e.param.as_deref(), Some("temprature"));
        let e = parse::<Req>(br#"{"model": "m", "messages": [{"role": "user", "nme": "x"}]}"#).unwrap_err();
        assert_eq!(e.message, "Unrecognized request argument supplied: messages[0].nme");
        let e = parse::<Req>(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.param.is_none());
    }

    #[test]
    fn a_part_read_by_hand_is_named_from_its_place() {
        let msg = |v| from_value::<Msg>(v, "input[2]").unwrap_err();
        let e = msg(serde_json::json!({}));
        assert_eq!(
            (e.param.as_deref(), e.message.as_str()),
            (Some("input[2].role"), "Missing required parameter: 'input[2].role'.")
        );
        let e = msg(serde_json::json!({"role": "user", "nme": 1}));
        assert_eq!(e.message, "Unrecognized request argument supplied: input[2].nme");
        let e = msg(serde_json::json!({"role": 1}));
        assert_eq!(e.param.as_deref(), Some("input[2].role"));
        let e = from_value::<Vec<Msg>>(serde_json::json!([{"role": "a"}, {}]), "input").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[1].role"));
        let e = from_value::<Msg>(serde_json::json!(3), "input[0]").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0]"));
    }
}
