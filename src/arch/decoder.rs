//! The decoder every family runs, batched: one forward runs any mix of prefills and decodes of
//! independent sequences. A family differs from llama in what its weights carry (Qwen2's q/k/v
//! biases, per-head q/k norms, Gemma's norms after attention and the FFN) and in a few settings
//! (`family::Differences`, `TextConfig`): the activation, an embedding scale, sliding windows with
//! a rope of their own, soft-capped logits. One layer loop reads them all.
//!
//! All new tokens of a step are flattened into one `[tokens, hidden]` matrix, so every weight matmul is
//! one call however many sequences share the step; only attention is per sequence (`attention::attend`).

use super::attention::{attend, LayerAttention, Scores, SeqRows};
use super::cpu::rowwise::{self, Activation};
use super::embedding::Embedding;
use super::linear::{Linear, WeightFormat};
use super::model::{RawWeights, StepInput, TextConfig, TextModel};
use super::rope::Rope;
use crate::kv::{pool_blocks, CpuKv, KvStore, BLOCK_SIZE};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

#[cfg(feature = "cuda")]
#[path = "decoder_gpu.rs"]
mod gpu;

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

/// A vector over features (an RMS norm's weight, a bias): on the model's device in its dtype (the
/// CUDA step), and as host f32 (the CPU step, which works on plain slices).
struct PerFeature {
    weight: Tensor,
    host: Vec<f32>,
}

impl PerFeature {
    fn new(weight: Tensor, dtype: DType, device: &Device) -> Result<Self> {
        let host = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self { weight: weight.to_dtype(dtype)?.to_device(device)?, host })
    }

    fn bytes(&self) -> usize {
        self.weight.elem_count() * self.weight.dtype().size_in_bytes()
    }
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
            gpu_rope: gpu::rope_tables(&rope, device)?,
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

    /// The CPU step, on plain row-major slices: our matmul kernels (`Linear::forward_rows`), the
    /// row-wise ops of `cpu::rowwise`, attention over `kv` with `attention::attend`.
    fn forward_cpu(&self, kv: &mut CpuKv, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        if let Some(&b) = inputs.iter().flat_map(|i| i.blocks).max() {
            kv.cover(b as usize + 1);
        }
        let ids: Vec<u32> = inputs.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        let total = ids.len();
        let (hidden, inter, eps) = (self.cfg.hidden_size, self.cfg.intermediate_size, self.cfg.rms_norm_eps);
        let shape = self.cfg.attn_shape();
        let seqs: Vec<SeqRows<'_>> =
            inputs.iter().map(|i| SeqRows { blocks: i.blocks, start: i.start, rows: i.tokens.len() }).collect();

        let mut x = self.embed.rows(&ids)?;
        if let Some(scale) = self.cfg.embed_scale {
            rowwise::scale_in_place(&mut x, scale);
        }
        for (layer, layer_kv) in self.layers.iter().zip(kv.layers.iter_mut()) {
            let h = rowwise::rms_norm(&x, &layer.attn_norm.host, eps);
            let mut qkv = layer.qkv.forward_rows(&h, total)?;
            if let Some(bias) = &layer.qkv_bias {
                rowwise::add_to_rows(&mut qkv, &bias.host);
            }
            if let Some((q_norm, k_norm)) = &layer.qk_norm {
                let (q_dim, kv_dim) = (shape.q_dim(), shape.kv_dim());
                for row in qkv.chunks_exact_mut(q_dim + 2 * kv_dim) {
                    rowwise::rms_norm_in_place(&mut row[..q_dim], &q_norm.host, eps);
                    rowwise::rms_norm_in_place(&mut row[q_dim..q_dim + kv_dim], &k_norm.host, eps);
                }
            }
            let window = self.cfg.sliding_window.as_ref().filter(|_| layer.local).map(|w| w.size);
            let rope = match (window, &self.local_rope) {
                (Some(_), Some(local)) => local,
                _ => &self.rope,
            };
            let scores = Scores { scale: self.cfg.attn_scale, softcap: self.cfg.attn_softcap };
            let how = LayerAttention { rope, window, scores };
            let attn = attend(shape, &how, &mut qkv, layer_kv, &seqs);
            let mut out = layer.o.forward_rows(&attn, total)?;
            if let Some((post_attn, _)) = &layer.post_norms {
                out = rowwise::rms_norm(&out, &post_attn.host, eps);
            }
            self.add_residual(&mut x, &mut out);

            let h = rowwise::rms_norm(&x, &layer.ffn_norm.host, eps);
            let act = rowwise::gated(&layer.gate_up.forward_rows(&h, total)?, inter, self.activation);
            let mut out = layer.down.forward_rows(&act, total)?;
            if let Some((_, post_ffn)) = &layer.post_norms {
                out = rowwise::rms_norm(&out, &post_ffn.host, eps);
            }
            self.add_residual(&mut x, &mut out);
        }

        let last: Vec<f32> = last_row_indices(inputs).flat_map(|r| &x[r * hidden..(r + 1) * hidden]).copied().collect();
        let h = rowwise::rms_norm(&last, &self.norm.host, eps);
        let mut logits = self.lm_head.forward_rows(&h, inputs.len())?;
        if let Some(scale) = self.cfg.logit_scale {
            rowwise::scale_in_place(&mut logits, scale);
        }
        if let Some(cap) = self.cfg.final_logit_softcap {
            rowwise::softcap_in_place(&mut logits, cap);
        }
        Ok(logits.chunks_exact(self.lm_head.out_features).map(<[f32]>::to_vec).collect())
    }

    /// `x += out`, `out` scaled first where the model scales its residual branches (Granite).
    fn add_residual(&self, x: &mut [f32], out: &mut [f32]) {
        if let Some(scale) = self.cfg.residual_scale {
            rowwise::scale_in_place(out, scale);
        }
        rowwise::add_assign(x, out);
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
            KvStore::Cpu(kv) => self.forward_cpu(kv, inputs),
            #[cfg(feature = "cuda")]
            KvStore::Cuda(kv) => self.forward_cuda(kv, inputs),
        }
    }
}

/// What the CUDA step (`decoder_gpu.rs`) lacks for this model, if anything: it runs llama with
/// Qwen2's biases.
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

/// The row of each input's last token in the step's flattened rows.
fn last_row_indices<'a>(inputs: &'a [StepInput<'_>]) -> impl Iterator<Item = usize> + 'a {
    inputs.iter().scan(0, |row, input| {
        *row += input.tokens.len();
        Some(*row - 1)
    })
}

/// `last_row_indices` as an index tensor on `device` (the CUDA step).
#[cfg(feature = "cuda")]
fn last_rows(inputs: &[StepInput<'_>], device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = last_row_indices(inputs).map(|r| r as u32).collect();
    Ok(Tensor::from_vec(rows, inputs.len(), device)?)
}

/// f32 except on CUDA with dense bf16 or f16 weights (kept in their dtype unless `format` asks for f32).
fn compute_dtype(raw: &RawWeights, format: WeightFormat, device: &Device) -> DType {
    let dense = raw.layers.first().and_then(|l| l.qkv.first()?.dense_dtype());
    match dense {
        Some(d @ (DType::BF16 | DType::F16)) if device.is_cuda() && format != WeightFormat::F32 => d,
        _ => DType::F32,
    }
}
