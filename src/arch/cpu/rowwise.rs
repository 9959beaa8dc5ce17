//! The row-wise ops between a layer's matmuls on CPU: RMS norm, SiLU- or GELU-and-multiply, biases and the
//! residual add, over plain row-major `[rows, width]` slices; and the voice's tanh, WaveNet gate,
//! GELU and the zero-padded leaky ReLU its convolutions read.
//!
//! Why not candle's ops: a 1-stream decode step runs about ten of them per layer, each on a few
//! hundred floats, and a candle op's tensor allocation and dispatch cost more than its arithmetic;
//! candle's SiLU is also a scalar `exp` per value. Here each op is one pass, on the caller's thread
//! while it is small, over rows on the worker pool once it is big enough to pay for a parallel region
//! (`parallel_rows`).
//!
//! Batch invariance: each row is computed alone by the same operations, whichever thread runs it and
//! whatever other rows share the step.

use super::isa::{self, Variant};
use super::vector::{dot, erf16, exp16};
use super::{parallel_rows, SharedOut};

/// `x / rms(x) * weight` for each row of `x` (rows of `weight.len()` floats).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    assert!(width > 0 && x.len().is_multiple_of(width), "{} floats are not rows of {width}", x.len());
    let mut out = vec![0f32; x.len()];
    let shared = SharedOut::new(&mut out);
    parallel_rows(x.len() / width, width, |rows| {
        // SAFETY: row ranges are disjoint.
        let out = unsafe { shared.part(rows.start * width, rows.len() * width) };
        for (row, out) in x[rows.start * width..rows.end * width].chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            let scale = inverse_rms(row, eps);
            for ((o, &v), &w) in out.iter_mut().zip(row).zip(weight) {
                *o = v * scale * w;
            }
        }
    });
    out
}

fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt()
}

/// `rms_norm` in place, for rows inside a larger row (each head of q or k).
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    assert!(width > 0 && x.len().is_multiple_of(width), "{} floats are not rows of {width}", x.len());
    for row in x.chunks_exact_mut(width) {
        let scale = inverse_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

/// The activation of a gated FFN: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (PyTorch's `gelu_pytorch_tanh`; ggml's `gelu`).
    GeluTanh,
}

/// Rows of `[gate | up]` (`2 * inter` floats each) into rows of `act(gate) * up` (`inter` each).
pub fn gated(gate_up: &[f32], inter: usize, act: Activation) -> Vec<f32> {
    assert!(
        inter > 0 && gate_up.len().is_multiple_of(2 * inter),
        "{} floats are not rows of 2 x {inter}",
        gate_up.len()
    );
    let rows = gate_up.len() / (2 * inter);
    let mut out = vec![0f32; rows * inter];
    let shared = SharedOut::new(&mut out);
    let variant = isa::variant();
    parallel_rows(rows, 2 * inter, |range| {
        // SAFETY: row ranges are disjoint.
        let out = unsafe { shared.part(range.start * inter, range.len() * inter) };
        for (r, out) in range.zip(out.chunks_exact_mut(inter)) {
            let row = &gate_up[r * 2 * inter..(r + 1) * 2 * inter];
            gated_row(variant, act, &row[..inter], &row[inter..], out);
        }
    });
    out
}

/// `bias` added to every row of `x` (rows of `bias.len()` floats).
pub fn add_to_rows(x: &mut [f32], bias: &[f32]) {
    assert!(
        !bias.is_empty() && x.len().is_multiple_of(bias.len()),
        "{} floats are not rows of {}",
        x.len(),
        bias.len()
    );
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// `x *= scale`, elementwise.
pub fn scale_in_place(x: &mut [f32], scale: f32) {
    x.iter_mut().for_each(|v| *v *= scale);
}

/// `x += y`, elementwise.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

fn gated_row(variant: Variant, act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match (variant, act) {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx512, Activation::Silu) => unsafe { x86::silu_mul_avx512(gate, up, out) },
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx2, Activation::Silu) => unsafe { x86::silu_mul_avx2(gate, up, out) },
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx512, Activation::GeluTanh) => unsafe { x86::gelu_tanh_mul_avx512(gate, up, out) },
        #[cfg(target_arch = "x86_64")]
        (Variant::Avx2, Activation::GeluTanh) => unsafe { x86::gelu_tanh_mul_avx2(gate, up, out) },
        (_, Activation::Silu) => silu_mul_body(gate, up, out),
        (_, Activation::GeluTanh) => gelu_tanh_mul_body(gate, up, out),
    }
}

