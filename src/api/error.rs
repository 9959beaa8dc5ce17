//! Every error a client sees, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
//!
//! Handlers return `ApiError`; nothing else turns into an HTTP error body, so the shape is decided here
//! once (axum's plain-text rejections are mapped in `api::json` and in the router's fallbacks). The
//! layers below report typed errors (`deploy::AcquireError`, `engine::EngineError`), answered here.

use crate::deploy::AcquireError;
use crate::engine::EngineError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429 and 503 only).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 for a request that is malformed or out of range; `param` names the offending field.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = param.map(str::to_string);
        e
    }

    /// `param` is the field that holds the prompt: chat's `messages`, or `prompt`.
    pub fn context_length_exceeded(param: &str, context: usize, prompt: usize, completion: usize) -> Self {
        Self::invalid_request(
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens \
                 ({prompt} in the {param}, {completion} in the completion). Please reduce the length of the \
                 {param} or completion.",
                prompt + completion
            ),
            Some(param),
        )
        .with_code("context_length_exceeded")
    }

    pub fn invalid_api_key(provided: Option<&str>) -> Self {
        let message = match provided {
            None => "You didn't provide an API key. You need to provide your API key in an Authorization header \
                     using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_string(),
            Some(key) => format!("Incorrect API key provided: {}.", redact(key)),
        };
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message).with_code("invalid_api_key")
    }

    /// 403: a valid key that may not do this.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message).with_code("permission_denied")
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "Method not allowed for this endpoint.")
            .with_code("method_not_allowed")
    }

    pub fn overloaded(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "The server is at capacity for this model: its queue is full. Please retry after a short wait.",
        )
        .with_code("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }

    pub fn model_unavailable(model: &str, cause: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!("The model `{model}` could not be loaded: {cause}"),
        )
        .with_code("model_unavailable");
        e.retry_after = Some(5);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// What a request to the deployment `model` is told when its engine fails it.
    pub fn engine(model: &str, e: EngineError) -> Self {
        match e {
            EngineError::QueueFull => Self::overloaded(1),
            EngineError::Stopped => Self::model_unavailable(model, &e.to_string()),
            // Retrying cannot help: the request's own fault.
            EngineError::TooLarge(message) | EngineError::Unenforceable(message) => {
                Self::invalid_request(message, None)
            }
            EngineError::Failed(message) => Self::internal(message),
        }
    }

    /// The JSON body alone, for errors that happen inside an event stream.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Inner { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code },
        })
        .expect("error body serialises")
    }
}

/// Shows enough of a key to recognise it and never the whole of it.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

impl From<AcquireError> for ApiError {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::Deleted { deployment } => Self::model_not_found(&deployment),
            AcquireError::LoadFailed { deployment, cause } => Self::model_unavailable(&deployment, &cause),
            AcquireError::Gone { .. } => Self::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_in_messages() {
        let e = ApiError::invalid_api_key(Some("sk-secret-0123456789"));
        assert!(!e.message.contains("secret"));
        assert!(e.message.contains("sk-") && e.message.contains("6789"));
        assert_eq!(redact("short"), "*****");
    }

    #[test]
    fn body_has_openai_shape() {
        let v = ApiError::invalid_request("bad", Some("temperature")).to_json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["code"].is_null());
    }
}
