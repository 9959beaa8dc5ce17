//! One replica: a full copy of a deployment's model with its own engine, on one device.

use super::spec::DeploymentSpec;
use super::usage::Usage;
use crate::engine::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Replica {
    pub index: usize,
    pub device: String,
    /// `None` only while `stop` takes it out.
    engine: Option<Engine>,
    loaded_at: Instant,
    /// Requests holding a lease on this replica: what "least loaded" compares.
    pub(super) in_flight: AtomicUsize,
    usage: Arc<Usage>,
}

impl Replica {
    /// Loads the model onto replica `index`'s device and starts its engine. Blocking.
    pub fn load(spec: &DeploymentSpec, index: usize, usage: Arc<Usage>) -> anyhow::Result<Self> {
        if let crate::loader::ModelSource::Catalog(entry) = &spec.source {
            if !entry.is_pulled() {
                crate::pull::pull(entry, false)?;
            }
        }
        let device = spec.device.candle_device(index)?;
        let loaded = spec.source.load(spec.weights, &device)?;
        let engine = Engine::start(loaded, spec.limits.clone(), &format!("{}-{index}", spec.name))?;
        Ok(Self {
            index,
            device: spec.device.device_name(index),
            engine: Some(engine),
            loaded_at: Instant::now(),
            in_flight: AtomicUsize::new(0),
            usage,
        })
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("a replica's engine is present until it stops")
    }

    pub fn load_score(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn loaded_for(&self) -> std::time::Duration {
        self.loaded_at.elapsed()
    }

    /// Stops the engine and waits until its memory is freed. Blocking.
    pub fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop();
        }
    }
}

impl Drop for Replica {
    /// A replica that is simply dropped (scaled down, drained) stops its worker without waiting: the
    /// worker finishes its last sequences and frees the weights on its own thread.
    fn drop(&mut self) {
        self.usage.add_replica_time(self.loaded_at.elapsed());
    }
}