/// `out = gate / (1 + e^-gate) * up`, 16 at a time; the tail goes through the same `exp16`, so that
/// a value's result does not depend on where it lies in the row.
#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for start in (0..gate.len()).step_by(16) {
        let n = (gate.len() - start).min(16);
        let mut neg = [0f32; 16];
        for l in 0..n {
            neg[l] = -gate[start + l];
        }
        let e = exp16(neg);
        for l in 0..n {
            out[start + l] = gate[start + l] / (1.0 + e[l]) * up[start + l];
        }
    }
}

/// `out = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) * up`, 16 at a time, with
/// `tanh(y) = 1 - 2 / (e^2y + 1)` through `exp16` (whose clamp keeps large |y| finite).
#[inline(always)]
fn gelu_tanh_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for start in (0..gate.len()).step_by(16) {
        let n = (gate.len() - start).min(16);
        let mut twice = [0f32; 16];
        for l in 0..n {
            let g = gate[start + l];
            twice[l] = 2.0 * SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
        }
        let e = exp16(twice);
        for l in 0..n {
            let tanh = 1.0 - 2.0 / (e[l] + 1.0);
            out[start + l] = 0.5 * gate[start + l] * (1.0 + tanh) * up[start + l];
        }
    }
}

/// `x = tanh(x) * sigmoid(gate)`, WaveNet's gate (the voice's flow), on the calling thread.
/// (glibc's scalar `tanhf` and `expf` for this were 3.5% of a sentence's synthesis.)
pub fn tanh_gate_in_place(x: &mut [f32], gate: &[f32]) {
    assert_eq!(x.len(), gate.len());
    tanh_gate_row(isa::variant(), x, Some(gate))
}

/// `x = tanh(x)`, on the calling thread.
pub fn tanh_in_place(x: &mut [f32]) {
    tanh_gate_row(isa::variant(), x, None)
}

/// `x = cap * tanh(x / cap)` (Gemma's soft-capped attention scores and logits), on the calling thread.
pub fn softcap_in_place(x: &mut [f32], cap: f32) {
    x.iter_mut().for_each(|v| *v /= cap);
    tanh_in_place(x);
    x.iter_mut().for_each(|v| *v *= cap);
}

fn tanh_gate_row(variant: Variant, x: &mut [f32], gate: Option<&[f32]>) {
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { x86::tanh_gate_avx512(x, gate) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { x86::tanh_gate_avx2(x, gate) },
        _ => tanh_gate_body(x, gate),
    }
}

/// `tanh(x) = 1 - 2 / (e^2x + 1)`, times `sigmoid(g) = 1 / (1 + e^-g)` where there is a gate, 16 at
/// a time through `exp16` (the tail too). Absolute error about 1e-7; `exp16`'s clamp makes large
/// inputs exactly +-1 and 0 rather than infinities.
#[inline(always)]
fn tanh_gate_body(x: &mut [f32], gate: Option<&[f32]>) {
    for start in (0..x.len()).step_by(16) {
        let n = (x.len() - start).min(16);
        let x = &mut x[start..start + n];
        let (mut twice, mut neg) = ([0f32; 16], [0f32; 16]);
        for l in 0..n {
            twice[l] = 2.0 * x[l];
        }
        let e = exp16(twice);
        for l in 0..n {
            x[l] = 1.0 - 2.0 / (e[l] + 1.0);
        }
        if let Some(gate) = gate {
            for l in 0..n {
                neg[l] = -gate[start + l];
            }
            let g = exp16(neg);
            for l in 0..n {
                x[l] /= 1.0 + g[l];
            }
        }
    }
}

/// GELU with the exact error function (PyTorch's default), in place, on the calling thread.
/// (`libm::erff`, scalar, made the voice's duration predictor 5.2 ms of a sentence; this, 2.0-2.5.)
pub fn gelu_in_place(x: &mut [f32]) {
    gelu_row(isa::variant(), x)
}

