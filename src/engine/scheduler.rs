//! Continuous batching, as plain state: which requests wait, which sequences run, who joins the
//! next step, and whose KV blocks are where. No model here, so every rule is unit-tested directly.
//!
//! Rules: first come, first served (a request that does not fit blocks those behind it, so a big
//! request is never starved); the `n` choices of a request join together; a step holds at most
//! `max_batch_size` sequences and `max_step_tokens` new tokens; a request joins only when the KV pool
//! has blocks for its prompt beyond what the running sequences need next. When nothing runs, the head
//! of the queue is always admitted so that one oversized request cannot wedge the queue.
//!
//! When a running sequence needs a block and the pool is empty, the most recently admitted sequence
//! is preempted: its blocks go back and it waits, ahead of every new request, to compute its tokens
//! again (vLLM's "recompute"; its full blocks usually survive in the prefix cache, so that is cheap).
//! Nothing fails for lack of memory; a sequence that alone outgrows the whole pool ends as if it had
//! reached its context length.

use super::sequence::{GenerationRequest, Sequence};
use super::{EngineError, Event, FinishReason};
use crate::kv::{BlockManager, BLOCK_SIZE};
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_batch_size: usize,
    pub max_step_tokens: usize,
    pub max_queue: usize,
    /// The KV pool's size in tokens (rounded up to whole blocks); on CUDA also at most what fits in
    /// the GPU memory the weights leave free.
    pub max_kv_tokens: usize,
    /// Most tokens one completion may generate (a request asking for more is refused); `None`: up
    /// to the context length.
    pub max_completion_tokens: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_step_tokens: 2048,
            max_queue: 256,
            max_kv_tokens: 65_536,
            max_completion_tokens: None,
        }
    }
}

pub struct Scheduler {
    pub limits: Limits,
    waiting: VecDeque<GenerationRequest>,
    /// Sequences pushed out for lack of blocks, in admission order; they rejoin before any request.
    preempted: VecDeque<Sequence>,
    pub running: Vec<Sequence>,
    pub blocks: BlockManager,
    /// Preemptions so far.
    pub preemptions: usize,
}

impl Scheduler {
    /// A scheduler with a pool of `limits.max_kv_tokens` positions.
    pub fn new(limits: Limits) -> Self {
        let blocks = crate::kv::pool_blocks(limits.max_kv_tokens);
        Self::with_blocks(limits, blocks)
    }

    pub fn with_blocks(limits: Limits, blocks: usize) -> Self {
        Self {
            limits,
            waiting: VecDeque::new(),
            preempted: VecDeque::new(),
            running: Vec::new(),
            blocks: BlockManager::new(blocks),
            preemptions: 0,
        }
    }

    pub fn enqueue(&mut self, request: GenerationRequest) {
        self.waiting.push_back(request);
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.preempted.is_empty() && self.running.is_empty()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets requests and sequences whose client has gone. Returns how many sequences stopped.
    pub fn drop_abandoned(&mut self) -> usize {
        self.waiting.retain(|r| !r.events.is_closed());
        self.preempted.retain(|s| !s.is_abandoned());
        let (gone, running): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.running).into_iter().partition(|s| s.is_abandoned());
        self.running = running;
        let stopped = gone.len();
        for seq in gone {
            self.blocks.release(seq.table);
        }
        stopped
    }

    /// Moves preempted sequences, then waiting requests, into the running batch while the limits
    /// allow. Returns how many requests joined.
    pub fn admit(&mut self) -> usize {
        let l = &self.limits;
        let mut step_tokens: usize = self.running.iter().map(|s| s.pending().len()).sum();
        // Blocks the running sequences will take for their next tokens are not for newcomers.
        let mut spoken_for: usize = self.running.iter().map(growth).sum();
        let mut admitted = 0;
        loop {
            let tokens = match (self.preempted.front(), self.waiting.front()) {
                (Some(seq), _) => &seq.tokens,
                (None, Some(req)) => &req.prompt,
                (None, None) => break,
            };
            let n = self.preempted.front().map_or_else(|| self.waiting.front().map_or(1, |r| r.n), |_| 1);
            let cached = self.blocks.cached_prefix(tokens);
            let len = tokens.len();
            let blocks = n * (BlockManager::blocks_for(len) - cached / BLOCK_SIZE);
            let prefill = n * (len - cached);
            if blocks > self.blocks.num_blocks() {
                // More than the whole pool: it could never run. Only a request can be this big (a
                // preempted sequence ran before), and its choices are told why.
                let req = self.waiting.pop_front().expect("the front is a request");
                let _ = req.events.send(Event::Error(EngineError::TooLarge(format!(
                    "the prompt needs {} KV cache positions for its {n} choices, more than this replica has ({})",
                    n * len,
                    self.blocks.num_blocks() * BLOCK_SIZE
                ))));
                continue;
            }
            let fits = self.running.len() + n <= l.max_batch_size
                && step_tokens + prefill <= l.max_step_tokens
                && spoken_for + blocks <= self.blocks.available();
            if !fits && !self.running.is_empty() {
                break;
            }
            let joining: Vec<Sequence> = match self.preempted.pop_front() {
                Some(seq) => vec![seq],
                None => {
                    let mut req = self.waiting.pop_front().expect("front exists");
                    admitted += 1;
                    (0..req.n).map(|choice| Sequence::new(&mut req, choice)).collect()
                }
            };
            for mut seq in joining {
                let (table, cached) = self.blocks.start(&seq.tokens);
                (seq.table, seq.cached) = (table, cached);
                seq.cached_prompt.get_or_insert(cached);
                step_tokens += seq.pending().len();
                spoken_for += growth(&seq);
                self.running.push(seq);
            }
        }
        admitted
    }

