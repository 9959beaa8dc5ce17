//! Q8_0 weights times f32 activations, batched: the default model's output head (49,152 x 576, a
//! third of the bytes a decode step reads) and every matrix under `--weights q8-0`.
//!
//! Why ours: candle's Q8_0 dot product is chosen by compile-time target features, so in a binary
//! built for the x86-64 baseline it is scalar (1.6 tok/s against 46.5, DESIGN.md). Activations are
//! quantized per 32-value block to i8 (`quant::Activations`), then, by the variant `isa` chose:
//! - `avx512`: 16 columns side by side, one per vector lane, with each weight stored as `w + 128`
//!   (`repack_lanes`), so that `vpdpbusd` (unsigned times signed bytes) advances 16 columns by 4
//!   weights per instruction; the `128 * sum(x)` it adds is taken off with the activations' block
//!   sums, once per block for all 16 columns;
//! - `avx2`: the same layout 8 columns wide with the weights as they are, `maddubs` on `|w|` and `x`
//!   carrying `w`'s sign, as llama.cpp does (its pair sums, at most 2 x 128 x 127, fit 16 bits);
//! - a column count that is not a multiple of the width: ggml's own layout with `maddubs`;
//! - `portable`: the scalar reference.
//!
//! Every path is batch-invariant (see `quant`).

use super::isa::Variant;
use super::quant::{by_column, by_lane_group, f16_at, interleave_lanes, lane_width, Activations, Row, BLOCK};

/// ggml's block_q8_0: an f16 scale `d`, then 32 weights `d * q`, q an i8.
pub const BLOCK_BYTES: usize = 34;

/// Bytes of one block of one group of `w` columns in the `Lanes` layout: `w` f16 scales, then 8
/// steps of `4w` weight bytes.
const fn lane_block_bytes(w: usize) -> usize {
    34 * w
}

/// A Q8_0 matrix `[n, k]` (n output features, k inputs).
pub struct Q8_0Matrix {
    pub n: usize,
    pub k: usize,
    layout: Layout,
}

enum Layout {
    /// ggml's blocks, as in the file, with the variant whose kernel reads them.
    Ggml(Vec<u8>, Variant),
    /// Columns in groups of `lane_width(variant)`, one per vector lane (see `repack_lanes`).
    Lanes(Vec<u8>, Variant),
}

impl Q8_0Matrix {
    /// `data` holds ggml Q8_0 blocks, row after row; packed for this process's kernel variant.
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> anyhow::Result<Self> {
        Self::for_variant(data, n, k, super::isa::variant())
    }

