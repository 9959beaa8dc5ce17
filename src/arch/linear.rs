//! Weight matrices and the choice of matmul kernel.
//!
//! Decoding one or two sequences is bound by reading the weights, so the fewest bytes per weight win;
//! at 16 sequences the arithmetic starts to count. Measured on our 2-core CPU (BENCHMARKS.md,
//! `cargo bench --bench forward`): the GGUF's own Q4_1 through our kernel (`cpu::q4_1`, AVX-512 VNNI)
//! is the fastest from 1 to 64 rows, prefill included, so `native` is the default; `q8-0` converts
//! every matrix once at load; `f32` dequantizes (dense GEMM only ties at 64 rows). On CPU, Q4_1 and
//! Q8_0 run on our kernels (variants chosen at run time, `cpu::isa`); other quantized types on
//! candle's, which are scalar in a baseline build.
//! Every kernel here computes each row independently of the others in the batch, so a greedy
//! completion is the same alone or batched; a kernel choice that switched with the batch size would
//! break that, which is why the choice is per deployment and not per step.

use super::cpu::q4_1::Q4_1Matrix;
use super::cpu::q8_0::Q8_0Matrix;
use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// The types stored in the file (the default).
    #[default]
    Native,
    /// Every matrix as Q8_0.
    #[serde(rename = "q8-0")]
    Q8_0,
    /// Dense f32.
    F32,
}

/// A weight as a loader found it.
pub enum RawWeight {
    Quantized(QTensor),
    Dense(Tensor),
}

impl RawWeight {
    fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            RawWeight::Quantized(q) => q.shape().dims2()?,
            RawWeight::Dense(t) => t.dims2()?,
        })
    }

    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.dense(device, DType::F32)
    }

    /// The weight as a dense `dtype` tensor (a dense weight in that dtype is not copied).
    pub fn dense(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            RawWeight::Quantized(q) => q.dequantize(device)?.to_dtype(dtype)?,
            RawWeight::Dense(t) => t.to_dtype(dtype)?.to_device(device)?,
        })
    }

    /// The dtype a dense weight is stored in; `None` for a quantized one.
    pub fn dense_dtype(&self) -> Option<DType> {
        match self {
            RawWeight::Quantized(_) => None,
            RawWeight::Dense(t) => Some(t.dtype()),
        }
    }
}

/// `y = x W^T` for a weight `W` of shape `[out, in]`.
pub struct Linear {
    kernel: Kernel,
    pub in_features: usize,
    pub out_features: usize,
}

enum Kernel {
    Candle(QMatMul),
    /// Our kernel (`cpu::q4_1`): candle has no fast Q4_1 dot product.
    Q4_1(Q4_1Matrix),
    /// Our kernel (`cpu::q8_0`): candle's is scalar unless built for the host's SIMD.
    Q8_0(Q8_0Matrix),
}

impl Linear {
    /// Stacks `parts` along the output dimension (fused q|k|v, gate|up) and stores them in `format`;
    /// weights kept dense are stored as `dtype` (the model's compute dtype).
    pub fn fused(parts: Vec<RawWeight>, format: WeightFormat, dtype: DType, device: &Device) -> Result<Self> {
        let in_features = parts.first().context("a linear layer needs a weight")?.dims2()?.1;
        let mut out_features = 0;
        for p in &parts {
            let (o, i) = p.dims2()?;
            if i != in_features {
                bail!("fused weights disagree on input size: {i} vs {in_features}");
            }
            out_features += o;
        }
        let target = match format {
            WeightFormat::F32 => None,
            WeightFormat::Q8_0 if in_features % GgmlDType::Q8_0.block_size() == 0 => Some(GgmlDType::Q8_0),
            WeightFormat::Q8_0 => None,
            WeightFormat::Native => match &parts[0] {
                RawWeight::Quantized(q) => Some(q.dtype()),
                RawWeight::Dense(_) => None,
            },
        };
        let kernel = match target {
            None => {
                let dense: Vec<Tensor> = parts.iter().map(|p| p.dense(device, dtype)).collect::<Result<_>>()?;
                Kernel::Candle(QMatMul::Tensor(Tensor::cat(&dense, 0)?))
            }
            Some(GgmlDType::Q4_1) if device.is_cpu() => {
                let bytes = stacked_bytes(parts, GgmlDType::Q4_1, device)?;
                Kernel::Q4_1(Q4_1Matrix::new(bytes, out_features, in_features)?)
            }
            Some(GgmlDType::Q8_0) if device.is_cpu() => {
                let bytes = stacked_bytes(parts, GgmlDType::Q8_0, device)?;
                Kernel::Q8_0(Q8_0Matrix::new(bytes, out_features, in_features)?)
            }
            Some(dtype) => Kernel::Candle(QMatMul::from_qtensor(stack_quantized(parts, dtype, device)?)?),
        };
        Ok(Self { kernel, in_features, out_features })
    }

