//! Wick's own CUDA kernels (kernels/*.cu) as candle ops, built only with `--features cuda`.
//!
//! Why our own: candle's CUDA backend has the matmuls and elementwise ops, but no paged attention
//! over our KV block pool, and composing RMS norm, SwiGLU or rotary embeddings out of its generic ops
//! costs a kernel launch and a full intermediate tensor per step. These ops are the GPU half of what
//! `crate::arch` (src/arch/attention.rs) does on the CPU, which stays the reference: the ops' CPU
//! forwards refuse to run, since the CPU path never goes through them.
//!
//! How they are loaded: build.rs compiles each `kernels/<name>.cu` to `$OUT_DIR/<name>.ptx`, which
//! [`Module`] embeds in the binary. The first launch on a device JIT-compiles the module through
//! `CudaDevice::get_or_load_custom_func`, which caches it in the device under the module's name; each
//! kernel exists as `<kernel>_f32`, `<kernel>_f16` and `<kernel>_bf16` (candle's `kernel_name`), and
//! runs on the device's one stream, ordered with candle's own work.
//!
//! Conventions shared by every op: floating tensors are f32, f16 or bf16 and all computation is in
//! f32; index tensors (positions, slots, block tables, context lengths) are u32; all tensors of one
//! call live on the same CUDA device. Tensors must be contiguous, except that the ops which read or
//! write one row per token ([`rotary_inplace`], [`reshape_and_cache`], [`paged_attention`]'s query)
//! accept rows that are further apart than their length, so that they can work on narrows of the
//! fused qkv projection without a copy.

mod norm;
mod paged;
mod rotary;
#[cfg(test)]
mod tests;

pub use norm::{rms_norm, silu_mul};
pub use paged::{paged_attention, reshape_and_cache, BLOCK_SIZE, MAX_HEAD_DIM};
pub use rotary::rotary_inplace;

use std::ops::Range;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaStream, CudaView, LaunchArgs};
use candle_core::cuda_backend::{kernel_name, CudaDType};
use candle_core::{bail, CudaDevice, DType, Layout, Result, Storage, Tensor, WithDType};

/// One PTX module: a `kernels/*.cu` file as build.rs compiled it.
pub(crate) struct Module {
    /// The key under which candle caches the loaded module in the device; unique among custom modules.
    name: &'static str,
    ptx: &'static str,
}

macro_rules! module {
    ($file:literal) => {
        Module { name: concat!("wick_", $file), ptx: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".ptx")) }
    };
}

/// kernels/norm.cu: `rms_norm`.
pub(crate) const NORM: Module = module!("norm");
/// kernels/activation.cu: `silu_mul`.
pub(crate) const ACTIVATION: Module = module!("activation");
/// kernels/rotary.cu: `rotary`.
pub(crate) const ROTARY: Module = module!("rotary");
/// kernels/cache.cu: `reshape_and_cache`.
pub(crate) const CACHE: Module = module!("cache");
/// kernels/paged_attention.cu: `paged_attention`.
pub(crate) const PAGED_ATTENTION: Module = module!("paged_attention");

/// A kernel loaded on a device, ready to launch on the device's stream.
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// The instance of kernel `root` in `module` for storage type `T` (`<root>_<dtype>`), loading the
    /// module on `dev` the first time.
    pub(crate) fn load<T: WithDType>(dev: &CudaDevice, module: &Module, root: &str) -> Result<Self> {
        let func = dev.get_or_load_custom_func(&kernel_name::<T>(root), module.name, module.ptx)?;
        Ok(Self { func: func.into_cuda_function(), stream: dev.cuda_stream() })
    }

    /// Arguments are pushed in the order of the kernel's parameters, then `launch` (unsafe: the
    /// kernel trusts the sizes it is given).
    pub(crate) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// The message of every op's CPU forward.
pub(crate) fn no_cpu(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op} is a CUDA kernel: the CPU path is crate::arch::attention"))
}

/// The f32/f16/bf16 check every floating input goes through.
pub(crate) fn check_float(what: &str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => bail!("{what}: dtype {other:?}, expected f32, f16 or bf16"),
    }
}

