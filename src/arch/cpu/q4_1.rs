//! Q4_1 weights times f32 activations, batched.
//!
//! Why ours: candle 0.11 has no SIMD dot product for Q4_1, so a Q4_1 GGUF ran 25x slower than its
//! Q8_0 conversion, and the conversion reads 1.7x the bytes per token. This kernel keeps the file's
//! 5 bits per weight. Activations are quantized per 32-value block to i8 (`Activations`, like ggml's
//! Q8_1); weights are multiplied as unsigned nibbles against them:
//! - with AVX-512 VNNI (this project's machines), weights are repacked at load so that 16 columns sit
//!   side by side, one per vector lane (`repack_lanes`): `vpdpbusd` advances 16 columns by 4 weights
//!   per instruction, a block's integer sum needs one scaling for all 16 columns, and each unpacked
//!   weight block serves 4 activation rows;
//! - elsewhere (or when the column count is not a multiple of 16), ggml's own layout with AVX2
//!   `maddubs`, or the scalar reference.
//!
//! Batch invariance: a row's result never depends on which other rows share the call. Each (row,
//! column) is reduced over the blocks in the same order whatever `m` is, so a greedy completion gives
//! the same tokens alone or batched.

use super::{parallel_for, SharedOut};

/// ggml's block_q4_1: 32 weights `d * q + m`, q in 0..16, two per byte (low nibbles first), f16 d and m.
pub const BLOCK: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// Whether this build runs the VNNI kernel (decided at compile time by the target features, build.rs).
pub const VNNI: bool = cfg!(wick_vnni);

/// Rows of activations quantized per block: `x ~= d * q`, and `s = d * sum(q)` for the weights' offset.
pub struct Activations {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    k: usize,
}

impl Activations {
    pub fn quantize(x: &[f32], k: usize) -> Self {
        let blocks = x.len() / BLOCK;
        let mut a = Self { q: vec![0; x.len()], d: vec![0.0; blocks], s: vec![0.0; blocks], k };
        let (q, d, s) = (SharedOut::new(&mut a.q), SharedOut::new(&mut a.d), SharedOut::new(&mut a.s));
        parallel_for(blocks, |range| {
            // SAFETY: block ranges are disjoint, so are their parts of the three buffers.
            let (qs, ds, ss) = unsafe {
                (
                    q.part(range.start * BLOCK, range.len() * BLOCK),
                    d.part(range.start, range.len()),
                    s.part(range.start, range.len()),
                )
            };
            for (b, xs) in x[range.start * BLOCK..range.end * BLOCK].chunks_exact(BLOCK).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let mut sum = 0i32;
                for (q, &v) in qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(xs) {
                    *q = (v * inv).round() as i8;
                    sum += *q as i32;
                }
                ds[b] = scale;
                ss[b] = scale * sum as f32;
            }
        });
        a
    }

    fn row(&self, r: usize) -> (&[i8], &[f32], &[f32]) {
        let blocks = self.k / BLOCK;
        (
            &self.q[r * self.k..(r + 1) * self.k],
            &self.d[r * blocks..(r + 1) * blocks],
            &self.s[r * blocks..(r + 1) * blocks],
        )
    }
}

/// A Q4_1 matrix `[n, k]` (n output features, k inputs).
pub struct Q4_1Matrix {
    pub n: usize,
    pub k: usize,
    layout: Layout,
}

enum Layout {
    /// ggml's blocks, as in the file.
    Ggml(Vec<u8>),
    /// Columns in groups of 16, one per vector lane (see `repack_lanes`).
    Lanes(Vec<u8>),
}

/// Bytes of one block of one 16-column group in the `Lanes` layout: 16 f16 scales, 16 f16 mins, and
/// 4 x 64 bytes of nibbles.
const LANE_BLOCK_BYTES: usize = 32 + 32 + 256;

