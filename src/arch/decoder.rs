//! The decoder every family runs, batched: one forward runs any mix of prefills and decodes of
//! independent sequences. A family differs from llama in what its weights carry (Qwen2's q/k/v
//! biases, per-head q/k norms, Gemma's norms after attention and the FFN, Phi-3's fused projections)
//! and in a few settings (`family::Differences`, `TextConfig`): the activation, scales on the
//! embedding, residual branches and logits, sliding windows with a rope of their own, soft-caps.
//! One layer loop (`Decoder::step`) reads them all, over the ops of a device (`step_ops`): the CPU's
//! and CUDA's run the same loop.
//!
//! All new tokens of a step are flattened into one `[tokens, hidden]` matrix, so every weight matmul is
//! one call however many sequences share the step; only attention is per sequence.

use super::attention::{LayerAttention, Scores};
use super::cpu::rowwise::Activation;
use super::embedding::Embedding;
use super::linear::{Linear, WeightFormat};
use super::model::{RawWeights, StepInput, TextConfig, TextModel};
use super::rope::Rope;
use super::step_ops::{CpuStep, PerFeature, StepOps};
use crate::kv::{pool_blocks, CpuKv, KvStore, BLOCK_SIZE};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

struct Layer {
    attn_norm: PerFeature,
    qkv: Linear,
    qkv_bias: Option<PerFeature>,
    /// q's and k's per-head norms.
    qk_norm: Option<(PerFeature, PerFeature)>,
    o: Linear,
    ffn_norm: PerFeature,
    gate_up: Linear,
    down: Linear,
    /// Norms of the attention's and the FFN's outputs (Gemma).
    post_norms: Option<(PerFeature, PerFeature)>,
    /// Whether this layer attends over the sliding window, with the local rope.
    local: bool,
}

pub struct Decoder {
    pub cfg: TextConfig,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: PerFeature,
    lm_head: Linear,
    rope: Rope,
    /// The rope of sliding-window layers, where the model has them.
    local_rope: Option<Rope>,
    activation: Activation,
    device: Device,
    /// Activations, norms and dense weights: f32 on CPU; on CUDA the checkpoint's bf16 or f16 when
    /// its weights are dense in one of those (quantized weights compute in f32).
    dtype: DType,
    /// The rope tables on the GPU, for `cuda::rotary_inplace`.
    #[cfg(feature = "cuda")]
    gpu_rope: Option<(Tensor, Tensor)>,
}