fn gelu_row(variant: Variant, x: &mut [f32]) {
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { x86::gelu_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { x86::gelu_avx2(x) },
        _ => gelu_body(x),
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))`, 16 at a time through `erf16` (the tail too).
#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for chunk in x.chunks_mut(16) {
        let mut scaled = [0f32; 16];
        for (s, &v) in scaled.iter_mut().zip(chunk.iter()) {
            *s = v * std::f32::consts::FRAC_1_SQRT_2;
        }
        let e = erf16(scaled);
        for (v, &e) in chunk.iter_mut().zip(&e) {
            *v = 0.5 * *v * (1.0 + e);
        }
    }
}

/// `dst = [zeros; at] ++ leaky_relu(src, slope) ++ zeros`: one zero-padded input row of a
/// convolution, every value of `dst` written (a slope of 1 copies). On the calling thread.
pub fn padded_leaky_relu(dst: &mut [f32], at: usize, src: &[f32], slope: f32) {
    assert!(at + src.len() <= dst.len(), "{} values at {at} do not fit in {}", src.len(), dst.len());
    padded_leaky_relu_row(isa::variant(), dst, at, src, slope)
}

fn padded_leaky_relu_row(variant: Variant, dst: &mut [f32], at: usize, src: &[f32], slope: f32) {
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`). AVX2 for AVX-512 too: the row is short
        // and LLVM keeps to 256-bit vectors there anyway.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 | Variant::Avx2 => unsafe { x86::padded_leaky_relu_avx2(dst, at, src, slope) },
        _ => padded_leaky_relu_body(dst, at, src, slope),
    }
}

/// A compare and a select, so every width gives the same bits. (At the baseline's 128 bits this
/// was 7% of the voice's time, `perf` on Zen 3.)
#[inline(always)]
fn padded_leaky_relu_body(dst: &mut [f32], at: usize, src: &[f32], slope: f32) {
    let (before, rest) = dst.split_at_mut(at);
    let (row, after) = rest.split_at_mut(src.len());
    before.fill(0.0);
    after.fill(0.0);
    if slope == 1.0 {
        row.copy_from_slice(src);
    } else {
        for (d, &v) in row.iter_mut().zip(src) {
            *d = if v >= 0.0 { v } else { v * slope };
        }
    }
}

