//! The model families Wick knows by name: a GGUF file's `general.architecture` or a Hugging Face
//! config's `model_type` picks one. A family that Wick knows but does not implement is a load error
//! that names what it would get wrong, never a llama-like approximation: an approximation answers,
//! and answers wrongly, with no error anywhere.

use super::cpu::rowwise::Activation;
use super::decoder::Decoder;
use super::linear::WeightFormat;
use super::model::{RawWeights, TextConfig, TextModel};
use super::rope::RopeStyle;
use anyhow::{bail, Result};
use candle_core::Device;

/// A family Wick implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama, SmolLM, and Mistral without a sliding window (`arch::decoder`).
    Llama,
    /// Qwen2 and Qwen2.5: llama with biases on q, k and v.
    Qwen2,
    /// Qwen3 (dense): llama with an RMS norm on each head of q and k before the rotation.
    Qwen3,
    /// Gemma 2: Gemma's norms, embedding scale and GELU; a sliding window on every other layer
    /// (with the global rope) and soft-capped attention scores and logits.
    Gemma2,
    /// Gemma 3 (text): Qwen3's q/k norms, and norms after attention and the FFN too, a scaled
    /// embedding, GELU, and a sliding window on most layers with a rope base of their own.
    Gemma3,
    /// Phi-3 (and Phi-4): llama with q/k/v fused into one weight and gate/up into another, the
    /// rope on the halves of each head, and a sliding window on every layer where its config sets one.
    Phi3,
    /// Granite (3.x dense): llama with four multipliers, on the embedding, on each residual branch,
    /// on attention scores (in place of `1/sqrt(head_dim)`) and on the logits.
    Granite,
}

/// How a family differs from llama, as the loaders and the shared decoder (`arch::decoder`) read it.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// Norms on the attention's and the FFN's outputs too, before each residual add (Gemma's
    /// `post_attention_norm` and `post_ffw_norm`).
    pub sandwich_norms: bool,
    /// The embedding's rows multiplied by `sqrt(hidden_size)` (Gemma).
    pub embed_scale: bool,
    /// Granite's embedding, residual, attention and logit multipliers, read from the file or
    /// config (`TextConfig`'s `embed_scale`, `residual_scale`, `attn_scale`, `logit_scale`).
    pub multipliers: bool,
    /// q, k and v in one weight and gate and up in another (Phi-3): `attn_qkv` and a double-height
    /// `ffn_up` in GGUF, `qkv_proj` and `gate_up_proj` in Hugging Face folders.
    pub fused_projections: bool,
    pub activation: Activation,
    /// Gemma's norms scale by `1 + w`. llama.cpp's converter adds the 1 into GGUF files, so only a
    /// Hugging Face folder's norm weights get it added at load.
    pub hf_norm_plus_one: bool,
    /// A file that sets a sliding window without saying which layers use it: of every this many
    /// layers, all but the last slide (Gemma 3: five local, one global; 0: every layer slides, as
    /// in Phi-3). None where the family has no sliding window.
    pub sliding_pattern: Option<usize>,
    /// The window where a GGUF file gives none (llama.cpp's Gemma 2: 4096).
    pub default_window: Option<usize>,
    /// The rope base of sliding layers where a file gives none: Gemma 3's 10,000, unscaled; None
    /// where they share the global rope (Gemma 2).
    pub local_rope_theta: Option<f32>,
    /// Attention scores and logits soft-capped, with llama.cpp's defaults where a GGUF file gives
    /// no cap (Gemma 2: 50 and 30).
    pub softcaps: Option<(f32, f32)>,
}

const LLAMA: Differences = Differences {
    qkv_bias: false,
    qk_norm: false,
    gguf_rope: RopeStyle::Interleaved,
    gguf_rope_freqs: true,
    sandwich_norms: false,
    embed_scale: false,
    multipliers: false,
    fused_projections: false,
    activation: Activation::Silu,
    hf_norm_plus_one: false,
    sliding_pattern: None,
    default_window: None,
    local_rope_theta: None,
    softcaps: None,
};

/// What Gemma 2 and 3 share.
const GEMMA: Differences = Differences {
    gguf_rope: RopeStyle::Halves,
    gguf_rope_freqs: false,
    sandwich_norms: true,
    embed_scale: true,
    activation: Activation::GeluTanh,
    hf_norm_plus_one: true,
    ..LLAMA
};