impl Decoder {
    pub fn new(cfg: TextConfig, raw: RawWeights, format: WeightFormat, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if device.is_cuda() {
            if let Some(missing) = missing_on_cuda(&cfg, &raw) {
                bail!("{missing} ({:?}) not implemented on CUDA yet: run this model on CPU", cfg.family);
            }
        }
        if raw.layers.len() != cfg.num_layers {
            bail!("config says {} layers, found {}", cfg.num_layers, raw.layers.len());
        }
        let dtype = compute_dtype(&raw, format, device);
        let norm = |t: Tensor| PerFeature::new(t, dtype, device);
        let embed = Embedding::new(&raw.embed, dtype, device)?;
        let lm_head = match raw.lm_head {
            Some(w) => Linear::fused(vec![w], format, dtype, device)?,
            None => Linear::fused(vec![raw.embed], format, dtype, device)?,
        };
        let local_layers = cfg.sliding_window.as_ref().map(|w| w.local_layers.clone());
        let layers = raw
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(Layer {
                    local: local_layers.as_ref().is_some_and(|local| local[i]),
                    post_norms: l.post_norms.map(|(a, f)| Ok::<_, anyhow::Error>((norm(a)?, norm(f)?))).transpose()?,
                    attn_norm: norm(l.attn_norm)?,
                    qkv: Linear::fused(l.qkv, format, dtype, device)?,
                    qkv_bias: l.qkv_bias.map(norm).transpose()?,
                    qk_norm: l.qk_norm.map(|(q, k)| Ok::<_, anyhow::Error>((norm(q)?, norm(k)?))).transpose()?,
                    o: Linear::fused(vec![l.o], format, dtype, device)?,
                    ffn_norm: norm(l.ffn_norm)?,
                    gate_up: Linear::fused(l.gate_up, format, dtype, device)?,
                    down: Linear::fused(vec![l.down], format, dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shape = cfg.attn_shape();
        for (i, l) in layers.iter().enumerate() {
            let (qkv, gate_up) = (shape.q_dim() + 2 * shape.kv_dim(), 2 * cfg.intermediate_size);
            if l.qkv.out_features != qkv || l.gate_up.out_features != gate_up {
                bail!(
                    "layer {i}: q|k|v has {} rows and gate|up {}; the config's heads and FFN size need {qkv} and {gate_up}",
                    l.qkv.out_features,
                    l.gate_up.out_features
                );
            }
        }
        let rope = Rope::new(
            cfg.head_dim,
            cfg.rope_theta,
            cfg.context_length,
            cfg.rope_style,
            cfg.rope_freq_factors.as_deref(),
        );
        // A local layer's rope, where it has its own base (Gemma 3), has no scaling (llama.cpp's
        // `freq_scale_swa` is 1); otherwise local layers use the global one (Gemma 2).
        let local_rope = cfg
            .sliding_window
            .as_ref()
            .and_then(|w| w.local_rope_theta)
            .map(|theta| Rope::new(cfg.head_dim, theta, cfg.context_length, cfg.rope_style, None));
        let differences = cfg.family.differences();
        Ok(Self {
            local_rope,
            activation: differences.activation,
            embed,
            layers,
            norm: norm(raw.norm)?,
            lm_head,
            #[cfg(feature = "cuda")]
            gpu_rope: super::step_ops_cuda::rope_tables(&rope, device)?,
            rope,
            cfg,
            device: device.clone(),
            dtype,
        })
    }

    /// What a step asks of its inputs, on every device.
    fn check_step(&self, inputs: &[StepInput<'_>]) -> Result<()> {
        for input in inputs {
            if input.tokens.is_empty() {
                bail!("a step input needs at least one token");
            }
            let end = input.start + input.tokens.len();
            if end > self.rope.max_positions() {
                bail!("sequence would exceed the context of {} tokens", self.cfg.context_length);
            }
            if end > input.blocks.len() * BLOCK_SIZE {
                bail!("a sequence's KV blocks cannot hold {end} positions");
            }
        }
        if let Some(bad) = inputs.iter().flat_map(|i| i.tokens).find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary");
        }
        Ok(())
    }

    /// One step over `ops`, a device's operations: the layer loop every family and device runs.
    fn step<O: StepOps>(&self, ops: &mut O) -> Result<Vec<Vec<f32>>> {
        let (inter, eps) = (self.cfg.intermediate_size, self.cfg.rms_norm_eps);
        let mut x = ops.embed(&self.embed)?;
        if let Some(scale) = self.cfg.embed_scale {
            x = ops.scale(x, scale)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let h = ops.rms_norm(&x, &layer.attn_norm, eps)?;
            let mut qkv = ops.linear(&layer.qkv, &h)?;
            if let Some(bias) = &layer.qkv_bias {
                qkv = ops.add_bias(qkv, bias)?;
            }
            if let Some((q_norm, k_norm)) = &layer.qk_norm {
                qkv = ops.head_norms(qkv, q_norm, k_norm, eps)?;
            }
            let attn = ops.attend(i, &self.layer_attention(layer), qkv)?;
            let mut out = ops.linear(&layer.o, &attn)?;
            if let Some((post_attn, _)) = &layer.post_norms {
                out = ops.rms_norm(&out, post_attn, eps)?;
            }
            x = self.add_residual(ops, x, out)?;

            let h = ops.rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate_up = ops.linear(&layer.gate_up, &h)?;
            let act = ops.gated(&gate_up, inter, self.activation)?;
            let mut out = ops.linear(&layer.down, &act)?;
            if let Some((_, post_ffn)) = &layer.post_norms {
                out = ops.rms_norm(&out, post_ffn, eps)?;
            }
            x = self.add_residual(ops, x, out)?;
        }

        let last = ops.last_rows(&x)?;
        let h = ops.rms_norm(&last, &self.norm, eps)?;
        let mut logits = ops.linear(&self.lm_head, &h)?;
        if let Some(scale) = self.cfg.logit_scale {
            logits = ops.scale(logits, scale)?;
        }
        if let Some(cap) = self.cfg.final_logit_softcap {
            logits = ops.softcap(logits, cap)?;
        }
        ops.host_logits(logits)
    }

    /// How `layer` attends: its rope, window and score settings.
    fn layer_attention(&self, layer: &Layer) -> LayerAttention<'_> {
        let window = self.cfg.sliding_window.as_ref().filter(|_| layer.local).map(|w| w.size);
        let rope = match (window, &self.local_rope) {
            (Some(_), Some(local)) => local,
            _ => &self.rope,
        };
        LayerAttention { rope, window, scores: Scores { scale: self.cfg.attn_scale, softcap: self.cfg.attn_softcap } }
    }

    /// `x + out`, `out` scaled first where the model scales its residual branches (Granite).
    fn add_residual<O: StepOps>(&self, ops: &mut O, x: O::Rows, out: O::Rows) -> Result<O::Rows> {
        let out = match self.cfg.residual_scale {
            Some(scale) => ops.scale(out, scale)?,
            None => out,
        };
        ops.add(x, &out)
    }
}

impl TextModel for Decoder {
    fn context_length(&self) -> usize {
        self.cfg.context_length
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of weights a decode step reads: every layer, the final norm and the output head (the
    /// embedding contributes one row per token, nothing).
    fn step_weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.bytes()
                    + l.ffn_norm.bytes()
                    + l.qkv.bytes()
                    + l.o.bytes()
                    + l.gate_up.bytes()
                    + l.down.bytes()
            })
            .sum();
        layers + self.norm.bytes() + self.lm_head.bytes()
    }

    /// The KV store for this model on its device and how many blocks it holds: `max_kv_tokens`
    /// worth; on CPU growing with use, on CUDA allocated now and at most what fits in the free
    /// memory. (A cap, not all free memory, so that other deployments can load on the same GPU.)
    fn new_kv(&self, max_kv_tokens: usize) -> Result<(KvStore, usize)> {
        match &self.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => {
                use crate::kv::gpu::{GpuKv, KV_SHARE_OF_FREE};
                let c = &self.cfg;
                let block_bytes = GpuKv::block_bytes(c.num_layers, c.attn_shape().kv_dim(), self.dtype);
                let fit = GpuKv::blocks_that_fit(&self.device, block_bytes, KV_SHARE_OF_FREE)?;
                let blocks = fit.min(pool_blocks(max_kv_tokens));
                let kv = GpuKv::allocate(c.num_layers, c.num_kv_heads, c.head_dim, blocks, self.dtype, &self.device)?;
                Ok((KvStore::Cuda(kv), blocks))
            }
            _ => Ok((KvStore::Cpu(self.new_cpu_kv()), pool_blocks(max_kv_tokens))),
        }
    }