    /// Gives every running sequence blocks for this step's tokens, oldest first, preempting the most
    /// recently admitted sequences while the pool is short. Returns how many were preempted.
    pub fn reserve_step(&mut self) -> usize {
        let mut preempted = 0;
        let mut i = 0;
        while i < self.running.len() {
            let seq = &mut self.running[i];
            if self.blocks.reserve(&mut seq.table, seq.tokens.len()) {
                i += 1;
                continue;
            }
            if self.running.len() == 1 {
                // Alone and still short: the pool is this sequence's context limit.
                let mut seq = self.running.pop().expect("one sequence");
                seq.end(FinishReason::Length);
                self.blocks.release(std::mem::take(&mut seq.table));
                self.running.push(seq);
                break;
            }
            let mut victim = self.running.pop().expect("at least two sequences");
            self.blocks.release(std::mem::take(&mut victim.table));
            victim.cached = 0;
            // Victims leave newest first; pushing each to the front keeps admission order.
            self.preempted.push_front(victim);
            self.preemptions += 1;
            preempted += 1;
        }
        preempted
    }

    /// After a step computed every running sequence's pending tokens: they are in the cache now, and
    /// the blocks they filled can be shared.
    pub fn record_step(&mut self) {
        for seq in &mut self.running {
            seq.cached = seq.tokens.len();
            self.blocks.register_full(&mut seq.table, &seq.tokens);
        }
    }

    /// Removes and returns the sequences that finished, their blocks given back.
    pub fn retire_finished(&mut self) -> Vec<Sequence> {
        let (mut done, running): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.running).into_iter().partition(|s| s.finish.is_some());
        self.running = running;
        for seq in &mut done {
            self.blocks.release(std::mem::take(&mut seq.table));
        }
        done
    }
}

