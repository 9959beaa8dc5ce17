//! The engine of one embedding replica: a worker thread that owns the encoder and runs inputs in
//! padded batches. The inputs of every request queue together, one job each, so that a request's
//! inputs and those of concurrent requests share a forward; each input's vector goes back on its own
//! channel. An input whose requester has gone is skipped.

use super::EngineStats;
use crate::arch::sentence::SentenceEncoder;
use crate::loader::embedding::{EmbeddingInfo, EmbeddingModel};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Most inputs in one forward.
pub const MAX_BATCH_INPUTS: usize = 64;
/// Most positions in one forward, padding included (inputs times the longest): attention holds
/// heads x longest² scores per input, so this bounds a step's memory (about 200 MB for
/// all-MiniLM-L6-v2's 12 heads at its 256-token limit).
pub const MAX_BATCH_POSITIONS: usize = 8192;

pub type Reply = Result<Vec<f32>, String>;

struct Job {
    ids: Vec<u32>,
    reply: oneshot::Sender<Reply>,
}

pub struct EmbeddingEngine {
    submit: mpsc::Sender<Job>,
    worker: std::thread::JoinHandle<()>,
    pub info: Arc<EmbeddingInfo>,
    pub stats: Arc<EngineStats>,
}

impl EmbeddingEngine {
    pub fn start(model: EmbeddingModel, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let EmbeddingModel { encoder, info } = model;
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || Worker { encoder, stats: worker_stats, queue: VecDeque::new() }.run(rx))?;
        Ok(Self { submit: tx, worker, info, stats })
    }

    /// Queues each input (token ids, special tokens included); its vector arrives on the matching
    /// receiver.
    pub fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<oneshot::Receiver<Reply>>, String> {
        let mut receivers = Vec::with_capacity(inputs.len());
        for ids in inputs {
            let (reply, rx) = oneshot::channel();
            self.stats.waiting.fetch_add(1, Ordering::SeqCst);
            self.submit.send(Job { ids, reply }).map_err(|_| {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                "the embedding engine stopped".to_string()
            })?;
            receivers.push(rx);
        }
        Ok(receivers)
    }

    /// Stops taking inputs and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        let Self { submit, worker, .. } = self;
        drop(submit);
        if worker.join().is_err() {
            tracing::error!("an embedding worker panicked while stopping");
        }
    }
}

struct Worker {
    encoder: SentenceEncoder,
    stats: Arc<EngineStats>,
    queue: VecDeque<Job>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            if self.queue.is_empty() {
                match rx.recv() {
                    Ok(job) => self.queue.push_back(job),
                    Err(_) => return, // the engine was dropped and nothing is left
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.queue.push_back(job);
            }
            let batch = take_batch(&mut self.queue, &self.stats);
            if batch.is_empty() {
                continue; // every queued input's requester had gone
            }
            self.stats.running.store(batch.len(), Ordering::SeqCst);
            let mut batch = batch;
            let ids: Vec<Vec<u32>> = batch.iter_mut().map(|j| std::mem::take(&mut j.ids)).collect();
            let encoder = &self.encoder;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encoder.embed(&ids)));
            let result = match result {
                Ok(Ok(vectors)) => Ok(vectors),
                Ok(Err(e)) => Err(format!("embedding failed: {e:#}")),
                Err(panic) => Err(super::panic_message(panic.as_ref(), "embedding panicked")),
            };
            match result {
                Ok(vectors) => {
                    for (job, vector) in batch.into_iter().zip(vectors) {
                        let _ = job.reply.send(Ok(vector));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, inputs = batch.len(), "embedding step failed");
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
            self.stats.running.store(0, Ordering::SeqCst);
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The oldest inputs, in order, while the batch stays within both limits (the first always goes,
/// whatever its length). Inputs whose requester has gone are dropped here.
fn take_batch(queue: &mut VecDeque<Job>, stats: &EngineStats) -> Vec<Job> {
    let mut batch: Vec<Job> = Vec::new();
    let mut longest = 0;
    while let Some(job) = queue.front() {
        if job.reply.is_closed() {
            queue.pop_front();
            stats.waiting.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let longer = longest.max(job.ids.len());
        let fits = batch.len() < MAX_BATCH_INPUTS && (batch.len() + 1) * longer <= MAX_BATCH_POSITIONS;
        if !batch.is_empty() && !fits {
            break;
        }
        longest = longer;
        batch.push(queue.pop_front().expect("looked at"));
        stats.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(len: usize) -> (Job, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        (Job { ids: vec![1; len], reply }, rx)
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
        assert_eq!(take_batch(&mut queue, &stats).len(), MAX_BATCH_INPUTS);
        assert_eq!(take_batch(&mut queue, &stats).len(), 100 - MAX_BATCH_INPUTS);
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
        assert_eq!(take_batch(&mut queue, &stats).len(), 32);
        assert_eq!(take_batch(&mut queue, &stats).len(), 8);
        assert_eq!(stats.waiting.load(Ordering::SeqCst), 0);
    }
}
