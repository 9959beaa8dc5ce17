//! The text encoder's transformer on CPU, one sequence at a time in plain vectors: the 1x1 and
//! feed-forward convolutions on our kernel, the relative attention as loops over the sequence.
//!
//! candle's path spends most of its time dispatching small ops (band gathers of `[b, heads, t, t]`,
//! masks, softmax) and ran the feed-forward convolutions through im2col at a third of the kernel's
//! speed: 28 ms of a 95-phoneme sentence, more than the flow (BENCHMARKS.md).
//!
//! One sequence alone needs no masks: every position is real, which is what the batched path's
//! masks amount to for the positions that are kept.

use super::{Layer, RelativeAttention, TextEncoder};
use crate::arch::cpu::conv1d::{leaky_conv, PackedConv};
use crate::arch::cpu::isa::{self, Variant};
use crate::arch::cpu::vector::{axpy_plain, dot_lanes, exp16};
use crate::arch::cpu::{parallel_for, SharedOut};
use crate::arch::vits::layers::{Conv1d, CpuNorm};
use candle_core::Result;
use std::ops::Range;

/// Every layer's weights as our kernels take them.
pub(super) struct CpuEncoder {
    layers: Vec<CpuLayer>,
    proj: PackedConv,
}

struct CpuLayer {
    /// q, k and v in one convolution: `[3 * hidden]` outputs.
    qkv: PackedConv,
    o: PackedConv,
    /// `[2 * window + 1][k_channels]`.
    rel_k: Vec<f32>,
    rel_v: Vec<f32>,
    heads: usize,
    window: usize,
    norm_1: CpuNorm,
    ffn_1: PackedConv,
    ffn_2: PackedConv,
    norm_2: CpuNorm,
}