/// The same bodies, compiled for each instruction set.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_avx2(x: &mut [f32]) {
        super::gelu_body(x)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_avx512(x: &mut [f32]) {
        super::gelu_body(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn padded_leaky_relu_avx2(dst: &mut [f32], at: usize, src: &[f32], slope: f32) {
        super::padded_leaky_relu_body(dst, at, src, slope)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh_gate_avx2(x: &mut [f32], gate: Option<&[f32]>) {
        super::tanh_gate_body(x, gate)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn tanh_gate_avx512(x: &mut [f32], gate: Option<&[f32]>) {
        super::tanh_gate_body(x, gate)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::silu_mul_body(gate, up, out)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::silu_mul_body(gate, up, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_tanh_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::gelu_tanh_mul_body(gate, up, out)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_tanh_mul_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::gelu_tanh_mul_body(gate, up, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::arch::cpu::quant::testing::random(n, seed).into_iter().map(|v| 4.0 * v).collect()
    }

    #[test]
    fn every_variant_gives_candles_silu_and_gelu_times_up() {
        // 70 = four whole vectors and a tail; 40 rows of 2 x 1000 go through the pool.
        for ((rows, inter), act) in [(3, 70), (40, 1000)]
            .into_iter()
            .flat_map(|shape| [Activation::Silu, Activation::GeluTanh].map(|act| (shape, act)))
        {
            let gate_up = values(rows * 2 * inter, 1);
            let t = Tensor::from_vec(gate_up.clone(), (rows, 2 * inter), &Device::Cpu).unwrap();
            let (g, u) = (t.narrow(1, 0, inter).unwrap(), t.narrow(1, inter, inter).unwrap());
            // candle's `gelu` is the tanh approximation.
            let activated = match act {
                Activation::Silu => candle_nn::ops::silu(&g).unwrap(),
                Activation::GeluTanh => g.gelu().unwrap(),
            };
            let want: Vec<f32> = (activated * u).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for variant in Variant::all_here() {
                let mut got = vec![0f32; rows * inter];
                for (r, out) in got.chunks_exact_mut(inter).enumerate() {
                    let row = &gate_up[r * 2 * inter..(r + 1) * 2 * inter];
                    gated_row(variant, act, &row[..inter], &row[inter..], out);
                }
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{variant} {act:?} [{i}]: {a} vs {b}");
                }
            }
            // The pool's split (this process's variant) matches the row-at-a-time result.
            let pooled = gated(&gate_up, inter, act);
            for (a, b) in pooled.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "pooled: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_variants_tanh_and_gate_give_the_librarys() {
        // 70: four whole vectors and a tail; 4 x the values reach +-16, where tanh is +-1.
        let (x, gate) = (values(70, 4), values(70, 5));
        let x: Vec<f32> = x.iter().map(|v| 4.0 * v).chain([0.0, -0.0, 1e-30, 100.0, -100.0]).collect();
        let gate: Vec<f32> = gate.iter().copied().chain([0.0, 1.0, -1.0, 100.0, -100.0]).collect();
        for variant in Variant::all_here() {
            let (mut plain, mut gated) = (x.clone(), x.clone());
            tanh_gate_row(variant, &mut plain, None);
            tanh_gate_row(variant, &mut gated, Some(&gate));
            for i in 0..x.len() {
                let tanh = (x[i] as f64).tanh();
                let want = tanh / (1.0 + (-gate[i] as f64).exp());
                assert!((plain[i] as f64 - tanh).abs() < 2e-7, "{variant} tanh({}): {}", x[i], plain[i]);
                assert!((gated[i] as f64 - want).abs() < 2e-7, "{variant} gate [{i}]: {} vs {want}", gated[i]);
            }
        }
    }

    #[test]
    fn every_variants_gelu_gives_the_exact_one() {
        // 70: four whole vectors and a tail, to +-8, and the far tails, where GELU is exactly x
        // and 0. Within 1e-6: just above x = -5.5 the answer is off by up to ~8e-7 (`erf16`'s
        // error near -1, times x).
        let x: Vec<f32> = values(70, 8).iter().map(|v| 4.0 * v).chain([0.0, -0.0, 1e-30, 50.0, -50.0]).collect();
        for variant in Variant::all_here() {
            let mut got = x.clone();
            gelu_row(variant, &mut got);
            for (&x, &g) in x.iter().zip(&got) {
                let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
                assert!(
                    (g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{variant} gelu({x}) = {g}, want {want}"
                );
            }
        }
    }

    #[test]
    fn every_variants_padded_leaky_relu_writes_the_whole_row() {
        // 37 values (four vectors and a tail) at 5 in a row of 50, over NaNs that must all go.
        let src: Vec<f32> = values(37, 6).into_iter().chain([0.0, -0.0, -1e-30]).collect();
        for variant in Variant::all_here() {
            for slope in [0.1, 1.0] {
                let mut dst = vec![f32::NAN; 50];
                padded_leaky_relu_row(variant, &mut dst, 5, &src, slope);
                for (i, &d) in dst.iter().enumerate() {
                    let want = match i.checked_sub(5).and_then(|j| src.get(j)) {
                        Some(&v) if v < 0.0 => v * slope,
                        Some(&v) => v,
                        None => 0.0,
                    };
                    assert_eq!(d.to_bits(), want.to_bits(), "{variant} slope {slope} [{i}]: {d} vs {want}");
                }
            }
        }
    }

    #[test]
    fn rms_norm_gives_candles_and_a_row_alone_what_it_gives_in_a_batch() {
        let (rows, width) = (64, 576);
        let x = values(rows * width, 2);
        let w = values(width, 3);
        let got = rms_norm(&x, &w, 1e-5);
        let xt = Tensor::from_vec(x.clone(), (rows, width), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), width, &Device::Cpu).unwrap();
        let want: Vec<f32> =
            candle_nn::ops::rms_norm(&xt, &wt, 1e-5).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "[{i}]: {a} vs {b}");
        }
        for r in [0, 17, 63] {
            assert_eq!(rms_norm(&x[r * width..(r + 1) * width], &w, 1e-5), &got[r * width..(r + 1) * width]);
        }
    }
}
