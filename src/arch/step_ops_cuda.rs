//! The CUDA step (`StepOps` on device tensors): the same flattened batch as the CPU step, with our
//! kernels (src/cuda/) for everything between the matmuls, and attention over the paged KV pool on
//! the GPU. Only the index tensors go up and only the last rows' logits come back per step.
//!
//! What it has: RMS norms, the matmuls (`Linear::forward`), a bias, rotary on q and k where they lie
//! in the qkv rows, k and v written into their slots of the pool, paged attention (each new token is
//! a query row over its own sequence's context: a prefill of n tokens is n rows with context lengths
//! start+1..start+n), SiLU-and-multiply. What it lacks answers an error naming it; `missing_on_cuda`
//! refuses such models at load.

use super::attention::{AttnShape, LayerAttention};
use super::cpu::rowwise::Activation;
use super::embedding::Embedding;
use super::linear::Linear;
use super::model::StepInput;
use super::rope::{Rope, RopeStyle};
use super::step_ops::{last_row_indices, PerFeature, StepOps};
use crate::cuda;
use crate::kv::gpu::GpuKv;
use crate::kv::slot;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

/// The rope's cos and sin tables on a CUDA device, `[max_positions, head_dim / 2]` f32; `None`
/// elsewhere.
pub fn rope_tables(rope: &Rope, device: &Device) -> Result<Option<(Tensor, Tensor)>> {
    if !device.is_cuda() {
        return Ok(None);
    }
    let (cos, sin, half) = rope.tables();
    let rows = cos.len() / half.max(1);
    Ok(Some((Tensor::from_slice(cos, (rows, half), device)?, Tensor::from_slice(sin, (rows, half), device)?)))
}

/// The step's index tensors, on the device.
struct StepIndex {
    ids: Tensor,
    positions: Tensor,
    slots: Tensor,
    /// `[rows, max_blocks]`: each row's sequence's block table, padded with block 0 (never read:
    /// the context length stops before).
    block_tables: Tensor,
    context_lens: Tensor,
    /// The row of each input's last token.
    last_rows: Tensor,
}

impl StepIndex {
    fn new(inputs: &[StepInput<'_>], device: &Device) -> Result<Self> {
        let max_blocks = inputs.iter().map(|i| i.blocks.len()).max().unwrap_or(0).max(1);
        let (mut ids, mut positions, mut slots, mut tables, mut context) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for input in inputs {
            for (t, &token) in input.tokens.iter().enumerate() {
                let pos = input.start + t;
                ids.push(token);
                positions.push(pos as u32);
                slots.push(slot(input.blocks, pos) as u32);
                context.push(pos as u32 + 1);
                tables.extend_from_slice(input.blocks);
                tables.extend(std::iter::repeat_n(0, max_blocks - input.blocks.len()));
            }
        }
        let rows = ids.len();
        let last: Vec<u32> = last_row_indices(inputs).map(|r| r as u32).collect();
        Ok(Self {
            ids: Tensor::from_vec(ids, rows, device)?,
            positions: Tensor::from_vec(positions, rows, device)?,
            slots: Tensor::from_vec(slots, rows, device)?,
            block_tables: Tensor::from_vec(tables, (rows, max_blocks), device)?,
            context_lens: Tensor::from_vec(context, rows, device)?,
            last_rows: Tensor::from_vec(last, inputs.len(), device)?,
        })
    }
}

/// One CUDA step of a model: its KV pool, the step's indices, the rope tables and the model's
/// compute dtype.
pub struct CudaStep<'a> {
    kv: &'a GpuKv,
    index: StepIndex,
    rope: &'a (Tensor, Tensor),
    interleaved: bool,
    shape: AttnShape,
    dtype: DType,
}

