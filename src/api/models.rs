//! `GET /v1/models` and `GET /v1/models/{id}` (ids may contain `/`). Only the deployments the
//! caller's key may use are shown; each card carries the deployment's status.

use super::openai::{ModelCard, ModelList};
use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::deploy::Deployment;
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;

fn card(d: &Deployment) -> ModelCard {
    ModelCard {
        id: d.name().to_string(),
        object: "model",
        created: d.created,
        owned_by: "wick",
        root: d.spec.source.root(),
        parent: None,
        status: d.phase().as_str(),
    }
}

/// `GET /v1/models`
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", tag = "inference", security(("inference" = [])), responses(
        (status = 200, description = "The deployments the key may use", body = ModelList),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Json<ModelList> {
    let data = state.deployments.all().iter().filter(|d| caller.scope.allows(d.name())).map(|d| card(d)).collect();
    Json(ModelList { object: "list", data })
}

/// `GET /v1/models/{id}` (an id may hold slashes, as hub ids do)
#[utoipa::path(get, path = "/v1/models/{*id}", operation_id = "retrieveModel", tag = "inference", security(("inference" = [])), params(("id" = String, Path, description = "A deployment's name")), responses(
        (status = 200, description = "The deployment", body = ModelCard),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state
        .deployments
        .get(&id)
        .filter(|d| caller.scope.allows(d.name()))
        .map(|d| Json(card(&d)))
        .ok_or_else(|| ApiError::model_not_found(&id))
}
