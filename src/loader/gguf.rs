//! A GGUF file of a family Wick implements: config, weights (memory-mapped, read in their quantized types),
//! tokenizer and chat template, all from the one file.
//!
//! What the family does not implement is a load error, not an approximation (`arch::family`): an
//! architecture it does not know, a rope scaling other than linear (longrope's factor tensors
//! included), a rotary embedding on part of each head, a sliding window in a family without one,
//! and any tensor of the file that the forward would not use (a bias the family has not).
//! Rope scalings are read as llama.cpp reads them: `rope.scaling.factor` stretches every frequency
//! unless the type says `none`, and a llama file's `rope_freqs.weight` divides each pair's.

use super::chat_template::ChatTemplate;
use super::tokenizer::TextTokenizer;
use super::LoadedModel;
use crate::arch::family::{self, Family};
use crate::arch::linear::{RawWeight, WeightFormat};
use crate::arch::model::{qkv_bias, RawLayer, RawWeights, SlidingWindow, TextConfig, TextModel};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Device;
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::Path;

pub fn load(path: &Path, format: WeightFormat, device: &Device) -> Result<LoadedModel> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: the file is only read; a model file changing under a running server is not supported.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
    let mut reader = Cursor::new(&mmap[..]);
    let content = Content::read(&mut reader).map_err(|e| unreadable(path, e))?;
    let cfg = config(&content.metadata)?;
    // The tokenizer (a vocabulary and merges to index, ~70 ms for the default model) is built on a
    // thread of its own while the weights load: a cold start waits for both.
    std::thread::scope(|scope| {
        let tokenizer = scope.spawn(|| TextTokenizer::from_gguf(&content.metadata));
        let model = weights(&content, &mut reader, cfg, format, device)?;
        let tokenizer = tokenizer.join().map_err(|_| anyhow!("building the tokenizer panicked"))??;
        let template_src = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let template = template_src
            .map(|src| ChatTemplate::new(src, tokenizer.bos_token.clone(), tokenizer.eos_token.clone()))
            .transpose()?;
        Ok(LoadedModel { model, tokenizer, template })
    })
}

/// The model's weights, read from the mapped file, built into its family's model.
fn weights(
    content: &Content,
    reader: &mut Cursor<&[u8]>,
    mut cfg: TextConfig,
    format: WeightFormat,
    device: &Device,
) -> Result<Box<dyn TextModel>> {
    let mut used = HashSet::new();
    let mut tensor = |name: &str| -> Result<RawWeight> {
        used.insert(name.to_string());
        Ok(RawWeight::Quantized(content.tensor(reader, name, device).with_context(|| format!("tensor `{name}`"))?))
    };
    let differences = cfg.family.differences();
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("blk.{i}");
        // llama.cpp takes q, k and v fused into `attn_qkv` in any family's file (Phi-3's converter
        // writes them so).
        let fused_qkv = format!("{p}.attn_qkv.weight");
        let qkv = match content.tensor_infos.contains_key(&fused_qkv) {
            true => vec![tensor(&fused_qkv)?],
            false => {
                ["q", "k", "v"].iter().map(|part| tensor(&format!("{p}.attn_{part}.weight"))).collect::<Result<_>>()?
            }
        };
        // Phi-3's `ffn_up` holds the gate's rows and then up's.
        let gate_up = match differences.fused_projections {
            true => vec![tensor(&format!("{p}.ffn_up.weight"))?],
            false => vec![tensor(&format!("{p}.ffn_gate.weight"))?, tensor(&format!("{p}.ffn_up.weight"))?],
        };
        layers.push(RawLayer {
            attn_norm: tensor(&format!("{p}.attn_norm.weight"))?.dequantize(device)?,
            ffn_norm: tensor(&format!("{p}.ffn_norm.weight"))?.dequantize(device)?,
            qkv,
            o: tensor(&format!("{p}.attn_output.weight"))?,
            gate_up,
            down: tensor(&format!("{p}.ffn_down.weight"))?,
            post_norms: match differences.sandwich_norms {
                true => Some((
                    tensor(&format!("{p}.post_attention_norm.weight"))?.dequantize(device)?,
                    tensor(&format!("{p}.post_ffw_norm.weight"))?.dequantize(device)?,
                )),
                false => None,
            },
            qk_norm: match differences.qk_norm {
                true => Some((
                    tensor(&format!("{p}.attn_q_norm.weight"))?.dequantize(device)?,
                    tensor(&format!("{p}.attn_k_norm.weight"))?.dequantize(device)?,
                )),
                false => None,
            },
            qkv_bias: match differences.qkv_bias {
                true => Some(qkv_bias(|part| tensor(&format!("{p}.attn_{part}.bias"))?.dequantize(device))?),
                false => None,
            },
        });
    }
    let lm_head =
        if content.tensor_infos.contains_key("output.weight") { Some(tensor("output.weight")?) } else { None };
    let raw = RawWeights {
        embed: tensor("token_embd.weight")?,
        norm: tensor("output_norm.weight")?.dequantize(device)?,
        layers,
        lm_head,
    };
    if let Some(name) = LONGROPE_FACTORS.iter().find(|n| content.tensor_infos.contains_key(**n)) {
        bail!("rope scaling `longrope` (the file's `{name}`, Phi-3's 128k context) is not implemented yet");
    }
    if differences.gguf_rope_freqs && content.tensor_infos.contains_key(ROPE_FREQS) {
        let factors = tensor(ROPE_FREQS)?.dequantize(device)?.flatten_all()?.to_vec1::<f32>()?;
        cfg.rope_freq_factors = Some(combined_freq_factors(cfg.rope_freq_factors.take(), factors, cfg.head_dim)?);
    }
    super::refuse_unused(content.tensor_infos.keys().cloned(), &used, "file")?;
    family::build(cfg, raw, format, device)
}

