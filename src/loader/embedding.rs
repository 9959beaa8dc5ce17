//! A sentence-transformers folder: `modules.json` (a Transformer, a Pooling and optionally a
//! Normalize module), the transformer's BERT `config.json`, `*.safetensors` and `tokenizer.json`,
//! `sentence_bert_config.json` (the input limit) and the pooling module's `config.json`.
//!
//! Everything Wick does not implement is refused by name at load (another module type, another
//! pooling mode, another model type or activation, lower-casing done outside the tokenizer): serving
//! it anyway would give vectors that silently differ from the model's.

use crate::arch::sentence::{Pooling, SentenceEncoder};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct EmbeddingModel {
    pub encoder: SentenceEncoder,
    pub info: Arc<EmbeddingInfo>,
}

/// What turns text into the model's input, and its limits: shared with the HTTP side while the
/// encoder stays on its engine's thread.
pub struct EmbeddingInfo {
    /// The length of each vector.
    pub dimensions: usize,
    /// The most tokens of one input, special tokens included (sentence-transformers' `max_seq_length`).
    pub max_tokens: usize,
    pub vocab_size: usize,
    tokenizer: tokenizers::Tokenizer,
}

impl EmbeddingInfo {
    /// The model's input for `text`: its tokens between the special tokens the tokenizer's
    /// post-processor adds (`[CLS] ... [SEP]` for BERT), as sentence-transformers encodes it, but
    /// never cut: the caller refuses what is longer than `max_tokens`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| anyhow::anyhow!("tokenize: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// The pooling module's `config.json`. Unknown fields are refused: a newer mode Wick does not know
/// must not be skipped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    /// Whether an instruction prompt's tokens are pooled too; Wick adds no prompts, so either is the same.
    #[serde(default)]
    #[allow(dead_code)]
    include_prompt: Option<bool>,
}

/// The fields of the transformer's `config.json` that decide whether candle's BERT is this model.
#[derive(Deserialize)]
struct ArchCheck {
    model_type: Option<String>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    #[serde(default)]
    is_decoder: bool,
}

/// The pipeline `modules.json` describes: where the transformer lives, how it pools, whether it
/// normalises.
struct Pipeline {
    transformer: PathBuf,
    pooling_config: PathBuf,
    normalize: bool,
}

const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";
const NORMALIZE: &str = "sentence_transformers.models.Normalize";

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// Whether `folder` is a sentence-transformers folder (what `ModelSource` serves as embeddings).
pub fn is_sentence_transformers(folder: &Path) -> bool {
    folder.join("modules.json").is_file()
}

fn pipeline(folder: &Path) -> Result<Pipeline> {
    let modules: Vec<Module> = read_json(&folder.join("modules.json"))?;
    let kinds: Vec<&str> = modules.iter().map(|m| m.kind.as_str()).collect();
    let normalize = match kinds.as_slice() {
        [TRANSFORMER, POOLING] => false,
        [TRANSFORMER, POOLING, NORMALIZE] => true,
        _ => bail!(
            "modules.json lists {}; Wick implements a Transformer, then Pooling, then optionally Normalize \
             (no Dense or other modules)",
            kinds.join(", ")
        ),
    };
    Ok(Pipeline {
        transformer: folder.join(&modules[0].path),
        pooling_config: folder.join(&modules[1].path).join("config.json"),
        normalize,
    })
}

fn pooling(config: &PoolingConfig) -> Result<Pooling> {
    let modes = [
        ("pooling_mode_cls_token", config.pooling_mode_cls_token),
        ("pooling_mode_mean_tokens", config.pooling_mode_mean_tokens),
        ("pooling_mode_max_tokens", config.pooling_mode_max_tokens),
        ("pooling_mode_mean_sqrt_len_tokens", config.pooling_mode_mean_sqrt_len_tokens),
        ("pooling_mode_weightedmean_tokens", config.pooling_mode_weightedmean_tokens),
        ("pooling_mode_lasttoken", config.pooling_mode_lasttoken),
    ];
    let on: Vec<&str> = modes.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
    match on.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
        ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
        [] => bail!("the pooling config turns no pooling mode on"),
        // Several modes concatenate their vectors in sentence-transformers.
        _ => bail!("the pooling config sets {}; Wick implements mean or CLS pooling alone", on.join(" and ")),
    }
}

/// Refuses a transformer config that candle's BERT would not compute as transformers does.
fn check_arch(config: &ArchCheck) -> Result<()> {
    match config.model_type.as_deref() {
        Some("bert") => {}
        other => bail!(
            "the transformer is `{}`; Wick's embeddings run BERT (`model_type` \"bert\") only",
            other.unwrap_or("(no model_type)")
        ),
    }
    // transformers' "gelu" is the exact (erf) GELU, which candle's BERT computes for it.
    match config.hidden_act.as_deref() {
        Some("gelu" | "relu") => {}
        other => bail!("`hidden_act` {other:?}: Wick's BERT implements \"gelu\" (erf) and \"relu\""),
    }
    if let Some(p) = config.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
        bail!("`position_embedding_type` \"{p}\": Wick's BERT implements absolute positions only");
    }
    ensure!(!config.is_decoder, "a BERT decoder (`is_decoder`) is not a sentence encoder");
    Ok(())
}

/// Checks the folder's configs without loading weights, so that a deployment of something Wick
/// cannot serve is refused when it is created.
pub fn check(folder: &Path) -> Result<()> {
    settle(folder).map(|_| ())
}

