//! Weight matrices and the choice of matmul kernel.
//!
//! Decoding one or two sequences is bound by reading the weights, so the fewest bytes per weight win;
//! at 16 sequences the arithmetic starts to count. Measured on our 2-core CPU (BENCHMARKS.md,
//! `cargo bench --bench forward`): the GGUF's own Q4_1 through our kernel (`cpu::q4_1`, AVX-512 VNNI)
//! is the fastest from 1 to 64 rows, prefill included, so `native` is the default; `q8-0` converts
//! every matrix once at load; `f32` dequantizes (dense GEMM only ties at 64 rows). On CPU, Q4_1, Q8_0,
//! Q4_0, Q5_0 (as Q8_0 with the same values), Q4_K, Q5_K and Q6_K run on our kernels (variants
//! chosen at run time, `cpu::isa`); the
//! rare ones (Q5_1, Q2_K, Q3_K, Q8_K) on candle's, which are scalar in a baseline build.
//! Every kernel here computes each row independently of the others in the batch, so a greedy
//! completion is the same alone or batched; a kernel choice that switched with the batch size would
//! break that, which is why the choice is per deployment and not per step.

use super::cpu::q4_1::Q4_1Matrix;
use super::cpu::q8_0::Q8_0Matrix;
use super::cpu::qblocks::{BlockMatrix, Format};
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
    /// Runs of the output features, each stored in one type with its kernel. A fused matrix whose
    /// parts the file stores in different types (a Q4_K_M file's Q4_K q|k with a Q6_K v) keeps each
    /// run in its own type: converting one part to another's type would change its weights, and
    /// the answers with them.
    pieces: Vec<Piece>,
    pub in_features: usize,
    pub out_features: usize,
}

struct Piece {
    kernel: Kernel,
    out_features: usize,
}

enum Kernel {
    Candle(QMatMul),
    /// Our kernel (`cpu::q4_1`): candle has no fast Q4_1 dot product. Q4_0 and Q5_0 run here too
    /// where a lanes layout applies (AVX2, AVX-512), written as Q4_1's form with the same values.
    Q4_1(Q4_1Matrix),
    /// Our kernel (`cpu::q8_0`): candle's is scalar unless built for the host's SIMD. Elsewhere
    /// Q4_0 and Q5_0 run here, their blocks written as Q8_0 with the same values
    /// (`Format::exactly_as_q8_0`).
    Q8_0(Q8_0Matrix),
    /// Our kernel (`cpu::qblocks`) for Q4_K, Q5_K and Q6_K, for the same reason.
    Blocks(BlockMatrix),
}

impl Linear {
    /// Stacks `parts` along the output dimension (fused q|k|v, gate|up) and stores them in `format`;
    /// weights kept dense are stored as `dtype` (the model's compute dtype).
    pub fn fused(parts: Vec<RawWeight>, format: WeightFormat, dtype: DType, device: &Device) -> Result<Self> {
        let in_features = parts.first().context("a linear layer needs a weight")?.dims2()?.1;
        for p in &parts {
            let i = p.dims2()?.1;
            if i != in_features {
                bail!("fused weights disagree on input size: {i} vs {in_features}");
            }
        }
        let target = |p: &RawWeight| match format {
            WeightFormat::F32 => None,
            WeightFormat::Q8_0 if in_features % GgmlDType::Q8_0.block_size() == 0 => Some(GgmlDType::Q8_0),
            WeightFormat::Q8_0 => None,
            WeightFormat::Native => match p {
                RawWeight::Quantized(q) => Some(q.dtype()),
                RawWeight::Dense(_) => None,
            },
        };
        // Consecutive parts that keep one type share a kernel.
        let mut runs: Vec<(Option<GgmlDType>, Vec<RawWeight>)> = Vec::new();
        for p in parts {
            let t = target(&p);
            match runs.last_mut() {
                Some((last, run)) if *last == t => run.push(p),
                _ => runs.push((t, vec![p])),
            }
        }
        let pieces = runs
            .into_iter()
            .map(|(t, run)| Piece::new(run, t, in_features, dtype, device))
            .collect::<Result<Vec<_>>>()?;
        let out_features = pieces.iter().map(|p| p.out_features).sum();
        Ok(Self { pieces, in_features, out_features })
    }

