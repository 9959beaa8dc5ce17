//! `GET /v1/models` and `GET /v1/models/{id}` (ids may contain `/`).

use super::openai::{ModelCard, ModelList};
use crate::deploy::Deployment;
use crate::error::ApiError;
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
    }
}

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: state.deployments.iter().map(|d| card(d)).collect() })
}

pub async fn retrieve(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelCard>, ApiError> {
    state.deployments.get(&id).map(|d| Json(card(&d))).ok_or_else(|| ApiError::model_not_found(&id))
}
