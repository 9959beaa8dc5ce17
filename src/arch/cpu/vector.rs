//! Vector primitives of the attention loops (the llama step's and the voice encoder's), compiled once
//! per kernel variant from the same plain Rust, so that the compiler vectorises each for its own
//! instruction set; a baseline build alone would give them SSE.
//!
//! Within one variant, a result never depends on anything but its inputs (the lanes are summed in a
//! fixed order), so attention stays batch-invariant.

use super::isa::{self, Variant};

/// Lanes of the dot product: one AVX-512 vector, two AVX2 ones, four SSE or NEON ones.
const LANES: usize = 16;

/// `a . b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_as(isa::variant(), a, b)
}

/// `y += w * x`.
#[inline]
pub fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    axpy_as(isa::variant(), w, x, y)
}

fn dot_as(variant: Variant, a: &[f32], b: &[f32]) -> f32 {
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { x86::dot_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { x86::dot_avx2(a, b) },
        _ => dot_lanes(a, b),
    }
}

fn axpy_as(variant: Variant, w: f32, x: &[f32], y: &mut [f32]) {
    match variant {
        // SAFETY: `variant` is one this CPU runs (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { x86::axpy_avx512(w, x, y) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { x86::axpy_avx2(w, x, y) },
        _ => axpy_plain(w, x, y),
    }
}

/// A dot product in `LANES` independent lanes, so that the compiler can vectorise it.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_plain(w: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += w * x);
}

/// The same bodies, compiled for each instruction set.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_lanes(a, b)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_lanes(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_avx2(w: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_plain(w, x, y)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy_avx512(w: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_plain(w, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_computes_the_scalar_dot_and_axpy() {
        let a: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..70).map(|i| (i as f32 * 0.11).cos()).collect();
        for variant in Variant::all_here() {
            // Lengths below, at and between whole lane groups.
            for n in [0, 5, 16, 64, 70] {
                let want: f64 = a[..n].iter().zip(&b[..n]).map(|(x, y)| *x as f64 * *y as f64).sum();
                let got = dot_as(variant, &a[..n], &b[..n]);
                assert!((got as f64 - want).abs() < 1e-4, "{variant} n={n}: {got} vs {want}");
                let mut y = b[..n].to_vec();
                axpy_as(variant, 0.5, &a[..n], &mut y);
                for i in 0..n {
                    assert_eq!(y[i], b[i] + 0.5 * a[i], "{variant} n={n} i={i}");
                }
            }
        }
    }
}
