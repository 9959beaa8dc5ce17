//! The llama step on CUDA: the same flattened batch as the CPU step, with our kernels (src/cuda/) for
//! everything between the matmuls, and attention over the paged KV pool on the GPU.
//!
//! Per layer: RMS norm, the fused qkv matmul (and its bias, where the family has one), rotary on q and k where they lie in the qkv rows,
//! k and v written into their slots of the pool, paged attention (each new token is a query row over
//! its own sequence's context: a prefill of n tokens is n rows with context lengths start+1..start+n),
//! the o matmul, RMS norm, the fused gate|up matmul, SiLU-and-multiply, the down matmul. Only the index
//! tensors go up and only the last rows' logits come back per step.

use super::{last_rows, Decoder, StepInput};
use crate::arch::rope::{Rope, RopeStyle};
use crate::cuda;
use crate::kv::gpu::GpuKv;
use crate::kv::slot;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// The rope's cos and sin tables on a CUDA device, `[max_positions, head_dim / 2]` f32; `None`
/// elsewhere.
pub(super) fn rope_tables(rope: &Rope, device: &Device) -> Result<Option<(Tensor, Tensor)>> {
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
        Ok(Self {
            ids: Tensor::from_vec(ids, rows, device)?,
            positions: Tensor::from_vec(positions, rows, device)?,
            slots: Tensor::from_vec(slots, rows, device)?,
            block_tables: Tensor::from_vec(tables, (rows, max_blocks), device)?,
            context_lens: Tensor::from_vec(context, rows, device)?,
        })
    }
}

impl Decoder {
    pub(super) fn forward_cuda(&self, kv: &GpuKv, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let (cos, sin) = self.gpu_rope.as_ref().expect("rope tables are made for every CUDA model");
        let index = StepIndex::new(inputs, &self.device)?;
        let rows = index.ids.dim(0)?;
        let c = &self.cfg;
        let (heads, kv_heads, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let eps = c.rms_norm_eps;
        let interleaved = c.rope_style == RopeStyle::Interleaved;
        let scale = 1.0 / (d as f32).sqrt();

        let table = self.embed.table().expect("a CUDA model keeps its embedding dense on the device");
        let mut x = table.index_select(&index.ids, 0)?;
        for (layer, (k_cache, v_cache)) in self.layers.iter().zip(&kv.layers) {
            let h = cuda::rms_norm(&x, &layer.attn_norm.weight, eps)?;
            // [rows, heads + 2 kv_heads, d]: q, k and v heads side by side in each row.
            let mut qkv = self.activations(layer.qkv.forward(&h)?)?;
            if let Some(bias) = &layer.qkv_bias {
                qkv = qkv.broadcast_add(&bias.weight)?;
            }
            let qkv = qkv.reshape((rows, heads + 2 * kv_heads, d))?;
            let q = qkv.narrow(1, 0, heads)?;
            let k = qkv.narrow(1, heads, kv_heads)?;
            let v = qkv.narrow(1, heads + kv_heads, kv_heads)?;
            cuda::rotary_inplace(&q, &index.positions, cos, sin, interleaved)?;
            cuda::rotary_inplace(&k, &index.positions, cos, sin, interleaved)?;
            cuda::reshape_and_cache(&k, &v, k_cache, v_cache, &index.slots)?;
            let attn = cuda::paged_attention(&q, k_cache, v_cache, &index.block_tables, &index.context_lens, scale)?;
            x = (x + self.activations(layer.o.forward(&attn.reshape((rows, heads * d))?)?)?)?;

            let h = cuda::rms_norm(&x, &layer.ffn_norm.weight, eps)?;
            let act = cuda::silu_mul(&self.activations(layer.gate_up.forward(&h)?)?)?;
            x = (x + self.activations(layer.down.forward(&act)?)?)?;
        }
        let last = x.index_select(&last_rows(inputs, &self.device)?, 0)?;
        let h = cuda::rms_norm(&last, &self.norm.weight, eps)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// A matmul's output in the model's dtype, contiguous (a quantized matmul answers in f32).
    fn activations(&self, t: Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.contiguous()?)
    }
}
