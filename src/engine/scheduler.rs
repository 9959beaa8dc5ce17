//! Continuous batching, as plain state: which requests wait, which sequences run, and who joins the
//! next step. No model here, so every rule is unit-tested directly.
//!
//! Rules: first come, first served (a request that does not fit blocks those behind it, so a big
//! request is never starved); the `n` choices of a request join together; a step holds at most
//! `max_batch_size` sequences and `max_step_tokens` new tokens; the KV caches hold at most
//! `max_kv_tokens` tokens at admission. When nothing runs, the head of the queue is always admitted so
//! that one oversized request cannot wedge the queue.

use super::sequence::{GenerationRequest, Sequence};
use crate::arch::attention::KvCache;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_batch_size: usize,
    pub max_step_tokens: usize,
    pub max_queue: usize,
    pub max_kv_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_batch_size: 32, max_step_tokens: 2048, max_queue: 256, max_kv_tokens: 65_536 }
    }
}

/// Cache positions reserved up front beyond the prompt; longer generations grow the cache.
const INITIAL_GENERATION_RESERVE: usize = 512;

pub struct Scheduler {
    pub limits: Limits,
    waiting: VecDeque<GenerationRequest>,
    pub running: Vec<Sequence>,
}

impl Scheduler {
    pub fn new(limits: Limits) -> Self {
        Self { limits, waiting: VecDeque::new(), running: Vec::new() }
    }

    pub fn enqueue(&mut self, request: GenerationRequest) {
        self.waiting.push_back(request);
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets requests and sequences whose client has gone. Returns how many sequences stopped.
    pub fn drop_abandoned(&mut self) -> usize {
        self.waiting.retain(|r| !r.events.is_closed());
        let before = self.running.len();
        self.running.retain(|s| !s.is_abandoned());
        before - self.running.len()
    }

    /// Moves waiting requests into the running batch while the limits allow. Returns how many
    /// requests joined.
    pub fn admit(&mut self, new_cache: impl Fn(usize) -> KvCache) -> usize {
        let l = &self.limits;
        let mut step_tokens: usize = self.running.iter().map(|s| s.pending().len()).sum();
        let mut kv_tokens: usize = self.running.iter().map(|s| s.tokens.len()).sum();
        let mut admitted = 0;
        while let Some(req) = self.waiting.front() {
            let n = req.n;
            let prefill = n * req.prompt.len();
            let fits = self.running.len() + n <= l.max_batch_size
                && step_tokens + prefill <= l.max_step_tokens
                && kv_tokens + prefill + n <= l.max_kv_tokens;
            if !fits && !self.running.is_empty() {
                break;
            }
            let req = self.waiting.pop_front().expect("front exists");
            let reserve = req.prompt.len() + req.max_tokens.min(INITIAL_GENERATION_RESERVE);
            for choice in 0..n {
                self.running.push(Sequence::new(&req, choice, new_cache(reserve)));
            }
            step_tokens += prefill;
            kv_tokens += prefill;
            admitted += 1;
        }
        admitted
    }

    /// Removes and returns the sequences that finished in the last step.
    pub fn retire_finished(&mut self) -> Vec<Sequence> {
        let (done, running): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.running).into_iter().partition(|s| s.finish.is_some());
        self.running = running;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::SamplingParams;
    use crate::engine::Event;
    use tokio::sync::mpsc;

    fn request(prompt_len: usize, n: usize) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = GenerationRequest {
            prompt: vec![1; prompt_len],
            n,
            max_tokens: 16,
            sampling: SamplingParams::default(),
            stop: vec![],
            events: tx,
        };
        (req, rx)
    }

    fn scheduler(max_batch_size: usize, max_step_tokens: usize, max_kv_tokens: usize) -> Scheduler {
        Scheduler::new(Limits { max_batch_size, max_step_tokens, max_queue: 8, max_kv_tokens })
    }

    #[test]
    fn batch_size_limit_and_fifo_order() {
        let mut s = scheduler(3, 1000, 1000);
        let mut keep = vec![];
        for len in [5, 6, 7, 8] {
            let (r, rx) = request(len, 1);
            keep.push(rx);
            s.enqueue(r);
        }
        assert_eq!(s.admit(|_| KvCache::default()), 3);
        let lens: Vec<usize> = s.running.iter().map(|q| q.prompt_len).collect();
        assert_eq!(lens, vec![5, 6, 7]);
        assert_eq!(s.waiting_len(), 1);
    }

    #[test]
    fn n_choices_join_together_or_not_at_all() {
        let mut s = scheduler(4, 1000, 1000);
        let (a, _ra) = request(4, 3);
        let (b, _rb) = request(4, 2);
        s.enqueue(a);
        s.enqueue(b);
        assert_eq!(s.admit(|_| KvCache::default()), 1);
        assert_eq!(s.running.len(), 3);
        let choices: Vec<usize> = s.running.iter().map(|q| q.choice).collect();
        assert_eq!(choices, vec![0, 1, 2]);
    }

    #[test]
    fn step_token_budget_defers_prefills_but_never_wedges() {
        let mut s = scheduler(8, 10, 1000);
        let (big, _r1) = request(50, 1);
        let (small, _r2) = request(3, 1);
        s.enqueue(big);
        s.enqueue(small);
        // Nothing runs: the oversized head is admitted alone.
        assert_eq!(s.admit(|_| KvCache::default()), 1);
        assert_eq!(s.running.len(), 1);
        // While it prefills, the step is over budget: the next waits.
        assert_eq!(s.admit(|_| KvCache::default()), 0);
    }

    #[test]
    fn kv_budget_counts_running_tokens() {
        let mut s = scheduler(8, 1000, 20);
        let (a, _ra) = request(12, 1);
        let (b, _rb) = request(12, 1);
        s.enqueue(a);
        s.enqueue(b);
        assert_eq!(s.admit(|_| KvCache::default()), 1);
        assert_eq!(s.waiting_len(), 1);
    }

    #[test]
    fn abandoned_requests_and_sequences_are_dropped() {
        let mut s = scheduler(8, 1000, 1000);
        let (a, ra) = request(4, 2);
        let (b, rb) = request(4, 1);
        let (c, _rc) = request(4, 1);
        s.enqueue(a);
        s.admit(|_| KvCache::default());
        s.enqueue(b);
        s.enqueue(c);
        drop(ra);
        drop(rb);
        assert_eq!(s.drop_abandoned(), 2);
        assert!(s.running.is_empty());
        assert_eq!(s.waiting_len(), 1);
    }
}
