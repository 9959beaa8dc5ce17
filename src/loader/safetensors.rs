//! A Hugging Face-layout folder of a family Wick implements: config.json, tokenizer.json,
//! tokenizer_config.json, generation_config.json and *.safetensors (memory-mapped).
//!
//! As for GGUF files, what the family does not implement is a load error (`arch::family`): another
//! `model_type`, a rope scaling other than linear and Llama 3's, a sliding window in a family
//! without one, biases, another activation, or a tensor of the checkpoint that the forward would not use.

use super::chat_template::ChatTemplate;
use super::tokenizer::TextTokenizer;
use super::LoadedModel;
use crate::arch::cpu::rowwise::Activation;
use crate::arch::family::{self, Family};
use crate::arch::linear::{RawWeight, WeightFormat};
use crate::arch::model::{qkv_bias, RawLayer, RawWeights, SlidingWindow, TextConfig};
use crate::arch::rope::{Llama3Scaling, RopeStyle};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

/// The fields of a Hugging Face `TextConfig` that the forward needs.
#[derive(Deserialize)]
struct HfConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f32>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5's form of `rope_theta` and `rope_scaling` together.
    rope_parameters: Option<serde_json::Value>,
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    hidden_act: Option<String>,
    /// Gemma's name for `hidden_act`.
    hidden_activation: Option<String>,
    /// Per layer, `sliding_attention` or `full_attention` (Gemma 3, Qwen3 in transformers 5).
    layer_types: Option<Vec<String>>,
    /// Gemma 3's older form of `layer_types`: of every N layers, all but the last slide.
    sliding_window_pattern: Option<usize>,
    /// Gemma 3's rope base of sliding layers, beside `rope_theta` for the others.
    rope_local_base_freq: Option<f32>,
    /// Gemma: attention scores are scaled by `query_pre_attn_scalar^-0.5` rather than `head_dim^-0.5`.
    query_pre_attn_scalar: Option<f32>,
    final_logit_softcapping: Option<f32>,
    attn_logit_softcapping: Option<f32>,
    /// Granite's multipliers (transformers' defaults are 1: Granite's attention scores are then
    /// not scaled at all).
    embedding_multiplier: Option<f32>,
    residual_multiplier: Option<f32>,
    attention_multiplier: Option<f32>,
    logits_scaling: Option<f32>,
}

impl HfConfig {
    /// `model_type`, or else the first of `architectures` without its head ("LlamaForCausalLM" is
    /// `llama`).
    fn model_type(&self) -> Result<String> {
        if let Some(t) = &self.model_type {
            return Ok(t.clone());
        }
        let arch = self.architectures.first().context("config.json names no model_type or architectures")?;
        Ok(arch.strip_suffix("ForCausalLM").unwrap_or(arch).to_lowercase())
    }

    fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// What attention scores are multiplied by: Granite's `attention_multiplier`, else
    /// `query_pre_attn_scalar^-0.5` (Gemma), else `head_dim^-0.5`.
    fn attn_scale(&self, family: Family) -> f32 {
        match family.differences().multipliers {
            true => self.attention_multiplier.unwrap_or(1.0),
            false => 1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f32).sqrt(),
        }
    }

    /// Gemma's `sqrt(hidden_size)`, Granite's `embedding_multiplier`.
    fn embed_scale(&self, family: Family) -> Option<f32> {
        let differences = family.differences();
        match differences.embed_scale {
            true => Some((self.hidden_size as f32).sqrt()),
            false => self.embedding_multiplier.filter(|_| differences.multipliers),
        }
    }

    /// The rope's base and its frequency factors (`arch::rope`), from `rope_parameters` where
    /// transformers 5 wrote the config, else from `rope_theta` and `rope_scaling`. A scaling other
    /// than linear or Llama 3's is refused by name.
    fn rope(&self) -> Result<(f32, Option<Vec<f32>>)> {
        let params = self.rope_parameters.as_ref().filter(|v| v.is_object());
        // transformers 5 gives a model with sliding layers one set per kind of layer.
        let params = params.map(|p| p.get("full_attention").unwrap_or(p));
        let theta = params.and_then(|p| p.get("rope_theta")?.as_f64()).map(|t| t as f32);
        let theta = theta.or(self.rope_theta).unwrap_or(10_000.0);
        let partial = params.and_then(|p| p.get("partial_rotary_factor")?.as_f64()).or(self.partial_rotary_factor);
        if let Some(part) = partial.filter(|&p| p != 1.0) {
            bail!("a rotary embedding on part of each head (config.json partial_rotary_factor = {part}) is not implemented yet");
        }
        let Some(scaling) = params.or(self.rope_scaling.as_ref()).filter(|v| !v.is_null()) else {
            return Ok((theta, None));
        };
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(|t| t.as_str());
        let number = |key: &str| {
            let value = scaling.get(key).and_then(|v| v.as_f64());
            value.with_context(|| format!("config.json's rope scaling `{}` has no number `{key}`", kind.unwrap_or("")))
        };
        let half = self.head_dim() / 2;
        let factors = match kind {
            Some("default") => None,
            // transformers 5's `rope_parameters` may hold only the base.
            None if scaling.get("factor").is_none() => None,
            Some("linear") => Some(vec![number("factor")? as f32; half]),
            Some("llama3") => Some(
                Llama3Scaling {
                    factor: number("factor")?,
                    low_freq_factor: number("low_freq_factor")?,
                    high_freq_factor: number("high_freq_factor")?,
                    original_context: number("original_max_position_embeddings")?,
                }
                .freq_factors(self.head_dim(), theta),
            ),
            other => {
                bail!("rope scaling `{}` (config.json rope_scaling) is not implemented yet", other.unwrap_or("unnamed"))
            }
        };
        Ok((theta, factors))
    }

    /// The sliding window of a family that has one; a window in a family without one is refused.
    fn sliding_window(&self, family: Family) -> Result<Option<SlidingWindow>> {
        let Some(size) = self.sliding_window.filter(|&w| w < self.max_position_embeddings) else { return Ok(None) };
        if self.use_sliding_window == Some(false) {
            return Ok(None);
        }
        let Some(family_pattern) = family.differences().sliding_pattern else {
            bail!("a sliding attention window of {size} (config.json sliding_window) is not implemented yet");
        };
        let local_layers = match &self.layer_types {
            Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
            None => {
                SlidingWindow::pattern(self.num_hidden_layers, self.sliding_window_pattern.unwrap_or(family_pattern))
            }
        };
        let local = self.rope_parameters.as_ref().and_then(|p| p.get("sliding_attention"));
        if let Some(kind) = local.and_then(|l| l.get("rope_type")?.as_str()).filter(|k| *k != "default") {
            bail!("rope scaling `{kind}` on sliding layers (config.json rope_parameters) is not implemented yet");
        }
        let local_theta = local.and_then(|l| l.get("rope_theta")?.as_f64()).map(|t| t as f32);
        let local_rope_theta = local_theta.or(self.rope_local_base_freq).or(family.differences().local_rope_theta);
        Ok(Some(SlidingWindow { size, local_layers, local_rope_theta }))
    }

    /// Settings that change the forward in ways Wick does not implement.
    fn refuse_unimplemented(&self, family: Family) -> Result<()> {
        self.rope()?;
        self.sliding_window(family)?;
        if self.attention_bias || self.mlp_bias {
            bail!("biases in the attention or MLP projections (config.json attention_bias/mlp_bias) are not implemented yet");
        }
        let wanted = match family.differences().activation {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        };
        if let Some(act) = self.hidden_activation.as_deref().or(self.hidden_act.as_deref()).filter(|a| *a != wanted) {
            bail!("activation `{act}` (config.json hidden_act) is not implemented yet; the {family:?} family uses {wanted}");
        }
        if let Some(cap) = self.attn_logit_softcapping.filter(|_| family.differences().softcaps.is_none()) {
            bail!("soft-capped attention scores (config.json attn_logit_softcapping = {cap}) are not implemented for {family:?}");
        }
        Ok(())
    }
}

