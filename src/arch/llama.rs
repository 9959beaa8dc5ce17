//! The llama family, batched: one forward runs any mix of prefills and decodes of independent sequences.
//!
//! All new tokens of a step are flattened into one `[tokens, hidden]` matrix, so every weight matmul is
//! one call however many sequences share the step; only attention is per sequence (`attention::attend`).

use super::attention::{attend, AttnShape, Rope, RopeStyle, SeqRows};
use crate::kv::{BlockId, CpuKv};
use super::linear::{Linear, RawWeight, WeightFormat};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub context_length: usize,
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    pub fn attn_shape(&self) -> AttnShape {
        AttnShape { num_heads: self.num_heads, num_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!("{} attention heads cannot share {} KV heads", self.num_heads, self.num_kv_heads);
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("head size {} is odd: rotary embeddings need pairs", self.head_dim);
        }
        Ok(())
    }
}

/// The weights of one layer as a loader found them, before the kernel choice.
pub struct RawLayer {
    pub attn_norm: Tensor,
    pub q: RawWeight,
    pub k: RawWeight,
    pub v: RawWeight,
    pub o: RawWeight,
    pub ffn_norm: Tensor,
    pub gate: RawWeight,
    pub up: RawWeight,
    pub down: RawWeight,
}

/// All weights of a model as a loader found them. `lm_head` is `None` when tied to the embedding.
pub struct RawWeights {
    pub embed: RawWeight,
    pub layers: Vec<RawLayer>,
    pub norm: Tensor,
    pub lm_head: Option<RawWeight>,
}

struct Layer {
    attn_norm: Tensor,
    qkv: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate_up: Linear,
    down: Linear,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    device: Device,
}

/// One sequence's part of a step: the tokens to append (a prompt, or one sampled token) at
/// positions `start..`, and its cache blocks (room for every position up to the last new one).
pub struct StepInput<'a> {
    pub blocks: &'a [BlockId],
    pub start: usize,
    pub tokens: &'a [u32],
}

impl Llama {
    pub fn new(cfg: LlamaConfig, raw: RawWeights, format: WeightFormat, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if raw.layers.len() != cfg.num_layers {
            bail!("config says {} layers, found {}", cfg.num_layers, raw.layers.len());
        }
        let f32_of = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(candle_core::DType::F32)?.to_device(device)?) };
        let embed = raw.embed.dequantize(device)?;
        let lm_head = match raw.lm_head {
            Some(w) => Linear::fused(vec![w], format, device)?,
            None => Linear::fused(vec![raw.embed], format, device)?,
        };
        let layers = raw
            .layers
            .into_iter()
            .map(|l| {
                Ok(Layer {
                    attn_norm: f32_of(l.attn_norm)?,
                    qkv: Linear::fused(vec![l.q, l.k, l.v], format, device)?,
                    o: Linear::fused(vec![l.o], format, device)?,
                    ffn_norm: f32_of(l.ffn_norm)?,
                    gate_up: Linear::fused(vec![l.gate, l.up], format, device)?,
                    down: Linear::fused(vec![l.down], format, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.context_length, cfg.rope_style);
        Ok(Self { embed, layers, norm: f32_of(raw.norm)?, lm_head, rope, cfg, device: device.clone() })
    }

    /// An empty KV store for this model's layers, filled block by block.
    pub fn new_kv(&self) -> CpuKv {
        CpuKv::new(self.cfg.num_layers, self.cfg.attn_shape().kv_dim())
    }

    /// Runs one step. Writes every input's tokens into its blocks of `kv` and returns, per input, the
    /// logits of its last token.
    pub fn forward(&self, kv: &mut CpuKv, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        for input in inputs.iter() {
            if input.tokens.is_empty() {
                bail!("a step input needs at least one token");
            }
            let end = input.start + input.tokens.len();
            if end > self.rope.max_positions() {
                bail!("sequence would exceed the context of {} tokens", self.cfg.context_length);
            }
            if end > input.blocks.len() * crate::kv::BLOCK_SIZE {
                bail!("a sequence's KV blocks cannot hold {end} positions");
            }
            if let Some(&b) = input.blocks.iter().max() {
                kv.cover(b as usize + 1);
            }
        }
        let ids: Vec<u32> = inputs.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary");
        }
        let total = ids.len();
        let shape = self.cfg.attn_shape();
        let inter = self.cfg.intermediate_size;
        let eps = self.cfg.rms_norm_eps;

        let mut x = self.embed.index_select(&Tensor::from_vec(ids, total, &self.device)?, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let mut qkv = layer.qkv.forward(&h)?.flatten_all()?.to_vec1::<f32>()?;
            let seqs: Vec<SeqRows<'_>> =
                inputs.iter().map(|i| SeqRows { blocks: i.blocks, start: i.start, rows: i.tokens.len() }).collect();
            let attn = attend(shape, &self.rope, &mut qkv, &mut kv.layers[li], &seqs);
            let attn = Tensor::from_vec(attn, (total, shape.q_dim()), &self.device)?;
            x = (x + layer.o.forward(&attn)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate_up = layer.gate_up.forward(&h)?;
            let act = (candle_nn::ops::silu(&gate_up.narrow(1, 0, inter)?)? * gate_up.narrow(1, inter, inter)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }

        let mut last_rows = Vec::with_capacity(inputs.len());
        let mut row = 0u32;
        for input in inputs {
            row += input.tokens.len() as u32;
            last_rows.push(row - 1);
        }
        let n = last_rows.len();
        let last = x.index_select(&Tensor::from_vec(last_rows, n, &self.device)?, 0)?;
        let h = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        Ok(self.lm_head.forward(&h)?.to_vec2::<f32>()?)
    }
}
