//! The engine of one voice replica: a worker thread that owns the VITS model and synthesises
//! sentences in batches. Sentences from every request queue together; each step takes the oldest
//! ones that share their scales (up to the batch limits) through one forward, and each sentence's
//! audio goes back on its own channel. A sentence whose requester has gone is skipped.

use super::EngineStats;
use crate::arch::vits::Scales;
use crate::loader::voice::{Voice, VoiceInfo};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Most sentences in one forward.
pub const MAX_BATCH_SENTENCES: usize = 8;
/// Most phoneme ids in one forward (attention is quadratic in a sentence's length).
pub const MAX_BATCH_IDS: usize = 4096;

pub struct SentenceJob {
    pub ids: Vec<u32>,
    pub scales: Scales,
    /// The sentence's samples (mono, the voice's rate, in [-1, 1]), or why synthesis failed.
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

pub struct SpeechEngine {
    submit: mpsc::Sender<SentenceJob>,
    worker: std::thread::JoinHandle<()>,
    pub info: Arc<VoiceInfo>,
    pub stats: Arc<EngineStats>,
}

impl SpeechEngine {
    pub fn start(voice: Voice, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let info = voice.info.clone();
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(format!("speech-{name}"))
            .spawn(move || Worker { voice, stats: worker_stats, queue: VecDeque::new() }.run(rx))?;
        Ok(Self { submit: tx, worker, info, stats })
    }

    /// Queues one sentence; its audio arrives on the returned channel.
    pub fn synthesize(
        &self,
        ids: Vec<u32>,
        scales: Scales,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, String>>, String> {
        let (reply, rx) = oneshot::channel();
        self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        self.submit.send(SentenceJob { ids, scales, reply }).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            "the voice's engine stopped".to_string()
        })?;
        Ok(rx)
    }

    /// Stops taking sentences and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        let Self { submit, worker, .. } = self;
        drop(submit);
        if worker.join().is_err() {
            tracing::error!("a speech worker panicked while stopping");
        }
    }
}

struct Worker {
    voice: Voice,
    stats: Arc<EngineStats>,
    queue: VecDeque<SentenceJob>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<SentenceJob>) {
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
            let batch = self.take_batch();
            self.stats.waiting.fetch_sub(batch.len(), Ordering::SeqCst);
            if batch.is_empty() {
                continue; // every queued sentence's requester had gone
            }
            self.stats.running.store(batch.len(), Ordering::SeqCst);
            let mut batch = batch;
            let ids: Vec<Vec<u32>> = batch.iter_mut().map(|j| std::mem::take(&mut j.ids)).collect();
            let scales = batch[0].scales;
            let model = &self.voice.model;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.synthesize(&ids, scales)));
            let result = match result {
                Ok(Ok(audio)) => Ok(audio),
                Ok(Err(e)) => Err(format!("synthesis failed: {e}")),
                Err(panic) => Err(super::panic_message(panic.as_ref(), "synthesis panicked")),
            };
            match result {
                Ok(audio) => {
                    for (job, samples) in batch.into_iter().zip(audio) {
                        let _ = job.reply.send(Ok(samples));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, sentences = batch.len(), "speech step failed");
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
            self.stats.running.store(0, Ordering::SeqCst);
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The oldest sentence, and the next ones with the same scales, within the batch limits.
    /// Sentences whose requester has gone are dropped here.
    fn take_batch(&mut self) -> Vec<SentenceJob> {
        let mut batch: Vec<SentenceJob> = Vec::new();
        let mut ids = 0;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(job) = self.queue.pop_front() {
            let fits = batch.len() < MAX_BATCH_SENTENCES
                && (batch.is_empty() || (ids + job.ids.len() <= MAX_BATCH_IDS && job.scales == batch[0].scales));
            if job.reply.is_closed() {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            } else if fits {
                ids += job.ids.len();
                batch.push(job);
            } else {
                kept.push_back(job);
            }
        }
        self.queue = kept;
        batch
    }
}
