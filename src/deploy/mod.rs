//! Deployments: a model under the name clients put in `model`. The weights load on the first request
//! that needs them; every request that arrives during the load waits for that same load.
//! (Idle unloading, replicas and the management API build on this: issue 4.)

use crate::arch::linear::WeightFormat;
use crate::engine::scheduler::Limits;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::loader::ModelSource;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub name: String,
    pub source: ModelSource,
    pub weights: WeightFormat,
    pub limits: Limits,
}

pub struct Deployment {
    pub spec: DeploymentSpec,
    pub created: u64,
    engine: Mutex<Option<Arc<Engine>>>,
}

impl Deployment {
    pub fn new(spec: DeploymentSpec) -> Self {
        Self { spec, created: crate::unix_now(), engine: Mutex::new(None) }
    }

    /// The name clients put in `model`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The running engine, loading the model first if it is not loaded. A failed load answers 503
    /// with its cause and leaves the deployment unloaded, so the next request tries again.
    pub async fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        let mut slot = self.engine.lock().await;
        if let Some(engine) = slot.as_ref() {
            return Ok(engine.clone());
        }
        let spec = self.spec.clone();
        let started = std::time::Instant::now();
        tracing::info!(model = %self.spec.name, source = %spec.source.root(), "loading");
        let loaded = tokio::task::spawn_blocking(move || {
            let loaded = spec.source.load(spec.weights, &candle_core::Device::Cpu)?;
            Ok::<_, anyhow::Error>(Engine::start(loaded, spec.limits, &spec.name)?)
        })
        .await
        .map_err(|e| ApiError::model_unavailable(&self.spec.name, &format!("the loader crashed: {e}")))?;
        let engine = Arc::new(loaded.map_err(|e| {
            tracing::error!(model = %self.spec.name, error = %format!("{e:#}"), "load failed");
            ApiError::model_unavailable(&self.spec.name, &format!("{e:#}"))
        })?);
        tracing::info!(model = %self.spec.name, seconds = started.elapsed().as_secs_f32(), "loaded");
        *slot = Some(engine.clone());
        Ok(engine)
    }

    /// The engine if it is loaded, without loading it.
    pub fn loaded_engine(&self) -> Option<Arc<Engine>> {
        self.engine.try_lock().ok().and_then(|s| s.clone())
    }
}

/// All deployments, in the order they were configured.
#[derive(Default)]
pub struct Deployments {
    list: Vec<Arc<Deployment>>,
}

impl Deployments {
    pub fn new(specs: Vec<DeploymentSpec>) -> anyhow::Result<Self> {
        let mut list: Vec<Arc<Deployment>> = Vec::new();
        for spec in specs {
            if list.iter().any(|d| d.name() == spec.name) {
                anyhow::bail!("two models are served as `{}`: give one another name with NAME=MODEL", spec.name);
            }
            list.push(Arc::new(Deployment::new(spec)));
        }
        Ok(Self { list })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.list.iter().find(|d| d.name() == name).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.list.iter()
    }
}