struct Settled {
    pipeline: Pipeline,
    pooling: Pooling,
    config: bert::Config,
    max_tokens: usize,
}

fn settle(folder: &Path) -> Result<Settled> {
    let pipeline = pipeline(folder)?;
    let config_path = pipeline.transformer.join("config.json");
    check_arch(&read_json(&config_path)?)?;
    let config: bert::Config = read_json(&config_path)?;
    let pooling_config: PoolingConfig = read_json(&pipeline.pooling_config)?;
    let pooling = pooling(&pooling_config)?;
    if pooling_config.word_embedding_dimension != config.hidden_size {
        bail!(
            "the pooling config's word_embedding_dimension is {}, the transformer's hidden_size {}",
            pooling_config.word_embedding_dimension,
            config.hidden_size
        );
    }
    let sbert_path = pipeline.transformer.join("sentence_bert_config.json");
    let sbert: SentenceBertConfig = if sbert_path.is_file() {
        read_json(&sbert_path)?
    } else {
        SentenceBertConfig { max_seq_length: None, do_lower_case: false }
    };
    if sbert.do_lower_case {
        bail!("sentence_bert_config.json sets `do_lower_case`, which Wick does not implement (the tokenizer's own lower-casing it does)");
    }
    // sentence-transformers' default where the folder names no limit: what the positions allow.
    let max_tokens = sbert.max_seq_length.unwrap_or(config.max_position_embeddings);
    if max_tokens == 0 || max_tokens > config.max_position_embeddings {
        bail!("max_seq_length {max_tokens} is outside the model's {} positions", config.max_position_embeddings);
    }
    Ok(Settled { pipeline, pooling, config, max_tokens })
}

/// The tokenizer with the folder's truncation and padding turned off: tokenizer.json pads every
/// input to 128 tokens and cuts longer ones there (sentence-transformers overrides both), while
/// Wick pads batches itself and refuses what is too long.
fn tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(tokenizer)
}

fn safetensors(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("read {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "{} has no *.safetensors", folder.display());
    Ok(files)
}

/// Loads the folder onto `device`. Blocking.
pub fn load(folder: &Path, device: &Device) -> Result<EmbeddingModel> {
    let Settled { pipeline, pooling, config, max_tokens } = settle(folder)?;
    let tokenizer = tokenizer(&pipeline.transformer.join("tokenizer.json"))?;
    let files = safetensors(&pipeline.transformer)?;
    // SAFETY: the files are mapped read-only and Wick never writes them; pulled models are only
    // ever replaced by a rename, which leaves a mapping of the old file intact.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
    let encoder = SentenceEncoder::new(vb, &config, pooling, pipeline.normalize)
        .with_context(|| format!("load the BERT weights of {}", folder.display()))?;
    let info = EmbeddingInfo { dimensions: config.hidden_size, max_tokens, vocab_size: config.vocab_size, tokenizer };
    Ok(EmbeddingModel { encoder, info: Arc::new(info) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const MODULES: &str = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;
    const CONFIG: &str = r#"{"model_type": "bert", "hidden_act": "gelu", "hidden_size": 8, "vocab_size": 30,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "hidden_dropout_prob": 0.1,
        "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;
    const MEAN: &str = r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#;
    const SBERT: &str = r#"{"max_seq_length": 256, "do_lower_case": false}"#;

    fn settle_with(files: &[(&str, &str)]) -> Result<Settled> {
        let base = [
            ("modules.json", MODULES),
            ("config.json", CONFIG),
            ("1_Pooling/config.json", MEAN),
            ("sentence_bert_config.json", SBERT),
        ];
        let mut all: Vec<(&str, &str)> =
            base.iter().filter(|(n, _)| !files.iter().any(|(m, _)| m == n)).copied().collect();
        all.extend_from_slice(files);
        let dir = folder(&all);
        settle(dir.path())
    }

    #[test]
    fn a_minilm_folder_settles() {
        let s = settle_with(&[]).unwrap();
        assert_eq!((s.pooling, s.pipeline.normalize, s.max_tokens), (Pooling::Mean, true, 256));
    }

    #[test]
    fn what_wick_does_not_implement_is_refused_by_name() {
        let cases = [
            ("modules.json", MODULES.replace("Normalize", "Dense"), "Dense"),
            ("1_Pooling/config.json", MEAN.replace("mean_tokens", "max_tokens"), "pooling_mode_max_tokens"),
            (
                "1_Pooling/config.json",
                r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}"#
                    .into(),
                "pooling_mode_cls_token and pooling_mode_mean_tokens",
            ),
            ("1_Pooling/config.json", MEAN.replace("true", "true, \"pooling_mode_new\": 1"), "pooling_mode_new"),
            ("1_Pooling/config.json", MEAN.replace(": 8", ": 9"), "word_embedding_dimension is 9"),
            ("config.json", CONFIG.replace("\"bert\"", "\"xlm-roberta\""), "xlm-roberta"),
            ("config.json", CONFIG.replace("\"gelu\"", "\"gelu_new\""), "gelu_new"),
            ("sentence_bert_config.json", SBERT.replace("false", "true"), "do_lower_case"),
            ("sentence_bert_config.json", SBERT.replace("256", "1024"), "max_seq_length 1024"),
        ];
        for (file, text, named) in cases {
            let err = match settle_with(&[(file, &text)]) {
                Ok(_) => panic!("{file} {text} was accepted"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(named), "{err} should name {named}");
        }
    }
}