    /// Packed for the kernels of `variant`, which the CPU must run (the tests go through each).
    pub fn for_variant(data: Vec<u8>, n: usize, k: usize, variant: Variant) -> anyhow::Result<Self> {
        anyhow::ensure!(k.is_multiple_of(BLOCK), "Q8_0 rows must be whole blocks (k = {k})");
        anyhow::ensure!(data.len() == n * k / BLOCK * BLOCK_BYTES, "Q8_0 data has {} bytes for {n}x{k}", data.len());
        assert!(variant.runs_here(), "this CPU cannot run the {variant} kernels");
        let layout = match variant {
            Variant::Avx512 | Variant::Avx2 if n.is_multiple_of(lane_width(variant)) => {
                Layout::Lanes(repack_lanes(&data, n, variant), variant)
            }
            Variant::Avx512 => Layout::Ggml(data, Variant::Avx2),
            v => Layout::Ggml(data, v),
        };
        Ok(Self { n, k, layout })
    }

    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        match &self.layout {
            Layout::Ggml(b, _) | Layout::Lanes(b, _) => b.len(),
        }
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k);
        self.matmul_quantized(&Activations::quantize(x, self.k))
    }

    /// `y = x W^T` for activations already quantized (`Activations::with_row_ranges`, say).
    pub fn matmul_quantized(&self, acts: &Activations) -> Vec<f32> {
        assert_eq!(acts.k(), self.k);
        let row_bytes = self.k / BLOCK * BLOCK_BYTES;
        match &self.layout {
            #[cfg(target_arch = "x86_64")]
            Layout::Lanes(data, variant) => {
                let group = self.k / BLOCK * lane_block_bytes(lane_width(*variant));
                let w = |g: usize| &data[g * group..(g + 1) * group];
                // SAFETY (all four): `Lanes` is only built with a variant this CPU runs.
                if *variant == Variant::Avx512 {
                    by_lane_group(
                        self.n,
                        acts,
                        |g, rows| unsafe { avx512::lanes(w(g), rows) },
                        |g, row| unsafe { avx512::lanes(w(g), &[row]) }[0],
                    )
                } else {
                    by_lane_group(
                        self.n,
                        acts,
                        |g, rows| unsafe { avx2::lanes(w(g), rows) },
                        |g, row| unsafe { avx2::lanes(w(g), &[row]) }[0],
                    )
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Lanes(..) => unreachable!("the lanes layout is x86-64 only"),
            Layout::Ggml(data, variant) => {
                let w = |j: usize| &data[j * row_bytes..(j + 1) * row_bytes];
                match variant {
                    // SAFETY (both): the layout is only built with a variant this CPU runs.
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx2 | Variant::Avx512 => by_column(
                        self.n,
                        acts,
                        |j, rows| unsafe { avx2::dot_ggml(w(j), rows) },
                        |j, row| unsafe { avx2::dot_ggml(w(j), &[row])[0] },
                    ),
                    _ => by_column(
                        self.n,
                        acts,
                        |j, rows| rows.map(|row| dot_ggml_scalar(w(j), row)),
                        |j, row| dot_ggml_scalar(w(j), row),
                    ),
                }
            }
        }
    }
}

/// Repacks ggml blocks so that `w = lane_width(variant)` columns sit side by side, one per 32-bit vector
/// lane. Per group of `w` columns and per block: the `w` scales (f16), then for steps t = 0..8 a
/// `4w`-byte vector whose byte 4c + j holds weight 4t + j of column c. For `avx512` the weights are
/// stored plus 128 (an i8 made unsigned, for `vpdpbusd`); for `avx2` as they are (`maddubs` takes
/// their magnitude and sign apart).
fn repack_lanes(data: &[u8], n: usize, variant: Variant) -> Vec<u8> {
    let flip = if variant == Variant::Avx512 { 0x80 } else { 0 };
    interleave_lanes(data, n, BLOCK_BYTES, 1, lane_width(variant), flip)
}

/// The reference: what every SIMD path computes, one value at a time. Also the `portable` variant,
/// whose integer sums the compiler vectorises for the baseline.
pub fn dot_ggml_scalar(w: &[u8], (q, d, _): Row<'_>) -> f32 {
    let mut total = 0f32;
    for (b, wb) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let isum: i32 = wb[2..].iter().zip(&q[b * BLOCK..][..BLOCK]).map(|(&w, &x)| w as i8 as i32 * x as i32).sum();
        total += f16_at(&wb[0..2]) * d[b] * isum as f32;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Row, BLOCK, BLOCK_BYTES};
    use crate::arch::cpu::quant::x86::hsum256;
    use std::arch::x86_64::*;

    /// ggml's blocks with `maddubs`, which multiplies unsigned by signed bytes: `|w|` against `x`
    /// with the sign of `w`, 32 per block, for `R` rows at once. Each row goes through the same
    /// operations whatever `R` is, so results do not depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx2 variant.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_ggml<const R: usize>(w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
        let blocks = w.len() / BLOCK_BYTES;
        for (q, d, _) in rows {
            assert!(q.len() >= blocks * BLOCK && d.len() >= blocks);
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * BLOCK_BYTES);
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((wb as *const u16).read_unaligned() as i32)));
            let wv = _mm256_loadu_si256(wb.add(2) as *const __m256i);
            let magnitude = _mm256_sign_epi8(wv, wv);
            for (r, (q, dx, _)) in rows.iter().enumerate() {
                let x = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK) as *const __m256i);
                let products = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(x, wv));
                let sums = _mm256_madd_epi16(products, ones);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * dx[b]), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum256(acc[r]))
    }

    /// `R` activation rows times one 8-column group (`Lanes` layout, 8 wide, weights unshifted): 8
    /// results per row. Each row goes through the same operations whatever `R` is, so results do not
    /// depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx2 variant.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn lanes<const R: usize>(w: &[u8], a: &[Row<'_>; R]) -> [[f32; 8]; R] {
        let block_bytes = super::lane_block_bytes(8);
        let blocks = w.len() / block_bytes;
        for (q, ad, _) in a {
            assert!(q.len() == blocks * BLOCK && ad.len() == blocks);
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * block_bytes);
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
            let mut wv = [_mm256_setzero_si256(); 8];
            let mut magnitude = [_mm256_setzero_si256(); 8];
            for t in 0..8 {
                wv[t] = _mm256_loadu_si256(wb.add(16 + 32 * t) as *const __m256i);
                magnitude[t] = _mm256_sign_epi8(wv[t], wv[t]);
            }
            for r in 0..R {
                let q = a[r].0.as_ptr().add(b * BLOCK);
                let mut isum = _mm256_setzero_si256();
                for t in 0..8 {
                    let x = _mm256_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
                    let products = _mm256_maddubs_epi16(magnitude[t], _mm256_sign_epi8(x, wv[t]));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(products, ones));
                }
                let scale = _mm256_mul_ps(scales, _mm256_set1_ps(a[r].1[b]));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
            }
        }
        let mut out = [[0f32; 8]; R];
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{lane_block_bytes, Row, BLOCK};
    use std::arch::x86_64::*;

    /// `R` activation rows times one 16-column group: 16 results per row. Each row goes through the
    /// same operations whatever `R` is, so results do not depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx512 variant.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub unsafe fn lanes<const R: usize>(w: &[u8], a: &[Row<'_>; R]) -> [[f32; 16]; R] {
        let block_bytes = lane_block_bytes(16);
        let blocks = w.len() / block_bytes;
        for (q, ad, s) in a {
            assert!(q.len() == blocks * BLOCK && ad.len() == blocks && s.len() == blocks);
        }
        let mut acc = [_mm512_setzero_ps(); R];
        let mut offset = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * block_bytes);
            let scales = _mm512_cvtph_ps(_mm256_loadu_si256(wb as *const __m256i));
            let mut u = [_mm512_setzero_si512(); 8];
            for (t, ut) in u.iter_mut().enumerate() {
                *ut = _mm512_loadu_si512(wb.add(32 + 64 * t) as *const _);
            }
            for r in 0..R {
                let q = a[r].0.as_ptr().add(b * BLOCK);
                let mut isum = _mm512_setzero_si512();
                for (t, &ut) in u.iter().enumerate() {
                    let x = _mm512_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
                    isum = _mm512_dpbusd_epi32(isum, ut, x);
                }
                // (w + 128) . x = w . x + 128 * sum(x): the second term is `128 * s / d` per block.
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(a[r].1[b]));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
                offset[r] = _mm512_fmadd_ps(scales, _mm512_set1_ps(-128.0 * a[r].2[b]), offset[r]);
            }
        }
        let mut out = [[0f32; 16]; R];
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), _mm512_add_ps(acc[r], offset[r]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::cpu::quant::testing::{self, quantized, random};
    use candle_core::quantized::GgmlDType;

    fn build(data: Vec<u8>, n: usize, k: usize, v: Variant) -> testing::Matmul {
        let q = Q8_0Matrix::for_variant(data, n, k, v).unwrap();
        Box::new(move |x, m| q.matmul(x, m))
    }

    #[test]
    fn every_variant_matches_dense_matmul_of_the_dequantized_weights() {
        testing::every_variant_matches_dense(GgmlDType::Q8_0, &build);
    }

    #[test]
    fn every_variant_equals_the_scalar_reference() {
        // Weights of -128 (which `maddubs` and the +128 shift must both survive) in every block.
        for variant in Variant::all_here() {
            for (n, k) in [(32, 96), (32, 576), (8, 64), (8, 576)] {
                let (mut data, _) = quantized(GgmlDType::Q8_0, n, k);
                for block in data.chunks_exact_mut(BLOCK_BYTES) {
                    block[2] = 0x80;
                    block[33] = 0x80;
                }
                let q = Q8_0Matrix::for_variant(data.clone(), n, k, variant).unwrap();
                let x = random(k, 4);
                let acts = Activations::quantize(&x, k);
                let got = q.matmul(&x, 1);
                let row_bytes = k / BLOCK * BLOCK_BYTES;
                for (j, a) in got.iter().enumerate() {
                    let b = dot_ggml_scalar(&data[j * row_bytes..(j + 1) * row_bytes], acts.row(0));
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{variant} k={k} col {j}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch_in_any_variant() {
        testing::rows_do_not_depend_on_their_batch(GgmlDType::Q8_0, &build);
    }
}