impl CpuEncoder {
    /// `None` on another device.
    pub(super) fn new(enc: &TextEncoder) -> Result<Option<Self>> {
        if !enc.emb.device().is_cpu() {
            return Ok(None);
        }
        let packed = |c: &Conv1d| c.packed().map(|p| p.expect("a CPU convolution"));
        let layers = enc
            .layers
            .iter()
            .map(|l: &Layer| {
                let a: &RelativeAttention = &l.attn;
                Ok(CpuLayer {
                    qkv: Conv1d::packed_together(&[&a.q, &a.k, &a.v])?,
                    o: packed(&a.o)?,
                    rel_k: a.rel_k.flatten_all()?.to_vec1()?,
                    rel_v: a.rel_v.flatten_all()?.to_vec1()?,
                    heads: a.heads,
                    window: a.window,
                    norm_1: l.norm_1.cpu()?,
                    ffn_1: packed(&l.ffn.conv_1)?,
                    ffn_2: packed(&l.ffn.conv_2)?,
                    norm_2: l.norm_2.cpu()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(Self { layers, proj: packed(&enc.proj)? }))
    }

    /// One sequence's embedded phonemes `x` (`[hidden][len]`) -> `[hidden + stats][len]`: the hidden
    /// states, then the projection to the prior's mean and log-scale.
    pub(super) fn forward(&self, x: &[f32], len: usize) -> Vec<f32> {
        if len == 0 {
            return vec![];
        }
        let mut x = x.to_vec();
        for l in &self.layers {
            let y = l.o.apply(&l.attend(&l.qkv.apply(&x, len), len), len);
            add_and_norm(&mut x, &y, &l.norm_1, len);
            // ReLU between the two convolutions: a leaky slope of 0.
            let y = leaky_conv(&l.ffn_1.apply(&x, len), len, len, 0.0, &l.ffn_2, None);
            add_and_norm(&mut x, &y, &l.norm_2, len);
        }
        let stats = self.proj.apply(&x, len);
        x.extend_from_slice(&stats);
        x
    }
}

impl CpuLayer {
    /// Relative-position attention over `qkv` (`[3 * hidden][len]`, q then k then v) -> `[hidden][len]`.
    fn attend(&self, qkv: &[f32], len: usize) -> Vec<f32> {
        let hidden = qkv.len() / (3 * len);
        // v by position, `[len][hidden]`, so that a head's vector at a position is contiguous.
        let v = &qkv[2 * hidden * len..];
        let v: Vec<f32> = (0..len).flat_map(|i| (0..hidden).map(move |c| v[c * len + i])).collect();
        let mut out = vec![0f32; len * hidden]; // [len][hidden]
        let shared = SharedOut::new(&mut out);
        let variant = isa::variant();
        parallel_for(len, |rows| match variant {
            // SAFETY: `variant` is one this CPU runs (`isa`).
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => unsafe { x86::attend_rows_avx512(self, qkv, &v, len, rows, shared) },
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => unsafe { x86::attend_rows_avx2(self, qkv, &v, len, rows, shared) },
            _ => self.attend_rows(qkv, &v, len, rows, shared),
        });
        // Back to `[hidden][len]`.
        (0..hidden).flat_map(|c| (0..len).map(move |i| (c, i))).map(|(c, i)| out[i * hidden + c]).collect()
    }

    /// The query positions `rows` of `attend`, into their rows of `out` (`[len][hidden]`). Inlined
    /// into one function per instruction set: the vectors are a head's 96 channels or a sentence's
    /// ~100 positions, where a dispatched call per dot product cost more than its arithmetic.
    /// The scores come as `axpy`s over k's rows, which are contiguous in `qkv` as they stand.
    #[inline(always)]
    fn attend_rows(&self, qkv: &[f32], v: &[f32], len: usize, rows: Range<usize>, out: SharedOut<f32>) {
        let hidden = qkv.len() / (3 * len);
        let kc = hidden / self.heads;
        let w = self.window;
        let scale = 1.0 / (kc as f32).sqrt();
        let (q, k) = (&qkv[..hidden * len], &qkv[hidden * len..2 * hidden * len]);
        let (mut p, mut qi) = (vec![0f32; len], vec![0f32; kc]);
        for i in rows {
            // SAFETY: each query position writes only its own row.
            let o = unsafe { out.part(i * hidden, hidden) };
            for hd in 0..self.heads {
                for (cc, qc) in qi.iter_mut().enumerate() {
                    *qc = q[(hd * kc + cc) * len + i] * scale;
                }
                p.fill(0.0);
                for (cc, &qc) in qi.iter().enumerate() {
                    axpy_plain(qc, &k[(hd * kc + cc) * len..][..len], &mut p);
                }
                // Offsets within the window: j = i + d - w.
                let band = i.saturating_sub(w)..(i + w + 1).min(len);
                for j in band.clone() {
                    p[j] += dot_lanes(&qi, &self.rel_k[(j + w - i) * kc..][..kc]);
                }
                softmax(&mut p);
                let oh = &mut o[hd * kc..][..kc];
                oh.fill(0.0);
                for (j, &pj) in p.iter().enumerate() {
                    axpy_plain(pj, &v[j * hidden + hd * kc..][..kc], oh);
                }
                for j in band {
                    axpy_plain(p[j], &self.rel_v[(j + w - i) * kc..][..kc], oh);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CpuLayer, Range, SharedOut};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend_rows_avx2(
        l: &CpuLayer,
        qkv: &[f32],
        v: &[f32],
        len: usize,
        rows: Range<usize>,
        out: SharedOut<f32>,
    ) {
        l.attend_rows(qkv, v, len, rows, out)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn attend_rows_avx512(
        l: &CpuLayer,
        qkv: &[f32],
        v: &[f32],
        len: usize,
        rows: Range<usize>,
        out: SharedOut<f32>,
    ) {
        l.attend_rows(qkv, v, len, rows, out)
    }
}

/// `x += y`, then the layer norm.
fn add_and_norm(x: &mut [f32], y: &[f32], norm: &CpuNorm, len: usize) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    norm.apply(x, len);
}

/// Through `exp16` 16 at a time (the tail too), inline in the caller's instruction set.
#[inline(always)]
fn softmax(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for chunk in p.chunks_mut(16) {
        let mut x = [0f32; 16];
        for (x, &v) in x.iter_mut().zip(chunk.iter()) {
            *x = v - max;
        }
        let e = exp16(x);
        for (v, &e) in chunk.iter_mut().zip(&e) {
            *v = e;
            sum += e;
        }
    }
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|v| *v *= inv);
}
