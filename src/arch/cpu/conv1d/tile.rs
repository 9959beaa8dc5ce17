//! The micro tiles of `conv1d`: one block of `OUT_BLOCK` output channels over a strip of time
//! steps, per instruction set.
//!
//! Within a block the work is register-blocked: `OUT_BLOCK` output channels times a strip of time
//! steps of accumulators stay in vector registers while the loop runs over every input channel and
//! kernel tap, so each loaded input vector feeds `OUT_BLOCK` fused multiply-adds and nothing is
//! stored until the end. (An accumulator in memory instead, one output channel at a time, cost two
//! loads and a store per multiply-add and ran at about a third of this speed: BENCHMARKS.md.)
//!
//! The micro tile has one variant per instruction set (`isa`):
//! - `avx512`: intrinsics, 6 x 3 512-bit accumulators. The compiler's own vectors stop at 256 bits
//!   on such CPUs (LLVM's tuning for them), which halves the peak, and onnxruntime's use the full width;
//! - `avx2`: intrinsics, 6 x 2 256-bit accumulators, two inputs and a broadcast weight: 15 of the 16
//!   registers. (4 x 3 needed all 16, and LLVM then spilled one accumulator and shuffled four more
//!   through copies every iteration: 67 against 94 GFLOP/s on Zen 3; 6 x 2 ran at 1.2-1.4x the
//!   4 x 2 it replaced, BENCHMARKS.md);
//! - `portable`: plain Rust over 8 time steps at a time (6 x 8 accumulators: twelve SSE or NEON
//!   registers), which the compiler vectorises for the baseline.

use super::{MICRO, OUT_BLOCK};
use crate::arch::cpu::isa::Variant;

/// The activated, zero-padded input every micro tile of a call reads (`channels` rows of `width`),
/// and the convolution's taps over it.
#[derive(Clone, Copy)]
pub(super) struct Activations<'a> {
    pub act: &'a [f32],
    pub width: usize,
    pub channels: usize,
    pub kernel: usize,
    pub dilation: usize,
}

/// Computes one block of `OUT_BLOCK` output channels over the time steps `t0..t0 + steps`, with
/// the block's packed weights, and stores them as `Finish` says. `steps` is at most the variant's
/// strip (`micro_tile_for`). Each row of the activations must hold the strip plus
/// `dilation * (kernel - 1)` values from `t0` on.
///
/// # Safety
/// A tile may compute and store more steps than it was asked for, up to its whole strip: every
/// row `Finish` names must hold a whole strip.
pub(super) type MicroTile = unsafe fn(&Activations, &[f32], usize, usize, Finish);

/// Where a micro tile stores its `OUT_BLOCK` rows of sums: row `i` to `dst + i * stride`, as
/// `(residual + bias[i]) + sum`, the order the buffered path adds in, so both give the same bits.
/// Raw pointers, because the rows are strided parts of an output the other threads write too.
#[derive(Clone, Copy)]
pub(super) struct Finish {
    pub dst: *mut f32,
    pub stride: usize,
    pub bias: [f32; OUT_BLOCK],
    /// Row `i` at `pointer + i * stride`.
    pub residual: Option<(*const f32, usize)>,
}

impl Finish {
    /// Plain sums into `acc`, for the caller to finish.
    pub fn sums_into(acc: &mut [[f32; MICRO]; OUT_BLOCK]) -> Self {
        Self { dst: acc.as_mut_ptr().cast(), stride: MICRO, bias: [0.0; OUT_BLOCK], residual: None }
    }

    /// The value row `o` step `t` gets for the sum `s`.
    ///
    /// # Safety
    /// The residual's row `o` holds step `t`.
    #[inline(always)]
    unsafe fn value(&self, o: usize, t: usize, s: f32) -> f32 {
        let base = match self.residual {
            Some((r, stride)) => *r.add(o * stride + t) + self.bias[o],
            None => self.bias[o],
        };
        base + s
    }
}

/// The variant's micro tile and its strip: the most time steps one call computes.
pub(super) fn micro_tile_for(variant: Variant) -> (MicroTile, usize) {
    match variant {
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => (avx512::micro_tile, avx512::STRIP),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => (avx2::micro_tile, avx2::STRIP),
        _ => (micro_tile_portable, PORTABLE_STEPS),
    }
}

/// Time steps the portable tile computes per call.
const PORTABLE_STEPS: usize = 8;

/// The micro tile in plain Rust that the compiler vectorises for the target, over
/// `PORTABLE_STEPS` time steps.
unsafe fn micro_tile_portable(a: &Activations, w: &[f32], t0: usize, steps: usize, f: Finish) {
    debug_assert!(steps <= PORTABLE_STEPS);
    let acc = portable_pass(a, w, t0);
    for (o, acc) in acc.iter().enumerate() {
        for (t, &s) in acc.iter().enumerate() {
            *f.dst.add(o * f.stride + t) = f.value(o, t, s);
        }
    }
}

