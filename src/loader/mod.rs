//! Finding and loading models: catalog names, GGUF files, Hugging Face folders and hub ids.

pub mod chat_template;
pub mod embedding;
pub mod gguf;
pub mod onnx;
pub mod phonemize;
pub mod safetensors;
pub mod spm;
pub mod tflite;
pub mod tokenizer;
pub mod voice;

use crate::arch::linear::WeightFormat;
use crate::arch::model::TextModel;
use crate::catalog::{Catalog, CatalogEntry, EntryKind};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every tensor of a model file goes into the forward, or the load fails naming the first (sorted)
/// that would not: serving without it would answer wrongly. `what` names the file for the message.
fn refuse_unused(names: impl Iterator<Item = String>, used: &HashSet<String>, what: &str) -> Result<()> {
    let mut unused: Vec<String> = names.filter(|n| !used.contains(n)).collect();
    unused.sort();
    match unused.first() {
        None => Ok(()),
        Some(name) if name == "rope_freqs.weight" => {
            bail!(
                "the {what} scales its rope frequencies (`rope_freqs.weight`, Llama 3.1-style), which llama.cpp \
                 reads for llama files only: its family's are not scaled that way"
            )
        }
        Some(name) => bail!(
            "tensor `{name}` (and {} more unused) is not part of the llama layout that Wick implements: \
             serving the {what} without it would answer wrongly",
            unused.len() - 1
        ),
    }
}

/// Everything a chat engine needs from a model.
pub struct LoadedModel {
    pub model: Box<dyn TextModel>,
    pub tokenizer: tokenizer::TextTokenizer,
    /// `None` when the model ships none: it serves `/v1/completions` only, unless its deployment
    /// or catalog entry supplies one.
    pub template: Option<chat_template::ChatTemplate>,
}

/// Where a model's weights come from, as named on the command line.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Catalog(Box<CatalogEntry>),
    GgufFile(PathBuf),
    HfFolder(PathBuf),
    /// `org/name` on the Hugging Face hub.
    Hub(String),
    /// A Piper voice: `NAME.onnx` with `NAME.onnx.json` beside it.
    PiperVoice(PathBuf),
}

/// What a model does: which engine serves it and which endpoint takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Text generation (`/v1/chat/completions`, `/v1/completions`).
    Text,
    Speech,
    /// Sentence embeddings (`/v1/embeddings`).
    Embeddings,
}

