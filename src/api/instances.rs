//! The management API, in the shape of the GPU-cloud instance SDK: create, inspect, list, count,
//! scale and delete deployments. Every answer is `{"code": 0, "msg": "", ...}`; on failure `code` is
//! the HTTP status (also sent as the status) and `msg` says why.
//!
//! A deployment is found by `request_id` (its instance id) or `meta_key` (the caller's own key). A
//! scoped management key sees only the deployments in its scope; the others answer 404.

use crate::auth::Caller;
use crate::deploy::{Deployment, DeploymentRequest, ManageError, Phase};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;

/// A refused management call.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    msg: String,
}

pub fn failure(status: StatusCode, msg: impl Into<String>) -> Failure {
    Failure { status, msg: msg.into() }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.status.as_u16(), "msg": self.msg}))).into_response()
    }
}

impl From<ManageError> for Failure {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(m) => failure(StatusCode::BAD_REQUEST, m),
            ManageError::Conflict(m) => failure(StatusCode::CONFLICT, m),
            ManageError::Forbidden(m) => failure(StatusCode::FORBIDDEN, m),
            ManageError::Store(e) => {
                tracing::error!(error = %format!("{e:#}"), "deployment store failed");
                failure(StatusCode::INTERNAL_SERVER_ERROR, format!("the deployment store failed: {e:#}"))
            }
        }
    }
}

/// A successful answer: `code` 0, an empty `msg`, and the call's own fields.
#[derive(Serialize, ToSchema)]
pub struct Answer<T> {
    code: u16,
    msg: &'static str,
    #[serde(flatten)]
    fields: T,
}

fn ok<T: Serialize>(fields: T) -> Json<Answer<T>> {
    Json(Answer { code: 0, msg: "", fields })
}

