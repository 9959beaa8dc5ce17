//! One deployment's lifecycle: Standby -> Loading -> Running -> (idle) Unloading -> Standby.
//!
//! Every request holds a `Lease` from the moment it asks for the deployment until its answer is
//! complete (streams included). The lease count is what keeps a deployment from unloading with work in
//! flight, and the per-replica count is what "least loaded" compares. All state sits behind one short
//! std mutex; waiting happens on a watch channel, never under the lock.

use super::replica::Replica;
use super::spec::DeploymentSpec;
use super::usage::{Cost, Usage, UsageSnapshot};
use crate::engine::embedding::EmbeddingEngine;
use crate::engine::speech::SpeechEngine;
use crate::engine::{Engine, EngineStats};
use crate::metrics::Metrics;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    Standby,
    Loading,
    Running,
    Unloading,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Standby, Phase::Loading, Phase::Running, Phase::Unloading];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Standby => "Standby",
            Phase::Loading => "Loading",
            Phase::Running => "Running",
            Phase::Unloading => "Unloading",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

struct State {
    phase: Phase,
    desired: usize,
    /// Loaded replicas taking requests. Running means at least one.
    ready: Vec<Arc<Replica>>,
    /// Replica loads under way.
    loading: usize,
    /// Leases out: requests waiting for a load, queued or running.
    in_flight: usize,
    last_active: Instant,
    last_error: Option<String>,
    /// Counts attempts to bring the deployment up from Standby, so that a waiting request can tell
    /// whether the failure it sees is of the load it waited for.
    attempt: u64,
    failed_attempt: Option<u64>,
    next_replica: usize,
    /// Where the least-loaded scan starts, advanced per lease: replicas with equal load take turns,
    /// so short requests that rarely overlap still spread over every replica.
    turn: usize,
    deleted: bool,
}

/// A deployment as the management API, /v1/models and /metrics show it.
#[derive(Debug, Clone)]
pub struct View {
    pub phase: Phase,
    pub desired_replicas: usize,
    pub ready_replicas: usize,
    pub loading_replicas: usize,
    pub replica_devices: Vec<String>,
    pub in_flight: usize,
    pub queued: usize,
    pub running: usize,
    /// The ready replicas' KV pools: blocks in all, and blocks no running sequence holds.
    pub kv_blocks: usize,
    pub kv_blocks_available: usize,
    /// Since the replicas loaded: sequences preempted for lack of blocks, prompt tokens found cached.
    pub preemptions: usize,
    pub prefix_cached_tokens: usize,
    /// Since the replicas loaded: batch steps; grammar masks computed, the seconds spent computing
    /// them (beside the steps) and the seconds sampling waited for them.
    pub steps: usize,
    pub grammar_masks: u64,
    pub grammar_mask_seconds: f64,
    pub grammar_wait_seconds: f64,
    pub last_error: Option<String>,
    pub usage: UsageSnapshot,
    pub cost: Cost,
}

pub struct Deployment {
    pub id: String,
    pub spec: DeploymentSpec,
    pub created: u64,
    pub usage: Arc<Usage>,
    state: Mutex<State>,
    changed: watch::Sender<()>,
    metrics: Arc<Metrics>,
}

impl Deployment {
    pub fn new(id: String, spec: DeploymentSpec, created: u64, usage: Usage, metrics: Arc<Metrics>) -> Self {
        let state = State {
            phase: Phase::Standby,
            desired: spec.replicas,
            ready: Vec::new(),
            loading: 0,
            in_flight: 0,
            last_active: Instant::now(),
            last_error: None,
            attempt: 0,
            failed_attempt: None,
            next_replica: 0,
            turn: 0,
            deleted: false,
        };
        Self {
            id,
            spec,
            created,
            usage: Arc::new(usage),
            state: Mutex::new(state),
            changed: watch::channel(()).0,
            metrics,
        }
    }

