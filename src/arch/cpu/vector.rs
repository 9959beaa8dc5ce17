//! Vector primitives of the attention loops (the llama step's and the voice encoder's) and of the
//! row-wise ops between the matmuls (`rowwise`), compiled once per kernel variant from the same plain
//! Rust, so that the compiler vectorises each for its own instruction set; a baseline build alone
//! would give them SSE.
//!
//! Within one variant, a result never depends on anything but its inputs (the lanes are summed in a
//! fixed order), so attention stays batch-invariant.

use super::isa::{self, Variant};

/// Sixteen f32 lanes, for kernels written once over this trait and instantiated per variant inside
/// that variant's `#[target_feature]` function (which is what lets the intrinsics inline). The
/// portable form is an array the compiler vectorises as it can; `mul_add` is fused only where the
/// instruction set has FMA, so each variant always computes the same thing.
pub trait F32x16: Copy {
    /// Whether one register holds all 16 lanes (AVX-512); a kernel may then keep more sums in flight.
    const ONE_REGISTER: bool;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    /// The first 16 floats of `s`.
    fn load(s: &[f32]) -> Self;
    /// Into the first 16 floats of `s`.
    fn store(self, s: &mut [f32]);
    /// `self * b + c`.
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
}

/// The portable lanes.
#[derive(Clone, Copy)]
pub struct Plain([f32; 16]);

impl F32x16 for Plain {
    const ONE_REGISTER: bool = false;
    #[inline(always)]
    fn zero() -> Self {
        Plain([0.0; 16])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Plain([x; 16])
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        Plain(s[..16].try_into().unwrap())
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        s[..16].copy_from_slice(&self.0)
    }
    #[inline(always)]
    fn mul_add(mut self, b: Self, c: Self) -> Self {
        for l in 0..16 {
            self.0[l] = self.0[l] * b.0[l] + c.0[l];
        }
        self
    }
    #[inline(always)]
    fn add(mut self, b: Self) -> Self {
        for l in 0..16 {
            self.0[l] += b.0[l];
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, b: Self) -> Self {
        for l in 0..16 {
            self.0[l] *= b.0[l];
        }
        self
    }
}

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

/// A dot product in `LANES` independent lanes, so that the compiler can vectorise it. `dot`'s
/// body, public for kernels that inline it into their own `#[target_feature]` function rather than
/// pay a dispatched call per short vector.
#[inline(always)]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
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

/// `axpy`'s body, for the same use as `dot_lanes`.
#[inline(always)]
pub fn axpy_plain(w: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += w * x);
}

/// e^x, 16 at a time in plain arithmetic the compiler vectorises: x = n ln2 + r with |r| <= ln2/2,
/// e^r by Cephes' degree-6 polynomial, times 2^n built in the exponent bits. Relative error about
/// 2e-7. Inputs are clamped to [-87, 88], inside f32's normal range: below, ~1e-38 instead of 0 (a
/// softmax weight or a SiLU gate that small changes nothing); above, ~1.6e38 instead of infinity.
/// No fused multiply-adds, so every variant computes the same value.
#[inline(always)]
pub fn exp16(x: [f32; 16]) -> [f32; 16] {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // A loop over an array, not `array::from_fn`: that one is not always inlined, and then it runs
    // scalar outside the variant's target features (measured: 13% of a long prefill).
    let mut out = [0f32; 16];
    for l in 0..16 {
        let x = x[l].clamp(-87.0, 88.0);
        let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.987_569_1e-4;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        let er = p * (r * r) + r + 1.0;
        out[l] = er * f32::from_bits(((n as i32 + 127) as u32) << 23);
    }
    out
}