impl Family {
    pub fn differences(self) -> Differences {
        match self {
            Family::Llama => LLAMA,
            Family::Qwen2 => {
                Differences { qkv_bias: true, gguf_rope: RopeStyle::Halves, gguf_rope_freqs: false, ..LLAMA }
            }
            Family::Qwen3 => {
                Differences { qk_norm: true, gguf_rope: RopeStyle::Halves, gguf_rope_freqs: false, ..LLAMA }
            }
            Family::Gemma2 => Differences {
                sliding_pattern: Some(2),
                default_window: Some(4096),
                softcaps: Some((50.0, 30.0)),
                ..GEMMA
            },
            Family::Gemma3 => {
                Differences { qk_norm: true, sliding_pattern: Some(6), local_rope_theta: Some(10_000.0), ..GEMMA }
            }
            Family::Phi3 => Differences {
                fused_projections: true,
                gguf_rope: RopeStyle::Halves,
                gguf_rope_freqs: false,
                sliding_pattern: Some(0),
                ..LLAMA
            },
            // llama.cpp writes Granite's q and k rows permuted as llama's, and reads `rope_freqs`.
            Family::Granite => Differences { multipliers: true, ..LLAMA },
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
    Known { gguf: &["granite"], hf: &["granite"], status: Ok(Family::Granite) },
    Known { gguf: &["granitemoe"], hf: &["granitemoe"], status: Err("its mixture of experts") },
    Known { gguf: &["qwen2"], hf: &["qwen2"], status: Ok(Family::Qwen2) },
    Known { gguf: &["qwen3"], hf: &["qwen3"], status: Ok(Family::Qwen3) },
    Known { gguf: &["qwen3moe"], hf: &["qwen3_moe"], status: Err("its mixture of experts") },
    Known { gguf: &["gemma3"], hf: &["gemma3_text"], status: Ok(Family::Gemma3) },
    // A Hugging Face `gemma3` folder is the multimodal model, its text model's config nested.
    Known {
        gguf: &[],
        hf: &["gemma3"],
        status: Err("its image encoder and nested text config (Gemma3ForConditionalGeneration)"),
    },
    Known { gguf: &["gemma2"], hf: &["gemma2"], status: Ok(Family::Gemma2) },
    Known { gguf: &["gemma"], hf: &["gemma"], status: Err("its (1 + w) norms, embedding scale and GELU") },
    Known { gguf: &["phi3"], hf: &["phi3"], status: Ok(Family::Phi3) },
    Known { gguf: &["phimoe"], hf: &["phimoe"], status: Err("its mixture of experts") },
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
        // All run the one decoder; how they differ is in their weights and settings (`Differences`).
        Family::Llama
        | Family::Qwen2
        | Family::Qwen3
        | Family::Gemma2
        | Family::Gemma3
        | Family::Phi3
        | Family::Granite => Box::new(Decoder::new(cfg, raw, format, device)?),
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
        assert_eq!(from_gguf("granite").unwrap(), Family::Granite);
        assert_eq!(from_hf("phi3").unwrap(), Family::Phi3);
        let granite_moe = from_hf("granitemoe").unwrap_err().to_string();
        assert!(granite_moe.contains("mixture of experts"), "{granite_moe}");
        assert_eq!(from_hf("qwen2").unwrap(), Family::Qwen2);
        assert_eq!(from_gguf("qwen3").unwrap(), Family::Qwen3);
        assert_eq!(from_gguf("gemma3").unwrap(), Family::Gemma3);
        assert_eq!(from_hf("gemma3_text").unwrap(), Family::Gemma3);
        let multimodal = from_hf("gemma3").unwrap_err().to_string();
        assert!(multimodal.contains("image encoder"), "{multimodal}");
        assert_eq!(from_hf("gemma2").unwrap(), Family::Gemma2);
        let gemma = from_gguf("gemma").unwrap_err().to_string();
        assert!(gemma.contains("(1 + w) norms"), "{gemma}");
        let moe = from_gguf("qwen3moe").unwrap_err().to_string();
        assert!(moe.contains("mixture of experts"), "{moe}");
        let unknown = from_gguf("rwkv7").unwrap_err().to_string();
        assert!(unknown.contains("unknown") && unknown.contains("llama"), "{unknown}");
    }
}