    /// The name clients put in `model`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the state is still consistent
        // field by field, so carry on rather than poison every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_replace(());
    }

    pub fn phase(&self) -> Phase {
        self.state().phase
    }

    pub fn view(&self) -> View {
        let st = self.state();
        let live: Duration = st.ready.iter().map(|r| r.loaded_for()).sum();
        let usage = self.usage.snapshot(live);
        // One engine counter summed over the ready replicas.
        let total = |counter: fn(&EngineStats) -> &AtomicUsize| -> usize {
            st.ready.iter().map(|r| counter(r.stats()).load(Ordering::Relaxed)).sum()
        };
        let total64 = |counter: fn(&EngineStats) -> &AtomicU64| -> u64 {
            st.ready.iter().map(|r| counter(r.stats()).load(Ordering::Relaxed)).sum()
        };
        View {
            phase: st.phase,
            desired_replicas: st.desired,
            ready_replicas: st.ready.len(),
            loading_replicas: st.loading,
            replica_devices: st.ready.iter().map(|r| r.device.clone()).collect(),
            in_flight: st.in_flight,
            queued: total(|s| &s.waiting),
            running: total(|s| &s.running),
            kv_blocks: total(|s| &s.kv_blocks),
            kv_blocks_available: total(|s| &s.kv_blocks_available),
            preemptions: total(|s| &s.preemptions),
            prefix_cached_tokens: total(|s| &s.prefix_cached_tokens),
            steps: total(|s| &s.steps),
            grammar_masks: total64(|s| &s.grammar_masks),
            grammar_mask_seconds: total64(|s| &s.grammar_mask_nanos) as f64 * 1e-9,
            grammar_wait_seconds: total64(|s| &s.grammar_wait_nanos) as f64 * 1e-9,
            last_error: st.last_error.clone(),
            cost: Cost::of(&usage, self.spec.price_per_replica_hour),
            usage,
        }
    }

    /// The engine counters of each ready replica.
    pub fn engine_stats(&self) -> Vec<Arc<crate::engine::EngineStats>> {
        self.state().ready.iter().map(|r| r.stats().clone()).collect()
    }

    /// A lease on the least-loaded ready replica. In Standby this starts the load and waits for it;
    /// requests arriving during a load wait for that same load. A load that fails answers every
    /// request that waited for it 503 with the cause; the next request tries again.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, AcquireError> {
        // Counted before anything else, so that no unload can start while this request waits.
        self.state().in_flight += 1;
        // Dropping `pending` on an early return gives the in-flight count back.
        let pending = PendingLease { deployment: Some(self.clone()) };
        let mut waited_for = None;
        loop {
            let mut changed = self.changed.subscribe();
            {
                let mut st = self.state();
                if st.deleted {
                    return Err(AcquireError::Deleted { deployment: self.name().to_string() });
                }
                match st.phase {
                    Phase::Running => {
                        let n = st.ready.len();
                        st.turn = st.turn.wrapping_add(1);
                        let replica = (0..n)
                            .map(|i| &st.ready[(st.turn + i) % n])
                            .min_by_key(|r| r.load_score())
                            .cloned()
                            .expect("a running deployment has a ready replica");
                        replica.in_flight.fetch_add(1, Ordering::SeqCst);
                        return Ok(pending.into_lease(replica));
                    }
                    Phase::Standby => {
                        if waited_for.is_some() && st.failed_attempt == waited_for {
                            let cause = st.last_error.clone().unwrap_or_else(|| "unknown error".into());
                            return Err(AcquireError::LoadFailed { deployment: self.name().to_string(), cause });
                        }
                        st.phase = Phase::Loading;
                        st.attempt += 1;
                        st.failed_attempt = None;
                        waited_for = Some(st.attempt);
                        tracing::info!(model = %self.name(), replicas = st.desired, "loading");
                        for _ in 0..st.desired {
                            self.start_replica_load(&mut st);
                        }
                        drop(st);
                        self.notify();
                    }
                    Phase::Loading => {
                        waited_for.get_or_insert(st.attempt);
                    }
                    // Waits for Standby, then loads again.
                    Phase::Unloading => {}
                }
            }
            if changed.changed().await.is_err() {
                return Err(AcquireError::Gone { deployment: self.name().to_string() });
            }
        }
    }

    fn start_replica_load(self: &Arc<Self>, st: &mut State) {
        st.loading += 1;
        let index = st.next_replica;
        st.next_replica += 1;
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (spec, usage) = (this.spec.clone(), this.usage.clone());
            let loaded = tokio::task::spawn_blocking(move || Replica::load(&spec, index, usage))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the loader crashed: {e}")));
            this.replica_loaded(loaded, started.elapsed());
        });
    }

    fn replica_loaded(self: &Arc<Self>, loaded: anyhow::Result<Replica>, took: Duration) {
        let mut st = self.state();
        st.loading -= 1;
        match loaded {
            Ok(replica) => {
                let wanted =
                    !st.deleted && matches!(st.phase, Phase::Loading | Phase::Running) && st.ready.len() < st.desired;
                if !wanted {
                    // Scaled down or deleted while it loaded.
                    drop(st);
                    tokio::task::spawn_blocking(move || replica.stop());
                    return;
                }
                self.metrics.loaded(self.name(), took.as_secs_f64());
                tracing::info!(model = %self.name(), replica = replica.index, device = %replica.device,
                    seconds = took.as_secs_f32(), "replica loaded");
                st.ready.push(Arc::new(replica));
                if st.phase == Phase::Loading {
                    st.phase = Phase::Running;
                    st.last_active = Instant::now();
                    if let Some(timeout) = self.spec.idle_timeout {
                        tokio::spawn(self.clone().unload_when_idle(timeout));
                    }
                }
            }
            Err(e) => {
                let cause = format!("{e:#}");
                tracing::error!(model = %self.name(), error = %cause, "load failed");
                st.last_error = Some(cause);
                if st.phase == Phase::Loading && st.ready.is_empty() && st.loading == 0 {
                    st.phase = Phase::Standby;
                    st.failed_attempt = Some(st.attempt);
                }
            }
        }
        drop(st);
        self.notify();
    }

    /// Runs while the deployment is Running: unloads it once no request has been in flight for the
    /// idle timeout.
    async fn unload_when_idle(self: Arc<Self>, timeout: Duration) {
        loop {
            let wake_at = {
                let st = self.state();
                if st.phase != Phase::Running {
                    return;
                }
                let idle_since = st.last_active;
                if st.in_flight > 0 || st.loading > 0 {
                    // Busy: look again soon; `last_active` moves when the last request ends.
                    Instant::now() + timeout.min(Duration::from_secs(1))
                } else if idle_since.elapsed() >= timeout {
                    break;
                } else {
                    idle_since + timeout
                }
            };
            tokio::time::sleep_until(wake_at.into()).await;
        }
        self.unload("idle").await;
    }

    /// Frees every replica and returns to Standby. Requests arriving meanwhile wait and load again.
    async fn unload(self: &Arc<Self>, why: &str) {
        let replicas = {
            let mut st = self.state();
            if st.phase != Phase::Running || st.in_flight > 0 || st.loading > 0 {
                return;
            }
            st.phase = Phase::Unloading;
            std::mem::take(&mut st.ready)
        };
        self.notify();
        tracing::info!(model = %self.name(), reason = why, replicas = replicas.len(), "unloading");
        let started = Instant::now();
        stop_replicas(replicas).await;
        self.metrics.unloaded(self.name(), started.elapsed().as_secs_f64());
        tracing::info!(model = %self.name(), seconds = started.elapsed().as_secs_f32(), "unloaded");
        let mut st = self.state();
        st.phase = Phase::Standby;
        drop(st);
        self.notify();
    }

    /// Sets the replica count. When loaded (or loading), new replicas start loading now and removed
    /// ones drain: they take no new request and are freed once their last request is done. In
    /// Standby the count applies at the next load.
    pub fn scale(self: &Arc<Self>, replicas: usize) {
        let mut st = self.state();
        st.desired = replicas;
        if matches!(st.phase, Phase::Running | Phase::Loading) {
            for _ in st.ready.len() + st.loading..replicas {
                self.start_replica_load(&mut st);
            }
            while st.ready.len() > replicas.max(1) {
                let busiest_last = st
                    .ready
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| r.load_score())
                    .map(|(i, _)| i)
                    .expect("more replicas than wanted");
                let removed = st.ready.remove(busiest_last);
                tracing::info!(model = %self.name(), replica = removed.index, "replica draining");
            }
        }
        drop(st);
        self.notify();
    }

    /// Stops serving: waiting requests get 404, replicas are freed once their requests are done.
    pub async fn retire(self: &Arc<Self>) {
        let replicas = {
            let mut st = self.state();
            st.deleted = true;
            st.phase = Phase::Standby;
            std::mem::take(&mut st.ready)
        };
        self.notify();
        stop_replicas(replicas).await;
    }

    fn release(&self) {
        let mut st = self.state();
        st.in_flight -= 1;
        st.last_active = Instant::now();
    }
}

