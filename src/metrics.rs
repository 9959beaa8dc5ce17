//! `GET /metrics` for Prometheus (OpenMetrics text). Counters and histograms are updated as requests
//! go; per-deployment gauges (state, replicas, queue depth, running sequences, KV blocks) are given
//! at scrape time (`Gauges`, which the /metrics handler reads from the deployments), so they can
//! never drift from the truth. This module imports nothing of Wick's: deploy writes to it, and it
//! does not read deploy.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    deployment: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    method: String,
    /// The route as declared (`/v1/chat/completions`), never the raw path, so that unknown paths
    /// cannot grow the label set without bound.
    route: String,
    status: u16,
}

type Histograms = Family<DeploymentLabel, Histogram, fn() -> Histogram>;

/// One deployment's gauges at scrape time.
#[derive(Debug, Default)]
pub struct Gauges<'a> {
    pub deployment: &'a str,
    /// Every state's name, and whether it is the deployment's now.
    pub states: Vec<(&'static str, bool)>,
    pub ready_replicas: usize,
    pub desired_replicas: usize,
    pub queued: usize,
    pub running: usize,
    pub kv_blocks: usize,
    pub kv_blocks_used: usize,
    /// Since the replicas loaded.
    pub preemptions: usize,
    pub prefix_cached_tokens: usize,
    pub steps: usize,
    pub grammar_masks: u64,
    pub grammar_mask_seconds: f64,
    pub grammar_wait_seconds: f64,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabel, Counter>,
    ttft: Histograms,
    inter_token: Histograms,
    prompt_tokens: Family<DeploymentLabel, Counter>,
    generated_tokens: Family<DeploymentLabel, Counter>,
    load_seconds: Histograms,
    unload_seconds: Histograms,
    state: Family<StateLabel, Gauge>,
    replicas: Family<DeploymentLabel, Gauge>,
    desired_replicas: Family<DeploymentLabel, Gauge>,
    queue_depth: Family<DeploymentLabel, Gauge>,
    running: Family<DeploymentLabel, Gauge>,
    kv_blocks: Family<DeploymentLabel, Gauge>,
    kv_blocks_used: Family<DeploymentLabel, Gauge>,
    preemptions: Family<DeploymentLabel, Gauge>,
    prefix_cached_tokens: Family<DeploymentLabel, Gauge>,
    steps: Family<DeploymentLabel, Gauge>,
    grammar_masks: Family<DeploymentLabel, Gauge>,
    grammar_mask_seconds: Family<DeploymentLabel, Gauge<f64, AtomicU64>>,
    grammar_wait_seconds: Family<DeploymentLabel, Gauge<f64, AtomicU64>>,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn load_buckets() -> Histogram {
    // 10 ms to ~11 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wick");
        let m = Self {
            requests: Family::default(),
            ttft: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            inter_token: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            load_seconds: Family::new_with_constructor(load_buckets as fn() -> Histogram),
            unload_seconds: Family::new_with_constructor(load_buckets as fn() -> Histogram),
            state: Family::default(),
            replicas: Family::default(),
            desired_replicas: Family::default(),
            queue_depth: Family::default(),
            running: Family::default(),
            kv_blocks: Family::default(),
            kv_blocks_used: Family::default(),
            preemptions: Family::default(),
            prefix_cached_tokens: Family::default(),
            steps: Family::default(),
            grammar_masks: Family::default(),
            grammar_mask_seconds: Family::default(),
            grammar_wait_seconds: Family::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route and status code", m.requests.clone());
        registry.register("time_to_first_token_seconds", "Time from request to first token", m.ttft.clone());
        registry.register("inter_token_latency_seconds", "Time between streamed tokens", m.inter_token.clone());
        registry.register("prompt_tokens", "Prompt tokens processed", m.prompt_tokens.clone());
        registry.register("generated_tokens", "Completion tokens generated", m.generated_tokens.clone());
        registry.register("load_duration_seconds", "Time to load one replica", m.load_seconds.clone());
        registry.register("unload_duration_seconds", "Time to unload a deployment", m.unload_seconds.clone());
        registry.register("deployment_state", "1 for the deployment's current state", m.state.clone());
        registry.register("deployment_replicas", "Replicas loaded and ready", m.replicas.clone());
        registry.register("deployment_desired_replicas", "Replicas asked for", m.desired_replicas.clone());
        registry.register("deployment_queue_depth", "Requests waiting in the engines' queues", m.queue_depth.clone());
        registry.register("deployment_running_sequences", "Sequences being decoded", m.running.clone());
        registry.register("deployment_kv_blocks", "KV cache blocks in the ready replicas' pools", m.kv_blocks.clone());
        registry.register(
            "deployment_kv_blocks_used",
            "KV cache blocks held by running sequences",
            m.kv_blocks_used.clone(),
        );
        registry.register(
            "deployment_preemptions",
            "Sequences preempted for lack of KV blocks since the replicas loaded",
            m.preemptions.clone(),
        );
        registry.register(
            "deployment_prefix_cached_tokens",
            "Prompt tokens found in the prefix cache since the replicas loaded",
            m.prefix_cached_tokens.clone(),
        );
        registry.register("deployment_steps", "Batch steps run since the replicas loaded", m.steps.clone());
        registry.register(
            "deployment_grammar_masks",
            "Grammar token masks computed (one per constrained token) since the replicas loaded",
            m.grammar_masks.clone(),
        );
        registry.register(
            "deployment_grammar_mask_seconds",
            "Seconds spent computing grammar masks, on threads beside the batch steps",
            m.grammar_mask_seconds.clone(),
        );
        registry.register(
            "deployment_grammar_wait_seconds",
            "Seconds sampling waited for grammar masks that were not ready",
            m.grammar_wait_seconds.clone(),
        );
        Self { registry, ..m }
    }
}

fn label(deployment: &str) -> DeploymentLabel {
    DeploymentLabel { deployment: deployment.to_string() }
}

impl Metrics {
    pub fn request_answered(&self, method: &str, route: &str, status: u16) {
        let l = RequestLabel { method: method.to_string(), route: route.to_string(), status };
        self.requests.get_or_create(&l).inc();
    }

    pub fn first_token(&self, deployment: &str, seconds: f64) {
        self.ttft.get_or_create(&label(deployment)).observe(seconds);
    }

    pub fn inter_token(&self, deployment: &str, seconds: f64) {
        self.inter_token.get_or_create(&label(deployment)).observe(seconds);
    }

    pub fn tokens(&self, deployment: &str, prompt: usize, generated: usize) {
        self.prompt_tokens.get_or_create(&label(deployment)).inc_by(prompt as u64);
        self.generated_tokens.get_or_create(&label(deployment)).inc_by(generated as u64);
    }

    pub fn loaded(&self, deployment: &str, seconds: f64) {
        self.load_seconds.get_or_create(&label(deployment)).observe(seconds);
    }

    pub fn unloaded(&self, deployment: &str, seconds: f64) {
        self.unload_seconds.get_or_create(&label(deployment)).observe(seconds);
    }

    /// The OpenMetrics text of every metric, with each deployment's gauges as they are now.
    pub fn render(&self, deployments: &[Gauges<'_>]) -> String {
        let gauges = [
            &self.replicas,
            &self.desired_replicas,
            &self.queue_depth,
            &self.running,
            &self.kv_blocks,
            &self.kv_blocks_used,
            &self.preemptions,
            &self.prefix_cached_tokens,
            &self.steps,
            &self.grammar_masks,
        ];
        for family in gauges {
            family.clear();
        }
        self.grammar_mask_seconds.clear();
        self.grammar_wait_seconds.clear();
        self.state.clear();
        for g in deployments {
            let l = label(g.deployment);
            for &(state, current) in &g.states {
                let s = StateLabel { deployment: g.deployment.to_string(), state: state.to_string() };
                self.state.get_or_create(&s).set(i64::from(current));
            }
            self.replicas.get_or_create(&l).set(g.ready_replicas as i64);
            self.desired_replicas.get_or_create(&l).set(g.desired_replicas as i64);
            self.queue_depth.get_or_create(&l).set(g.queued as i64);
            self.running.get_or_create(&l).set(g.running as i64);
            self.kv_blocks.get_or_create(&l).set(g.kv_blocks as i64);
            self.kv_blocks_used.get_or_create(&l).set(g.kv_blocks_used as i64);
            self.preemptions.get_or_create(&l).set(g.preemptions as i64);
            self.prefix_cached_tokens.get_or_create(&l).set(g.prefix_cached_tokens as i64);
            self.steps.get_or_create(&l).set(g.steps as i64);
            self.grammar_masks.get_or_create(&l).set(g.grammar_masks as i64);
            self.grammar_mask_seconds.get_or_create(&l).set(g.grammar_mask_seconds);
            self.grammar_wait_seconds.get_or_create(&l).set(g.grammar_wait_seconds);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
