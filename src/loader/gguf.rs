//! A llama-family GGUF file: config, weights (memory-mapped, read in their quantized types),
//! tokenizer and chat template, all from the one file.

use super::chat_template::ChatTemplate;
use super::tokenizer::TextTokenizer;
use super::LoadedModel;
use crate::arch::attention::RopeStyle;
use crate::arch::linear::{RawWeight, WeightFormat};
use crate::arch::llama::{Llama, LlamaConfig, RawLayer, RawWeights};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Device;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

/// Architectures whose GGUF tensors follow llama.cpp's llama layout without biases.
const LLAMA_LIKE: &[&str] = &["llama", "mistral", "granite"];

pub fn load(path: &Path, format: WeightFormat, device: &Device) -> Result<LoadedModel> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: the file is only read; a model file changing under a running server is not supported.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
    let mut reader = Cursor::new(&mmap[..]);
    let content = Content::read(&mut reader).map_err(|e| anyhow!("{} is not a GGUF file: {e}", path.display()))?;
    let cfg = config(&content.metadata)?;
    let mut tensor = |name: &str| -> Result<RawWeight> {
        Ok(RawWeight::Quantized(content.tensor(&mut reader, name, device).with_context(|| format!("tensor `{name}`"))?))
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("blk.{i}");
        layers.push(RawLayer {
            attn_norm: tensor(&format!("{p}.attn_norm.weight"))?.dequantize(device)?,
            ffn_norm: tensor(&format!("{p}.ffn_norm.weight"))?.dequantize(device)?,
            q: tensor(&format!("{p}.attn_q.weight"))?,
            k: tensor(&format!("{p}.attn_k.weight"))?,
            v: tensor(&format!("{p}.attn_v.weight"))?,
            o: tensor(&format!("{p}.attn_output.weight"))?,
            gate: tensor(&format!("{p}.ffn_gate.weight"))?,
            up: tensor(&format!("{p}.ffn_up.weight"))?,
            down: tensor(&format!("{p}.ffn_down.weight"))?,
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
    let model = Llama::new(cfg, raw, format, device)?;

    let tokenizer = TextTokenizer::from_gguf(&content.metadata)?;
    let template_src = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
    let template = ChatTemplate::new(template_src, tokenizer.bos_token.clone(), tokenizer.eos_token.clone())?;
    Ok(LoadedModel { model, tokenizer, template })
}

fn config(md: &HashMap<String, Value>) -> Result<LlamaConfig> {
    let arch = md.get("general.architecture").context("GGUF has no general.architecture")?.to_string()?.clone();
    if !LLAMA_LIKE.contains(&arch.as_str()) {
        bail!("architecture `{arch}` is not supported yet (supported: {})", LLAMA_LIKE.join(", "));
    }
    let u = |k: &str| -> Result<usize> {
        Ok(md.get(&format!("{arch}.{k}")).with_context(|| format!("GGUF has no {arch}.{k}"))?.to_u32()? as usize)
    };
    let f = |k: &str, default: f32| -> f32 {
        md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok()).unwrap_or(default)
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let vocab = match md.get(&format!("{arch}.vocab_size")) {
        Some(v) => v.to_u32()? as usize,
        None => md.get("tokenizer.ggml.tokens").context("GGUF has no vocabulary")?.to_vec()?.len(),
    };
    Ok(LlamaConfig {
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_layers: u("block_count")?,
        num_heads: heads,
        num_kv_heads: u("attention.head_count_kv").unwrap_or(heads),
        head_dim: u("attention.key_length").unwrap_or(hidden / heads),
        vocab_size: vocab,
        rope_theta: f("rope.freq_base", 10_000.0),
        rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
        context_length: u("context_length")?,
        rope_style: RopeStyle::Interleaved,
    })
}
