//! The HTTP surface: OpenAI's endpoints under /v1 behind inference keys; the management API under
//! /sdk/v1 and /metrics behind management keys; a public /health.

pub mod auth;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
mod generation;
pub mod instances;
pub mod json;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod responses;
pub mod speech;
pub mod tools;
pub mod unsupported;

use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::deploy::Deployment;
use crate::deploy::Phase;
use crate::loader::ModelKind;
use crate::metrics::Gauges;
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The deployment `model` names, if the caller may use it and it serves `kind`. A key scoped away
/// from it is told it does not exist, as OpenAI does.
pub(crate) fn deployment_of_kind(
    state: &AppState,
    caller: &Caller,
    model: &str,
    kind: ModelKind,
) -> Result<Arc<Deployment>, ApiError> {
    let d = state
        .deployments
        .get(model)
        .filter(|d| caller.scope.allows(d.name()))
        .ok_or_else(|| ApiError::model_not_found(model))?;
    require_kind(d, model, kind)
}

/// `d`, if it serves `kind`; a model of another kind is pointed to its own endpoint.
pub(crate) fn require_kind(d: Arc<Deployment>, model: &str, kind: ModelKind) -> Result<Arc<Deployment>, ApiError> {
    let served = d.spec.source.kind();
    if served != kind {
        let what = match kind {
            ModelKind::Text => "a text generation model",
            ModelKind::Speech => "a text-to-speech model",
            ModelKind::Embeddings => "an embedding model",
        };
        let message = format!("`{model}` is not {what}: use {}.", served.endpoint());
        return Err(ApiError::invalid_request(message, Some("model")));
    }
    Ok(d)
}

pub fn router(state: AppState) -> Router {
    // Each route is registered with its document entry (`openapi`), so none goes undocumented.
    let (embeddings_schemas, embeddings_paths, embeddings_route) = routes!(embeddings::embeddings);
    // OpenAI's largest embeddings request (2,048 inputs of a full context) is over axum's 2 MB
    // default: this route takes up to `embeddings::MAX_BODY_BYTES`.
    let embeddings_route = embeddings_route.layer(axum::extract::DefaultBodyLimit::max(embeddings::MAX_BODY_BYTES));
    let v1 = OpenApiRouter::new()
        .routes(routes!(chat::chat_completions))
        .routes(routes!(responses::responses))
        .routes(routes!(completions::completions))
        .routes(routes!(speech::speech))
        .routes((embeddings_schemas, embeddings_paths, embeddings_route))
        .routes(routes!(models::list))
        .routes(routes!(models::retrieve))
        .route_layer(from_fn_with_state(state.keys.clone(), auth::require_inference_key));
    let management = OpenApiRouter::new()
        .routes(routes!(instances::create, instances::get, instances::delete))
        .routes(routes!(instances::stats))
        .routes(routes!(instances::list))
        .routes(routes!(instances::scale))
        .route("/metrics", get(metrics))
        .route_layer(from_fn_with_state(state.keys.clone(), auth::require_admin_key));
    let (documented, document) =
        OpenApiRouter::with_openapi(openapi::Header::openapi()).merge(v1).merge(management).split_for_parts();
    let document = Arc::new(openapi::served(document));
    Router::new()
        .merge(documented)
        .route("/openapi.json", get(move || async move { axum::Json(document.as_ref().clone()) }))
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("Unknown endpoint.") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state.clone(), count_requests))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, with each deployment's gauges read from its view now.
async fn metrics(State(state): State<AppState>) -> Response {
    let deployments = state.deployments.all();
    let views: Vec<_> = deployments.iter().map(|d| (d.name(), d.view())).collect();
    let gauges: Vec<Gauges<'_>> = views
        .iter()
        .map(|(name, v)| Gauges {
            deployment: name,
            states: Phase::ALL.iter().map(|&p| (p.as_str(), v.phase == p)).collect(),
            ready_replicas: v.ready_replicas,
            desired_replicas: v.desired_replicas,
            queued: v.queued,
            running: v.running,
            kv_blocks: v.kv_blocks,
            kv_blocks_used: v.kv_blocks.saturating_sub(v.kv_blocks_available),
            preemptions: v.preemptions,
            prefix_cached_tokens: v.prefix_cached_tokens,
            steps: v.steps,
            grammar_masks: v.grammar_masks,
            grammar_mask_seconds: v.grammar_mask_seconds,
            grammar_wait_seconds: v.grammar_wait_seconds,
        })
        .collect();
    let text = state.deployments.metrics().render(&gauges);
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Counts every answer by route and status code.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    state.deployments.metrics().request_answered(&method, &route, response.status().as_u16());
    response
}
