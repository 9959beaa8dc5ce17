//! The operations one decoder step applies to its activations, as a seam between the decoder's one
//! layer loop (`Decoder::step`, src/arch/decoder.rs) and a device: `CpuStep` here, on plain
//! row-major `f32` slices with our kernels (`cpu/`, `attention`), and `CudaStep` in
//! step_ops_cuda.rs, on device tensors with our CUDA kernels (src/cuda/).
//!
//! A device that lacks an op answers it with an error; `missing_on_cuda` (decoder.rs) refuses such a
//! model at load already, so a request never meets it.

use super::attention::{attend, AttnShape, LayerAttention, SeqRows};
use super::cpu::rowwise::{self, Activation};
use super::embedding::Embedding;
use super::linear::Linear;
use super::model::StepInput;
use crate::kv::CpuKv;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// A vector over features (an RMS norm's weight, a bias): on the model's device in its dtype (the
/// CUDA step), and as host f32 (the CPU step, which works on plain slices).
pub struct PerFeature {
    pub weight: Tensor,
    pub host: Vec<f32>,
}

impl PerFeature {
    pub fn new(weight: Tensor, dtype: DType, device: &Device) -> Result<Self> {
        let host = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self { weight: weight.to_dtype(dtype)?.to_device(device)?, host })
    }

    pub fn bytes(&self) -> usize {
        self.weight.elem_count() * self.weight.dtype().size_in_bytes()
    }
}

/// One step's operations on one device. `Rows` are the step's activations, one row per new token
/// (`[tokens, features]`), or one per input after `last_rows`. Each op takes its input by value and
/// gives its output, so that a device may work in place (the CPU) or make new tensors (CUDA).
pub trait StepOps {
    type Rows;

    /// The embedding rows of the step's tokens.
    fn embed(&mut self, embed: &Embedding) -> Result<Self::Rows>;
    /// Every value times `factor`.
    fn scale(&mut self, x: Self::Rows, factor: f32) -> Result<Self::Rows>;
    /// An RMS norm of each row, times `weight`.
    fn rms_norm(&mut self, x: &Self::Rows, weight: &PerFeature, eps: f32) -> Result<Self::Rows>;
    /// `x W^T`.
    fn linear(&mut self, linear: &Linear, x: &Self::Rows) -> Result<Self::Rows>;
    /// `bias` added to every row.
    fn add_bias(&mut self, x: Self::Rows, bias: &PerFeature) -> Result<Self::Rows>;
    /// An RMS norm over each head of q (by `q_norm`) and of k (by `k_norm`) in `[q | k | v]` rows.
    fn head_norms(&mut self, qkv: Self::Rows, q_norm: &PerFeature, k_norm: &PerFeature, eps: f32)
        -> Result<Self::Rows>;
    /// Layer `layer`'s attention over `[q | k | v]` rows: q and k rotated, k and v written into the
    /// cache, one row of `q_dim` out per token.
    fn attend(&mut self, layer: usize, how: &LayerAttention<'_>, qkv: Self::Rows) -> Result<Self::Rows>;
    /// `act(gate) * up` of `[gate | up]` rows, `inter` wide each.
    fn gated(&mut self, gate_up: &Self::Rows, inter: usize, act: Activation) -> Result<Self::Rows>;
    /// `x + y`.
    fn add(&mut self, x: Self::Rows, y: &Self::Rows) -> Result<Self::Rows>;
    /// The row of each input's last token.
    fn last_rows(&mut self, x: &Self::Rows) -> Result<Self::Rows>;
    /// `cap * tanh(x / cap)`.
    fn softcap(&mut self, x: Self::Rows, cap: f32) -> Result<Self::Rows>;
    /// The rows as host f32, one `Vec` per input.
    fn host_logits(&mut self, x: Self::Rows) -> Result<Vec<Vec<f32>>>;
}

/// The row of each input's last token in the step's flattened rows.
pub fn last_row_indices<'a>(inputs: &'a [StepInput<'_>]) -> impl Iterator<Item = usize> + 'a {
    inputs.iter().scan(0, |row, input| {
        *row += input.tokens.len();
        Some(*row - 1)
    })
}

/// The CPU step: row-major host `Vec<f32>`s, our matmul kernels (`Linear::forward_rows`), the
/// row-wise ops of `cpu::rowwise`, attention over `kv` with `attention::attend`.
pub struct CpuStep<'a> {
    kv: &'a mut CpuKv,
    inputs: &'a [StepInput<'a>],
    seqs: Vec<SeqRows<'a>>,
    shape: AttnShape,
}