/// Bails unless `t` has dtype `dtype`.
pub(crate) fn check_dtype(what: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        bail!("{what}: dtype {:?}, expected {dtype:?}", t.dtype());
    }
    Ok(())
}

/// Bails unless `t` has exactly these dimensions.
pub(crate) fn check_dims(what: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        bail!("{what}: shape {:?}, expected {dims:?}", t.dims());
    }
    Ok(())
}

/// Bails unless every tensor is on the CUDA device of the first (candle's custom ops do not check).
pub(crate) fn check_same_cuda_device(tensors: &[(&str, &Tensor)]) -> Result<()> {
    let Some((first_name, first)) = tensors.first() else { return Ok(()) };
    if !first.device().is_cuda() {
        bail!("{first_name} is on {:?}: these ops run on CUDA devices only", first.device().location());
    }
    for (name, t) in &tensors[1..] {
        if !t.device().same_device(first.device()) {
            bail!("{name} is on {:?}, {first_name} on {:?}", t.device().location(), first.device().location());
        }
    }
    Ok(())
}

/// The view of `slice` that a contiguous `layout` covers.
pub(crate) fn contiguous<'a, T>(what: &str, slice: &'a CudaSlice<T>, layout: &Layout) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{what} must be contiguous (shape {:?}, stride {:?})", layout.dims(), layout.stride())
    };
    view(what, slice, start..end)
}

/// `slice[range]`, as an error rather than a panic when out of bounds.
pub(crate) fn view<'a, T>(what: &str, slice: &'a CudaSlice<T>, range: Range<usize>) -> Result<CudaView<'a, T>> {
    match slice.try_slice(range.clone()) {
        Some(v) => Ok(v),
        None => bail!("{what}: elements {range:?} out of a buffer of {}", slice.len()),
    }
}

/// Runs `f` on the CUDA buffer of a tensor that a custom op does not receive as an operand (candle's
/// ops take at most three), holding its storage's read lock meanwhile. Must not be a tensor whose
/// storage the op holds for writing (it would deadlock): the callers use it for u32 index tensors,
/// whose storage can never be that of a floating operand.
pub(crate) fn with_cuda_slice<T: CudaDType, R>(
    what: &str,
    t: &Tensor,
    f: impl FnOnce(&CudaSlice<T>, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(storage) = &*storage else { bail!("{what} must be on the CUDA device") };
    f(storage.as_cuda_slice::<T>()?, layout)
}

/// A tensor read or written row by row: dimension 0 indexes rows, and the other dimensions are
/// contiguous within a row; consecutive rows are `row_stride >= row_len` elements apart (a narrow of
/// wider rows, such as q out of the fused qkv projection, qualifies).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    pub offset: usize,
    pub rows: usize,
    pub row_len: usize,
    pub row_stride: usize,
}

impl Rows {
    pub(crate) fn of(what: &str, layout: &Layout) -> Result<Self> {
        let (dims, stride) = (layout.dims(), layout.stride());
        if dims.is_empty() {
            bail!("{what} must have a row dimension");
        }
        let mut expected = 1;
        for i in (1..dims.len()).rev() {
            if dims[i] > 1 && stride[i] != expected {
                bail!("{what}: each row must be contiguous (shape {dims:?}, stride {stride:?})");
            }
            expected *= dims[i];
        }
        let (rows, row_len) = (dims[0], expected);
        let row_stride = if rows > 1 { stride[0] } else { row_len };
        if row_stride < row_len {
            bail!("{what}: rows overlap (shape {dims:?}, stride {stride:?})");
        }
        Ok(Self { offset: layout.start_offset(), rows, row_len, row_stride })
    }

    /// The elements from the first row's start to the last row's end.
    pub(crate) fn span(&self) -> Range<usize> {
        let len = if self.rows == 0 { 0 } else { (self.rows - 1) * self.row_stride + self.row_len };
        self.offset..self.offset + len
    }
}

/// A u32 kernel argument from a size, refusing what does not fit.
pub(crate) fn u32_arg(what: &str, n: usize) -> Result<u32> {
    match u32::try_from(n) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} = {n} does not fit the kernel's 32-bit sizes"),
    }
}
