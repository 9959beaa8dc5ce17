//! Row-wise fused ops of the transformer block: RMS norm (kernels/norm.cu) and the SwiGLU activation
//! (kernels/activation.cu). Each reads its input once and writes its output once, where the same
//! built from candle ops would write intermediates (x^2, the mean, silu(gate), the two narrows).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType, D,
};
use half::{bf16, f16};

use super::{check_float, check_same_cuda_device, contiguous, no_cpu, u32_arg, Kernel, ACTIVATION, NORM};

/// RMS normalisation over the last dimension: `x / sqrt(mean(x^2) + eps) * weight`.
///
/// `x`: `[..., hidden]`, contiguous; `weight`: `[hidden]`, same dtype. Returns a new tensor shaped
/// and typed like `x`. The result is rounded to the storage type once, after the weight (Hugging
/// Face rounds the normalised value first, then multiplies).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    check_same_cuda_device(&[("rms_norm x", x), ("rms_norm weight", weight)])?;
    check_float("rms_norm x", x.dtype())?;
    let hidden = x.dim(D::Minus1)?;
    if weight.dims() != [hidden] || weight.dtype() != x.dtype() {
        bail!("rms_norm: weight {:?} {:?} for x {:?} {:?}", weight.dims(), weight.dtype(), x.dims(), x.dtype());
    }
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    x.apply_op2_no_bwd(weight, &RmsNorm { eps })
}

/// SwiGLU: `silu(gate_up[..., :inter]) * gate_up[..., inter:]`, from the fused gate/up projection.
///
/// `gate_up`: `[..., 2 * inter]`, contiguous. Returns `[..., inter]`, same dtype.
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    check_same_cuda_device(&[("silu_mul gate_up", gate_up)])?;
    check_float("silu_mul gate_up", gate_up.dtype())?;
    let width = gate_up.dim(D::Minus1)?;
    if width % 2 != 0 {
        bail!("silu_mul: last dimension {width} of gate_up {:?} is odd", gate_up.dims());
    }
    if gate_up.elem_count() == 0 {
        return gate_up.narrow(D::Minus1, 0, width / 2);
    }
    gate_up.apply_op1_no_bwd(&SiluMul)
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wick-rms-norm"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(no_cpu(self.name()))
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        match x.dtype() {
            DType::F32 => self.fwd::<f32>(x, xl, w, wl),
            DType::F16 => self.fwd::<f16>(x, xl, w, wl),
            DType::BF16 => self.fwd::<bf16>(x, xl, w, wl),
            other => bail!("rms_norm: dtype {other:?}"),
        }
    }
}

impl RmsNorm {
    fn fwd<T: CudaDType + DeviceRepr + WithDType>(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &x.device;
        let xv = contiguous("rms_norm x", x.as_cuda_slice::<T>()?, xl)?;
        let wv = contiguous("rms_norm weight", w.as_cuda_slice::<T>()?, wl)?;
        let n = xl.shape().elem_count();
        let hidden = xl.shape().dims().last().copied().unwrap_or(1);
        let rows = u32_arg("rms_norm rows", n / hidden)?;
        let hidden_arg = u32_arg("rms_norm hidden", hidden)?;

        // One block per row; up to 1024 threads (a multiple of 32, as the block reduction needs).
        let threads = hidden.div_ceil(32).clamp(1, 32) as u32 * 32;
        let cfg = LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every element is written by the kernel.
        let mut y = unsafe { dev.alloc::<T>(n)? };
        let kernel = Kernel::load::<T>(dev, &NORM, "rms_norm")?;
        let mut b = kernel.builder();
        b.arg(&xv).arg(&wv).arg(&mut y).arg(&hidden_arg).arg(&self.eps);
        // SAFETY: x and y hold rows * hidden elements, weight hidden.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), xl.shape().clone()))
    }
}

struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "wick-silu-mul"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(no_cpu(self.name()))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.fwd::<f32>(s, l),
            DType::F16 => self.fwd::<f16>(s, l),
            DType::BF16 => self.fwd::<bf16>(s, l),
            other => bail!("silu_mul: dtype {other:?}"),
        }
    }
}

impl SiluMul {
    fn fwd<T: CudaDType + DeviceRepr + WithDType>(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let src = contiguous("silu_mul gate_up", s.as_cuda_slice::<T>()?, l)?;
        let mut dims = l.dims().to_vec();
        let inter = dims.last().copied().unwrap_or(0) / 2;
        let rows = l.shape().elem_count() / (2 * inter);
        *dims.last_mut().expect("checked rank >= 1") = inter;
        let (rows_arg, inter_arg) = (u32_arg("silu_mul rows", rows)?, u32_arg("silu_mul inter", inter)?);

        // x: columns, 256 per block; y: rows (a strided loop past 65535).
        const THREADS: u32 = 256;
        let grid = (inter_arg.div_ceil(THREADS), rows_arg.min(65535), 1);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every element is written by the kernel.
        let mut out = unsafe { dev.alloc::<T>(rows * inter)? };
        let kernel = Kernel::load::<T>(dev, &ACTIVATION, "silu_mul")?;
        let mut b = kernel.builder();
        b.arg(&src).arg(&mut out).arg(&rows_arg).arg(&inter_arg);
        // SAFETY: gate_up holds rows * 2 * inter elements, out rows * inter.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from_dims(&dims)))
    }
}
