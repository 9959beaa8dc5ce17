//! The two APIs' auth layers: the bearer key read from the `Authorization` header and checked by
//! `crate::auth::Keys`, the `Caller` it establishes put in the request for handlers, and a refusal
//! answered in each API's error shape (OpenAI's for /v1, the management API's own for /sdk/v1).

use crate::api::error::ApiError;
use crate::auth::{Caller, Keys, Refusal, Role};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

fn bearer(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string())
}

/// The OpenAI API's layer: inference keys, errors in OpenAI's shape.
pub async fn require_inference_key(State(keys): State<Arc<Keys>>, mut request: Request, next: Next) -> Response {
    match keys.check(bearer(&request).as_deref(), Role::Inference) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Refusal::Missing) => ApiError::invalid_api_key(None).into_response(),
        Err(Refusal::Invalid(key)) => ApiError::invalid_api_key(Some(&key)).into_response(),
        Err(Refusal::WrongRole | Refusal::ManagementDisabled) => ApiError::permission_denied(
            "This is a management key: it is accepted by the management API, not by the inference API.",
        )
        .into_response(),
    }
}

/// The management API's layer: management keys, errors in its `{"code", "msg"}` shape.
pub async fn require_admin_key(State(keys): State<Arc<Keys>>, mut request: Request, next: Next) -> Response {
    let (status, msg) = match keys.check(bearer(&request).as_deref(), Role::Admin) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            return next.run(request).await;
        }
        Err(Refusal::Missing) => {
            (StatusCode::UNAUTHORIZED, "Missing management key: send it as `Authorization: Bearer KEY`.".to_string())
        }
        Err(Refusal::Invalid(_)) => (StatusCode::UNAUTHORIZED, "Invalid management key.".to_string()),
        Err(Refusal::WrongRole) => (
            StatusCode::FORBIDDEN,
            "This is an inference key: the management API takes a management key (--admin-key).".to_string(),
        ),
        Err(Refusal::ManagementDisabled) => (
            StatusCode::FORBIDDEN,
            "The management API is disabled: start wick with --admin-key to enable it.".to_string(),
        ),
    };
    super::instances::failure(status, msg).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by the auth layers on every route that takes a `Caller`; missing means a route was
        // added without its layer, which must fail closed.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::internal("no auth layer on this route"))
    }
}
