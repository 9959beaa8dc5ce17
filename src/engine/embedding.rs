//! The engine of one embedding replica, on the shared one-forward engine (`batch`): the inputs of
//! every request queue together, one job each, so that a request's inputs and those of concurrent
//! requests share a padded forward.

use super::batch::{BatchEngine, Batcher, Job};
use super::{EngineError, EngineStats};
use crate::arch::sentence::SentenceEncoder;
use crate::loader::embedding::{EmbeddingInfo, EmbeddingModel};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most inputs in one forward.
pub const MAX_BATCH_INPUTS: usize = 64;
/// Most positions in one forward, padding included (inputs times the longest): attention holds
/// heads x longest² scores per input, so this bounds a step's memory (about 200 MB for
/// all-MiniLM-L6-v2's 12 heads at its 256-token limit).
pub const MAX_BATCH_POSITIONS: usize = 8192;

pub type Reply = Result<Vec<f32>, EngineError>;

pub struct EmbeddingEngine {
    batches: BatchEngine<Embedder>,
    pub info: Arc<EmbeddingInfo>,
    pub stats: Arc<EngineStats>,
}

impl EmbeddingEngine {
    pub fn start(model: EmbeddingModel, name: &str) -> std::io::Result<Self> {
        let EmbeddingModel { encoder, info } = model;
        let batches = BatchEngine::start(Embedder(encoder), format!("embed-{name}"))?;
        let stats = batches.stats.clone();
        Ok(Self { batches, info, stats })
    }

    /// Queues each input (token ids, special tokens included); its vector arrives on the matching
    /// receiver.
    pub fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<oneshot::Receiver<Reply>>, EngineError> {
        inputs.into_iter().map(|ids| self.batches.submit(ids)).collect()
    }

    /// Stops taking inputs and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        self.batches.stop();
    }
}

struct Embedder(SentenceEncoder);

impl Batcher for Embedder {
    type Input = Vec<u32>;
    type Output = Vec<f32>;
    const WORK: &'static str = "embedding";

    fn take_batch(queue: &mut VecDeque<Job<Vec<u32>, Vec<f32>>>) -> Vec<Job<Vec<u32>, Vec<f32>>> {
        take_batch(queue)
    }

    fn run(&self, inputs: Vec<Vec<u32>>) -> anyhow::Result<Vec<Vec<f32>>> {
        self.0.embed(&inputs)
    }
}

/// The oldest inputs, in order, while the batch stays within both limits (the first always goes,
/// whatever its length).
fn take_batch(queue: &mut VecDeque<Job<Vec<u32>, Vec<f32>>>) -> Vec<Job<Vec<u32>, Vec<f32>>> {
    let mut batch = Vec::new();
    let mut longest = 0;
    while let Some(job) = queue.front() {
        let longer = longest.max(job.input.len());
        let fits = batch.len() < MAX_BATCH_INPUTS && (batch.len() + 1) * longer <= MAX_BATCH_POSITIONS;
        if !batch.is_empty() && !fits {
            break;
        }
        longest = longer;
        batch.push(queue.pop_front().expect("looked at"));
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch::next_batch;
    use std::sync::atomic::Ordering;

    fn job(len: usize) -> (Job<Vec<u32>, Vec<f32>>, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        (Job { input: vec![1; len], reply }, rx)
    }

    #[test]
    fn batches_keep_order_and_limits_and_skip_the_departed() {
        let stats = EngineStats::default();
        let mut queue = VecDeque::new();
        let mut keep = Vec::new();
        // 100 inputs of 10 tokens: the input limit cuts first.
        for _ in 0..100 {
            let (j, rx) = job(10);
            queue.push_back(j);
            keep.push(rx);
        }
        stats.waiting.store(100, Ordering::SeqCst);
        assert_eq!(next_batch::<Embedder>(&mut queue, &stats).len(), MAX_BATCH_INPUTS);
        assert_eq!(next_batch::<Embedder>(&mut queue, &stats).len(), 100 - MAX_BATCH_INPUTS);
        assert_eq!(stats.waiting.load(Ordering::SeqCst), 0);

        // Long inputs: the position limit cuts (32 x 256 = 8192), and a gone requester's input is dropped.
        let (gone, rx) = job(256);
        drop(rx);
        queue.push_back(gone);
        for _ in 0..40 {
            let (j, rx) = job(256);
            queue.push_back(j);
            keep.push(rx);
        }
        stats.waiting.store(41, Ordering::SeqCst);
        assert_eq!(next_batch::<Embedder>(&mut queue, &stats).len(), 32);
        assert_eq!(next_batch::<Embedder>(&mut queue, &stats).len(), 8);
        assert_eq!(stats.waiting.load(Ordering::SeqCst), 0);
    }
}
