//! Q4_1 weights times f32 activations, batched.
//!
//! Why ours: candle 0.11 has no SIMD dot product for Q4_1, so a Q4_1 GGUF ran 25x slower than its
//! Q8_0 conversion, and the conversion reads 1.7x the bytes per token. This kernel keeps the file's
//! 5 bits per weight. Activations are quantized per 32-value block to i8 (`quant::Activations`, like
//! ggml's Q8_1); weights are multiplied as unsigned nibbles against them, by the variant `isa` chose:
//! - `avx512`: weights are repacked at load so that 16 columns sit side by side, one per vector lane
//!   (`repack_lanes`): `vpdpbusd` advances 16 columns by 4 weights per instruction, a block's integer
//!   sum needs one scaling for all 16 columns, and each unpacked weight block serves 4 activation rows;
//! - `avx2`: the same layout 8 columns wide, with `maddubs` for `vpdpbusd` (its 16-bit sums of a
//!   block cannot overflow: 16 products of at most 15 x 127);
//! - a column count that is not a multiple of the width: ggml's own layout with `maddubs`;
//! - `portable`: the scalar reference.
//!
//! Q4_0 and Q5_0 are Q4_1's form with a fixed min (`d * (q - 8)` is `d * q + m` with `m = -8d`,
//! exact in f16), Q5_0 with a fifth bit per weight. `Q4_1Matrix::lanes_from` writes them so at load
//! and reads them with these kernels: Q4_0 as Q4_1 blocks, Q5_0 8 columns wide with the fifth bits
//! in a plane of their own (`repack_lanes5`; on AVX-512 CPUs too, which have no faster form of it
//! yet). Where no lanes layout applies (`portable`, a column count not a multiple of 8) they go to
//! `cpu::q8_0` instead (`qblocks::Format::exactly_as_q8_0`).
//!
//! Every path is batch-invariant (see `quant`).

use super::isa::Variant;
use super::qblocks::Format;
use super::quant::{by_column, by_lane_group, f16_at, interleave_lanes, lane_width, Activations, Row, BLOCK};

/// ggml's block_q4_1: 32 weights `d * q + m`, q in 0..16, two per byte (low nibbles first), f16 d and m.
pub const BLOCK_BYTES: usize = 20;

/// A Q4_1 matrix `[n, k]` (n output features, k inputs).
pub struct Q4_1Matrix {
    pub n: usize,
    pub k: usize,
    layout: Layout,
}

enum Layout {
    /// ggml's blocks, as in the file, with the variant whose kernel reads them.
    Ggml(Vec<u8>, Variant),
    /// Columns in groups of `lane_width(variant)`, one per vector lane (see `repack_lanes`).
    Lanes(Vec<u8>, Variant),
    /// Q5_0 as Q4_1's form with a fifth bit per weight, in groups of 8 columns for the avx2 kernel
    /// (see `repack_lanes5`).
    Lanes5(Vec<u8>),
}

/// Bytes of one block of one group of `w` columns in the `Lanes` layout: `w` f16 scales, `w` f16
/// mins, and 4 x `4w` bytes of nibbles.
const fn lane_block_bytes(w: usize) -> usize {
    20 * w
}

/// As `lane_block_bytes`, with the `4w` bytes of the fifth bits after the nibbles (`Lanes5`).
const fn lane5_block_bytes(w: usize) -> usize {
    24 * w
}

/// The 4-bit value of weight `j` (0..32) of a ggml block.
fn nibble(block: &[u8], j: usize) -> u8 {
    if j < 16 {
        block[4 + j] & 0x0F
    } else {
        block[4 + j - 16] >> 4
    }
}

