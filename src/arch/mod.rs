//! Model code. `model` is the seam the engine sees (`TextModel`); `family` names the model families
//! (which architectures Wick implements, what each differs in, and why the others are refused) and
//! builds one; `decoder` is the one batched layer loop every family runs, over sequences of
//! different lengths, on the ops of a device (`step_ops`: the CPU's; `step_ops_cuda`: CUDA's);
//! `attention`, `rope`, `embedding` and `linear` its parts (`cpu/` their CPU kernels); `vits` is the VITS voice Piper uses, batched over sentences of different lengths.
//! `sentence` is the sentence-embedding encoder: candle-transformers' BERT, pooling, normalisation.

pub mod attention;
pub mod cpu;
pub mod decoder;
pub mod embedding;
pub mod family;
pub mod fastspeech2;
pub mod linear;
pub mod mbmelgan;
pub mod model;
pub mod rope;
pub mod sentence;
mod step_ops;
#[cfg(feature = "cuda")]
mod step_ops_cuda;
pub mod vits;

/// Deterministic pseudo-random values in [-0.5, 0.5), for tests of the model code.
#[cfg(test)]
pub(crate) fn test_values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}
