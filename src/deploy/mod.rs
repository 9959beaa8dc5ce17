//! Deployments: a model plus its settings, served under the name clients put in `model`.
//!
//! - spec.rs: what a user asks for and the settled spec;
//! - deployment.rs: one deployment's lifecycle (lazy load, idle unload, replicas, leases);
//! - replica.rs: one loaded copy of the model with its engine;
//! - usage.rs: cumulative usage and cost;
//! - store.rs: SQLite, so that deployments survive a restart.
//!
//! This file is the registry: the set of deployments, kept consistent with the store.

pub mod deployment;
pub mod replica;
pub mod spec;
pub mod store;
pub mod usage;

pub use deployment::{AcquireError, Deployment, Lease, Phase, View};
pub use spec::{Defaults, DeploymentRequest, DeploymentSpec, IdleTimeoutValue, Origin};

use crate::metrics::Metrics;
use anyhow::{bail, Result};
use std::sync::{Arc, RwLock};
use store::{Store, StoredDeployment};
use usage::Usage;

/// Why a management call was refused.
#[derive(Debug)]
pub enum ManageError {
    /// The request is malformed or out of range (400).
    Invalid(String),
    /// It clashes with an existing deployment (409).
    Conflict(String),
    /// The caller's key may not manage it (403).
    Forbidden(String),
    /// The store failed (500).
    Store(anyhow::Error),
}