    /// An empty CPU KV store, for running the model without an engine (benchmarks).
    fn new_cpu_kv(&self) -> CpuKv {
        CpuKv::new(self.cfg.num_layers, self.cfg.attn_shape().kv_dim())
    }

    /// Runs one step. Writes every input's tokens into its blocks of `kv` and returns, per input, the
    /// logits of its last token.
    fn forward(&self, kv: &mut KvStore, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        self.check_step(inputs)?;
        match kv {
            KvStore::Cpu(kv) => self.step(&mut CpuStep::new(kv, inputs, self.cfg.attn_shape())),
            #[cfg(feature = "cuda")]
            KvStore::Cuda(kv) => {
                let rope = self.gpu_rope.as_ref().expect("rope tables are made for every CUDA model");
                let c = &self.cfg;
                let shape = c.attn_shape();
                self.step(&mut super::step_ops_cuda::CudaStep::new(
                    kv,
                    inputs,
                    rope,
                    c.rope_style,
                    shape,
                    self.dtype,
                    &self.device,
                )?)
            }
        }
    }
}

/// What the CUDA step (`step_ops_cuda.rs`) lacks for this model, if anything: it runs llama with
/// Qwen2's biases and Phi-3's fused weights.
fn missing_on_cuda(cfg: &TextConfig, raw: &RawWeights) -> Option<&'static str> {
    let differences = cfg.family.differences();
    if raw.layers.iter().any(|l| l.qk_norm.is_some()) {
        Some("per-head q/k norms are")
    } else if raw.layers.iter().any(|l| l.post_norms.is_some()) {
        Some("norms after attention and the FFN are")
    } else if cfg.sliding_window.is_some() {
        Some("sliding attention windows are")
    } else if differences.activation != Activation::Silu {
        Some("GELU is")
    } else if cfg.embed_scale.is_some() || cfg.residual_scale.is_some() || cfg.logit_scale.is_some() {
        Some("scaled embeddings, residual branches and logits are")
    } else if cfg.final_logit_softcap.is_some() || cfg.attn_softcap.is_some() {
        Some("soft-capped logits and attention scores are")
    } else if (cfg.attn_scale - 1.0 / (cfg.head_dim as f32).sqrt()).abs() > f32::EPSILON {
        Some("an attention scale other than 1/sqrt(head_dim) is")
    } else {
        None
    }
}

/// f32 except on CUDA with dense bf16 or f16 weights (kept in their dtype unless `format` asks for f32).
fn compute_dtype(raw: &RawWeights, format: WeightFormat, device: &Device) -> DType {
    let dense = raw.layers.first().and_then(|l| l.qkv.first()?.dense_dtype());
    match dense {
        Some(d @ (DType::BF16 | DType::F16)) if device.is_cuda() && format != WeightFormat::F32 => d,
        _ => DType::F32,
    }
}