    /// Bytes of the stored weights: what one pass over them reads.
    pub fn bytes(&self) -> usize {
        self.pieces.iter().map(|p| p.kernel.bytes()).sum()
    }

    /// `x` is `[rows, in_features]` on the model's device (the CUDA step; our kernels are only built
    /// for CPU weights, which take `forward_rows`).
    #[cfg(feature = "cuda")]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let outs = self
            .pieces
            .iter()
            .map(|p| match &p.kernel {
                Kernel::Candle(m) => Ok(m.forward(x)?),
                Kernel::Q4_1(_) | Kernel::Q8_0(_) | Kernel::Blocks(_) => {
                    bail!("a CPU kernel's weights were given a device tensor")
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(if outs.len() == 1 { outs.into_iter().next().expect("one") } else { Tensor::cat(&outs, 1)? })
    }

    /// `x` is `[rows, in_features]`, row-major on the host; gives `[rows, out_features]` (the CPU step).
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if let [one] = &self.pieces[..] {
            return one.kernel.forward_rows(x, rows, self.in_features);
        }
        let mut y = vec![0f32; rows * self.out_features];
        let mut column = 0;
        for p in &self.pieces {
            let part = p.kernel.forward_rows(x, rows, self.in_features)?;
            for (r, values) in part.chunks_exact(p.out_features).enumerate() {
                y[r * self.out_features + column..][..p.out_features].copy_from_slice(values);
            }
            column += p.out_features;
        }
        Ok(y)
    }
}

impl Piece {
    /// `parts` stacked and stored as `target` (dense as `dtype` when `None`).
    fn new(
        parts: Vec<RawWeight>,
        target: Option<GgmlDType>,
        in_features: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let out_features = parts.iter().map(|p| p.dims2().map(|(o, _)| o)).sum::<Result<usize>>()?;
        let (n, k) = (out_features, in_features);
        let kernel = match target {
            None => {
                let dense: Vec<Tensor> = parts.iter().map(|p| p.dense(device, dtype)).collect::<Result<_>>()?;
                Kernel::Candle(QMatMul::Tensor(Tensor::cat(&dense, 0)?))
            }
            Some(GgmlDType::Q4_1) if device.is_cpu() => {
                Kernel::Q4_1(Q4_1Matrix::new(stacked_bytes(parts, GgmlDType::Q4_1, device)?, n, k)?)
            }
            Some(GgmlDType::Q8_0) if device.is_cpu() => {
                Kernel::Q8_0(Q8_0Matrix::new(stacked_bytes(parts, GgmlDType::Q8_0, device)?, n, k)?)
            }
            Some(t) if device.is_cpu() && Format::of(t).is_some() => {
                let format = Format::of(t).expect("checked");
                let bytes = stacked_bytes(parts, t, device)?;
                // Q4_0 and Q5_0 as Q4_1's form where a lanes layout applies, else as Q8_0: both
                // the same values, read faster than this type's own kernel reads them.
                match Q4_1Matrix::lanes_from(format, &bytes, n, k, crate::arch::cpu::isa::variant()) {
                    Some(lanes) => Kernel::Q4_1(lanes?),
                    None => match format.exactly_as_q8_0(&bytes) {
                        Some(q8_0) => Kernel::Q8_0(Q8_0Matrix::new(q8_0, n, k)?),
                        None => Kernel::Blocks(BlockMatrix::new(bytes, format, n, k)?),
                    },
                }
            }
            Some(t) => Kernel::Candle(QMatMul::from_qtensor(stack_quantized(parts, t, device)?)?),
        };
        Ok(Self { kernel, out_features })
    }
}

impl Kernel {
    fn bytes(&self) -> usize {
        match self {
            Kernel::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Kernel::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.elem_count() * t.dtype().size_in_bytes(),
            Kernel::Q4_1(w) => w.bytes(),
            Kernel::Q8_0(w) => w.bytes(),
            Kernel::Blocks(w) => w.bytes(),
        }
    }

