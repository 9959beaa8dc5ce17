//! The HTTP surface: OpenAI's endpoints under /v1, behind the API-key layer, and a public /health.

pub mod chat;
pub mod json;
pub mod models;
pub mod openai;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route_layer(from_fn_with_state(state.keys.clone(), auth::require_key));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("Unknown endpoint.") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