impl ModelKind {
    /// The endpoint that serves this kind, for errors that point a client there.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::Text => "/v1/chat/completions",
            Self::Speech => "/v1/audio/speech",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

impl ModelSource {
    /// A catalog name, a path to a .gguf file or a model folder, or a hub id.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(entry) = Catalog::builtin().get(spec) {
            if entry.main.is_none() {
                bail!("`{spec}` is a {} that other entries use, not a model to serve", entry.kind.name());
            }
            return Ok(Self::Catalog(Box::new(entry.clone())));
        }
        let path = Path::new(spec);
        if path.is_file() && path.extension().is_some_and(|e| e == "onnx") {
            return Ok(Self::PiperVoice(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(Self::GgufFile(path.to_path_buf()));
        }
        if path.is_dir() {
            return Ok(Self::HfFolder(path.to_path_buf()));
        }
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')) {
            return Ok(Self::Hub(spec.to_string()));
        }
        bail!("`{spec}` is not a catalog model (see `wick models`), an existing file or folder, or a hub id (org/name)")
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Catalog(e) if e.kind == EntryKind::Speech => ModelKind::Speech,
            Self::PiperVoice(_) => ModelKind::Speech,
            Self::Catalog(e) if e.kind == EntryKind::Embeddings => ModelKind::Embeddings,
            Self::HfFolder(p) if embedding::is_sentence_transformers(p) => ModelKind::Embeddings,
            _ => ModelKind::Text,
        }
    }

    /// The name clients use when none is given: the catalog name, the file stem or the hub id.
    pub fn default_name(&self) -> String {
        match self {
            Self::Catalog(e) => e.name.clone(),
            Self::GgufFile(p) | Self::HfFolder(p) | Self::PiperVoice(p) => {
                p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
            }
            Self::Hub(id) => id.clone(),
        }
    }

    /// What `/v1/models` reports as `root`.
    pub fn root(&self) -> String {
        match self {
            Self::Catalog(e) => e.name.clone(),
            Self::GgufFile(p) | Self::HfFolder(p) | Self::PiperVoice(p) => p.display().to_string(),
            Self::Hub(id) => id.clone(),
        }
    }

    /// Loads a voice. Blocking: call it off the async runtime.
    pub fn load_voice(&self, device: &Device) -> Result<voice::Voice> {
        match self {
            Self::Catalog(e) if e.kind == EntryKind::Speech => voice::Voice::load(&e.local_path(), device),
            Self::PiperVoice(p) => voice::Voice::load(p, device),
            _ => bail!("`{}` is not a voice", self.root()),
        }
    }

    /// Loads a sentence-embedding model. Blocking: call it off the async runtime.
    pub fn load_embeddings(&self, device: &Device) -> Result<embedding::EmbeddingModel> {
        match self {
            Self::Catalog(e) if e.kind == EntryKind::Embeddings => {
                let path = e.local_path();
                if !path.is_dir() {
                    bail!("`{}` has not been pulled yet: run `wick pull {}`", e.name, e.name);
                }
                embedding::load(&path, device)
            }
            Self::HfFolder(p) if embedding::is_sentence_transformers(p) => embedding::load(p, device),
            _ => bail!("`{}` is not a sentence-embedding model", self.root()),
        }
    }

    /// Whether the file's family and settings are ones Wick implements, from its metadata alone (a
    /// GGUF header, a config.json), so that a deployment is refused when it is created rather than
    /// at its first request. A catalog model not pulled yet, or a hub id, is checked when it loads.
    pub fn check_family(&self) -> Result<()> {
        match self {
            Self::Catalog(e) if e.kind.is_text() && e.local_path().is_file() => gguf::check(&e.local_path()),
            Self::Catalog(e) if e.kind == EntryKind::Embeddings && e.local_path().is_dir() => {
                embedding::check(&e.local_path())
            }
            Self::GgufFile(p) => gguf::check(p),
            Self::HfFolder(p) if embedding::is_sentence_transformers(p) => embedding::check(p),
            Self::HfFolder(p) => safetensors::check(p),
            _ => Ok(()),
        }
    }

    /// Loads the model. Blocking: call it off the async runtime.
    pub fn load(&self, format: WeightFormat, device: &Device) -> Result<LoadedModel> {
        match self {
            Self::Catalog(e) if !e.kind.is_text() => {
                bail!("`{}` is a {} model, not a text model", e.name, e.kind.name())
            }
            Self::Catalog(e) => {
                let path = e.local_path();
                if !path.is_file() {
                    bail!("`{}` has not been pulled yet: run `wick pull {}`", e.name, e.name);
                }
                gguf::load(&path, format, device)
            }
            Self::GgufFile(p) => gguf::load(p, format, device),
            Self::HfFolder(p) if embedding::is_sentence_transformers(p) => {
                bail!("{} is a sentence-embedding model, not a text model", p.display())
            }
            Self::HfFolder(p) => safetensors::load(p, format, device),
            Self::Hub(id) => safetensors::load(&download_from_hub(id)?, format, device),
            Self::PiperVoice(p) => bail!("{} is a voice, not a chat model", p.display()),
        }
    }
}

/// Fetches a model folder from the Hugging Face hub (or finds it in the hub cache) and returns the
/// snapshot folder. No hub is reachable from our own machines; this is exercised where one is.
fn download_from_hub(id: &str) -> Result<PathBuf> {
    let handle = tokio::runtime::Handle::try_current().context("hub downloads run inside the server's runtime")?;
    handle.block_on(async {
        let api = hf_hub::api::tokio::ApiBuilder::new().with_progress(true).build()?;
        let repo = api.model(id.to_string());
        let info = repo.info().await.with_context(|| format!("look up `{id}` on the hub"))?;
        let config = repo.get("config.json").await?;
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            repo.get(name).await.with_context(|| format!("{id}: {name}"))?;
        }
        let _ = repo.get("generation_config.json").await;
        for s in info.siblings.iter().filter(|s| s.rfilename.ends_with(".safetensors")) {
            repo.get(&s.rfilename).await?;
        }
        Ok(config.parent().context("hub cache layout")?.to_path_buf())
    })
}
