//! The engine of one model replica: a worker thread that owns the weights and every KV cache, fed by a
//! channel. Each request gets its answers on its own channel, so a client that goes away is noticed
//! (its receiver is closed) and its sequences are dropped at the next step.

pub mod batch;
pub mod detok;
pub mod embedding;
pub mod error;
pub mod grammar;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod speech;
pub mod stop;

use crate::arch::model::{StepInput, TextModel};
use crate::kv::KvStore;
use crate::loader::chat_template::ChatTemplate;
use crate::loader::tokenizer::TextTokenizer;
use crate::loader::LoadedModel;
pub use error::EngineError;
use grammar::GrammarCompiler;
use scheduler::{Limits, Scheduler};
pub use sequence::GenerationRequest;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a request hears back, per choice.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of a choice's text, with the log-probabilities of the tokens sampled since the last
    /// piece (when the request asked for them; a token's text may be held back for a while, by a
    /// partial UTF-8 character or a possible stop string, so the two need not line up).
    Text { choice: usize, text: String, logprobs: Vec<TokenLogprob> },
    Done {
        choice: usize,
        reason: FinishReason,
        completion_tokens: usize,
        /// Prompt tokens found in the prefix cache when the choice first joined a step.
        cached_prompt_tokens: usize,
    },
    /// The request failed; its choices are over.
    Error(EngineError),
}

/// A sampled token's log-probability in the model's distribution after logit_bias and the
/// penalties, before temperature and the cuts (`sampling::token_logprobs`), with the likeliest
/// tokens' when asked for. Tokens are their bytes, as the vocabulary holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Counters the HTTP layer and tests read.
#[derive(Default, Debug)]
pub struct EngineStats {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub steps: AtomicUsize,
    /// Sequences pushed out of a step for lack of KV blocks, to be computed again.
    pub preemptions: AtomicUsize,
    /// The KV pool's size, in blocks of `kv::BLOCK_SIZE` positions.
    pub kv_blocks: AtomicUsize,
    /// Blocks no running sequence holds (free, or cached for prefix sharing).
    pub kv_blocks_available: AtomicUsize,
    /// Prompt tokens found in the prefix cache instead of computed.
    pub prefix_cached_tokens: AtomicUsize,
    /// Grammar masks computed (one per constrained token), the time spent computing them (on the
    /// mask threads, alongside the batch steps), and the time sampling waited for them.
    pub grammar_masks: AtomicU64,
    pub grammar_mask_nanos: AtomicU64,
    pub grammar_wait_nanos: AtomicU64,
}

pub struct Engine {
    submit: mpsc::Sender<GenerationRequest>,
    worker: std::thread::JoinHandle<()>,
    pub tokenizer: Arc<TextTokenizer>,
    /// `None`: the model takes raw prompts only.
    pub template: Option<ChatTemplate>,
    pub context_length: usize,
    pub limits: Limits,
    pub stats: Arc<EngineStats>,
    /// Built on the first constrained request (it indexes the vocabulary).
    grammars: Arc<OnceLock<Result<Arc<GrammarCompiler>, EngineError>>>,
}

impl Engine {
    /// Sets up the KV pool (on a GPU: allocated now, from the memory the weights left free) and
    /// starts the worker thread. Dropping the `Engine` stops the worker once its last request is
    /// done, which frees the weights and caches.
    pub fn start(loaded: LoadedModel, limits: Limits, name: &str) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let tokenizer = Arc::new(loaded.tokenizer);
        let stats = Arc::new(EngineStats::default());
        let context_length = loaded.model.context_length();
        let (kv, blocks) = loaded.model.new_kv(limits.max_kv_tokens)?;
        stats.kv_blocks.store(blocks, Ordering::Relaxed);
        stats.kv_blocks_available.store(blocks, Ordering::Relaxed);
        let worker = Worker {
            kv,
            model: loaded.model,
            tokenizer: tokenizer.clone(),
            scheduler: Scheduler::with_blocks(limits.clone(), blocks),
            stats: stats.clone(),
        };
        let worker = std::thread::Builder::new().name(format!("engine-{name}")).spawn(move || worker.run(rx))?;
        let grammars = Arc::default();
        Ok(Self { submit: tx, worker, tokenizer, template: loaded.template, context_length, limits, stats, grammars })
    }

    /// The grammar compiler for this model's vocabulary. The first call builds it on a blocking
    /// thread (it indexes the whole vocabulary: 0.2 s for SmolLM2's 49,152 tokens on 2 EPYC cores).
    pub async fn grammars(&self) -> Result<Arc<GrammarCompiler>, EngineError> {
        if let Some(built) = self.grammars.get() {
            return built.clone();
        }
        let (cell, tokenizer, stats) = (self.grammars.clone(), self.tokenizer.clone(), self.stats.clone());
        let build = move || {
            cell.get_or_init(|| {
                let started = std::time::Instant::now();
                let compiler = GrammarCompiler::new(&tokenizer, stats)
                    .map(Arc::new)
                    .map_err(|e| EngineError::Failed(format!("building the grammar compiler: {e:#}")));
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "grammar compiler built");
                compiler
            })
            .clone()
        };
        tokio::task::spawn_blocking(build)
            .await
            .map_err(|e| EngineError::Failed(format!("building the grammar compiler: {e}")))?
    }

    /// Stops taking requests and waits until the worker has finished what it has and freed the weights
    /// and caches. Blocking: call it off the async runtime.
    pub fn stop(self) {
        let Self { submit, worker, .. } = self;
        drop(submit);
        if worker.join().is_err() {
            tracing::error!("an engine worker panicked while stopping");
        }
    }

    pub fn submit(&self, request: GenerationRequest) -> Result<(), EngineError> {
        // Counted here, before the worker sees it, so that a burst cannot overfill the queue.
        let waiting = self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.limits.max_queue {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::QueueFull);
        }
        self.submit.send(request).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            EngineError::Stopped
        })
    }
}