/// Fixed sizes let the compiler keep `acc` in registers and unroll the two inner loops into
/// vector multiply-adds.
#[inline(always)]
fn portable_pass(a: &Activations, w: &[f32], t0: usize) -> [[f32; PORTABLE_STEPS]; OUT_BLOCK] {
    let Activations { act, width, channels, kernel, dilation } = *a;
    let mut acc = [[0f32; PORTABLE_STEPS]; OUT_BLOCK];
    for c in 0..channels {
        let row = &act[c * width + t0..];
        let wc = &w[c * kernel * OUT_BLOCK..][..kernel * OUT_BLOCK];
        for (j, wj) in wc.chunks_exact(OUT_BLOCK).enumerate() {
            let src: &[f32; PORTABLE_STEPS] = row[j * dilation..][..PORTABLE_STEPS].try_into().expect("a pass");
            for (a, &wo) in acc.iter_mut().zip(wj) {
                for (a, &s) in a.iter_mut().zip(src) {
                    *a += wo * s;
                }
            }
        }
    }
    acc
}

/// The reads every intrinsics tile makes over a strip of `steps` from `t0` stay inside both
/// slices: the caller's contract, checked once per tile.
#[cfg(target_arch = "x86_64")]
fn check_tile_bounds(a: &Activations, w: &[f32], t0: usize, steps: usize) {
    let Activations { act, width, channels, kernel, dilation } = *a;
    assert!(channels > 0 && kernel > 0);
    assert!((channels - 1) * width + t0 + dilation * (kernel - 1) + steps <= act.len());
    assert!(channels * kernel * OUT_BLOCK <= w.len());
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{check_tile_bounds, Activations, Finish, OUT_BLOCK};
    use crate::arch::cpu::isa::Variant;
    use std::arch::x86_64::*;

    /// 256-bit vectors of 8 floats per accumulator row, at most.
    const VECS: usize = 2;
    pub const STRIP: usize = 8 * VECS;

    /// The micro tile in AVX2: up to `VECS` vectors per output channel (12 accumulators, 2 inputs,
    /// 1 broadcast weight); only the vectors that cover `steps` are computed.
    pub unsafe fn micro_tile(a: &Activations, w: &[f32], t0: usize, steps: usize, f: Finish) {
        check_tile_bounds(a, w, t0, STRIP);
        assert!(Variant::Avx2.runs_here() && steps <= STRIP);
        // SAFETY: AVX2 and FMA are present and every read is in bounds (both checked above); the
        // stores are the caller's contract.
        unsafe {
            match steps.div_ceil(8) {
                1 => tile::<1>(a, w, t0, f),
                _ => tile::<VECS>(a, w, t0, f),
            }
        }
    }

    /// `V` vectors of 8 time steps per accumulator row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const V: usize>(a: &Activations, w: &[f32], t0: usize, f: Finish) {
        let Activations { act, width, channels, kernel, dilation } = *a;
        let mut acc = [[_mm256_setzero_ps(); V]; OUT_BLOCK];
        for c in 0..channels {
            let row = act.as_ptr().add(c * width + t0);
            let wc = w.as_ptr().add(c * kernel * OUT_BLOCK);
            for j in 0..kernel {
                let src = row.add(j * dilation);
                let mut s = [_mm256_setzero_ps(); V];
                for (v, sv) in s.iter_mut().enumerate() {
                    *sv = _mm256_loadu_ps(src.add(8 * v));
                }
                for (o, acc_o) in acc.iter_mut().enumerate() {
                    let wo = _mm256_broadcast_ss(&*wc.add(j * OUT_BLOCK + o));
                    for (a, &sv) in acc_o.iter_mut().zip(&s) {
                        *a = _mm256_fmadd_ps(wo, sv, *a);
                    }
                }
            }
        }
        for (o, acc_o) in acc.iter().enumerate() {
            let bias = _mm256_set1_ps(f.bias[o]);
            for (v, &sum) in acc_o.iter().enumerate() {
                let base = match f.residual {
                    Some((r, stride)) => _mm256_add_ps(_mm256_loadu_ps(r.add(o * stride + 8 * v)), bias),
                    None => bias,
                };
                _mm256_storeu_ps(f.dst.add(o * f.stride + 8 * v), _mm256_add_ps(base, sum));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{check_tile_bounds, Activations, Finish, MICRO, OUT_BLOCK};
    use crate::arch::cpu::isa::Variant;
    use std::arch::x86_64::*;

    /// Vectors of 16 floats per accumulator row.
    const VECS: usize = MICRO / 16;
    pub const STRIP: usize = MICRO;

    /// The micro tile in AVX-512: 18 accumulators; per input channel and tap, `VECS` loads of the
    /// input and `OUT_BLOCK` broadcast weights feed 18 fused multiply-adds. A tile at the end of a
    /// short input (the encoder's phonemes, the flow's frames) computes only the vectors it needs.
    pub unsafe fn micro_tile(a: &Activations, w: &[f32], t0: usize, steps: usize, f: Finish) {
        check_tile_bounds(a, w, t0, STRIP);
        assert!(Variant::Avx512.runs_here() && steps <= STRIP);
        // SAFETY: AVX-512F is present and every read is in bounds (both checked above); the
        // stores are the caller's contract.
        unsafe {
            match steps.div_ceil(16) {
                1 => tile::<1>(a, w, t0, f),
                2 => tile::<2>(a, w, t0, f),
                _ => tile::<VECS>(a, w, t0, f),
            }
        }
    }

    /// `V` vectors of 16 time steps per accumulator row.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize>(a: &Activations, w: &[f32], t0: usize, f: Finish) {
        let Activations { act, width, channels, kernel, dilation } = *a;
        let mut acc = [[_mm512_setzero_ps(); V]; OUT_BLOCK];
        for c in 0..channels {
            let row = act.as_ptr().add(c * width + t0);
            let wc = w.as_ptr().add(c * kernel * OUT_BLOCK);
            for j in 0..kernel {
                let src = row.add(j * dilation);
                let mut s = [_mm512_setzero_ps(); V];
                for (v, sv) in s.iter_mut().enumerate() {
                    *sv = _mm512_loadu_ps(src.add(16 * v));
                }
                for (o, acc_o) in acc.iter_mut().enumerate() {
                    let wo = _mm512_set1_ps(*wc.add(j * OUT_BLOCK + o));
                    for (a, &sv) in acc_o.iter_mut().zip(&s) {
                        *a = _mm512_fmadd_ps(wo, sv, *a);
                    }
                }
            }
        }
        for (o, acc_o) in acc.iter().enumerate() {
            let bias = _mm512_set1_ps(f.bias[o]);
            for (v, &sum) in acc_o.iter().enumerate() {
                let base = match f.residual {
                    Some((r, stride)) => _mm512_add_ps(_mm512_loadu_ps(r.add(o * stride + 16 * v)), bias),
                    None => bias,
                };
                _mm512_storeu_ps(f.dst.add(o * f.stride + 16 * v), _mm512_add_ps(base, sum));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    /// Every variant's tile this CPU runs agrees with a plain sum over channels and taps, at every
    /// width its strip may be cut to at the end of an input, so the test against candle below
    /// covers them all; and a whole strip stored with its bias and residual into strided rows, as
    /// the output gets it, gives the same bits as the sums finished afterwards.
    #[test]
    fn every_variants_tile_matches_a_plain_sum() {
        let (channels, kernel, dilation, t0) = (5, 3, 2, 7);
        let width = t0 + MICRO + dilation * (kernel - 1);
        let act = values(4, channels * width);
        let w = values(5, channels * kernel * OUT_BLOCK);
        let input = Activations { act: &act, width, channels, kernel, dilation };
        let want = |o: usize, t: usize| -> f32 {
            let taps = (0..channels).flat_map(|c| (0..kernel).map(move |j| (c, j)));
            taps.map(|(c, j)| w[(c * kernel + j) * OUT_BLOCK + o] * act[c * width + t0 + t + j * dilation]).sum()
        };
        let bias: [f32; OUT_BLOCK] = values(6, OUT_BLOCK).try_into().unwrap();
        let (r_stride, d_stride) = (MICRO + 3, MICRO + 5);
        let residual = values(7, OUT_BLOCK * r_stride);
        for variant in Variant::all_here() {
            let (tile, strip) = micro_tile_for(variant);
            for steps in [MICRO, 47, 33, 32, 24, 20, 16, 9, 8, 1].into_iter().filter(|&n| n <= strip) {
                let mut got = [[f32::NAN; MICRO]; OUT_BLOCK];
                // SAFETY: `got` holds a whole strip per row.
                unsafe { tile(&input, &w, t0, steps, Finish::sums_into(&mut got)) };
                // Every wanted step must be written (the NaNs gone) and right; `f32::max` would
                // skip a NaN, so each value is checked on its own.
                for (o, t) in (0..OUT_BLOCK).flat_map(|o| (0..steps).map(move |t| (o, t))) {
                    let (got, want) = (got[o][t], want(o, t));
                    assert!((got - want).abs() < 1e-5, "{variant}, {steps} steps, [{o}][{t}]: {got} vs {want}");
                }
                if steps != strip {
                    continue;
                }
                let mut dst = vec![f32::NAN; OUT_BLOCK * d_stride];
                let finish = Finish {
                    dst: dst.as_mut_ptr(),
                    stride: d_stride,
                    bias,
                    residual: Some((residual.as_ptr(), r_stride)),
                };
                // SAFETY: both buffers hold a whole strip per row.
                unsafe { tile(&input, &w, t0, steps, finish) };
                for (o, t) in (0..OUT_BLOCK).flat_map(|o| (0..d_stride).map(move |t| (o, t))) {
                    let d = dst[o * d_stride + t];
                    if t < steps {
                        let want = residual[o * r_stride + t] + bias[o] + got[o][t];
                        assert_eq!(d.to_bits(), want.to_bits(), "{variant} finished [{o}][{t}]: {d} vs {want}");
                    } else {
                        assert!(d.is_nan(), "{variant} wrote [{o}][{t}], past its strip");
                    }
                }
            }
        }
        assert!((0..MICRO).any(|t| want(0, t).abs() > 1e-3), "a tile of zeros proves nothing");
    }
}
