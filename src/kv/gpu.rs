//! The blocks' keys and values on a CUDA device: per layer one key and one value tensor
//! `[num_blocks, BLOCK_SIZE, num_kv_heads, head_dim]` in the model's dtype, allocated once when the
//! replica starts, from what the GPU has free after the weights (the budget vLLM calls
//! `gpu_memory_utilization`). Written by `crate::cuda::reshape_and_cache`, read by
//! `crate::cuda::paged_attention`.

use super::BLOCK_SIZE;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// The share of the free GPU memory (after the weights) that the KV pool takes; the rest is left for
/// activations, cuBLAS workspaces and the allocator's slack.
pub const KV_SHARE_OF_FREE: f64 = 0.85;

pub struct GpuKv {
    pub layers: Vec<(Tensor, Tensor)>,
    pub num_blocks: usize,
}

impl GpuKv {
    /// Bytes one block takes over all layers, keys and values.
    pub fn block_bytes(num_layers: usize, kv_dim: usize, dtype: DType) -> usize {
        2 * num_layers * BLOCK_SIZE * kv_dim * dtype.size_in_bytes()
    }

    /// How many blocks fit in `share` of the device's free memory now.
    pub fn blocks_that_fit(device: &Device, block_bytes: usize, share: f64) -> Result<usize> {
        let Device::Cuda(cuda) = device else { bail!("not a CUDA device") };
        let (free, total) = cuda.cuda_stream().context().mem_get_info().context("asking the GPU for free memory")?;
        let blocks = (free as f64 * share) as usize / block_bytes.max(1);
        tracing::info!(free_mib = free >> 20, total_mib = total >> 20, blocks, "KV pool sized from free GPU memory");
        Ok(blocks)
    }

    /// Allocates the pool (zeroed). An allocation the GPU cannot satisfy is an error, which fails
    /// the load with a clear cause rather than the first request that needs the blocks.
    pub fn allocate(
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_blocks: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if num_blocks == 0 {
            bail!("no GPU memory left for the KV cache after the weights");
        }
        let shape = (num_blocks, BLOCK_SIZE, num_kv_heads, head_dim);
        let layers = (0..num_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("allocating a KV cache of {num_blocks} blocks on the GPU"))?;
        Ok(Self { layers, num_blocks })
    }
}
