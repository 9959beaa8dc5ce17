//! The engine of a model that answers each input in one forward (a voice, an embedding model): a
//! worker thread owns the model, inputs from every request queue together, one job each, and each
//! step takes a batch of them (as the kind's `Batcher` chooses) through one forward; each answer
//! goes back on its own channel. A job whose requester has gone is dropped unrun. A failed or
//! panicking forward fails that step's jobs and leaves the worker running.

use super::{EngineError, EngineStats};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// One queued input and where its answer goes.
pub struct Job<I, O> {
    pub input: I,
    pub reply: oneshot::Sender<Result<O, EngineError>>,
}

/// What a kind of one-forward model brings to the shared engine: its batch policy and its forward.
pub trait Batcher: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// The work, as errors and logs name it ("synthesis", "embedding").
    const WORK: &'static str;

    /// Moves the next batch out of `queue` (every job in it has a requester waiting), the oldest
    /// job first; never empty when `queue` is not.
    fn take_batch(queue: &mut VecDeque<Job<Self::Input, Self::Output>>) -> Vec<Job<Self::Input, Self::Output>>;

    /// One forward: an answer per input, in order.
    fn run(&self, inputs: Vec<Self::Input>) -> anyhow::Result<Vec<Self::Output>>;
}

pub struct BatchEngine<B: Batcher> {
    submit: mpsc::Sender<Job<B::Input, B::Output>>,
    worker: std::thread::JoinHandle<()>,
    pub stats: Arc<EngineStats>,
}

impl<B: Batcher> BatchEngine<B> {
    pub fn start(batcher: B, thread_name: String) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || Worker { batcher, stats: worker_stats, queue: VecDeque::new() }.run(rx))?;
        Ok(Self { submit: tx, worker, stats })
    }

    /// Queues one input; its answer arrives on the returned channel.
    pub fn submit(&self, input: B::Input) -> Result<oneshot::Receiver<Result<B::Output, EngineError>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        self.submit.send(Job { input, reply }).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            EngineError::Stopped
        })?;
        Ok(rx)
    }

    /// Stops taking inputs and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        let Self { submit, worker, .. } = self;
        drop(submit);
        if worker.join().is_err() {
            tracing::error!("a {} worker panicked while stopping", B::WORK);
        }
    }
}

/// The next batch as `B` chooses it, after dropping the jobs whose requester has gone; the
/// `waiting` count loses both.
pub(super) fn next_batch<B: Batcher>(
    queue: &mut VecDeque<Job<B::Input, B::Output>>,
    stats: &EngineStats,
) -> Vec<Job<B::Input, B::Output>> {
    let queued = queue.len();
    queue.retain(|job| !job.reply.is_closed());
    let batch = B::take_batch(queue);
    stats.waiting.fetch_sub(queued - queue.len(), Ordering::SeqCst);
    batch
}

struct Worker<B: Batcher> {
    batcher: B,
    stats: Arc<EngineStats>,
    queue: VecDeque<Job<B::Input, B::Output>>,
}

impl<B: Batcher> Worker<B> {
    fn run(mut self, rx: mpsc::Receiver<Job<B::Input, B::Output>>) {
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
            let batch = next_batch::<B>(&mut self.queue, &self.stats);
            if batch.is_empty() {
                continue; // every queued job's requester had gone
            }
            self.stats.running.store(batch.len(), Ordering::SeqCst);
            self.step(batch);
            self.stats.running.store(0, Ordering::SeqCst);
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn step(&self, batch: Vec<Job<B::Input, B::Output>>) {
        let (inputs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.input, j.reply)).unzip();
        let batcher = &self.batcher;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batcher.run(inputs)));
        let result = match result {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(e)) => Err(EngineError::Failed(format!("{} failed: {e:#}", B::WORK))),
            Err(panic) => {
                Err(EngineError::Failed(super::panic_message(panic.as_ref(), &format!("{} panicked", B::WORK))))
            }
        };
        match result {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, inputs = replies.len(), "{} step failed", B::WORK);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