impl<'a> CudaStep<'a> {
    pub fn new(
        kv: &'a GpuKv,
        inputs: &[StepInput<'_>],
        rope: &'a (Tensor, Tensor),
        style: RopeStyle,
        shape: AttnShape,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let index = StepIndex::new(inputs, device)?;
        Ok(Self { kv, index, rope, interleaved: style == RopeStyle::Interleaved, shape, dtype })
    }

    /// A matmul's output in the model's dtype, contiguous (a quantized matmul answers in f32).
    fn activations(&self, t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.contiguous()?)
    }
}

impl StepOps for CudaStep<'_> {
    type Rows = Tensor;

    fn embed(&mut self, embed: &Embedding) -> Result<Tensor> {
        let Some(table) = embed.table() else { bail!("a CUDA model keeps its embedding dense on the device") };
        Ok(table.index_select(&self.index.ids, 0)?)
    }

    fn scale(&mut self, _: Tensor, _: f32) -> Result<Tensor> {
        bail!("scaled embeddings, residual branches and logits are not implemented on CUDA yet")
    }

    fn rms_norm(&mut self, x: &Tensor, weight: &PerFeature, eps: f32) -> Result<Tensor> {
        Ok(cuda::rms_norm(x, &weight.weight, eps)?)
    }

    fn linear(&mut self, linear: &Linear, x: &Tensor) -> Result<Tensor> {
        self.activations(linear.forward(x)?)
    }

    fn add_bias(&mut self, x: Tensor, bias: &PerFeature) -> Result<Tensor> {
        Ok(x.broadcast_add(&bias.weight)?)
    }

    fn head_norms(&mut self, _: Tensor, _: &PerFeature, _: &PerFeature, _: f32) -> Result<Tensor> {
        bail!("per-head q/k norms are not implemented on CUDA yet")
    }

    fn attend(&mut self, layer: usize, how: &LayerAttention<'_>, qkv: Tensor) -> Result<Tensor> {
        if how.window.is_some() || how.scores.softcap.is_some() {
            bail!("sliding windows and soft-capped attention scores are not implemented on CUDA yet");
        }
        let (heads, kv_heads, d) = (self.shape.num_heads, self.shape.num_kv_heads, self.shape.head_dim);
        let rows = qkv.dim(0)?;
        let (k_cache, v_cache) = &self.kv.layers[layer];
        let (cos, sin) = self.rope;
        // [rows, heads + 2 kv_heads, d]: q, k and v heads side by side in each row.
        let qkv = qkv.reshape((rows, heads + 2 * kv_heads, d))?;
        let q = qkv.narrow(1, 0, heads)?;
        let k = qkv.narrow(1, heads, kv_heads)?;
        let v = qkv.narrow(1, heads + kv_heads, kv_heads)?;
        cuda::rotary_inplace(&q, &self.index.positions, cos, sin, self.interleaved)?;
        cuda::rotary_inplace(&k, &self.index.positions, cos, sin, self.interleaved)?;
        cuda::reshape_and_cache(&k, &v, k_cache, v_cache, &self.index.slots)?;
        let (tables, lens) = (&self.index.block_tables, &self.index.context_lens);
        let attn = cuda::paged_attention(&q, k_cache, v_cache, tables, lens, how.scores.scale)?;
        Ok(attn.reshape((rows, heads * d))?)
    }

    fn gated(&mut self, gate_up: &Tensor, _inter: usize, act: Activation) -> Result<Tensor> {
        match act {
            Activation::Silu => Ok(cuda::silu_mul(gate_up)?),
            other => bail!("the {other:?} activation is not implemented on CUDA yet"),
        }
    }

    fn add(&mut self, x: Tensor, y: &Tensor) -> Result<Tensor> {
        Ok((x + y)?)
    }

    fn last_rows(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.index_select(&self.index.last_rows, 0)?)
    }

    fn softcap(&mut self, _: Tensor, _: f32) -> Result<Tensor> {
        bail!("soft-capped logits are not implemented on CUDA yet")
    }

    fn host_logits(&mut self, x: Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(x.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}