impl<'a> CpuStep<'a> {
    pub fn new(kv: &'a mut CpuKv, inputs: &'a [StepInput<'a>], shape: AttnShape) -> Self {
        if let Some(&b) = inputs.iter().flat_map(|i| i.blocks).max() {
            kv.cover(b as usize + 1);
        }
        let seqs = inputs.iter().map(|i| SeqRows { blocks: i.blocks, start: i.start, rows: i.tokens.len() }).collect();
        Self { kv, inputs, seqs, shape }
    }
}

impl StepOps for CpuStep<'_> {
    type Rows = Vec<f32>;

    fn embed(&mut self, embed: &Embedding) -> Result<Vec<f32>> {
        let ids: Vec<u32> = self.inputs.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        embed.rows(&ids)
    }

    fn scale(&mut self, mut x: Vec<f32>, factor: f32) -> Result<Vec<f32>> {
        rowwise::scale_in_place(&mut x, factor);
        Ok(x)
    }

    fn rms_norm(&mut self, x: &Vec<f32>, weight: &PerFeature, eps: f32) -> Result<Vec<f32>> {
        Ok(rowwise::rms_norm(x, &weight.host, eps))
    }

    fn linear(&mut self, linear: &Linear, x: &Vec<f32>) -> Result<Vec<f32>> {
        linear.forward_rows(x, x.len() / linear.in_features)
    }

    fn add_bias(&mut self, mut x: Vec<f32>, bias: &PerFeature) -> Result<Vec<f32>> {
        rowwise::add_to_rows(&mut x, &bias.host);
        Ok(x)
    }

    fn head_norms(
        &mut self,
        mut qkv: Vec<f32>,
        q_norm: &PerFeature,
        k_norm: &PerFeature,
        eps: f32,
    ) -> Result<Vec<f32>> {
        let (q_dim, kv_dim) = (self.shape.q_dim(), self.shape.kv_dim());
        for row in qkv.chunks_exact_mut(q_dim + 2 * kv_dim) {
            rowwise::rms_norm_in_place(&mut row[..q_dim], &q_norm.host, eps);
            rowwise::rms_norm_in_place(&mut row[q_dim..q_dim + kv_dim], &k_norm.host, eps);
        }
        Ok(qkv)
    }

    fn attend(&mut self, layer: usize, how: &LayerAttention<'_>, mut qkv: Vec<f32>) -> Result<Vec<f32>> {
        Ok(attend(self.shape, how, &mut qkv, &mut self.kv.layers[layer], &self.seqs))
    }

    fn gated(&mut self, gate_up: &Vec<f32>, inter: usize, act: Activation) -> Result<Vec<f32>> {
        Ok(rowwise::gated(gate_up, inter, act))
    }

    fn add(&mut self, mut x: Vec<f32>, y: &Vec<f32>) -> Result<Vec<f32>> {
        rowwise::add_assign(&mut x, y);
        Ok(x)
    }

    fn last_rows(&mut self, x: &Vec<f32>) -> Result<Vec<f32>> {
        let width = x.len() / self.seqs.iter().map(|s| s.rows).sum::<usize>();
        Ok(last_row_indices(self.inputs).flat_map(|r| &x[r * width..(r + 1) * width]).copied().collect())
    }

    fn softcap(&mut self, mut x: Vec<f32>, cap: f32) -> Result<Vec<f32>> {
        rowwise::softcap_in_place(&mut x, cap);
        Ok(x)
    }

    fn host_logits(&mut self, x: Vec<f32>) -> Result<Vec<Vec<f32>>> {
        Ok(x.chunks_exact(x.len() / self.inputs.len()).map(<[f32]>::to_vec).collect())
    }
}
