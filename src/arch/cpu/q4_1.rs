//! Q4_1 weights times f32 activations, batched.
//!
//! Why ours: candle 0.11 has no SIMD dot product for Q4_1, so a Q4_1 GGUF ran 25x slower than its
//! Q8_0 conversion, and the conversion reads 1.7x the bytes per token (decode at one or two rows is
//! bound by reading the weights). This kernel keeps the file's 5 bits per weight and uses AVX2:
//! activations are quantized per 32-value block to i8 (`ActBlock`, like ggml's Q8_1), and
//! `maddubs` multiplies the weight nibbles (u8) by them.
//!
//! Batch invariance: a row's result never depends on which other rows share the call. Each (row,
//! column) is reduced over the blocks in the same order whatever `m` is, so a greedy completion gives
//! the same tokens alone or batched.

use super::{parallel_for, SharedOut};

/// ggml's block_q4_1: 32 weights `d * q + m`, q in 0..16, two per byte (low nibbles first).
pub const BLOCK: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// One block of 32 activations as i8 with scale `d`; `s = d * sum(q)` carries the weights' offset term.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct ActBlock {
    q: [i8; BLOCK],
    d: f32,
    s: f32,
}

/// Quantizes one row of activations (length a multiple of 32).
pub fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    for (xs, blk) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in blk.q.iter_mut().zip(xs) {
            *q = (v * inv).round() as i8;
            sum += *q as i32;
        }
        blk.d = d;
        blk.s = d * sum as f32;
    }
}

/// A Q4_1 matrix `[n, k]` (n output features, k inputs), as raw ggml blocks.
pub struct Q4_1Matrix {
    data: Vec<u8>,
    pub n: usize,
    pub k: usize,
}

impl Q4_1Matrix {
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(k % BLOCK == 0, "Q4_1 rows must be whole blocks (k = {k})");
        anyhow::ensure!(data.len() == n * k / BLOCK * BLOCK_BYTES, "Q4_1 data has {} bytes for {n}x{k}", data.len());
        Ok(Self { data, n, k })
    }

    fn row(&self, j: usize) -> &[u8] {
        let len = self.k / BLOCK * BLOCK_BYTES;
        &self.data[j * len..(j + 1) * len]
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let blocks = self.k / BLOCK;
        let mut acts = vec![ActBlock::default(); m * blocks];
        for (row, out) in x.chunks_exact(self.k).zip(acts.chunks_exact_mut(blocks)) {
            quantize_row(row, out);
        }
        // Columns are split across threads; each writes its columns column-major, transposed after.
        let mut col_major = vec![0f32; self.n * m];
        let out = SharedOut::new(&mut col_major);
        parallel_for(self.n, |cols| {
            // SAFETY: column ranges are disjoint, so are their parts of the buffer.
            let out = unsafe { out.part(cols.start * m, cols.len() * m) };
            for (j, out_col) in cols.zip(out.chunks_exact_mut(m)) {
                let w = self.row(j);
                for (r, o) in out_col.iter_mut().enumerate() {
                    *o = dot(w, &acts[r * blocks..(r + 1) * blocks]);
                }
            }
        });
        if m == 1 {
            return col_major;
        }
        let mut y = vec![0f32; m * self.n];
        for (j, col) in col_major.chunks_exact(m).enumerate() {
            for (r, v) in col.iter().enumerate() {
                y[r * self.n + j] = *v;
            }
        }
        y
    }
}

/// One weight row (blocks of 20 bytes) dotted with one quantized activation row.
#[inline]
fn dot(w: &[u8], a: &[ActBlock]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: the cfg guarantees AVX2 and FMA; slices are bounds-checked by the callers' shapes.
        unsafe { dot_avx2(w, a) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        dot_scalar(w, a)
    }
}

fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The reference: same arithmetic as the SIMD path, one value at a time.
pub fn dot_scalar(w: &[u8], a: &[ActBlock]) -> f32 {
    let mut total = 0f32;
    for (wb, ab) in w.chunks_exact(BLOCK_BYTES).zip(a) {
        let (d, m) = (f16_at(&wb[0..2]), f16_at(&wb[2..4]));
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (wb[4 + j] & 0x0F) as i32 * ab.q[j] as i32;
            isum += (wb[4 + j] >> 4) as i32 * ab.q[j + 16] as i32;
        }
        total += d * ab.d * isum as f32 + m * ab.s;
    }
    total
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
#[inline]
unsafe fn dot_avx2(w: &[u8], a: &[ActBlock]) -> f32 {
    use std::arch::x86_64::*;
    let low_mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (wb, ab) in w.chunks_exact(BLOCK_BYTES).zip(a) {
        let (d, m) = (f16_at(&wb[0..2]), f16_at(&wb[2..4]));
        let packed = _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i);
        // Low nibbles are weights 0..16, high nibbles 16..32.
        let nibbles = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        let q = _mm256_and_si256(nibbles, low_mask);
        let x = _mm256_load_si256(ab.q.as_ptr() as *const __m256i);
        let pairs = _mm256_maddubs_epi16(q, x);
        let sums = _mm256_madd_epi16(pairs, ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * ab.d), acc);
        offset += m * ab.s;
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    _mm_cvtss_f32(s1) + offset
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

    fn q4_1(n: usize, k: usize) -> (Q4_1Matrix, Tensor) {
        let w = Tensor::from_vec(random(n * k, 3), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let dense = q.dequantize(&Device::Cpu).unwrap();
        (Q4_1Matrix::new(q.data().unwrap().into_owned(), n, k).unwrap(), dense)
    }

    #[test]
    fn matches_dense_matmul_of_the_dequantized_weights() {
        let (n, k, m) = (200, 96, 3);
        let (q, dense) = q4_1(n, k);
        let x = random(m * k, 9);
        let y = q.matmul(&x, m);
        let want = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap().matmul(&dense.t().unwrap()).unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in y.iter().zip(&want) {
            // Only the activations' 8-bit quantization separates the two.
            assert!((a - b).abs() < 0.02 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn simd_equals_scalar_reference() {
        let (q, _) = q4_1(8, 128);
        let x = random(128, 4);
        let mut acts = vec![ActBlock::default(); 4];
        quantize_row(&x, &mut acts);
        for j in 0..8 {
            let (a, b) = (dot(q.row(j), &acts), dot_scalar(q.row(j), &acts));
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let (q, _) = q4_1(130, 64);
        let x = random(7 * 64, 5);
        let batched = q.matmul(&x, 7);
        for r in 0..7 {
            let alone = q.matmul(&x[r * 64..(r + 1) * 64], 1);
            assert_eq!(&batched[r * 130..(r + 1) * 130], &alone[..], "row {r}");
        }
    }
}
