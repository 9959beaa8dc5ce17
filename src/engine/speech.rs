//! The engine of one voice replica, on the shared one-forward engine (`batch`): sentences from
//! every request queue together; each step takes the oldest ones that share their scales (up to the
//! batch limits) through one forward.

use super::batch::{BatchEngine, Batcher, Job};
use super::{EngineError, EngineStats};
use crate::arch::vits::Scales;
use crate::loader::voice::{Voice, VoiceInfo};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most sentences in one forward.
pub const MAX_BATCH_SENTENCES: usize = 8;
/// Most phoneme ids in one forward (attention is quadratic in a sentence's length).
pub const MAX_BATCH_IDS: usize = 4096;

/// A sentence's phoneme ids and the scales to speak it with.
pub struct Sentence {
    pub ids: Vec<u32>,
    pub scales: Scales,
}

type SentenceJob = Job<Sentence, Vec<f32>>;

pub struct SpeechEngine {
    batches: BatchEngine<Synthesizer>,
    pub info: Arc<VoiceInfo>,
    pub stats: Arc<EngineStats>,
}

impl SpeechEngine {
    pub fn start(voice: Voice, name: &str) -> std::io::Result<Self> {
        let info = voice.info.clone();
        let batches = BatchEngine::start(Synthesizer(voice), format!("speech-{name}"))?;
        let stats = batches.stats.clone();
        Ok(Self { batches, info, stats })
    }

    /// Queues one sentence; its samples (mono, the voice's rate, in [-1, 1]), or why synthesis
    /// failed, arrive on the returned channel.
    pub fn synthesize(
        &self,
        ids: Vec<u32>,
        scales: Scales,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, EngineError>>, EngineError> {
        self.batches.submit(Sentence { ids, scales })
    }

    /// Stops taking sentences and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        self.batches.stop();
    }
}

struct Synthesizer(Voice);

impl Batcher for Synthesizer {
    type Input = Sentence;
    type Output = Vec<f32>;
    const WORK: &'static str = "synthesis";

    /// The oldest sentence, and the next ones with the same scales, within the batch limits.
    fn take_batch(queue: &mut VecDeque<SentenceJob>) -> Vec<SentenceJob> {
        let mut batch: Vec<SentenceJob> = Vec::new();
        let mut ids = 0;
        let mut kept = VecDeque::with_capacity(queue.len());
        while let Some(job) = queue.pop_front() {
            let fits = batch.len() < MAX_BATCH_SENTENCES
                && (batch.is_empty()
                    || (ids + job.input.ids.len() <= MAX_BATCH_IDS && job.input.scales == batch[0].input.scales));
            if fits {
                ids += job.input.ids.len();
                batch.push(job);
            } else {
                kept.push_back(job);
            }
        }
        *queue = kept;
        batch
    }

    fn run(&self, sentences: Vec<Sentence>) -> anyhow::Result<Vec<Vec<f32>>> {
        let scales = sentences[0].scales;
        let ids: Vec<Vec<u32>> = sentences.into_iter().map(|s| s.ids).collect();
        Ok(self.0.model.synthesize(&ids, scales)?)
    }
}
