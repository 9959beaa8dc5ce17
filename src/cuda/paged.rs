//! The paged KV cache on the GPU: writing new keys and values into their slots
//! (kernels/cache.cu) and attending over them (kernels/paged_attention.cu).
//!
//! The cache of one layer is a key and a value tensor `[num_blocks, BLOCK_SIZE, num_kv_heads,
//! head_dim]`, blocks handed out by `crate::kv`. Position p of a sequence lives in block
//! `table[p / BLOCK_SIZE]` at offset `p % BLOCK_SIZE`, so its slot is `block * BLOCK_SIZE + offset`.
//! Attention takes one row per query token with its own block table and context length, so decode
//! steps and prefill chunks of any mix of sequences are one launch, without a causal mask.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp3, DType, InplaceOp3, Layout, Result, Shape, Tensor, WithDType,
};
use half::{bf16, f16};

use super::{
    check_dims, check_dtype, check_float, check_same_cuda_device, contiguous, no_cpu, u32_arg, view, with_cuda_slice,
    Kernel, Rows, CACHE, PAGED_ATTENTION,
};

/// Positions per KV block: the pool's, which kernels/paged_attention.cu hard-codes as `PA_BLOCK_SIZE`.
pub use crate::kv::BLOCK_SIZE;
const _: () = assert!(BLOCK_SIZE == 16, "kernels/paged_attention.cu's PA_BLOCK_SIZE is 16");

/// The largest head_dim [`paged_attention`] takes (`PA_MAX_HEAD_DIM`).
pub const MAX_HEAD_DIM: usize = 256;

/// Writes row t of `key` and `value` into slot `slot_mapping[t]` of `key_cache` and `value_cache`.
///
/// - `key`, `value`: `[tokens, num_kv_heads * head_dim]` or `[tokens, num_kv_heads, head_dim]`, the
///   caches' dtype; each row contiguous, rows may be further apart (narrows of the fused qkv rows).
/// - `key_cache`, `value_cache`: `[num_blocks, BLOCK_SIZE, num_kv_heads, head_dim]`, contiguous
///   (a narrow along dimension 0 of a bigger pool is fine).
/// - `slot_mapping`: `[tokens]` u32, `block * BLOCK_SIZE + offset`. A slot at or past
///   `num_blocks * BLOCK_SIZE` is skipped: `u32::MAX` marks a padding token.
///
/// Two launches of one kernel, one per cache (candle's in-place ops have one destination each).
pub fn reshape_and_cache(
    key: &Tensor,
    value: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<()> {
    check_same_cuda_device(&[
        ("reshape_and_cache key", key),
        ("reshape_and_cache value", value),
        ("reshape_and_cache key_cache", key_cache),
        ("reshape_and_cache value_cache", value_cache),
        ("reshape_and_cache slot_mapping", slot_mapping),
    ])?;
    check_float("reshape_and_cache key_cache", key_cache.dtype())?;
    let (num_blocks, block_size, num_kv_heads, head_dim) = key_cache.dims4()?;
    if block_size != BLOCK_SIZE {
        bail!("reshape_and_cache: key_cache {:?} has blocks of {block_size}, not {BLOCK_SIZE}", key_cache.dims());
    }
    check_dims("reshape_and_cache value_cache", value_cache, &[num_blocks, BLOCK_SIZE, num_kv_heads, head_dim])?;
    check_dtype("reshape_and_cache value_cache", value_cache, key_cache.dtype())?;
    let tokens = key.dim(0)?;
    for (name, t) in [("reshape_and_cache key", key), ("reshape_and_cache value", value)] {
        check_dtype(name, t, key_cache.dtype())?;
        let ok = t.dims() == [tokens, num_kv_heads * head_dim] || t.dims() == [tokens, num_kv_heads, head_dim];
        if !ok {
            bail!("{name}: shape {:?} for a cache of {num_kv_heads} kv heads of {head_dim}", t.dims());
        }
    }
    check_dims("reshape_and_cache slot_mapping", slot_mapping, &[tokens])?;
    check_dtype("reshape_and_cache slot_mapping", slot_mapping, DType::U32)?;
    if tokens == 0 || key_cache.elem_count() == 0 {
        return Ok(());
    }
    key_cache.inplace_op3(key, slot_mapping, &CacheWrite)?;
    value_cache.inplace_op3(value, slot_mapping, &CacheWrite)
}

/// Attention of each query row over its own context in the paged cache.
///
/// - `q`: `[rows, num_heads, head_dim]`, f32/f16/bf16; each row contiguous, rows may be further apart
///   (a narrow of the fused qkv rows). head_dim at most [`MAX_HEAD_DIM`].
/// - `key_cache`, `value_cache`: `[num_blocks, BLOCK_SIZE, num_kv_heads, head_dim]`, q's dtype,
///   contiguous; num_heads a multiple of num_kv_heads (query head h reads kv head
///   `h / (num_heads / num_kv_heads)`).
/// - `block_tables`: `[rows, max_blocks]` u32, contiguous: row i's context position p is in block
///   `block_tables[i][p / BLOCK_SIZE]`. Entries past the context are not read.
/// - `context_lens`: `[rows]` u32: row i attends to positions `0..context_lens[i]` (clamped to
///   `max_blocks * BLOCK_SIZE`; 0 gives zeros). For a prefill of n tokens from position `start`, the
///   n rows share one table with context lengths `start + 1 ..= start + n`.
/// - `scale`: multiplies q·k before the softmax, usually `1 / sqrt(head_dim)`.
///
/// Returns `[rows, num_heads, head_dim]`, contiguous, q's dtype. Block ids at or past num_blocks are
/// skipped rather than read.
pub fn paged_attention(
    q: &Tensor,
    key_cache: &Tensor,
    value_cache: &Tensor,
    block_tables: &Tensor,
    context_lens: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    check_same_cuda_device(&[
        ("paged_attention q", q),
        ("paged_attention key_cache", key_cache),
        ("paged_attention value_cache", value_cache),
        ("paged_attention block_tables", block_tables),
        ("paged_attention context_lens", context_lens),
    ])?;
    check_float("paged_attention q", q.dtype())?;
    let (rows, num_heads, head_dim) = q.dims3()?;
    let (_num_blocks, block_size, num_kv_heads, cache_head_dim) = key_cache.dims4()?;
    if block_size != BLOCK_SIZE || cache_head_dim != head_dim {
        bail!("paged_attention: key_cache {:?} for q {:?} (blocks of {BLOCK_SIZE})", key_cache.dims(), q.dims());
    }
    check_dims("paged_attention value_cache", value_cache, key_cache.dims())?;
    check_dtype("paged_attention key_cache", key_cache, q.dtype())?;
    check_dtype("paged_attention value_cache", value_cache, q.dtype())?;
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        bail!("paged_attention: head_dim {head_dim} outside 1..={MAX_HEAD_DIM}");
    }
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        bail!("paged_attention: {num_heads} query heads for {num_kv_heads} kv heads");
    }
    let (table_rows, _max_blocks) = block_tables.dims2()?;
    if table_rows != rows {
        bail!("paged_attention: block_tables {:?} for {rows} rows", block_tables.dims());
    }
    check_dtype("paged_attention block_tables", block_tables, DType::U32)?;
    check_dims("paged_attention context_lens", context_lens, &[rows])?;
    check_dtype("paged_attention context_lens", context_lens, DType::U32)?;
    if q.elem_count() == 0 {
        return Ok(q.clone());
    }
    q.apply_op3_no_bwd(
        key_cache,
        value_cache,
        &PagedAttention { block_tables: block_tables.clone(), context_lens: context_lens.clone(), scale },
    )
}

