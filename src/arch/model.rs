//! The seam between the engine and a model family: what the engine, `wick probe` and the benchmarks
//! need of a text model, so that none of them names a family. A model (`arch::decoder`) is a type that
//! implements `TextModel`; `family::build` makes one from what a loader read
//! (`TextConfig`, `RawWeights`).

use super::attention::AttnShape;
use super::family::Family;
use super::linear::RawWeight;
use super::rope::RopeStyle;
use crate::kv::{BlockId, CpuKv, KvStore};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// The shape and settings of a text model, as a loader read them from a GGUF file's metadata or a
/// Hugging Face config.
#[derive(Debug, Clone)]
pub struct TextConfig {
    /// Which implementation runs it (`family::build`).
    pub family: Family,
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
    /// A scaled rope: each rotary pair's frequency divided by its factor (`head_dim / 2` of them;
    /// `arch::rope`). None where the model is not scaled.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// What attention scores are multiplied by: `1 / sqrt(head_dim)` for most models.
    pub attn_scale: f32,
    /// Layers that attend over a window of recent positions only, for a family that has them.
    pub sliding_window: Option<SlidingWindow>,
    /// Logits soft-capped as `cap * tanh(logit / cap)` (Gemma 2; optional in Gemma 3's config).
    pub final_logit_softcap: Option<f32>,
    /// Attention scores (after `attn_scale`) soft-capped the same way (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// What embedding rows are multiplied by: Gemma's `sqrt(hidden_size)`, Granite's
    /// `embedding_multiplier`.
    pub embed_scale: Option<f32>,
    /// What the attention's and the FFN's outputs are multiplied by before each residual add
    /// (Granite's `residual_multiplier`).
    pub residual_scale: Option<f32>,
    /// What the logits are multiplied by (Granite divides them by its `logits_scaling`).
    pub logit_scale: Option<f32>,
}

/// A sliding attention window: a local layer's query at position `p` sees keys `p - size + 1..=p`
/// (llama.cpp's standard window, Hugging Face's `sliding_window`), and its rope has a base of its
/// own without scaling (Gemma 3's `rope_local_base_freq`), or is the global one (Gemma 2).
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    pub size: usize,
    /// Per layer, whether it slides.
    pub local_layers: Vec<bool>,
    pub local_rope_theta: Option<f32>,
}

impl SlidingWindow {
    /// Local layers as a repeating pattern: of every `pattern` layers, all but the last slide.
    pub fn pattern(num_layers: usize, pattern: usize) -> Vec<bool> {
        (0..num_layers).map(|i| pattern == 0 || i % pattern < pattern - 1).collect()
    }
}

impl TextConfig {
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
        if let Some(w) = &self.sliding_window {
            if w.size == 0 || w.local_layers.len() != self.num_layers {
                bail!("a sliding window of {} over {} of {} layers", w.size, w.local_layers.len(), self.num_layers);
            }
        }
        Ok(())
    }
}

/// The weights of one layer as a loader found them, before the kernel choice.
pub struct RawLayer {
    pub attn_norm: Tensor,
    /// q, k and v stacked along the output (`[q_dim + 2 kv_dim, hidden]`): three weights, or one
    /// where the file fused them (Phi-3's `qkv_proj`).
    pub qkv: Vec<RawWeight>,
    pub o: RawWeight,
    pub ffn_norm: Tensor,
    /// The gate and up projections stacked the same way (`[2 intermediate, hidden]`, the gate
    /// first): two weights, or Phi-3's one `gate_up_proj`.
    pub gate_up: Vec<RawWeight>,
    pub down: RawWeight,
    /// Norms of the attention's and the FFN's outputs, for a family with sandwich norms.
    pub post_norms: Option<(Tensor, Tensor)>,
    /// The q, k and v biases end to end (`[q_dim + 2 kv_dim]`), for a family that has them.
    pub qkv_bias: Option<Tensor>,
    /// The per-head RMS norm weights of q and of k (`[head_dim]` each), for a family that has them.
    pub qk_norm: Option<(Tensor, Tensor)>,
}

/// The q, k and v biases end to end, as f32, from `part("q")`, `part("k")` and `part("v")`.
pub fn qkv_bias(mut part: impl FnMut(&str) -> Result<Tensor>) -> Result<Tensor> {
    let parts = ["q", "k", "v"].map(&mut part);
    let parts: Vec<Tensor> = parts.into_iter().map(|t| Ok(t?.to_dtype(DType::F32)?)).collect::<Result<_>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// All weights of a model as a loader found them. `lm_head` is `None` when tied to the embedding.
pub struct RawWeights {
    pub embed: RawWeight,
    pub layers: Vec<RawLayer>,
    pub norm: Tensor,
    pub lm_head: Option<RawWeight>,
}

/// One sequence's part of a step: the tokens to append (a prompt, or one sampled token) at
/// positions `start..`, and its cache blocks (room for every position up to the last new one).
pub struct StepInput<'a> {
    pub blocks: &'a [BlockId],
    pub start: usize,
    pub tokens: &'a [u32],
}

/// A text model, batched over sequences: one `forward` runs any mix of prefills and decodes.
pub trait TextModel: Send {
    /// The most positions a sequence may hold.
    fn context_length(&self) -> usize;

    /// The KV store for this model on its device and how many blocks it holds: `max_kv_tokens`
    /// worth, or less where the device has less room.
    fn new_kv(&self, max_kv_tokens: usize) -> Result<(KvStore, usize)>;

    /// An empty CPU KV store, for running the model without an engine (benchmarks).
    fn new_cpu_kv(&self) -> CpuKv;

    /// Runs one step. Writes every input's tokens into its blocks of `kv` and returns, per input, the
    /// logits of its last token.
    fn forward(&self, kv: &mut KvStore, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>>;

    /// The dtype activations are computed in.
    fn dtype(&self) -> DType;

    /// Bytes of weights a decode step reads (the floor of a memory-bound step).
    fn step_weight_bytes(&self) -> usize;
}