#[derive(Serialize, ToSchema)]
pub struct InstanceFields {
    #[serde(rename = "instanceID")]
    instance_id: String,
    instance: Instance,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedFields {
    #[serde(rename = "instanceID")]
    instance_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatsFields {
    /// Deployments per status (Standby, Loading, Running, Unloading); statuses with none are left out.
    stats: BTreeMap<&'static str, usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ListFields {
    instances: Vec<Instance>,
    pagination: Pagination,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    total: usize,
    num_pages: usize,
    page: usize,
    per_page: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Instance {
    #[serde(rename = "instanceID")]
    instance_id: String,
    status: &'static str,
    meta_key: String,
    name: String,
    remark: String,
    model: String,
    /// Replicas asked for.
    replicas: usize,
    ready_replicas: usize,
    hardware: Hardware,
    /// Seconds; null when the deployment never unloads.
    idle_timeout_s: Option<f64>,
    default_response_format: Option<String>,
    /// `config` (command line or config file) or `api`.
    origin: &'static str,
    /// The cause of the last failed load, kept until the deployment is deleted.
    last_error: Option<String>,
    create_time: CreateTime,
    usage: crate::deploy::usage::UsageSnapshot,
    cost: crate::deploy::usage::Cost,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Hardware {
    device: String,
    /// The device of each loaded replica.
    replica_devices: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct CreateTime {
    seconds: u64,
}

fn instance(d: &Deployment) -> Instance {
    let view = d.view();
    Instance {
        instance_id: d.id.clone(),
        status: view.phase.as_str(),
        meta_key: d.spec.meta_key.clone(),
        name: d.name().to_string(),
        remark: d.spec.remark.clone(),
        model: d.spec.request.model.clone(),
        replicas: view.desired_replicas,
        ready_replicas: view.ready_replicas,
        hardware: Hardware { device: d.spec.device.describe(), replica_devices: view.replica_devices },
        idle_timeout_s: d.spec.idle_timeout.map(|t| t.as_secs_f64()),
        default_response_format: d.spec.default_response_format.clone(),
        origin: d.spec.origin.as_str(),
        last_error: view.last_error,
        create_time: CreateTime { seconds: d.created },
        usage: view.usage,
        cost: view.cost,
    }
}

fn instance_body(d: &Deployment) -> Json<Answer<InstanceFields>> {
    ok(InstanceFields { instance_id: d.id.clone(), instance: instance(d) })
}

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, Failure> {
    p.map(|Query(q)| q).map_err(|e| failure(StatusCode::BAD_REQUEST, e.body_text()))
}

/// The deployment named by `request_id` or `meta_key`, if the caller may see it.
fn find(
    state: &AppState,
    caller: &Caller,
    request_id: Option<&str>,
    meta_key: Option<&str>,
) -> Result<Arc<Deployment>, Failure> {
    let (found, what) = match (request_id.filter(|s| !s.is_empty()), meta_key.filter(|s| !s.is_empty())) {
        (Some(id), _) => (state.deployments.by_id(id), format!("request_id `{id}`")),
        (None, Some(key)) => (state.deployments.by_meta_key(key), format!("meta_key `{key}`")),
        (None, None) => return Err(failure(StatusCode::BAD_REQUEST, "give `request_id` or `meta_key`")),
    };
    found
        .filter(|d| caller.scope.allows(d.name()))
        .ok_or_else(|| failure(StatusCode::NOT_FOUND, format!("no deployment with {what}")))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    super::json::parse(body).map_err(|e| failure(e.status, e.message))
}

/// `POST /sdk/v1/instance`: a new deployment, in Standby until its first request.
#[utoipa::path(post, path = "/sdk/v1/instance", operation_id = "createInstance", tag = "management", security(("management" = [])), request_body = DeploymentRequest, responses(
        (status = 200, description = "The deployment", body = Answer<InstanceFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Answer<InstanceFields>>, Failure> {
    let request: DeploymentRequest = parse_body(&body)?;
    let d = state.deployments.create(request, |name| caller.scope.allows(name))?;
    Ok(instance_body(&d))
}

/// `GET /sdk/v1/instance?request_id=` or `?meta_key=`
#[utoipa::path(get, path = "/sdk/v1/instance", operation_id = "getInstance", tag = "management", security(("management" = [])), params(Which), responses(
        (status = 200, description = "The deployment", body = Answer<InstanceFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
) -> Result<Json<Answer<InstanceFields>>, Failure> {
    let q = params(q)?;
    let d = find(&state, &caller, q.get("request_id").map(String::as_str), q.get("meta_key").map(String::as_str))?;
    Ok(instance_body(&d))
}

/// `DELETE /sdk/v1/instance?request_id=` or `?meta_key=`
#[utoipa::path(delete, path = "/sdk/v1/instance", operation_id = "deleteInstance", tag = "management", security(("management" = [])), params(Which), responses(
        (status = 200, description = "Deleted (its replicas unload)", body = Answer<DeletedFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
) -> Result<Json<Answer<DeletedFields>>, Failure> {
    let q = params(q)?;
    let d = find(&state, &caller, q.get("request_id").map(String::as_str), q.get("meta_key").map(String::as_str))?;
    state.deployments.delete(&d).await?;
    Ok(ok(DeletedFields { instance_id: d.id.clone() }))
}

/// Which deployment: by `request_id` (its instance id) or by `meta_key`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read from the query map by `find`, so that each mistake gets its own message
struct Which {
    request_id: Option<String>,
    meta_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    request_id: Option<String>,
    meta_key: Option<String>,
    #[schema(minimum = 1, maximum = 64)]
    replicas: usize,
}

/// `POST /sdk/v1/instance/scale` with `{"request_id" | "meta_key", "replicas"}`
#[utoipa::path(post, path = "/sdk/v1/instance/scale", operation_id = "scaleInstance", tag = "management", security(("management" = [])), request_body = ScaleRequest, responses(
        (status = 200, description = "The deployment, scaling", body = Answer<InstanceFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn scale(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Answer<InstanceFields>>, Failure> {
    let r: ScaleRequest = parse_body(&body)?;
    let d = find(&state, &caller, r.request_id.as_deref(), r.meta_key.as_deref())?;
    state.deployments.scale(&d, r.replicas)?;
    Ok(instance_body(&d))
}

/// `GET /sdk/v1/instance/stats`: deployments per status; statuses with none are left out.
#[utoipa::path(get, path = "/sdk/v1/instance/stats", operation_id = "countInstances", tag = "management", security(("management" = [])), responses(
        (status = 200, description = "Deployments per status", body = Answer<StatsFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn stats(State(state): State<AppState>, caller: Caller) -> Json<Answer<StatsFields>> {
    let mut stats = BTreeMap::new();
    for d in state.deployments.all().iter().filter(|d| caller.scope.allows(d.name())) {
        *stats.entry(d.phase().as_str()).or_insert(0) += 1;
    }
    ok(StatsFields { stats })
}

fn number(q: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, Failure> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => {
            v.parse().map_err(|_| failure(StatusCode::BAD_REQUEST, format!("`{name}` must be a number, not `{v}`")))
        }
    }
}

/// The list's query: a page of `per_page` deployments, newest first unless `ascending`, of the
/// comma-separated `statuses` (all when empty).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read from the query map by `list`, so that each mistake gets its own message
struct ListQuery {
    #[param(minimum = 1)]
    page: Option<usize>,
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<usize>,
    ascending: Option<bool>,
    statuses: Option<String>,
}

/// `GET /sdk/v1/instance/list?page=&per_page=&ascending=&statuses=`: newest first unless ascending.
#[utoipa::path(get, path = "/sdk/v1/instance/list", operation_id = "listInstances", tag = "management", security(("management" = [])), params(ListQuery), responses(
        (status = 200, description = "A page of deployments", body = Answer<ListFields>),
        crate::api::openapi::ManagementErrors,
))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
) -> Result<Json<Answer<ListFields>>, Failure> {
    let q = params(q)?;
    let page = number(&q, "page", 1)?;
    let per_page = number(&q, "per_page", DEFAULT_PER_PAGE)?;
    if page < 1 || !(1..=MAX_PER_PAGE).contains(&per_page) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            format!("`page` starts at 1 and `per_page` is between 1 and {MAX_PER_PAGE}"),
        ));
    }
    let ascending = match q.get("ascending").map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(v) if v.is_empty() || v == "false" || v == "0" => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) => return Err(failure(StatusCode::BAD_REQUEST, format!("`ascending` is true or false, not `{v}`"))),
    };
    let mut statuses = Vec::new();
    for s in q.get("statuses").map(String::as_str).unwrap_or("").split(',').filter(|s| !s.trim().is_empty()) {
        statuses.push(Phase::parse(s).ok_or_else(|| {
            failure(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}`: use Standby, Loading, Running or Unloading"),
            )
        })?);
    }
    // The registry keeps creation order, which breaks ties between deployments created in one second.
    let mut chosen: Vec<(usize, Arc<Deployment>)> = state
        .deployments
        .all()
        .into_iter()
        .enumerate()
        .filter(|(_, d)| caller.scope.allows(d.name()))
        .filter(|(_, d)| statuses.is_empty() || statuses.contains(&d.phase()))
        .collect();
    chosen.sort_by_key(|(i, d)| (d.created, *i));
    if !ascending {
        chosen.reverse();
    }
    let total = chosen.len();
    let instances: Vec<Instance> =
        chosen.iter().skip((page - 1) * per_page).take(per_page).map(|(_, d)| instance(d)).collect();
    let pagination = Pagination { total, num_pages: total.div_ceil(per_page), page, per_page };
    Ok(ok(ListFields { instances, pagination }))
}