fn default_eps() -> f32 {
    1e-6
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// The folder's config.json, if its family and settings are ones Wick implements.
fn supported_config(dir: &Path) -> Result<HfConfig> {
    let hf: HfConfig = serde_json::from_value(read_json(&dir.join("config.json"))?).context("config.json")?;
    check_config(&hf)?;
    Ok(hf)
}

fn check_config(hf: &HfConfig) -> Result<()> {
    hf.refuse_unimplemented(family::from_hf(&hf.model_type()?)?)
}

/// The family and settings of the folder, from config.json alone (`ModelSource::check_family`). A
/// config that cannot be read passes, as an unreadable GGUF file does: its load reports it.
pub fn check(dir: &Path) -> Result<()> {
    let Ok(config) = read_json(&dir.join("config.json")) else { return Ok(()) };
    let Ok(hf) = serde_json::from_value::<HfConfig>(config) else { return Ok(()) };
    check_config(&hf)
}

pub fn load(dir: &Path, format: WeightFormat, device: &Device) -> Result<LoadedModel> {
    let hf = supported_config(dir)?;
    let (rope_theta, rope_freq_factors) = hf.rope()?;
    let family = family::from_hf(&hf.model_type()?)?;
    let differences = family.differences();
    let cfg = TextConfig {
        family,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf.head_dim(),
        vocab_size: hf.vocab_size,
        rope_theta,
        rms_norm_eps: hf.rms_norm_eps,
        context_length: hf.max_position_embeddings,
        rope_style: RopeStyle::Halves,
        rope_freq_factors,
        attn_scale: hf.attn_scale(family),
        sliding_window: hf.sliding_window(family)?,
        final_logit_softcap: hf.final_logit_softcapping,
        attn_softcap: hf.attn_logit_softcapping,
        embed_scale: hf.embed_scale(family),
        residual_scale: hf.residual_multiplier.filter(|_| differences.multipliers),
        logit_scale: hf.logits_scaling.filter(|_| differences.multipliers).map(|s| 1.0 / s),
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .safetensors files in {}", dir.display());
    }
    // SAFETY: the files are only read; a model file changing under a running server is not supported.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files)? };
    let used = RefCell::new(HashSet::new());
    let get = |name: &str| -> Result<candle_core::Tensor> {
        used.borrow_mut().insert(name.to_string());
        st.load(name, device).with_context(|| format!("tensor `{name}`"))
    };
    let dense = |name: &str| -> Result<RawWeight> { Ok(RawWeight::Dense(get(name)?)) };
    // Gemma's norms scale by (1 + w): the 1 goes into the weight, as in a GGUF file.
    let norm = |name: &str| -> Result<candle_core::Tensor> {
        let w = get(name)?;
        Ok(if differences.hf_norm_plus_one { (w.to_dtype(candle_core::DType::F32)? + 1.0)? } else { w })
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        // With norms after attention and the FFN (Gemma), `post_attention_layernorm` is the first of
        // those, and the FFN's own norm is `pre_feedforward_layernorm`.
        let ffn_norm =
            if differences.sandwich_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
        layers.push(RawLayer {
            attn_norm: norm(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: norm(&format!("{p}.{ffn_norm}.weight"))?,
            post_norms: match differences.sandwich_norms {
                true => Some((
                    norm(&format!("{p}.post_attention_layernorm.weight"))?,
                    norm(&format!("{p}.post_feedforward_layernorm.weight"))?,
                )),
                false => None,
            },
            qkv: match differences.fused_projections {
                true => vec![dense(&format!("{p}.self_attn.qkv_proj.weight"))?],
                false => ["q", "k", "v"]
                    .iter()
                    .map(|part| dense(&format!("{p}.self_attn.{part}_proj.weight")))
                    .collect::<Result<_>>()?,
            },
            o: dense(&format!("{p}.self_attn.o_proj.weight"))?,
            gate_up: match differences.fused_projections {
                true => vec![dense(&format!("{p}.mlp.gate_up_proj.weight"))?],
                false => vec![dense(&format!("{p}.mlp.gate_proj.weight"))?, dense(&format!("{p}.mlp.up_proj.weight"))?],
            },
            down: dense(&format!("{p}.mlp.down_proj.weight"))?,
            qk_norm: match differences.qk_norm {
                true => Some((
                    norm(&format!("{p}.self_attn.q_norm.weight"))?,
                    norm(&format!("{p}.self_attn.k_norm.weight"))?,
                )),
                false => None,
            },
            qkv_bias: match differences.qkv_bias {
                true => Some(qkv_bias(|part| get(&format!("{p}.self_attn.{part}_proj.bias")))?),
                false => None,
            },
        });
    }
    let lm_head = if hf.tie_word_embeddings { None } else { Some(dense("lm_head.weight")?) };
    let raw =
        RawWeights { embed: dense("model.embed_tokens.weight")?, norm: norm("model.norm.weight")?, layers, lm_head };
    // Every tensor goes into the forward, except copies of what it already has: a tied head saved
    // anyway, and older checkpoints' rotary buffers (frequencies that config.json's rope settings give too).
    let used = used.into_inner();
    let names = st.tensors().into_iter().map(|(name, _)| name);
    let names = names
        .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
        .filter(|n| !(hf.tie_word_embeddings && n == "lm_head.weight"));
    super::refuse_unused(names, &used, "checkpoint")?;
    let model = family::build(cfg, raw, format, device)?;

    let tok_config = read_json(&dir.join("tokenizer_config.json")).unwrap_or(serde_json::Value::Null);
    let extra_eos: Vec<u32> =
        match read_json(&dir.join("generation_config.json")).ok().and_then(|g| g.get("eos_token_id").cloned()) {
            Some(serde_json::Value::Number(n)) => n.as_u64().into_iter().map(|n| n as u32).collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|n| n.as_u64()).map(|n| n as u32).collect(),
            _ => Vec::new(),
        };
    let tokenizer = TextTokenizer::from_hf(&dir.join("tokenizer.json"), &tok_config, &extra_eos)?;
    let template_src = match tok_config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // A list of named templates: the one called "default".
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    let template = template_src
        .map(|src| ChatTemplate::new(src, tokenizer.bos_token.clone(), tokenizer.eos_token.clone()))
        .transpose()?;
    Ok(LoadedModel { model, tokenizer, template })
}