/// Llama 3.1's per-pair rope frequency factors, as llama.cpp's converter writes them.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// The per-pair factors of a `longrope` scaling (Phi-3's 128k models), for short and long contexts.
const LONGROPE_FACTORS: [&str; 2] = ["rope_factors_long.weight", "rope_factors_short.weight"];

/// A file's `rope_freqs.weight` over any linear scaling: llama.cpp divides each pair's frequency by
/// both.
fn combined_freq_factors(linear: Option<Vec<f32>>, file: Vec<f32>, head_dim: usize) -> Result<Vec<f32>> {
    if file.len() != head_dim / 2 {
        bail!("`{ROPE_FREQS}` holds {} factors; heads of {head_dim} have {} rotary pairs", file.len(), head_dim / 2);
    }
    Ok(match linear {
        Some(linear) => linear.iter().zip(&file).map(|(a, b)| a * b).collect(),
        None => file,
    })
}

/// Why the header of `path` could not be read: a tensor type candle does not know (named, where
/// ggml has a name for it), or not a GGUF file at all.
fn unreadable(path: &Path, e: candle_core::Error) -> anyhow::Error {
    let text = e.to_string();
    // The number is followed by candle's backtrace, when it keeps one.
    let number = |n: &str| n.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse::<u32>().ok());
    let Some(ty) = text.strip_prefix("unknown dtype for tensor ").and_then(number) else {
        return anyhow!("{} is not a GGUF file: {text}", path.display());
    };
    // ggml's numbering (ggml.h) of the types candle cannot read.
    let name = match ty {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    };
    anyhow!(
        "{} holds tensors of ggml type {ty} ({name}), which Wick cannot read \
         (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
        path.display()
    )
}

/// The family and settings of the file at `path`, from its header alone (`ModelSource::check_family`).
/// A file that cannot be read yet (still being copied, say) passes: its load reports it, and a later
/// request retries.
pub fn check(path: &Path) -> Result<()> {
    match super::tokenizer::gguf_metadata(path) {
        Ok(metadata) => config(&metadata).map(|_| ()),
        Err(_) => Ok(()),
    }
}

fn config(md: &HashMap<String, Value>) -> Result<TextConfig> {
    let arch = md.get("general.architecture").context("GGUF has no general.architecture")?.to_string()?.clone();
    let family = family::from_gguf(&arch)?;
    refuse_unimplemented_settings(md, &arch, family)?;
    let u = |k: &str| -> Result<usize> {
        Ok(md.get(&format!("{arch}.{k}")).with_context(|| format!("GGUF has no {arch}.{k}"))?.to_u32()? as usize)
    };
    let optional = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
    let f = |k: &str, default: f32| -> f32 { optional(k).unwrap_or(default) };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads);
    if let Some(rotated) = u("rope.dimension_count").ok().filter(|&n| n != head_dim) {
        bail!("a rotary embedding on {rotated} of each head's {head_dim} values ({arch}.rope.dimension_count) is not implemented yet");
    }
    let vocab = match md.get(&format!("{arch}.vocab_size")) {
        Some(v) => v.to_u32()? as usize,
        None => md.get("tokenizer.ggml.tokens").context("GGUF has no vocabulary")?.to_vec()?.len(),
    };
    let num_layers = u("block_count")?;
    // llama.cpp's Gemma 3: heads of `hidden / heads` set the scale of the 27B (62 layers), whose
    // `query_pre_attn_scalar` is that and not its head size.
    let scale_dim = if family == Family::Gemma3 && num_layers == 62 { hidden / heads } else { head_dim };
    let differences = family.differences();
    // Granite's multipliers, as llama.cpp reads them: all but the logits' optional, and 0 where
    // absent, which means none (the attention's: `1/sqrt(head_dim)`).
    let multiplier = |k: &str| optional(k).filter(|&m| differences.multipliers && m != 0.0);
    let logit_scale = match differences.multipliers {
        true => Some(1.0 / multiplier("logit_scale").with_context(|| format!("GGUF has no {arch}.logit_scale"))?),
        false => None,
    };
    let embed_scale = match differences.embed_scale {
        true => Some((hidden as f32).sqrt()),
        false => multiplier("embedding_scale"),
    };
    Ok(TextConfig {
        family,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_layers,
        num_heads: heads,
        num_kv_heads: u("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        vocab_size: vocab,
        rope_theta: f("rope.freq_base", 10_000.0),
        rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
        context_length: u("context_length")?,
        rope_style: family.differences().gguf_rope,
        rope_freq_factors: linear_rope_scaling(md, &arch)?.map(|factor| vec![factor; head_dim / 2]),
        attn_scale: multiplier("attention.scale").unwrap_or(1.0 / (scale_dim as f32).sqrt()),
        sliding_window: sliding_window(md, &arch, family, num_layers)?,
        final_logit_softcap: softcap(md, &arch, "final_logit_softcapping", family.differences().softcaps.map(|c| c.1))?,
        attn_softcap: softcap(md, &arch, "attn_logit_softcapping", family.differences().softcaps.map(|c| c.0))?,
        embed_scale,
        residual_scale: multiplier("residual_scale"),
        logit_scale,
    })
}

