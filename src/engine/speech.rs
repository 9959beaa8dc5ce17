//! The engine of one voice replica, on the shared one-forward engine (`batch`), for a voice of any
//! family (`voice::SpeechModel`): utterances from every request queue together; each step takes the
//! oldest ones of one speed (up to the batch limits) through one forward.

use super::batch::{BatchEngine, Batcher, Job};
use super::{EngineError, EngineStats};
use crate::voice::{SpeechModel, Utterance};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most utterances in one forward.
pub const MAX_BATCH_SENTENCES: usize = 8;
/// Most input ids in one forward (attention is quadratic in an utterance's length).
pub const MAX_BATCH_IDS: usize = 4096;

type UtteranceJob = Job<Utterance, Vec<f32>>;

pub struct SpeechEngine {
    batches: BatchEngine<Synthesizer>,
    /// The voice, shared with the HTTP side for its front end, rate and frame.
    pub model: Arc<dyn SpeechModel>,
    pub stats: Arc<EngineStats>,
}

impl SpeechEngine {
    pub fn start(model: Arc<dyn SpeechModel>, name: &str) -> std::io::Result<Self> {
        let batches = BatchEngine::start(Synthesizer(model.clone()), format!("speech-{name}"))?;
        let stats = batches.stats.clone();
        Ok(Self { batches, model, stats })
    }

    /// Queues one utterance; its samples (mono, the voice's rate, in [-1, 1], its silence after it
    /// included), or why synthesis failed, arrive on the returned channel.
    pub fn synthesize(
        &self,
        utterance: Utterance,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, EngineError>>, EngineError> {
        self.batches.submit(utterance)
    }

    /// Stops taking utterances and waits until the worker has freed the model. Blocking.
    pub fn stop(self) {
        self.batches.stop();
    }
}

struct Synthesizer(Arc<dyn SpeechModel>);

impl Batcher for Synthesizer {
    type Input = Utterance;
    type Output = Vec<f32>;
    const WORK: &'static str = "synthesis";

    /// The oldest utterance, and the next ones of the same speed, within the batch limits.
    fn take_batch(queue: &mut VecDeque<UtteranceJob>) -> Vec<UtteranceJob> {
        let mut batch: Vec<UtteranceJob> = Vec::new();
        let mut ids = 0;
        let mut kept = VecDeque::with_capacity(queue.len());
        while let Some(job) = queue.pop_front() {
            let fits = batch.len() < MAX_BATCH_SENTENCES
                && (batch.is_empty()
                    || (ids + job.input.ids.len() <= MAX_BATCH_IDS && job.input.speed == batch[0].input.speed));
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

    fn run(&self, utterances: Vec<Utterance>) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut audio = self.0.synthesize(&utterances)?;
        anyhow::ensure!(
            audio.len() == utterances.len(),
            "the voice answered {} utterances with {} outputs",
            utterances.len(),
            audio.len()
        );
        for (samples, u) in audio.iter_mut().zip(&utterances) {
            samples.resize(samples.len() + u.silence_after, 0.0);
        }
        Ok(audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::FrontEndError;
    use std::sync::Mutex;

    /// A voice that says each utterance as `ids.len()` samples of its first id, and records its
    /// batches.
    #[derive(Default)]
    struct Echo {
        batches: Mutex<Vec<Vec<f32>>>,
    }

    impl SpeechModel for Echo {
        fn sample_rate(&self) -> u32 {
            8000
        }
        fn frame_samples(&self) -> usize {
            1
        }
        fn utterances(&self, _: &str, _: f32) -> Result<Vec<Utterance>, FrontEndError> {
            unimplemented!()
        }
        fn synthesize(&self, batch: &[Utterance]) -> anyhow::Result<Vec<Vec<f32>>> {
            self.batches.lock().unwrap().push(batch.iter().map(|u| u.speed).collect());
            Ok(batch.iter().map(|u| vec![u.ids[0] as f32; u.ids.len()]).collect())
        }
    }

    fn utterance(id: u32, len: usize, speed: f32, silence_after: usize) -> Utterance {
        Utterance { ids: vec![id; len], speed, silence_after }
    }

    fn job(u: Utterance) -> (UtteranceJob, oneshot::Receiver<Result<Vec<f32>, EngineError>>) {
        let (reply, rx) = oneshot::channel();
        (Job { input: u, reply }, rx)
    }

    #[test]
    fn a_batch_is_the_oldest_utterance_and_later_ones_of_its_speed() {
        let mut queue = VecDeque::new();
        let mut receivers = Vec::new();
        for u in [utterance(1, 3, 1.0, 0), utterance(2, 3, 2.0, 0), utterance(3, 3, 1.0, 0)] {
            let (j, rx) = job(u);
            queue.push_back(j);
            receivers.push(rx);
        }
        let batch = Synthesizer::take_batch(&mut queue);
        assert_eq!(batch.iter().map(|j| j.input.ids[0]).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(queue.iter().map(|j| j.input.ids[0]).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn batches_stay_within_the_limits() {
        let mut queue: VecDeque<UtteranceJob> =
            (0..MAX_BATCH_SENTENCES as u32 + 2).map(|i| job(utterance(i, 10, 1.0, 0)).0).collect();
        assert_eq!(Synthesizer::take_batch(&mut queue).len(), MAX_BATCH_SENTENCES);
        let mut queue: VecDeque<UtteranceJob> =
            [MAX_BATCH_IDS - 5, 10, 5].into_iter().map(|len| job(utterance(1, len, 1.0, 0)).0).collect();
        let ids: Vec<usize> = Synthesizer::take_batch(&mut queue).iter().map(|j| j.input.ids.len()).collect();
        assert_eq!(ids, [MAX_BATCH_IDS - 5, 5], "the oldest that fit");
    }

    #[tokio::test]
    async fn the_engine_answers_each_utterance_with_its_silence_after() {
        let voice = Arc::new(Echo::default());
        let engine = SpeechEngine::start(voice.clone(), "echo").unwrap();
        let a = engine.synthesize(utterance(7, 2, 1.0, 3)).unwrap();
        let b = engine.synthesize(utterance(9, 1, 1.0, 0)).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), [7.0, 7.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.await.unwrap().unwrap(), [9.0]);
        engine.stop();
        assert!(voice.batches.lock().unwrap().iter().all(|speeds| speeds.iter().all(|&s| s == 1.0)));
    }
}