/// Blocks a sequence still needs for its pending tokens.
fn growth(seq: &Sequence) -> usize {
    BlockManager::blocks_for(seq.tokens.len()).saturating_sub(seq.table.blocks.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::SamplingParams;
    use tokio::sync::mpsc;

    fn request_with(prompt: Vec<u32>, n: usize) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = GenerationRequest {
            prompt,
            n,
            max_tokens: 16,
            sampling: SamplingParams::default(),
            stop: vec![],
            constraint: None,
            events: tx,
        };
        (req, rx)
    }

    fn request(prompt_len: usize, n: usize) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
        request_with(vec![1; prompt_len], n)
    }

    fn scheduler(max_batch_size: usize, max_step_tokens: usize, max_kv_tokens: usize) -> Scheduler {
        Scheduler::new(Limits {
            max_batch_size,
            max_step_tokens,
            max_queue: 8,
            max_kv_tokens,
            max_completion_tokens: None,
        })
    }

    /// What the engine does around a forward: blocks for the step, then the tokens are cached, and
    /// each sequence samples one more (token 7 here).
    /// Returns the sequences that ended for lack of blocks.
    fn step(s: &mut Scheduler) -> Vec<Sequence> {
        s.reserve_step();
        let ended = s.retire_finished();
        s.record_step();
        for seq in &mut s.running {
            seq.tokens.push(7);
        }
        ended
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
        assert_eq!(s.admit(), 3);
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
        assert_eq!(s.admit(), 1);
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
        assert_eq!(s.admit(), 1);
        assert_eq!(s.running.len(), 1);
        // While it prefills, the step is over budget: the next waits.
        assert_eq!(s.admit(), 0);
    }

    #[test]
    fn admission_waits_for_free_blocks() {
        // A pool of 4 blocks; each 20-token prompt needs 2.
        let mut s = scheduler(8, 1000, 4 * BLOCK_SIZE);
        let mut keep = vec![];
        for seed in 0..3 {
            let (r, rx) = request_with((0..20).map(|i| i * 10 + seed).collect(), 1);
            keep.push(rx);
            s.enqueue(r);
        }
        assert_eq!(s.admit(), 2);
        assert_eq!(s.waiting_len(), 1);
        step(&mut s);
        s.running[0].finish = Some(FinishReason::Stop);
        s.retire_finished();
        assert_eq!(s.admit(), 1, "the finished sequence's blocks let the third in");
    }

    #[test]
    fn a_request_sharing_a_cached_prefix_skips_its_prefill() {
        let mut s = scheduler(8, 1000, 1000);
        let system: Vec<u32> = (100..140).collect(); // two full blocks and 8 more
        let (a, _ra) = request_with(system.clone(), 1);
        s.enqueue(a);
        s.admit();
        step(&mut s);
        let mut prompt = system[..32].to_vec();
        prompt.extend([1, 2, 3]);
        let (b, _rb) = request_with(prompt, 1);
        s.enqueue(b);
        s.admit();
        let b = &s.running[1];
        assert_eq!((b.cached, b.pending().len()), (32, 3));
        assert_eq!(b.table.blocks[..2], s.running[0].table.blocks[..2], "blocks shared, not copied");
    }

    #[test]
    fn running_out_of_blocks_preempts_the_newest_and_it_resumes_first() {
        // 3 blocks. Two 15-token prompts take one block each; at 17 tokens each wants a second and
        // the pool has one left: the newer sequence is preempted.
        let mut s = scheduler(8, 1000, 3 * BLOCK_SIZE);
        let (a, _ra) = request_with((0..15).collect(), 1);
        let (b, _rb) = request_with((50..65).collect(), 1);
        let (c, _rc) = request(4, 1);
        s.enqueue(a);
        s.enqueue(b);
        assert_eq!(s.admit(), 2);
        for _ in 0..3 {
            step(&mut s);
        }
        assert_eq!(s.preemptions, 1);
        assert_eq!(s.running.len(), 1);
        assert_eq!(s.running[0].tokens[0], 0, "the older sequence keeps running");
        // A new request waits behind the preempted sequence.
        s.enqueue(c);
        s.running[0].finish = Some(FinishReason::Stop);
        s.retire_finished();
        s.admit();
        assert_eq!(s.running[0].tokens[0], 50, "the preempted sequence rejoins first");
        let resumed = &s.running[0];
        assert_eq!(resumed.tokens.len(), 17, "with every token it had");
        assert_eq!(resumed.cached, 16, "its full block survived in the prefix cache: one token to recompute");
    }

    #[test]
    fn a_sequence_alone_outgrowing_the_pool_ends_with_length() {
        let mut s = scheduler(8, 1000, 2 * BLOCK_SIZE);
        let (a, mut ra) = request(30, 1);
        s.enqueue(a);
        s.admit();
        let done: Vec<Sequence> = (0..5).flat_map(|_| step(&mut s)).collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].finish, Some(FinishReason::Length));
        assert_eq!(done[0].tokens.len(), 33, "32 positions cached, and the token sampled from the last");
        assert!(matches!(ra.try_recv(), Ok(Event::Done { reason: FinishReason::Length, .. })));
        assert_eq!(s.blocks.available(), 2);
    }

    #[test]
    fn a_prompt_bigger_than_the_pool_is_refused() {
        let mut s = scheduler(8, 1000, 2 * BLOCK_SIZE);
        let (a, mut ra) = request(20, 2);
        s.enqueue(a);
        assert_eq!(s.admit(), 0);
        assert!(s.is_idle());
        assert!(matches!(ra.try_recv(), Ok(Event::Error(EngineError::TooLarge(e))) if e.contains("KV cache")));
    }

    #[test]
    fn abandoned_requests_and_sequences_are_dropped() {
        let mut s = scheduler(8, 1000, 1000);
        let (a, ra) = request(4, 2);
        let (b, rb) = request(4, 1);
        let (c, _rc) = request(4, 1);
        s.enqueue(a);
        s.admit();
        step(&mut s);
        s.enqueue(b);
        s.enqueue(c);
        drop(ra);
        drop(rb);
        assert_eq!(s.drop_abandoned(), 2);
        assert!(s.running.is_empty());
        assert_eq!(s.waiting_len(), 1);
        assert_eq!(s.blocks.available(), s.blocks.num_blocks(), "their blocks came back");
    }
}