/// What a caught panic says, as an error for the requests it ended.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send), fallback: &str) -> String {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
    format!("internal error: {}", what.as_deref().unwrap_or(fallback))
}

struct Worker {
    model: Box<dyn TextModel>,
    /// The contents of the scheduler's KV blocks.
    kv: KvStore,
    tokenizer: Arc<TextTokenizer>,
    scheduler: Scheduler,
    stats: Arc<EngineStats>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<GenerationRequest>) {
        loop {
            if self.scheduler.is_idle() {
                match rx.recv() {
                    Ok(request) => self.scheduler.enqueue(request),
                    Err(_) => return, // the Engine was dropped and nothing is left to do
                }
            }
            while let Ok(request) = rx.try_recv() {
                self.scheduler.enqueue(request);
            }
            // A bug in a step must not take the model down with it: the sequences of that step get an
            // error, the worker goes on with the next requests.
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step())) {
                self.fail_running(&panic_message(panic.as_ref(), "the engine step panicked"));
            }
        }
    }

    /// Ends every running sequence with an error; their blocks may be half-written, so they are
    /// given back without being shared.
    fn fail_running(&mut self, message: &str) {
        tracing::error!(error = message, sequences = self.scheduler.running.len(), "engine step failed");
        for seq in self.scheduler.running.iter_mut() {
            let _ = seq.events.send(Event::Error(EngineError::Failed(message.to_string())));
            seq.finish = Some(FinishReason::Stop);
        }
        self.scheduler.retire_finished();
        self.publish_stats();
    }

    fn step(&mut self) {
        let queued = self.scheduler.waiting_len();
        self.scheduler.drop_abandoned();
        self.scheduler.admit();
        // Every queued request was counted by `submit`; uncount those that left the queue.
        self.stats.waiting.fetch_sub(queued - self.scheduler.waiting_len(), Ordering::SeqCst);
        let preempted = self.scheduler.reserve_step();
        self.stats.preemptions.fetch_add(preempted, Ordering::Relaxed);
        self.scheduler.retire_finished(); // those that outgrew the pool alone
        if self.scheduler.running.is_empty() {
            // Sequences whose clients went away were dropped above: their blocks are free now, and
            // the gauges must say so before the worker sleeps until the next request.
            return self.publish_stats();
        }
        self.stats.running.store(self.scheduler.running.len(), Ordering::SeqCst);

        let model = &self.model;
        let result = {
            let inputs: Vec<StepInput<'_>> = self
                .scheduler
                .running
                .iter()
                .map(|s| StepInput { blocks: &s.table.blocks, start: s.cached, tokens: s.pending() })
                .collect();
            model.forward(&mut self.kv, &inputs)
        };
        match result {
            Ok(mut logits) => {
                self.scheduler.record_step();
                for (seq, logits) in self.scheduler.running.iter_mut().zip(logits.iter_mut()) {
                    seq.advance(logits, &self.tokenizer, model.context_length());
                }
            }
            // A failed step leaves the caches of everyone in it half-written: end them all.
            Err(e) => return self.fail_running(&format!("inference failed: {e}")),
        }
        self.scheduler.retire_finished();
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.publish_stats();
    }

    /// The scheduler's state, for the gauges.
    fn publish_stats(&self) {
        self.stats.kv_blocks_available.store(self.scheduler.blocks.available(), Ordering::Relaxed);
        self.stats.prefix_cached_tokens.store(self.scheduler.blocks.stats.hit_tokens, Ordering::Relaxed);
        self.stats.running.store(self.scheduler.running.len(), Ordering::SeqCst);
    }
}
