//! Rotary position embeddings in place (kernels/rotary.cu), the GPU twin of
//! `crate::arch::rope::Rope::apply`.
//!
//! In place because q and k are rotated right after the projection and never needed unrotated; and
//! row-strided so that one call can rotate the q and k heads of the fused qkv rows where they lie.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CpuStorage, CudaStorage, DType, InplaceOp3, Layout, Result, Tensor, WithDType};
use half::{bf16, f16};

use super::{
    check_dims, check_dtype, check_float, check_same_cuda_device, contiguous, no_cpu, u32_arg, with_cuda_slice, Kernel,
    Rows, ROTARY,
};

/// Rotates `x` in place: head vector `x[r, h, :]` by the angles of position `positions[r]`.
///
/// - `x`: `[rows, heads, head_dim]`, f32/f16/bf16, head_dim even; each row contiguous, rows may be
///   further apart (a narrow of the fused qkv rows viewed as `[rows, heads + 2 * kv_heads, head_dim]`).
/// - `positions`: `[rows]` u32. A position at or past `max_positions` leaves its row as it was.
/// - `cos`, `sin`: `[max_positions, head_dim / 2]` f32, contiguous; entry `[p, i]` is the cos/sin of
///   `p * theta^(-2i / head_dim)` (the tables of `Rope::new`).
/// - `interleaved`: pairs `(2i, 2i + 1)` (`RopeStyle::Interleaved`) instead of `(i, i + head_dim/2)`
///   (`RopeStyle::Halves`).
pub fn rotary_inplace(x: &Tensor, positions: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<()> {
    check_same_cuda_device(&[
        ("rotary x", x),
        ("rotary positions", positions),
        ("rotary cos", cos),
        ("rotary sin", sin),
    ])?;
    check_float("rotary x", x.dtype())?;
    let (rows, _heads, head_dim) = x.dims3()?;
    if head_dim % 2 != 0 {
        bail!("rotary: head_dim {head_dim} is odd");
    }
    check_dims("rotary positions", positions, &[rows])?;
    check_dtype("rotary positions", positions, DType::U32)?;
    let max_positions = cos.dim(0)?;
    for (name, t) in [("rotary cos", cos), ("rotary sin", sin)] {
        check_dims(name, t, &[max_positions, head_dim / 2])?;
        check_dtype(name, t, DType::F32)?;
    }
    if x.elem_count() == 0 {
        return Ok(());
    }
    x.inplace_op3(cos, sin, &Rotary { positions: positions.clone(), interleaved })
}

/// In place on x with cos and sin as operands; positions rides along in the op, as candle's in-place
/// ops take two operands besides the destination (it is u32, so it cannot share x's storage).
struct Rotary {
    positions: Tensor,
    interleaved: bool,
}

impl InplaceOp3 for Rotary {
    fn name(&self) -> &'static str {
        "wick-rotary"
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
        x: &mut CudaStorage,
        xl: &Layout,
        cos: &CudaStorage,
        cl: &Layout,
        sin: &CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        match x.dtype() {
            DType::F32 => self.fwd::<f32>(x, xl, cos, cl, sin, sl),
            DType::F16 => self.fwd::<f16>(x, xl, cos, cl, sin, sl),
            DType::BF16 => self.fwd::<bf16>(x, xl, cos, cl, sin, sl),
            other => bail!("rotary: dtype {other:?}"),
        }
    }
}

impl Rotary {
    fn fwd<T: CudaDType + DeviceRepr + WithDType>(
        &self,
        x: &mut CudaStorage,
        xl: &Layout,
        cos: &CudaStorage,
        cl: &Layout,
        sin: &CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        let dev = x.device.clone();
        let rows = Rows::of("rotary x", xl)?;
        let (_, heads, head_dim) = xl.shape().dims3()?;
        let cos_v = contiguous("rotary cos", cos.as_cuda_slice::<f32>()?, cl)?;
        let sin_v = contiguous("rotary sin", sin.as_cuda_slice::<f32>()?, sl)?;
        let max_positions = u32_arg("rotary max_positions", cl.dims()[0])?;
        let rows_arg = u32_arg("rotary rows", rows.rows)?;
        let heads_arg = u32_arg("rotary heads", heads)?;
        let head_dim_arg = u32_arg("rotary head_dim", head_dim)?;
        let pairs = u32_arg("rotary pairs per row", heads * head_dim / 2)?;
        let row_stride = rows.row_stride as u64;
        let interleaved = u32::from(self.interleaved);

        let x_slice = x.as_cuda_slice_mut::<T>()?;
        let x_len = x_slice.len();
        let span = rows.span();
        let Some(mut x_v) = x_slice.try_slice_mut(span.clone()) else {
            bail!("rotary x: elements {span:?} out of a buffer of {x_len}")
        };
        with_cuda_slice::<u32, _>("rotary positions", &self.positions, |pos, pl| {
            let pos_v = contiguous("rotary positions", pos, pl)?;

            // x: pairs, 256 threads per block; y: rows (a strided loop past 65535).
            const THREADS: u32 = 256;
            let grid = (pairs.div_ceil(THREADS), rows_arg.min(65535), 1);
            let cfg = LaunchConfig { grid_dim: grid, block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
            let kernel = Kernel::load::<T>(&dev, &ROTARY, "rotary")?;
            let mut b = kernel.builder();
            b.arg(&mut x_v).arg(&pos_v).arg(&cos_v).arg(&sin_v);
            b.arg(&rows_arg).arg(&heads_arg).arg(&head_dim_arg).arg(&row_stride).arg(&max_positions).arg(&interleaved);
            // SAFETY: x spans rows rows of row_stride elements (the last one heads * head_dim), the
            // tables max_positions * head_dim / 2, positions rows; the kernel skips positions past
            // the tables.
            unsafe { b.launch(cfg) }.w()?;
            Ok(())
        })
    }
}