fn f16_bits(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
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
            Layout::Ggml(b) | Layout::Lanes(b) => b.len(),
        }
    }

    /// `data` holds ggml Q4_1 blocks, row after row.
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(k.is_multiple_of(BLOCK), "Q4_1 rows must be whole blocks (k = {k})");
        anyhow::ensure!(data.len() == n * k / BLOCK * BLOCK_BYTES, "Q4_1 data has {} bytes for {n}x{k}", data.len());
        let layout = if VNNI && n.is_multiple_of(16) { repack_lanes(&data, n, k) } else { Layout::Ggml(data) };
        Ok(Self { n, k, layout })
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let acts = Activations::quantize(x, self.k);
        // Columns are split across threads; each thread writes its columns of every row.
        let mut y = vec![0f32; m * self.n];
        let out = SharedOut::new(&mut y);
        #[cfg(wick_vnni)]
        if let Layout::Lanes(data) = &self.layout {
            let blocks = self.k / BLOCK;
            parallel_for(self.n / 16, |groups| {
                for g in groups {
                    let w = &data[g * blocks * LANE_BLOCK_BYTES..(g + 1) * blocks * LANE_BLOCK_BYTES];
                    let mut r = 0;
                    while r < m {
                        let rows = (m - r).min(4);
                        // SAFETY: the cfg guarantees the instructions; lengths follow from `k`.
                        let y = unsafe {
                            if rows == 4 {
                                lanes_vnni(w, &[acts.row(r), acts.row(r + 1), acts.row(r + 2), acts.row(r + 3)])
                            } else {
                                let mut y = [[0f32; 16]; 4];
                                for (t, lanes) in y.iter_mut().enumerate().take(rows) {
                                    *lanes = lanes_vnni(w, &[acts.row(r + t)])[0];
                                }
                                y
                            }
                        };
                        for (t, lanes) in y.iter().take(rows).enumerate() {
                            // SAFETY: this thread owns column group `g` of every row.
                            unsafe { out.part((r + t) * self.n + 16 * g, 16) }.copy_from_slice(lanes);
                        }
                        r += rows;
                    }
                }
            });
            return y;
        }
        parallel_for(self.n, |cols| {
            for r in 0..m {
                // SAFETY: column ranges are disjoint, so are these parts of each row.
                let out = unsafe { out.part(r * self.n + cols.start, cols.len()) };
                for (j, o) in cols.clone().zip(out.iter_mut()) {
                    *o = self.dot(j, acts.row(r));
                }
            }
        });
        y
    }

    /// Weight row `j` dotted with one activation row.
    #[inline]
    fn dot(&self, j: usize, a: (&[i8], &[f32], &[f32])) -> f32 {
        let blocks = self.k / BLOCK;
        match &self.layout {
            Layout::Ggml(data) => {
                let w = &data[j * blocks * BLOCK_BYTES..(j + 1) * blocks * BLOCK_BYTES];
                #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
                // SAFETY: the cfg guarantees AVX2 and FMA; `w` and `a` hold `blocks` blocks each.
                return unsafe { dot_ggml_avx2(w, a) };
                #[allow(unreachable_code)]
                dot_ggml_scalar(w, a)
            }
            Layout::Lanes(data) => {
                let (g, lane) = (j / 16, j % 16);
                let w = &data[g * blocks * LANE_BLOCK_BYTES..(g + 1) * blocks * LANE_BLOCK_BYTES];
                #[cfg(wick_vnni)]
                // SAFETY: the cfg guarantees the instructions; lengths follow from `k`.
                return unsafe { lanes_vnni(w, &[a]) }[0][lane];
                #[allow(unreachable_code)]
                {
                    let _ = (w, lane);
                    unreachable!("the lanes layout is only built when VNNI is compiled in")
                }
            }
        }
    }
}

/// Repacks ggml blocks so that 16 columns sit side by side, one per 32-bit vector lane. Per group
/// of 16 columns and per block: the 16 scales (f16), the 16 mins (f16), then for steps t = 0..4 a
/// 64-byte vector whose byte 4c + j holds weight 4t + j of column c in its low nibble and weight
/// 16 + 4t + j in its high nibble. `vpdpbusd` against 4 broadcast activation bytes then advances all
/// 16 columns by 4 weights at once, and each block needs one scaling for 16 columns.
fn repack_lanes(data: &[u8], n: usize, k: usize) -> Layout {
    let blocks = k / BLOCK;
    let row_bytes = blocks * BLOCK_BYTES;
    let mut out = Vec::with_capacity(n / 16 * blocks * LANE_BLOCK_BYTES);
    for g in 0..n / 16 {
        for b in 0..blocks {
            let block = |c: usize| &data[(16 * g + c) * row_bytes + b * BLOCK_BYTES..][..BLOCK_BYTES];
            for c in 0..16 {
                out.extend_from_slice(&block(c)[0..2]);
            }
            for c in 0..16 {
                out.extend_from_slice(&block(c)[2..4]);
            }
            for t in 0..4 {
                for c in 0..16 {
                    for j in 0..4 {
                        out.push(nibble(block(c), 4 * t + j) | (nibble(block(c), 16 + 4 * t + j) << 4));
                    }
                }
            }
        }
    }
    Layout::Lanes(out)
}