    /// Bytes of the stored weights: what one pass over them reads.
    pub fn bytes(&self) -> usize {
        match &self.kernel {
            Kernel::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Kernel::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.elem_count() * t.dtype().size_in_bytes(),
            Kernel::Q4_1(w) => w.bytes(),
            Kernel::Q8_0(w) => w.bytes(),
        }
    }

    /// `x` is `[rows, in_features]` on the model's device (the CUDA step; our kernels are only built
    /// for CPU weights, which take `forward_rows`).
    #[cfg(feature = "cuda")]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.kernel {
            Kernel::Candle(m) => Ok(m.forward(x)?),
            Kernel::Q4_1(_) | Kernel::Q8_0(_) => bail!("a CPU kernel's weights were given a device tensor"),
        }
    }

    /// `x` is `[rows, in_features]`, row-major on the host; gives `[rows, out_features]` (the CPU step).
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match &self.kernel {
            Kernel::Q4_1(w) => Ok(w.matmul(x, rows)),
            Kernel::Q8_0(w) => Ok(w.matmul(x, rows)),
            Kernel::Candle(m) => {
                let x = Tensor::from_slice(x, (rows, self.in_features), &Device::Cpu)?;
                Ok(m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// Quantized rows are whole blocks, so stacking matrices of one type along the output dimension is a
/// concatenation of their bytes; only parts of another type are converted (dequantize, quantize).
/// Our kernels take the bytes as they are (one copy out of the loader's tensors: a cold start copies
/// every weight, so each copy counts).
fn stacked_bytes(parts: Vec<RawWeight>, dtype: GgmlDType, device: &Device) -> Result<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::new();
    for part in parts {
        let q = match part {
            RawWeight::Quantized(q) if q.dtype() == dtype => q,
            other => QTensor::quantize(&other.dequantize(device)?, dtype)?,
        };
        bytes.extend_from_slice(&q.data()?);
    }
    Ok(bytes)
}

/// The stacked parts as one quantized tensor, for candle's kernels.
fn stack_quantized(parts: Vec<RawWeight>, dtype: GgmlDType, device: &Device) -> Result<QTensor> {
    let in_features = parts[0].dims2()?.1;
    let rows = parts.iter().map(|p| p.dims2().map(|(o, _)| o)).sum::<Result<usize>>()?;
    let storage =
        candle_core::quantized::QStorage::from_data(Cow::Owned(stacked_bytes(parts, dtype, device)?), device, dtype)?;
    Ok(QTensor::new(storage, (rows, in_features))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_matches_separate_in_every_format() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (64, 64), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (32, 64), &dev)?;
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (3, 64), &dev)?.flatten_all()?.to_vec1()?;
        for format in [WeightFormat::Q8_0, WeightFormat::Native, WeightFormat::F32] {
            let q = |t: &Tensor| Ok::<_, anyhow::Error>(RawWeight::Quantized(QTensor::quantize(t, GgmlDType::Q4_0)?));
            let fused = Linear::fused(vec![q(&a)?, q(&b)?], format, DType::F32, &dev)?;
            let ya = Linear::fused(vec![q(&a)?], format, DType::F32, &dev)?.forward_rows(&x, 3)?;
            let yb = Linear::fused(vec![q(&b)?], format, DType::F32, &dev)?.forward_rows(&x, 3)?;
            let y = fused.forward_rows(&x, 3)?;
            assert_eq!(fused.out_features, 96);
            for r in 0..3 {
                let want = ya[r * 64..(r + 1) * 64].iter().chain(&yb[r * 32..(r + 1) * 32]);
                for (got, want) in y[r * 96..(r + 1) * 96].iter().zip(want) {
                    assert!((got - want).abs() < 1e-4, "{format:?} row {r}: {got} vs {want}");
                }
            }
        }
        Ok(())
    }
}