/// Stops replicas nobody else holds and waits for their memory to be freed; replicas that still
/// serve a request (a drained one, say) stop when that request ends.
async fn stop_replicas(replicas: Vec<Arc<Replica>>) {
    let _ = tokio::task::spawn_blocking(move || {
        crate::memory::release(|| {
            for replica in replicas {
                if let Ok(replica) = Arc::try_unwrap(replica) {
                    replica.stop();
                }
            }
        })
    })
    .await;
}

/// Gives the in-flight count back if a request stops waiting before it gets a replica.
struct PendingLease {
    deployment: Option<Arc<Deployment>>,
}

impl PendingLease {
    fn into_lease(mut self, replica: Arc<Replica>) -> Lease {
        Lease { deployment: self.deployment.take(), replica: Some(replica) }
    }
}

impl Drop for PendingLease {
    fn drop(&mut self) {
        if let Some(d) = self.deployment.take() {
            d.release();
        }
    }
}

/// Why a request got no replica to run on. `api/` answers each in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AcquireError {
    /// The deployment was deleted (before or while the request waited).
    #[error("the deployment `{deployment}` was deleted")]
    Deleted { deployment: String },
    /// The load the request waited for failed; the next request tries again.
    #[error("the deployment `{deployment}` could not be loaded: {cause}")]
    LoadFailed { deployment: String, cause: String },
    /// The deployment is being dropped while the request waited.
    #[error("the deployment `{deployment}` went away")]
    Gone { deployment: String },
}

/// A request's hold on one replica of a deployment, until its answer is complete.
pub struct Lease {
    deployment: Option<Arc<Deployment>>,
    replica: Option<Arc<Replica>>,
}

impl Lease {
    fn replica(&self) -> &Replica {
        self.replica.as_ref().expect("held until drop")
    }

    /// The chat engine; `None` unless the deployment is a text model.
    pub fn chat(&self) -> Option<&Engine> {
        self.replica().chat()
    }

    /// The speech engine; `None` unless the deployment is a voice.
    pub fn speech(&self) -> Option<&SpeechEngine> {
        self.replica().speech()
    }

    /// The embedding engine; `None` unless the deployment is an embedding model.
    pub fn embeddings(&self) -> Option<&EmbeddingEngine> {
        self.replica().embeddings()
    }

    pub fn deployment(&self) -> &Arc<Deployment> {
        self.deployment.as_ref().expect("held until drop")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The replica first: once the deployment's count reaches zero it may unload, and it can
        // free only replicas nobody holds.
        if let Some(r) = self.replica.take() {
            r.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(d) = self.deployment.take() {
            d.release();
        }
    }
}