/// In place on one cache, with the new rows and the slot mapping as operands.
struct CacheWrite;

impl InplaceOp3 for CacheWrite {
    fn name(&self) -> &'static str {
        "wick-reshape-and-cache"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        Err(no_cpu(self.name()))
    }

    fn cuda_fwd(
        &self,
        cache: &mut CudaStorage,
        cl: &Layout,
        src: &CudaStorage,
        sl: &Layout,
        slots: &CudaStorage,
        ml: &Layout,
    ) -> Result<()> {
        match cache.dtype() {
            DType::F32 => cache_write::<f32>(cache, cl, src, sl, slots, ml),
            DType::F16 => cache_write::<f16>(cache, cl, src, sl, slots, ml),
            DType::BF16 => cache_write::<bf16>(cache, cl, src, sl, slots, ml),
            other => bail!("reshape_and_cache: dtype {other:?}"),
        }
    }
}

fn cache_write<T: CudaDType + DeviceRepr + WithDType>(
    cache: &mut CudaStorage,
    cl: &Layout,
    src: &CudaStorage,
    sl: &Layout,
    slots: &CudaStorage,
    ml: &Layout,
) -> Result<()> {
    let dev = cache.device.clone();
    let rows = Rows::of("reshape_and_cache key/value", sl)?;
    let src_v = view("reshape_and_cache key/value", src.as_cuda_slice::<T>()?, rows.span())?;
    let slots_v = contiguous("reshape_and_cache slot_mapping", slots.as_cuda_slice::<u32>()?, ml)?;
    let kv_dim = rows.row_len;
    let num_slots = (cl.shape().elem_count() / kv_dim) as u64;
    let tokens = u32_arg("reshape_and_cache tokens", rows.rows)?;
    let kv_dim_arg = u32_arg("reshape_and_cache kv_dim", kv_dim)?;
    let src_row_stride = rows.row_stride as u64;
    let Some((start, end)) = cl.contiguous_offsets() else {
        bail!("reshape_and_cache: the cache must be contiguous (stride {:?})", cl.stride())
    };
    let cache_slice = cache.as_cuda_slice_mut::<T>()?;
    let cache_len = cache_slice.len();
    let Some(mut cache_v) = cache_slice.try_slice_mut(start..end) else {
        bail!("reshape_and_cache: cache elements {start}..{end} out of a buffer of {cache_len}")
    };

    // One block per token (a strided loop past 65535), threads across the row.
    let threads = kv_dim.div_ceil(32).clamp(1, 8) as u32 * 32;
    let cfg = LaunchConfig { grid_dim: (tokens.min(65535), 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let kernel = Kernel::load::<T>(&dev, &CACHE, "reshape_and_cache")?;
    let mut b = kernel.builder();
    b.arg(&src_v).arg(&mut cache_v).arg(&slots_v);
    b.arg(&tokens).arg(&kv_dim_arg).arg(&src_row_stride).arg(&num_slots);
    // SAFETY: src spans tokens rows of src_row_stride (the last kv_dim), the cache num_slots rows of
    // kv_dim, slot_mapping tokens entries; the kernel skips slots past num_slots.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// q, key_cache and value_cache are the operands; the two u32 index tensors ride along in the op
/// (candle's custom ops take three), their storages locked for reading when it runs.
struct PagedAttention {
    block_tables: Tensor,
    context_lens: Tensor,
    scale: f32,
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "wick-paged-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(no_cpu(self.name()))
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match q.dtype() {
            DType::F32 => self.fwd::<f32>(q, ql, k, kl, v, vl),
            DType::F16 => self.fwd::<f16>(q, ql, k, kl, v, vl),
            DType::BF16 => self.fwd::<bf16>(q, ql, k, kl, v, vl),
            other => bail!("paged_attention: dtype {other:?}"),
        }
    }
}

/// Threads per (row, head) block: `PA_THREADS` in kernels/paged_attention.cu.
const PA_THREADS: u32 = 256;

impl PagedAttention {
    fn fwd<T: CudaDType + DeviceRepr + WithDType>(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &q.device;
        let q_rows = Rows::of("paged_attention q", ql)?;
        let (rows, num_heads, head_dim) = ql.shape().dims3()?;
        let (num_blocks, _, num_kv_heads, _) = kl.shape().dims4()?;
        let q_v = view("paged_attention q", q.as_cuda_slice::<T>()?, q_rows.span())?;
        let k_v = contiguous("paged_attention key_cache", k.as_cuda_slice::<T>()?, kl)?;
        let v_v = contiguous("paged_attention value_cache", v.as_cuda_slice::<T>()?, vl)?;
        let max_blocks = self.block_tables.dim(1)?;

        let rows_arg = u32_arg("paged_attention rows", rows)?;
        let heads_arg = u32_arg("paged_attention num_heads", num_heads)?;
        let kv_heads_arg = u32_arg("paged_attention num_kv_heads", num_kv_heads)?;
        let head_dim_arg = u32_arg("paged_attention head_dim", head_dim)?;
        let max_blocks_arg = u32_arg("paged_attention max_blocks", max_blocks)?;
        // The kernel computes max_blocks * BLOCK_SIZE in 32 bits.
        u32_arg("paged_attention max context", max_blocks * BLOCK_SIZE)?;
        let num_blocks_arg = u32_arg("paged_attention num_blocks", num_blocks)?;
        let q_row_stride = q_rows.row_stride as u64;

        let n = rows * num_heads * head_dim;
        // SAFETY: every element is written by the kernel.
        let mut out = unsafe { dev.alloc::<T>(n)? };
        with_cuda_slice::<u32, _>("paged_attention block_tables", &self.block_tables, |tables, tl| {
            let tables_v = contiguous("paged_attention block_tables", tables, tl)?;
            with_cuda_slice::<u32, _>("paged_attention context_lens", &self.context_lens, |lens, ll| {
                let lens_v = contiguous("paged_attention context_lens", lens, ll)?;
                let cfg = LaunchConfig {
                    grid_dim: (rows_arg, heads_arg, 1),
                    block_dim: (PA_THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let kernel = Kernel::load::<T>(dev, &PAGED_ATTENTION, "paged_attention")?;
                let mut b = kernel.builder();
                b.arg(&mut out).arg(&q_v).arg(&k_v).arg(&v_v).arg(&tables_v).arg(&lens_v).arg(&self.scale);
                b.arg(&heads_arg).arg(&kv_heads_arg).arg(&head_dim_arg).arg(&max_blocks_arg).arg(&num_blocks_arg);
                b.arg(&q_row_stride);
                // SAFETY: out holds rows * num_heads * head_dim elements; q spans rows rows of
                // q_row_stride; the caches num_blocks blocks; the tables rows * max_blocks entries
                // and context_lens rows. The kernel clamps context lengths to max_blocks blocks and
                // skips block ids past num_blocks.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            })
        })?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from_dims(&[rows, num_heads, head_dim])))
    }
}