    fn forward_rows(&self, x: &[f32], rows: usize, in_features: usize) -> Result<Vec<f32>> {
        match self {
            Kernel::Q4_1(w) => Ok(w.matmul(x, rows)),
            Kernel::Q8_0(w) => Ok(w.matmul(x, rows)),
            Kernel::Blocks(w) => Ok(w.matmul(x, rows)),
            Kernel::Candle(m) => {
                let x = Tensor::from_slice(x, (rows, in_features), &Device::Cpu)?;
                Ok(m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// Quantized rows are whole blocks, so stacking matrices of one type along the output dimension is a
/// concatenation of their bytes; only parts of another type (under `--weights q8-0`) are converted
/// (dequantize, quantize).
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

    /// Whatever kernel a stored type gets (ours or candle's), a row's result is the same alone or in
    /// a batch, so a greedy completion is the same alone or batched. candle's Q6_K broke this (its
    /// batched rows take a repacked path, a lone row another), and so would its Q4_K from 32 rows on
    /// a CPU with AMX: which is why both are ours. 40 rows reach such paths.
    #[test]
    fn every_stored_type_gives_a_row_the_same_result_alone_or_batched() -> Result<()> {
        let dev = Device::Cpu;
        let (n, k, m) = (96, 512, 40);
        let w = Tensor::from_vec(crate::arch::test_values(1, n * k), (n, k), &dev)?;
        let x = crate::arch::test_values(2, m * k);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let raw = RawWeight::Quantized(QTensor::quantize(&w, dtype)?);
            let linear = Linear::fused(vec![raw], WeightFormat::Native, DType::F32, &dev)?;
            let batched = linear.forward_rows(&x, m)?;
            for r in 0..m {
                let alone = linear.forward_rows(&x[r * k..(r + 1) * k], 1)?;
                assert_eq!(&batched[r * n..(r + 1) * n], &alone[..], "{dtype:?} row {r}");
            }
        }
        Ok(())
    }

    /// A fused matrix whose parts the file stores in different types keeps each part's weights as
    /// stored: the same outputs as the parts alone, to the bit.
    #[test]
    fn fused_parts_of_different_types_keep_their_own() -> Result<()> {
        let dev = Device::Cpu;
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (5, 256), &dev)?.flatten_all()?.to_vec1()?;
        let part = |seed: u64, rows: usize, dtype: GgmlDType| -> Result<RawWeight> {
            let w = Tensor::from_vec(crate::arch::test_values(seed, rows * 256), (rows, 256), &dev)?;
            Ok(RawWeight::Quantized(QTensor::quantize(&w, dtype)?))
        };
        let types = [GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0];
        let rows = [64, 32, 32, 16];
        let parts = || -> Result<Vec<RawWeight>> {
            types.iter().zip(rows).enumerate().map(|(i, (&t, r))| part(i as u64, r, t)).collect()
        };
        let fused = Linear::fused(parts()?, WeightFormat::Native, DType::F32, &dev)?;
        assert_eq!((fused.pieces.len(), fused.out_features), (3, 144));
        let y = fused.forward_rows(&x, 5)?;
        let mut column = 0;
        for (p, r) in parts()?.into_iter().zip(rows) {
            let alone = Linear::fused(vec![p], WeightFormat::Native, DType::F32, &dev)?.forward_rows(&x, 5)?;
            for row in 0..5 {
                assert_eq!(&y[row * 144 + column..][..r], &alone[row * r..][..r], "row {row} column {column}");
            }
            column += r;
        }
        Ok(())
    }
}
