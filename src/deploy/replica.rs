//! One replica: a full copy of a deployment's model with its own engine, on one device.

use super::spec::DeploymentSpec;
use super::usage::Usage;
use crate::engine::embedding::EmbeddingEngine;
use crate::engine::speech::SpeechEngine;
use crate::engine::{Engine, EngineStats};
use crate::loader::chat_template::ChatTemplate;
use crate::loader::ModelKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Replica {
    pub index: usize,
    pub device: String,
    /// `None` only while `stop` takes it out.
    backend: Option<Backend>,
    loaded_at: Instant,
    /// Requests holding a lease on this replica: what "least loaded" compares.
    pub(super) in_flight: AtomicUsize,
    usage: Arc<Usage>,
}

impl Replica {
    /// Loads the model onto replica `index`'s device and starts its engine. Blocking.
    pub fn load(spec: &DeploymentSpec, index: usize, usage: Arc<Usage>) -> anyhow::Result<Self> {
        if let crate::loader::ModelSource::Catalog(entry) = &spec.source {
            if crate::pull::missing(entry) {
                crate::pull::pull(entry, false)?;
            }
        }
        let device = spec.device.candle_device(index)?;
        let name = format!("{}-{index}", spec.name);
        let engine = match spec.source.kind() {
            ModelKind::Text => {
                let mut loaded = spec.source.load(spec.weights, &device)?;
                // The deployment's (or catalog entry's) template comes before the file's own.
                if let Some(source) = &spec.chat_template {
                    let (bos, eos) = (loaded.tokenizer.bos_token.clone(), loaded.tokenizer.eos_token.clone());
                    loaded.template = Some(ChatTemplate::new(source.clone(), bos, eos)?);
                }
                Backend::Chat(Box::new(Engine::start(loaded, spec.limits.clone(), &name)?))
            }
            ModelKind::Speech => Backend::Speech(SpeechEngine::start(spec.source.load_voice(&device)?.into(), &name)?),
            ModelKind::Embeddings => {
                Backend::Embeddings(EmbeddingEngine::start(spec.source.load_embeddings(&device)?, &name)?)
            }
        };
        Ok(Self {
            index,
            device: spec.device.device_name(index),
            backend: Some(engine),
            loaded_at: Instant::now(),
            in_flight: AtomicUsize::new(0),
            usage,
        })
    }

    fn backend(&self) -> &Backend {
        self.backend.as_ref().expect("a replica's engine is present until it stops")
    }

    /// The chat engine, if this is a chat model.
    pub fn chat(&self) -> Option<&Engine> {
        match self.backend() {
            Backend::Chat(e) => Some(e),
            _ => None,
        }
    }

    /// The speech engine, if this is a voice.
    pub fn speech(&self) -> Option<&SpeechEngine> {
        match self.backend() {
            Backend::Speech(e) => Some(e),
            _ => None,
        }
    }

    /// The embedding engine, if this is an embedding model.
    pub fn embeddings(&self) -> Option<&EmbeddingEngine> {
        match self.backend() {
            Backend::Embeddings(e) => Some(e),
            _ => None,
        }
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        match self.backend() {
            Backend::Chat(e) => &e.stats,
            Backend::Speech(e) => &e.stats,
            Backend::Embeddings(e) => &e.stats,
        }
    }

    pub fn load_score(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn loaded_for(&self) -> std::time::Duration {
        self.loaded_at.elapsed()
    }

    /// Stops the engine and waits until its memory is freed. Blocking.
    pub fn stop(mut self) {
        match self.backend.take() {
            Some(Backend::Chat(e)) => e.stop(),
            Some(Backend::Speech(e)) => e.stop(),
            Some(Backend::Embeddings(e)) => e.stop(),
            None => {}
        }
    }
}

impl Drop for Replica {
    /// A replica that is simply dropped (scaled down, drained) stops its worker without waiting: the
    /// worker finishes its last sequences and frees the weights on its own thread.
    fn drop(&mut self) {
        self.usage.add_replica_time(self.loaded_at.elapsed());
    }
}

/// The engine a replica runs, by the kind of model it serves.
enum Backend {
    Chat(Box<Engine>),
    Speech(SpeechEngine),
    Embeddings(EmbeddingEngine),
}