/// A soft-cap from the file, or the family's default (llama.cpp's, for a family that has one).
fn softcap(md: &HashMap<String, Value>, arch: &str, key: &str, default: Option<f32>) -> Result<Option<f32>> {
    Ok(md.get(&format!("{arch}.{key}")).map(|v| v.to_f32()).transpose()?.or(default).filter(|&c| c > 0.0))
}

/// A family's sliding window, as llama.cpp reads it: `attention.sliding_window` (absent: the family's
/// default, Gemma 2's 4096; 0: none),
/// the local layers from `attention.sliding_window_pattern` (a per-layer array, or N: all but
/// every Nth slide) or else the family's pattern, and the local rope base from `rope.freq_base_swa`
/// (else the family's: llama.cpp's 10,000 for Gemma 3, the global rope for Gemma 2).
fn sliding_window(
    md: &HashMap<String, Value>,
    arch: &str,
    family: Family,
    num_layers: usize,
) -> Result<Option<SlidingWindow>> {
    let key = |k: &str| md.get(&format!("{arch}.{k}"));
    let size = key("attention.sliding_window").map(|v| v.to_u32()).transpose()?.map(|w| w as usize);
    let Some(size) = size.or(family.differences().default_window).filter(|&w| w > 0) else {
        return Ok(None);
    };
    let Some(family_pattern) = family.differences().sliding_pattern else {
        bail!("a sliding attention window ({arch}.attention.sliding_window = {size}) is not implemented yet");
    };
    let local_layers = match key("attention.sliding_window_pattern") {
        Some(Value::Array(per_layer)) => per_layer
            .iter()
            .map(|v| Ok(v.to_bool().or_else(|_| v.to_u32().map(|n| n != 0))?))
            .collect::<Result<Vec<bool>>>()?,
        Some(n) => SlidingWindow::pattern(num_layers, n.to_u32()? as usize),
        None => SlidingWindow::pattern(num_layers, family_pattern),
    };
    let local_rope_theta = key("rope.freq_base_swa").map(|v| v.to_f32()).transpose()?;
    let local_rope_theta = local_rope_theta.or(family.differences().local_rope_theta);
    Ok(Some(SlidingWindow { size, local_layers, local_rope_theta }))
}

/// The factor of a linear rope scaling, read as llama.cpp reads it: a scaling type left out means
/// linear, `none` means no scaling whatever the factor, and a factor of 0 or 1 is none.
fn linear_rope_scaling(md: &HashMap<String, Value>, arch: &str) -> Result<Option<f32>> {
    let text = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_string().ok()).cloned();
    let number = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
    match text("rope.scaling.type").as_deref() {
        None | Some("linear") => {}
        Some("none") => return Ok(None),
        Some(kind) => bail!("rope scaling `{kind}` ({arch}.rope.scaling.type) is not implemented yet"),
    }
    if let Some(factor) = number("rope.scaling.attn_factor").filter(|&f| f != 1.0) {
        bail!("a rope attention factor of {factor} ({arch}.rope.scaling.attn_factor) is not implemented yet");
    }
    // The factor's old key, which llama.cpp still reads where the new one is absent.
    let factor = number("rope.scaling.factor").or_else(|| number("rope.scale_linear"));
    Ok(factor.filter(|&f| f != 0.0 && f != 1.0))
}

/// Metadata that changes the forward in ways the family does not implement.
fn refuse_unimplemented_settings(md: &HashMap<String, Value>, arch: &str, family: Family) -> Result<()> {
    if let Some(cap) =
        md.get(&format!("{arch}.attn_logit_softcapping")).filter(|_| family.differences().softcaps.is_none())
    {
        bail!(
            "soft-capped attention scores ({arch}.attn_logit_softcapping = {cap:?}) are not implemented for {family:?}"
        );
    }
    Ok(())
}