impl Q4_1Matrix {
    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        match &self.layout {
            Layout::Ggml(b, _) | Layout::Lanes(b, _) | Layout::Lanes5(b) => b.len(),
        }
    }

    /// A Q4_0 or Q5_0 matrix (`data`, ggml blocks row after row) in a lanes layout as Q4_1's form,
    /// the same values; None where `variant` has no lanes layout (`portable`, or `n` not a multiple
    /// of 8), or for another format.
    pub fn lanes_from(
        format: Format,
        data: &[u8],
        n: usize,
        k: usize,
        variant: Variant,
    ) -> Option<anyhow::Result<Self>> {
        let lanes = matches!(variant, Variant::Avx2 | Variant::Avx512) && n.is_multiple_of(8);
        if !lanes || !matches!(format, Format::Q4_0 | Format::Q5_0) || !k.is_multiple_of(BLOCK) {
            return None;
        }
        if data.len() != n * k / BLOCK * format.bytes() {
            return Some(Err(anyhow::anyhow!("{format:?} data has {} bytes for {n}x{k}", data.len())));
        }
        match format {
            // A Q4_0 block is a Q4_1 block whose min is -8 times its scale.
            Format::Q4_0 => {
                let mut q4_1 = Vec::with_capacity(data.len() / 18 * BLOCK_BYTES);
                for block in data.chunks_exact(18) {
                    q4_1.extend_from_slice(&block[0..2]);
                    q4_1.extend_from_slice(&scaled_f16(&block[0..2], -8.0));
                    q4_1.extend_from_slice(&block[2..18]);
                }
                Some(Self::for_variant(q4_1, n, k, variant))
            }
            Format::Q5_0 => Some(Ok(Self { n, k, layout: Layout::Lanes5(repack_lanes5(data, n)) })),
            _ => None,
        }
    }

    /// `data` holds ggml Q4_1 blocks, row after row; packed for this process's kernel variant.
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> anyhow::Result<Self> {
        Self::for_variant(data, n, k, super::isa::variant())
    }

    /// Packed for the kernels of `variant`, which the CPU must run (the tests go through each).
    pub fn for_variant(data: Vec<u8>, n: usize, k: usize, variant: Variant) -> anyhow::Result<Self> {
        anyhow::ensure!(k.is_multiple_of(BLOCK), "Q4_1 rows must be whole blocks (k = {k})");
        anyhow::ensure!(data.len() == n * k / BLOCK * BLOCK_BYTES, "Q4_1 data has {} bytes for {n}x{k}", data.len());
        assert!(variant.runs_here(), "this CPU cannot run the {variant} kernels");
        let layout = match variant {
            Variant::Avx512 | Variant::Avx2 if n.is_multiple_of(lane_width(variant)) => {
                Layout::Lanes(repack_lanes(&data, n, lane_width(variant)), variant)
            }
            Variant::Avx512 => Layout::Ggml(data, Variant::Avx2),
            v => Layout::Ggml(data, v),
        };
        Ok(Self { n, k, layout })
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k);
        let acts = Activations::quantize(x, self.k);
        match &self.layout {
            #[cfg(target_arch = "x86_64")]
            Layout::Lanes(data, variant) => {
                let group = self.k / BLOCK * lane_block_bytes(lane_width(*variant));
                let w = |g: usize| &data[g * group..(g + 1) * group];
                // SAFETY (all four): `Lanes` is only built with a variant this CPU runs.
                if *variant == Variant::Avx512 {
                    by_lane_group(
                        self.n,
                        &acts,
                        |g, rows| unsafe { avx512::lanes(w(g), rows) },
                        |g, row| unsafe { avx512::lanes(w(g), &[row]) }[0],
                    )
                } else {
                    by_lane_group(
                        self.n,
                        &acts,
                        |g, rows| unsafe { avx2::lanes::<_, false>(w(g), rows) },
                        |g, row| unsafe { avx2::lanes::<_, false>(w(g), &[row]) }[0],
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Lanes5(data) => {
                let group = self.k / BLOCK * lane5_block_bytes(8);
                let w = |g: usize| &data[g * group..(g + 1) * group];
                // SAFETY (both): `Lanes5` is only built for a variant that runs avx2.
                by_lane_group(
                    self.n,
                    &acts,
                    |g, rows| unsafe { avx2::lanes::<_, true>(w(g), rows) },
                    |g, row| unsafe { avx2::lanes::<_, true>(w(g), &[row]) }[0],
                )
            }
            Layout::Ggml(data, variant) => {
                let row_bytes = self.k / BLOCK * BLOCK_BYTES;
                let w = |j: usize| &data[j * row_bytes..(j + 1) * row_bytes];
                match variant {
                    // SAFETY (both): the layout is only built with a variant this CPU runs.
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx2 | Variant::Avx512 => by_column(
                        self.n,
                        &acts,
                        |j, rows| unsafe { avx2::dot_ggml(w(j), rows) },
                        |j, row| unsafe { avx2::dot_ggml(w(j), &[row])[0] },
                    ),
                    _ => by_column(
                        self.n,
                        &acts,
                        |j, rows| rows.map(|row| dot_ggml_scalar(w(j), row)),
                        |j, row| dot_ggml_scalar(w(j), row),
                    ),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Lanes(..) | Layout::Lanes5(..) => unreachable!("the lanes layouts are x86-64 only"),
        }
    }

    /// Weight row `j` dotted with one activation row (each layout's single-row path, for the tests).
    #[cfg(test)]
    fn dot(&self, j: usize, a: Row<'_>) -> f32 {
        let blocks = self.k / BLOCK;
        match &self.layout {
            Layout::Ggml(data, variant) => {
                let w = &data[j * blocks * BLOCK_BYTES..(j + 1) * blocks * BLOCK_BYTES];
                match variant {
                    // SAFETY: the layout is only built with a variant this CPU runs.
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx2 | Variant::Avx512 => unsafe { avx2::dot_ggml(w, &[a])[0] },
                    _ => dot_ggml_scalar(w, a),
                }
            }
            Layout::Lanes(data, variant) => {
                let width = lane_width(*variant);
                let (g, lane) = (j / width, j % width);
                let group = blocks * lane_block_bytes(width);
                let w = &data[g * group..(g + 1) * group];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Lanes` is only built with a variant this CPU runs.
                return unsafe {
                    if *variant == Variant::Avx512 {
                        avx512::lanes(w, &[a])[0][lane]
                    } else {
                        avx2::lanes::<_, false>(w, &[a])[0][lane]
                    }
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("the lanes layout is x86-64 only ({}, {lane})", w.len())
            }
            Layout::Lanes5(data) => {
                let group = blocks * lane5_block_bytes(8);
                let w = &data[j / 8 * group..(j / 8 + 1) * group];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Lanes5` is only built for a variant that runs avx2.
                return unsafe { avx2::lanes::<_, true>(w, &[a])[0][j % 8] };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("the lanes layouts are x86-64 only ({})", w.len())
            }
        }
    }
}

/// The f16 at `b` times `factor`, as f16 bytes (exact for the powers of two it is used with).
fn scaled_f16(b: &[u8], factor: f32) -> [u8; 2] {
    half::f16::from_f32(f16_at(b) * factor).to_le_bytes()
}

/// Repacks ggml Q5_0 blocks (an f16 scale `d`, 32 fifth bits `qh`, then 16 bytes of nibbles paired
/// as Q4_1's) into Q4_1's lanes layout 8 columns wide, with `-16 d` for the min and a fifth vector
/// per block after the nibbles: its byte 4c + j holds, in bit t, the fifth bit of column c's weight
/// 4t + j and in bit 4 + t that of weight 16 + 4t + j (t = 0..4), the weights whose nibbles sit in
/// byte 4c + j of nibble vector t. Each column's block is first written as 24 bytes in Q4_1's order
/// with those 4 plane bytes last; `interleave_lanes` then moves every 4 bytes as Q4_1's.
fn repack_lanes5(data: &[u8], n: usize) -> Vec<u8> {
    const Q5_0_BYTES: usize = 22;
    let mut affine = Vec::with_capacity(data.len() / Q5_0_BYTES * 24);
    for block in data.chunks_exact(Q5_0_BYTES) {
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let bit = |i: usize| ((qh >> i) & 1) as u8;
        affine.extend_from_slice(&block[0..2]);
        affine.extend_from_slice(&scaled_f16(&block[0..2], -16.0));
        affine.extend_from_slice(&block[6..22]);
        for j in 0..4 {
            affine.push((0..4).map(|t| bit(4 * t + j) << t | bit(16 + 4 * t + j) << (4 + t)).sum());
        }
    }
    interleave_lanes(&affine, n, 24, 2, 8, 0)
}

/// Repacks ggml blocks so that `w` columns sit side by side, one per 32-bit vector lane. Per group
/// of `w` columns and per block: the `w` scales (f16), the `w` mins (f16), then for steps t = 0..4 a
/// `4w`-byte vector whose byte 4c + j holds weight 4t + j of column c in its low nibble and weight
/// 16 + 4t + j in its high nibble. `vpdpbusd` (or `maddubs`) against 4 broadcast activation bytes
/// then advances all `w` columns by 4 weights at once, and each block needs one scaling for them all.
fn repack_lanes(data: &[u8], n: usize, w: usize) -> Vec<u8> {
    // Byte 4t + j of a block's nibbles holds weight 4t + j low and 16 + 4t + j high: the layout wants
    // exactly those pairs, so the weights' bytes move as they are.
    interleave_lanes(data, n, BLOCK_BYTES, 2, w, 0)
}

/// The reference: what every SIMD path computes, one value at a time. Also the `portable` variant,
/// whose integer sums the compiler vectorises for the baseline.
pub fn dot_ggml_scalar(w: &[u8], (q, d, s): Row<'_>) -> f32 {
    let mut total = 0f32;
    for (b, wb) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let isum: i32 = (0..BLOCK).map(|j| nibble(wb, j) as i32 * q[b * BLOCK + j] as i32).sum();
        total += f16_at(&wb[0..2]) * d[b] * isum as f32 + f16_at(&wb[2..4]) * s[b];
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Row, BLOCK, BLOCK_BYTES};
    use crate::arch::cpu::quant::x86::hsum256;
    use std::arch::x86_64::*;

    /// ggml's blocks with `maddubs`: unsigned nibbles times signed activations, 32 per block, for
    /// `R` rows at once (each block's nibbles are unpacked once for all of them). Each row goes
    /// through the same operations whatever `R` is, so results do not depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx2 variant.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_ggml<const R: usize>(w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
        let blocks = w.len() / BLOCK_BYTES;
        for (q, d, s) in rows {
            assert!(q.len() >= blocks * BLOCK && d.len() >= blocks && s.len() >= blocks);
        }
        let low_mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offset = [0f32; R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * BLOCK_BYTES);
            // The block's f16 scale and min, converted in one instruction.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((wb as *const i32).read_unaligned()));
            let (d, m) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
            let packed = _mm_loadu_si128(wb.add(4) as *const __m128i);
            // Low nibbles are weights 0..16, high nibbles 16..32.
            let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low_mask);
            for (r, (q, dx, s)) in rows.iter().enumerate() {
                let x = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK) as *const __m256i);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, x), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * dx[b]), acc[r]);
                offset[r] += m * s[b];
            }
        }
        std::array::from_fn(|r| hsum256(acc[r]) + offset[r])
    }

    /// `R` activation rows times one 8-column group: 8 results per row, from the `Lanes` layout (8
    /// wide), or with `FIFTH` the `Lanes5` layout (Q5_0), whose nibbles get their fifth bit from the
    /// plane after them (`repack_lanes5`), shifted one bit further each step. Each row goes through
    /// the same operations whatever `R` is, so results do not depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx2 variant.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn lanes<const R: usize, const FIFTH: bool>(w: &[u8], a: &[Row<'_>; R]) -> [[f32; 8]; R] {
        let block_bytes = if FIFTH { super::lane5_block_bytes(8) } else { super::lane_block_bytes(8) };
        let blocks = w.len() / block_bytes;
        for (q, ad, s) in a {
            assert!(q.len() == blocks * BLOCK && ad.len() == blocks && s.len() == blocks);
        }
        // 16-bit sums hold 16 products of a nibble and an i8 (at most 15 x 127 each: 30,480), but only
        // 8 of five bits (31 x 127: 31,496), so those go on to 32 bits every two steps.
        let steps_per_sum = if FIFTH { 2 } else { 4 };
        let mask = _mm256_set1_epi8(0x0F);
        let fifth = _mm256_set1_epi8(0x10);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offset = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * block_bytes);
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
            let mins = _mm256_cvtph_ps(_mm_loadu_si128(wb.add(16) as *const __m128i));
            let mut plane =
                if FIFTH { _mm256_loadu_si256(wb.add(160) as *const __m256i) } else { _mm256_setzero_si256() };
            let mut lo = [_mm256_setzero_si256(); 4];
            let mut hi = [_mm256_setzero_si256(); 4];
            for t in 0..4 {
                let packed = _mm256_loadu_si256(wb.add(32 + 32 * t) as *const __m256i);
                lo[t] = _mm256_and_si256(packed, mask);
                hi[t] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                if FIFTH {
                    // Bit t of each plane byte is now its bit 0 (lo's fifth bit) and bit 4 + t its
                    // bit 4 (hi's); a 16-bit shift carries bits across bytes only into places masked off.
                    lo[t] = _mm256_or_si256(lo[t], _mm256_and_si256(_mm256_slli_epi16(plane, 4), fifth));
                    hi[t] = _mm256_or_si256(hi[t], _mm256_and_si256(plane, fifth));
                    plane = _mm256_srli_epi16(plane, 1);
                }
            }
            for r in 0..R {
                let q = a[r].0.as_ptr().add(b * BLOCK);
                let mut isum = _mm256_setzero_si256();
                for first in (0..4).step_by(steps_per_sum) {
                    let mut sums = _mm256_setzero_si256();
                    for t in first..first + steps_per_sum {
                        let x_lo = _mm256_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
                        let x_hi = _mm256_set1_epi32((q.add(16 + 4 * t) as *const i32).read_unaligned());
                        sums = _mm256_add_epi16(sums, _mm256_maddubs_epi16(lo[t], x_lo));
                        sums = _mm256_add_epi16(sums, _mm256_maddubs_epi16(hi[t], x_hi));
                    }
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(sums, ones));
                }
                let scale = _mm256_mul_ps(scales, _mm256_set1_ps(a[r].1[b]));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
                offset[r] = _mm256_fmadd_ps(mins, _mm256_set1_ps(a[r].2[b]), offset[r]);
            }
        }
        let mut out = [[0f32; 8]; R];
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], offset[r]));
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
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut offset = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let wb = w.as_ptr().add(b * block_bytes);
            let scales = _mm512_cvtph_ps(_mm256_loadu_si256(wb as *const __m256i));
            let mins = _mm512_cvtph_ps(_mm256_loadu_si256(wb.add(32) as *const __m256i));
            let mut lo = [_mm512_setzero_si512(); 4];
            let mut hi = [_mm512_setzero_si512(); 4];
            for t in 0..4 {
                let packed = _mm512_loadu_si512(wb.add(64 + 64 * t) as *const _);
                lo[t] = _mm512_and_si512(packed, mask);
                hi[t] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
            }
            for r in 0..R {
                let q = a[r].0.as_ptr().add(b * BLOCK);
                let mut isum = _mm512_setzero_si512();
                for t in 0..4 {
                    let x_lo = _mm512_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
                    let x_hi = _mm512_set1_epi32((q.add(16 + 4 * t) as *const i32).read_unaligned());
                    isum = _mm512_dpbusd_epi32(isum, lo[t], x_lo);
                    isum = _mm512_dpbusd_epi32(isum, hi[t], x_hi);
                }
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(a[r].1[b]));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[r]);
                offset[r] = _mm512_fmadd_ps(mins, _mm512_set1_ps(a[r].2[b]), offset[r]);
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
    use crate::arch::cpu::q8_0::Q8_0Matrix;
    use crate::arch::cpu::quant::testing::{self, quantized, random};
    use candle_core::quantized::GgmlDType;

    fn build(data: Vec<u8>, n: usize, k: usize, v: Variant) -> testing::Matmul {
        let q = Q4_1Matrix::for_variant(data, n, k, v).unwrap();
        Box::new(move |x, m| q.matmul(x, m))
    }

    #[test]
    fn every_variant_matches_dense_matmul_of_the_dequantized_weights() {
        testing::every_variant_matches_dense(GgmlDType::Q4_1, &build);
    }

    #[test]
    fn every_variant_equals_the_scalar_reference() {
        // 32 columns: a lanes layout under avx512 and avx2; 8: lanes under avx2, ggml's under avx512;
        // 12: ggml's layout everywhere.
        for variant in Variant::all_here() {
            for (n, k) in [(32, 96), (32, 576), (8, 64), (8, 576), (8, 1536), (12, 576)] {
                let (data, _) = quantized(GgmlDType::Q4_1, n, k);
                let q = Q4_1Matrix::for_variant(data.clone(), n, k, variant).unwrap();
                let acts = Activations::quantize(&random(k, 4), k);
                for j in 0..n {
                    let w = &data[j * k / BLOCK * BLOCK_BYTES..(j + 1) * k / BLOCK * BLOCK_BYTES];
                    let (a, b) = (q.dot(j, acts.row(0)), dot_ggml_scalar(w, acts.row(0)));
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{variant} k={k}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch_in_any_variant() {
        testing::rows_do_not_depend_on_their_batch(GgmlDType::Q4_1, &build);
    }

    /// Q4_0 or Q5_0 as `linear` builds it: Q4_1's lanes where they apply, else Q8_0.
    fn build_affine(format: Format) -> impl Fn(Vec<u8>, usize, usize, Variant) -> testing::Matmul {
        move |data, n, k, v| match Q4_1Matrix::lanes_from(format, &data, n, k, v) {
            Some(q) => {
                let q = q.unwrap();
                Box::new(move |x, m| q.matmul(x, m))
            }
            None => {
                let q = Q8_0Matrix::for_variant(format.exactly_as_q8_0(&data).unwrap(), n, k, v).unwrap();
                Box::new(move |x, m| q.matmul(x, m))
            }
        }
    }

    #[test]
    fn q4_0_and_q5_0_as_q4_1_match_dense_matmul_and_do_not_depend_on_their_batch() {
        for (dtype, format) in [(GgmlDType::Q4_0, Format::Q4_0), (GgmlDType::Q5_0, Format::Q5_0)] {
            testing::every_variant_matches_dense(dtype, &build_affine(format));
            testing::rows_do_not_depend_on_their_batch(dtype, &build_affine(format));
        }
    }

    #[test]
    fn q4_0_and_q5_0_as_q4_1_equal_their_values_as_q8_0() {
        // The same weights through Q8_0's scalar reference: equal up to float rounding. 8 and 32
        // columns take a lanes layout under avx2 and avx512; 12 and the portable variant none.
        for variant in Variant::all_here() {
            for (dtype, format) in [(GgmlDType::Q4_0, Format::Q4_0), (GgmlDType::Q5_0, Format::Q5_0)] {
                for (n, k) in [(32, 96), (8, 576), (8, 1536), (12, 576)] {
                    let (data, _) = quantized(dtype, n, k);
                    let as_q8_0 = format.exactly_as_q8_0(&data).unwrap();
                    let Some(q) = Q4_1Matrix::lanes_from(format, &data, n, k, variant) else {
                        assert!(variant == Variant::Portable || n % 8 != 0, "{variant} {n}: no lanes layout");
                        continue;
                    };
                    let q = q.unwrap();
                    let acts = Activations::quantize(&random(k, 4), k);
                    let row_bytes = k / BLOCK * crate::arch::cpu::q8_0::BLOCK_BYTES;
                    for j in 0..n {
                        let want = crate::arch::cpu::q8_0::dot_ggml_scalar(
                            &as_q8_0[j * row_bytes..(j + 1) * row_bytes],
                            acts.row(0),
                        );
                        let got = q.dot(j, acts.row(0));
                        assert!(
                            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{dtype:?} {variant} k={k}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
