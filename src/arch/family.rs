//! The model families Wick knows by name: a GGUF file's `general.architecture` or a Hugging Face
//! config's `model_type` picks one. A family that Wick knows but does not implement is a load error
//! that names what it would get wrong, never a llama-like approximation: an approximation answers,
//! and answers wrongly, with no error anywhere.

use super::linear::WeightFormat;
use super::llama::Llama;
use super::model::{RawWeights, TextConfig, TextModel};
use super::rope::RopeStyle;
use anyhow::{bail, Result};
use candle_core::Device;

/// A family Wick implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama, SmolLM, and Mistral without a sliding window (`arch::llama`).
    Llama,
    /// Qwen2 and Qwen2.5: llama with biases on q, k and v.
    Qwen2,
    /// Qwen3 (dense): llama with an RMS norm on each head of q and k before the rotation.
    Qwen3,
}

/// How a family differs from llama, as the loaders and the shared decoder (`arch::llama`) read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Differences {
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// An RMS norm over each head of q and of k (one weight of `head_dim` for all heads), before
    /// the rotation.
    pub qk_norm: bool,
    /// Where a GGUF file's rotary pairs lie. llama.cpp's converter permutes llama's q and k rows so
    /// that rotated pairs are adjacent, and leaves other families' as Hugging Face has them (the two
    /// halves of a head; llama.cpp calls that rope type NEOX).
    pub gguf_rope: RopeStyle,
    /// Whether a GGUF file's `rope_freqs.weight` (per-pair frequency factors; Llama 3.1's scaling)
    /// is read. llama.cpp reads it for llama only, so in another family's file it is an unused
    /// tensor, and refused as one.
    pub gguf_rope_freqs: bool,
}

impl Family {
    pub fn differences(self) -> Differences {
        match self {
            Family::Llama => Differences {
                qkv_bias: false,
                qk_norm: false,
                gguf_rope: RopeStyle::Interleaved,
                gguf_rope_freqs: true,
            },
            Family::Qwen2 => {
                Differences { qkv_bias: true, qk_norm: false, gguf_rope: RopeStyle::Halves, gguf_rope_freqs: false }
            }
            Family::Qwen3 => {
                Differences { qkv_bias: false, qk_norm: true, gguf_rope: RopeStyle::Halves, gguf_rope_freqs: false }
            }
        }
    }
}

/// One entry of the registry: the names a family goes by in GGUF files and in Hugging Face configs,
/// and either the implementation or why there is none yet.
struct Known {
    gguf: &'static [&'static str],
    hf: &'static [&'static str],
    status: std::result::Result<Family, &'static str>,
}

const REGISTRY: &[Known] = &[
    Known { gguf: &["llama"], hf: &["llama"], status: Ok(Family::Llama) },
    // llama.cpp writes Mistral 7B as `llama`; the loaders refuse its sliding window where it is set.
    Known { gguf: &["mistral"], hf: &["mistral"], status: Ok(Family::Llama) },
    Known {
        gguf: &["granite"],
        hf: &["granite"],
        status: Err("its embedding, residual, attention and logit multipliers"),
    },
    Known { gguf: &["qwen2"], hf: &["qwen2"], status: Ok(Family::Qwen2) },
    Known { gguf: &["qwen3"], hf: &["qwen3"], status: Ok(Family::Qwen3) },
    Known { gguf: &["qwen3moe"], hf: &["qwen3_moe"], status: Err("its mixture of experts") },
    Known {
        gguf: &["gemma", "gemma2", "gemma3"],
        hf: &["gemma", "gemma2", "gemma3", "gemma3_text"],
        status: Err("its (1 + w) norms, embedding scale, sliding windows and soft-capping"),
    },
    Known { gguf: &["phi3"], hf: &["phi3"], status: Err("its fused projections and rope scaling") },
];

/// The family of a GGUF file's `general.architecture`.
pub fn from_gguf(architecture: &str) -> Result<Family> {
    find(architecture, REGISTRY.iter().find(|k| k.gguf.contains(&architecture)))
}

/// The family of a Hugging Face config's `model_type`.
pub fn from_hf(model_type: &str) -> Result<Family> {
    find(model_type, REGISTRY.iter().find(|k| k.hf.contains(&model_type)))
}

fn find(name: &str, known: Option<&Known>) -> Result<Family> {
    match known {
        Some(Known { status: Ok(family), .. }) => Ok(*family),
        Some(Known { status: Err(missing), .. }) => bail!(
            "architecture `{name}` is not implemented yet: serving it as llama would ignore {missing} \
             and answer wrongly (implemented: {})",
            implemented().join(", ")
        ),
        None => bail!("architecture `{name}` is unknown (implemented: {})", implemented().join(", ")),
    }
}

/// The model of `cfg.family` over the weights a loader read, with its kernels for `format` on `device`.
pub fn build(cfg: TextConfig, raw: RawWeights, format: WeightFormat, device: &Device) -> Result<Box<dyn TextModel>> {
    Ok(match cfg.family {
        // All run the llama decoder; how they differ is in their weights (`Differences`).
        Family::Llama | Family::Qwen2 | Family::Qwen3 => Box::new(Llama::new(cfg, raw, format, device)?),
    })
}

/// The GGUF names of the families Wick implements.
pub fn implemented() -> Vec<&'static str> {
    REGISTRY.iter().filter(|k| k.status.is_ok()).flat_map(|k| k.gguf.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unimplemented_and_unknown_families_are_told_apart() {
        assert_eq!(from_gguf("llama").unwrap(), Family::Llama);
        assert_eq!(from_hf("mistral").unwrap(), Family::Llama);
        let granite = from_gguf("granite").unwrap_err().to_string();
        assert!(granite.contains("not implemented") && granite.contains("multipliers"), "{granite}");
        assert_eq!(from_hf("qwen2").unwrap(), Family::Qwen2);
        assert_eq!(from_gguf("qwen3").unwrap(), Family::Qwen3);
        let moe = from_gguf("qwen3moe").unwrap_err().to_string();
        assert!(moe.contains("mixture of experts"), "{moe}");
        let unknown = from_gguf("rwkv7").unwrap_err().to_string();
        assert!(unknown.contains("unknown") && unknown.contains("llama"), "{unknown}");
    }
}