/// erf(x), 16 at a time in plain arithmetic the compiler vectorises: x * P(x^2) / Q(x^2) on x
/// clamped to [-4, 4] (beyond, erf is +-1 in f32), with the rational fit Eigen uses for its fast
/// float erf: absolute error 6.5e-8 in exact arithmetic, under 4e-7 in f32 (the most just below
/// +-3.92, from where the answer is exactly +-1). No fused multiply-adds, so every variant
/// computes the same value.
#[inline(always)]
pub fn erf16(x: [f32; 16]) -> [f32; 16] {
    const P: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ];
    const Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_5e-4, -1.682_827e-3, -7.373_329_2e-3, -1.426_474e-2];
    let mut out = [0f32; 16];
    for l in 0..16 {
        let x = x[l].clamp(-4.0, 4.0);
        let x2 = x * x;
        let mut p = P[0];
        for c in &P[1..] {
            p = p * x2 + c;
        }
        let mut q = Q[0];
        for c in &Q[1..] {
            q = q * x2 + c;
        }
        // From 3.92 on, f32's erf is exactly +-1; the fit's ~1e-7 short of it would grow into
        // GELU's tail as x times that.
        out[l] = if x2 >= 3.92 * 3.92 { x.signum() } else { x * p / q };
    }
    out
}

/// The lanes on x86: one AVX-512 register, or two AVX2 ones. Only for use inside functions compiled
/// for that instruction set (`#[target_feature]`), on a CPU that has it.
#[cfg(target_arch = "x86_64")]
pub mod lanes_x86 {
    use super::F32x16;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    // SAFETY (every method): the caller runs on an AVX-512 CPU, inside an avx512f function; `load`
    // and `store` check the slice's length first.
    impl F32x16 for Avx512 {
        const ONE_REGISTER: bool = true;
        #[inline(always)]
        fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            assert!(s.len() >= 16);
            Avx512(unsafe { _mm512_loadu_ps(s.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            assert!(s.len() >= 16);
            unsafe { _mm512_storeu_ps(s.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_mul_ps(self.0, b.0) })
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx2(__m256, __m256);

    // SAFETY (every method): as above, for AVX2 + FMA.
    impl F32x16 for Avx2 {
        const ONE_REGISTER: bool = false;
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            assert!(s.len() >= 16);
            unsafe { Avx2(_mm256_loadu_ps(s.as_ptr()), _mm256_loadu_ps(s.as_ptr().add(8))) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            assert!(s.len() >= 16);
            unsafe {
                _mm256_storeu_ps(s.as_mut_ptr(), self.0);
                _mm256_storeu_ps(s.as_mut_ptr().add(8), self.1);
            }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { Avx2(_mm256_fmadd_ps(self.0, b.0, c.0), _mm256_fmadd_ps(self.1, b.1, c.1)) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Avx2(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            unsafe { Avx2(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1)) }
        }
    }
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
    fn erf16_is_within_4e_7_of_the_library_erf() {
        // -6 to 6: erf is +-1 in f32 from about +-3.9 on.
        let xs: Vec<f32> = (0..4800).map(|i| (i as f32 - 2400.0) * 0.0025).collect();
        for chunk in xs.chunks_exact(16) {
            let got = erf16(chunk.try_into().unwrap());
            for (&x, &g) in chunk.iter().zip(&got) {
                let want = libm::erf(x as f64);
                assert!((g as f64 - want).abs() < 4e-7, "erf({x}) = {g}, want {want}");
            }
        }
    }

    #[test]
    fn exp16_is_within_a_few_ulp_of_the_library_exp() {
        // -85.7 to 85.7: outside [-87, 88] the input is clamped (see `exp16`).
        let xs: Vec<f32> = (0..3808).map(|i| (i as f32 - 1904.0) * 0.045).collect();
        for chunk in xs.chunks_exact(16) {
            let x: [f32; 16] = chunk.try_into().unwrap();
            for (x, got) in chunk.iter().zip(exp16(x)) {
                let want = (*x as f64).exp();
                assert!(((got as f64 - want) / want).abs() < 5e-7, "exp({x}) = {got}, want {want}");
            }
        }
        let clamped = exp16([1000.0; 16]);
        assert!(clamped[0].is_finite() && clamped[0] > 1e38, "{}", clamped[0]);
    }

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