/// The reference: what every SIMD path computes, one value at a time.
pub fn dot_ggml_scalar(w: &[u8], (q, d, s): (&[i8], &[f32], &[f32])) -> f32 {
    let mut total = 0f32;
    for (b, wb) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let isum: i32 = (0..BLOCK).map(|j| nibble(wb, j) as i32 * q[b * BLOCK + j] as i32).sum();
        total += f16(f16_bits(&wb[0..2])) * d[b] * isum as f32 + f16(f16_bits(&wb[2..4])) * s[b];
    }
    total
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
unsafe fn dot_ggml_avx2(w: &[u8], (q, d, s): (&[i8], &[f32], &[f32])) -> f32 {
    use std::arch::x86_64::*;
    let low_mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (b, wb) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let packed = _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i);
        // Low nibbles are weights 0..16, high nibbles 16..32.
        let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low_mask);
        let x = _mm256_loadu_si256(q.as_ptr().add(b * BLOCK) as *const __m256i);
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, x), ones);
        let scale = f16(f16_bits(&wb[0..2])) * d[b];
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), acc);
        offset += f16(f16_bits(&wb[2..4])) * s[b];
    }
    hsum256(acc) + offset
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline]
unsafe fn hsum128(x: std::arch::x86_64::__m128) -> f32 {
    use std::arch::x86_64::*;
    let s2 = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline]
unsafe fn hsum256(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    hsum128(_mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)))
}

/// `R` activation rows times one 16-column group (`Lanes` layout): 16 results per row. Each row goes
/// through the same operations whatever `R` is, so results do not depend on the batch.
#[cfg(wick_vnni)]
#[inline(always)]
unsafe fn lanes_vnni<const R: usize>(w: &[u8], a: &[(&[i8], &[f32], &[f32]); R]) -> [[f32; 16]; R] {
    use std::arch::x86_64::*;
    let blocks = w.len() / LANE_BLOCK_BYTES;
    for (q, ad, s) in a {
        assert!(q.len() == blocks * BLOCK && ad.len() == blocks && s.len() == blocks);
    }
    let mask = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    let mut offset = [_mm512_setzero_ps(); R];
    for b in 0..blocks {
        let wb = w.as_ptr().add(b * LANE_BLOCK_BYTES);
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn q4_1(n: usize, k: usize) -> (Vec<u8>, Tensor) {
        let w = Tensor::from_vec(random(n * k, 3), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        (q.data().unwrap().into_owned(), q.dequantize(&Device::Cpu).unwrap())
    }

    #[test]
    fn matches_dense_matmul_of_the_dequantized_weights() {
        // Multiples of 16 columns use the lanes layout, the others ggml's.
        for (n, k, m) in [(48, 576, 6), (200, 576, 3), (70, 96, 2), (33, 128, 5)] {
            let (data, dense) = q4_1(n, k);
            let q = Q4_1Matrix::new(data, n, k).unwrap();
            let x = random(m * k, 9);
            let y = q.matmul(&x, m);
            let want = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap().matmul(&dense.t().unwrap()).unwrap();
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in y.iter().zip(&want) {
                // Only the activations' 8-bit quantization separates the two.
                assert!((a - b).abs() < 0.02 * scale, "k={k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_path_equals_the_scalar_reference() {
        // 32 columns: lanes layout; 8 columns: ggml's layout.
        for (n, k) in [(32, 96), (32, 576), (8, 64), (8, 576), (8, 1536)] {
            let (data, _) = q4_1(n, k);
            let q = Q4_1Matrix::new(data.clone(), n, k).unwrap();
            let acts = Activations::quantize(&random(k, 4), k);
            for j in 0..n {
                let w = &data[j * k / BLOCK * BLOCK_BYTES..(j + 1) * k / BLOCK * BLOCK_BYTES];
                let (a, b) = (q.dot(j, acts.row(0)), dot_ggml_scalar(w, acts.row(0)));
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "k={k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        // 144 columns: lanes layout; 130: ggml's. 7 rows: a tile of 4 and 3 single rows.
        for n in [144, 130] {
            let (data, _) = q4_1(n, 576);
            let q = Q4_1Matrix::new(data, n, 576).unwrap();
            let x = random(7 * 576, 5);
            let batched = q.matmul(&x, 7);
            for r in 0..7 {
                let alone = q.matmul(&x[r * 576..(r + 1) * 576], 1);
                assert_eq!(&batched[r * n..(r + 1) * n], &alone[..], "n={n} row {r}");
            }
        }
    }
}
