//! Cumulative usage of one deployment, and its cost. Counters are atomics: every request adds to
//! them without a lock, and the store saves a snapshot now and then (and at shutdown).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default, Debug)]
pub struct Usage {
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    audio_ms: AtomicU64,
    /// Time replicas were loaded, summed over replicas that have since been unloaded.
    replica_ms: AtomicU64,
}

/// Usage at one moment, as the management API and the store see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSnapshot {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub audio_seconds: f64,
    pub replica_seconds: f64,
}

impl Usage {
    pub fn restore(s: &UsageSnapshot) -> Self {
        Self {
            requests: AtomicU64::new(s.requests),
            prompt_tokens: AtomicU64::new(s.prompt_tokens),
            completion_tokens: AtomicU64::new(s.completion_tokens),
            audio_ms: AtomicU64::new((s.audio_seconds * 1000.0).round() as u64),
            replica_ms: AtomicU64::new((s.replica_seconds * 1000.0).round() as u64),
        }
    }

    pub fn add_request(&self, prompt_tokens: usize, completion_tokens: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.completion_tokens.fetch_add(completion_tokens as u64, Ordering::Relaxed);
    }

    pub fn add_audio(&self, audio: Duration) {
        self.audio_ms.fetch_add(audio.as_millis() as u64, Ordering::Relaxed);
    }

    /// Called when a replica unloads, with how long it was loaded.
    pub fn add_replica_time(&self, loaded: Duration) {
        self.replica_ms.fetch_add(loaded.as_millis() as u64, Ordering::Relaxed);
    }

    /// `live_replica_time`: how long the replicas loaded now have been loaded so far.
    pub fn snapshot(&self, live_replica_time: Duration) -> UsageSnapshot {
        let ms = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UsageSnapshot {
            requests: ms(&self.requests),
            prompt_tokens: ms(&self.prompt_tokens),
            completion_tokens: ms(&self.completion_tokens),
            audio_seconds: ms(&self.audio_ms) as f64 / 1000.0,
            replica_seconds: (ms(&self.replica_ms) as f64 + live_replica_time.as_millis() as f64) / 1000.0,
        }
    }
}

/// What a deployment has cost: replica-hours at its price.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub price_per_replica_hour: f64,
    pub replica_hours: f64,
    pub total: f64,
}

impl Cost {
    pub fn of(usage: &UsageSnapshot, price_per_replica_hour: f64) -> Self {
        let replica_hours = usage.replica_seconds / 3600.0;
        Self { price_per_replica_hour, replica_hours, total: replica_hours * price_per_replica_hour }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up_and_costs_replica_hours() {
        let u = Usage::default();
        u.add_request(10, 5);
        u.add_request(3, 0);
        u.add_replica_time(Duration::from_secs(1800));
        let s = u.snapshot(Duration::from_secs(1800));
        assert_eq!((s.requests, s.prompt_tokens, s.completion_tokens), (2, 13, 5));
        assert_eq!(s.replica_seconds, 3600.0);
        assert_eq!(Cost::of(&s, 2.5).total, 2.5);
        assert_eq!(Usage::restore(&s).snapshot(Duration::ZERO), s);
    }
}
