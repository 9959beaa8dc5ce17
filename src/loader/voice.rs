//! A Piper voice: `NAME.onnx` (VITS weights, read with our ONNX reader, run by our candle VITS) and
//! `NAME.onnx.json` (sample rate, espeak voice, phoneme ids, default scales).

use super::onnx::OnnxWeights;
use crate::arch::vits::{infer_config, Scales, Vits};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
struct PiperConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<u32>>,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Debug, Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

pub struct Voice {
    pub model: Vits,
    pub info: Arc<VoiceInfo>,
}

/// What turns text into the model's input, and the voice's settings: shared with the HTTP side
/// while the model itself stays on its engine's thread.
pub struct VoiceInfo {
    pub sample_rate: u32,
    /// Samples per frame (the decoder's upsampling): the unit durations are counted in.
    pub frame_samples: usize,
    pub espeak_voice: String,
    /// The voice's own defaults (Piper's `inference` section).
    pub scales: Scales,
    phoneme_ids: HashMap<char, Vec<u32>>,
}

/// The JSON config beside a voice's .onnx file.
pub fn config_path(onnx: &Path) -> PathBuf {
    let mut p = onnx.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

impl Voice {
    pub fn load(onnx: &Path, device: &Device) -> Result<Self> {
        let json_path = config_path(onnx);
        let text = std::fs::read_to_string(&json_path).with_context(|| format!("read {}", json_path.display()))?;
        let cfg: PiperConfig = serde_json::from_str(&text).with_context(|| format!("{}", json_path.display()))?;
        let graph = OnnxWeights::read(onnx, device)?;
        let nodes = graph.nodes.clone();
        let node_ints = |node: &str, attr: &str| super::onnx::node_ints(&nodes, node, attr);
        let mut weights = graph.into_named();
        fold_exported_constants(&mut weights)?;
        let vits_cfg = infer_config(&weights, node_ints).with_context(|| format!("{}", onnx.display()))?;
        let model = Vits::load(VarBuilder::from_tensors(weights, DType::F32, device), vits_cfg)
            .with_context(|| format!("{}: a tensor is missing or has another shape", onnx.display()))?;
        let mut phoneme_ids = HashMap::new();
        for (key, ids) in cfg.phoneme_id_map {
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    phoneme_ids.insert(c, ids);
                }
                _ => bail!("{}: phoneme `{key}` is not one character", json_path.display()),
            }
        }
        for special in ['_', '^', '$'] {
            if !phoneme_ids.contains_key(&special) {
                bail!("{}: the phoneme map has no `{special}`", json_path.display());
            }
        }
        let info = VoiceInfo {
            sample_rate: cfg.audio.sample_rate,
            frame_samples: crate::arch::vits::hop_length(&model.cfg),
            espeak_voice: cfg.espeak.voice,
            scales: Scales {
                noise: cfg.inference.noise_scale,
                length: cfg.inference.length_scale,
                noise_w: cfg.inference.noise_w,
            },
            phoneme_ids,
        };
        Ok(Self { model, info: Arc::new(info) })
    }
}

impl VoiceInfo {
    /// Piper's ids: BOS, a pad, then each known phoneme followed by a pad, then EOS. Phonemes the
    /// voice does not know are skipped, as Piper skips them.
    pub fn ids(&self, phonemes: &[char]) -> Vec<u32> {
        let id = |c: char| self.phoneme_ids[&c].clone();
        let mut ids = id('^');
        ids.extend(id('_'));
        for p in phonemes {
            if let Some(p) = self.phoneme_ids.get(p) {
                ids.extend(p);
                ids.extend(id('_'));
            }
        }
        ids.extend(id('$'));
        ids
    }
}

/// Exporters fold some parameters into other forms; put them back under their PyTorch names.
fn fold_exported_constants(weights: &mut HashMap<String, Tensor>) -> Result<()> {
    // The duration predictor's affine flow computes exp(-logs) at export time and stores only that.
    if let Some(exp_neg_logs) = weights.remove("/dp/flows.0/Exp_output_0") {
        weights.entry("dp.flows.0.logs".into()).or_insert(exp_neg_logs.log()?.neg()?);
    }
    Ok(())
}
