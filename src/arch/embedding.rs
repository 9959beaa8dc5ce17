//! The token embedding: one row of the table per token id.
//!
//! On CPU a quantized table stays quantized and a step dequantizes only the rows it looks up. The
//! default model's 49,152 x 576 table is 30 MB as Q8_0 and 113 MB as f32: dequantizing all of it
//! at load was a fifth of a cold start (BENCHMARKS.md, "Standby to first token"). On CUDA the table
//! is dense on the device, where `index_select` gathers it.

use super::linear::RawWeight;
use anyhow::{ensure, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;

pub enum Embedding {
    /// `[vocab, hidden]` on the model's device, in its compute dtype.
    Dense(Tensor),
    /// The file's quantized rows on the host, `row_bytes` each.
    Quantized { data: Vec<u8>, dtype: GgmlDType, row_bytes: usize, vocab: usize, hidden: usize },
}

impl Embedding {
    pub fn new(raw: &RawWeight, dtype: DType, device: &Device) -> Result<Self> {
        match raw {
            RawWeight::Quantized(q) if device.is_cpu() => {
                let (vocab, hidden) = q.shape().dims2()?;
                let data = q.data()?.into_owned();
                Ok(Self::Quantized { row_bytes: data.len() / vocab, data, dtype: q.dtype(), vocab, hidden })
            }
            _ => Ok(Self::Dense(raw.dense(device, dtype)?)),
        }
    }

    /// The whole table as a device tensor (the CUDA step); `None` when it is kept quantized.
    pub fn table(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(t) => Some(t),
            Self::Quantized { .. } => None,
        }
    }

    /// The rows of `ids`, `[ids.len(), hidden]` row-major as host f32 (the CPU step).
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match self {
            Self::Dense(table) => {
                let ids = Tensor::from_slice(ids, ids.len(), table.device())?;
                Ok(table.index_select(&ids, 0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            }
            Self::Quantized { data, dtype, row_bytes, vocab, hidden } => {
                let mut picked = Vec::with_capacity(ids.len() * row_bytes);
                for &id in ids {
                    let id = id as usize;
                    ensure!(id < *vocab, "token id {id} is outside the vocabulary of {vocab}");
                    picked.extend_from_slice(&data[id * row_bytes..][..*row_bytes]);
                }
                // A whole number of blocks per row, so the picked rows are a quantized matrix of
                // their own.
                let storage = QStorage::from_data(Cow::Owned(picked), &Device::Cpu, *dtype)?;
                let rows = QTensor::new(storage, (ids.len(), *hidden))?;
                Ok(rows.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_rows_are_the_dense_tables_rows() -> Result<()> {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 1.0, (10, 256), &dev)?;
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1, GgmlDType::Q6K, GgmlDType::F16] {
            let raw = RawWeight::Quantized(QTensor::quantize(&table, dtype)?);
            let quantized = Embedding::new(&raw, DType::F32, &dev)?;
            assert!(quantized.table().is_none(), "{dtype:?} stays quantized on CPU");
            let dense = Embedding::Dense(raw.dequantize(&dev)?);
            let ids = [7, 0, 7, 9];
            assert_eq!(quantized.rows(&ids)?, dense.rows(&ids)?, "{dtype:?}");
            let err = quantized.rows(&[10]).unwrap_err().to_string();
            assert!(err.contains("token id 10"), "{err}");
        }
        Ok(())
    }
}