pub struct Deployments {
    list: RwLock<Vec<Arc<Deployment>>>,
    store: Option<Store>,
    pub defaults: Defaults,
    metrics: Arc<Metrics>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Deployments {
    /// The deployments of the command line and config file, plus those the store kept from earlier
    /// runs. A config deployment keeps its instance id and usage across restarts (matched by meta key).
    pub fn open(
        config: Vec<DeploymentSpec>,
        store: Option<Store>,
        defaults: Defaults,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let stored = match &store {
            Some(s) => s.all()?,
            None => Vec::new(),
        };
        let mut list: Vec<Arc<Deployment>> = Vec::new();
        for spec in config {
            if list.iter().any(|d| d.name() == spec.name) {
                bail!("two deployments are served as `{}`: give one another name", spec.name);
            }
            if list.iter().any(|d| d.spec.meta_key == spec.meta_key) {
                bail!("two deployments have the meta key `{}`", spec.meta_key);
            }
            let earlier = stored.iter().find(|s| s.meta_key == spec.meta_key);
            if let Some(e) = earlier.filter(|e| e.origin == Origin::Api) {
                bail!(
                    "the configured deployment `{}` has meta key `{}`, which a deployment created through the API \
                     (instance {}) already uses: delete that one or choose another key",
                    spec.name,
                    spec.meta_key,
                    e.id
                );
            }
            let (id, created, usage) = match earlier {
                Some(e) => (e.id.clone(), e.created, Usage::restore(&e.usage)),
                None => (new_id(), crate::unix_now(), Usage::default()),
            };
            let d = Deployment::new(id, spec, created, usage, metrics.clone());
            if let Some(s) = &store {
                s.put(&stored_row(&d))?;
            }
            list.push(Arc::new(d));
        }
        for row in stored {
            let configured = list.iter().any(|d| d.id == row.id);
            if row.origin == Origin::Config {
                if !configured {
                    // No longer configured: forget it.
                    if let Some(s) = &store {
                        s.delete(&row.id)?;
                    }
                }
                continue;
            }
            let mut request = row.request.clone();
            request.replicas = Some(row.replicas);
            match DeploymentSpec::resolve(request, &defaults, Origin::Api) {
                Ok(spec) if list.iter().any(|d| d.name() == spec.name) => tracing::error!(
                    instance = %row.id, name = %spec.name,
                    "a stored deployment has the name of a configured one; it is not served until that changes"
                ),
                Ok(spec) => {
                    let d = Deployment::new(row.id, spec, row.created, Usage::restore(&row.usage), metrics.clone());
                    list.push(Arc::new(d));
                }
                Err(e) => tracing::error!(instance = %row.id, error = %format!("{e:#}"),
                    "a stored deployment cannot be served (it stays in the store)"),
            }
        }
        Ok(Self { list: RwLock::new(list), store, defaults, metrics })
    }

    /// Deployments with no store and default settings: for tests and embedding.
    pub fn new(specs: Vec<DeploymentSpec>) -> Result<Self> {
        Self::open(specs, None, Defaults::default(), Arc::new(Metrics::default()))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Deployment>>> {
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The deployment clients call `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.read().iter().find(|d| d.name() == name).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Deployment>> {
        self.read().iter().find(|d| d.id == id).cloned()
    }

    pub fn by_meta_key(&self, meta_key: &str) -> Option<Arc<Deployment>> {
        self.read().iter().find(|d| d.spec.meta_key == meta_key).cloned()
    }

    /// Every deployment, in the order they were configured or created.
    pub fn all(&self) -> Vec<Arc<Deployment>> {
        self.read().clone()
    }

    /// Adds a deployment created through the management API. It starts in Standby. `may_manage`
    /// says whether the caller may create a deployment of that name.
    pub fn create(
        &self,
        request: DeploymentRequest,
        may_manage: impl Fn(&str) -> bool,
    ) -> Result<Arc<Deployment>, ManageError> {
        let spec = DeploymentSpec::resolve(request, &self.defaults, Origin::Api)
            .map_err(|e| ManageError::Invalid(format!("{e:#}")))?;
        if !may_manage(&spec.name) {
            return Err(ManageError::Forbidden(format!("this key may not manage a deployment named `{}`", spec.name)));
        }
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|d| d.spec.meta_key == spec.meta_key) {
            return Err(ManageError::Conflict(format!("a deployment with meta key `{}` exists", spec.meta_key)));
        }
        if list.iter().any(|d| d.name() == spec.name) {
            return Err(ManageError::Conflict(format!("a deployment named `{}` exists", spec.name)));
        }
        let d = Deployment::new(new_id(), spec, crate::unix_now(), Usage::default(), self.metrics.clone());
        if let Some(s) = &self.store {
            s.put(&stored_row(&d)).map_err(ManageError::Store)?;
        }
        tracing::info!(instance = %d.id, name = %d.name(), model = %d.spec.request.model, "deployment created");
        let d = Arc::new(d);
        list.push(d.clone());
        Ok(d)
    }

    /// Removes a deployment: it stops taking requests now and frees its memory once those in flight
    /// are done.
    pub async fn delete(&self, d: &Arc<Deployment>) -> Result<(), ManageError> {
        if d.spec.origin == Origin::Config {
            return Err(ManageError::Conflict(format!(
                "`{}` is defined on the command line or in the config file; remove it there",
                d.name()
            )));
        }
        if let Some(s) = &self.store {
            s.delete(&d.id).map_err(ManageError::Store)?;
        }
        self.list.write().unwrap_or_else(|e| e.into_inner()).retain(|x| !Arc::ptr_eq(x, d));
        tracing::info!(instance = %d.id, name = %d.name(), "deployment deleted");
        d.retire().await;
        Ok(())
    }

    pub fn scale(&self, d: &Arc<Deployment>, replicas: usize) -> Result<(), ManageError> {
        spec::check_replicas(replicas, self.defaults.max_replicas).map_err(|e| ManageError::Invalid(e.to_string()))?;
        if let Some(s) = &self.store {
            s.set_replicas(&d.id, replicas).map_err(ManageError::Store)?;
        }
        tracing::info!(instance = %d.id, name = %d.name(), replicas, "scaling");
        d.scale(replicas);
        Ok(())
    }

    /// Writes every deployment's cumulative usage to the store.
    pub fn save_usage(&self) -> Result<()> {
        let Some(store) = &self.store else { return Ok(()) };
        let usage: Vec<_> = self.all().iter().map(|d| (d.id.clone(), d.view().usage)).collect();
        store.save_usage(&usage)
    }
}

/// A new deployment's row: its replicas as created (scaling updates the row itself).
fn stored_row(d: &Deployment) -> StoredDeployment {
    StoredDeployment {
        id: d.id.clone(),
        meta_key: d.spec.meta_key.clone(),
        name: d.spec.name.clone(),
        origin: d.spec.origin,
        request: d.spec.request.clone(),
        replicas: d.spec.replicas,
        created: d.created,
        usage: d.usage.snapshot(std::time::Duration::ZERO),
    }
}
