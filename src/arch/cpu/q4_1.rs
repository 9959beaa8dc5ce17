//! Q4_1 weights times f32 activations, batched.
//!
//! Why ours: candle 0.11 has no SIMD dot product for Q4_1, so a Q4_1 GGUF ran 25x slower than its
//! Q8_0 conversion, and the conversion reads 1.7x the bytes per token. This kernel keeps the file's
//! 5 bits per weight. Activations are quantized per 32-value block to i8 (`Activations`, like ggml's
//! Q8_1); weights are multiplied as unsigned nibbles against them:
//! - with AVX-512 VNNI (this project's machines), weights are repacked at load so that one 64-byte
//!   load holds 128 weights and `vpdpbusd` does 64 multiply-adds per instruction;
//! - elsewhere, ggml's own layout with AVX2 `maddubs` (or the scalar reference).
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
    /// Per row: nibbles in groups of 128 weights (byte i = w[i] | w[i + 64] << 4; a last group of
    /// 64 as byte i = w[i] | w[i + 32] << 4), then per-block f16 scales and mins in their own arrays.
    Vnni { nibbles: Vec<u8>, d: Vec<u16>, m: Vec<u16> },
}

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
    /// `data` holds ggml Q4_1 blocks, row after row.
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(k.is_multiple_of(BLOCK), "Q4_1 rows must be whole blocks (k = {k})");
        anyhow::ensure!(data.len() == n * k / BLOCK * BLOCK_BYTES, "Q4_1 data has {} bytes for {n}x{k}", data.len());
        let layout = if VNNI && k.is_multiple_of(64) { repack(&data, n, k) } else { Layout::Ggml(data) };
        Ok(Self { n, k, layout })
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let acts = Activations::quantize(x, self.k);
        // Columns are split across threads; each thread writes its columns of every row.
        let mut y = vec![0f32; m * self.n];
        let out = SharedOut::new(&mut y);
        parallel_for(self.n, |cols| {
            #[cfg(wick_vnni)]
            if let Layout::Vnni { .. } = self.layout {
                return self.tiles_vnni(cols, &acts, m, out);
            }
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

    /// Weight row `j` in the VNNI layout: nibbles, scales, mins.
    #[cfg(wick_vnni)]
    fn vnni_row(&self, j: usize) -> (&[u8], &[u16], &[u16]) {
        let Layout::Vnni { nibbles, d, m } = &self.layout else { unreachable!("VNNI layout") };
        let blocks = self.k / BLOCK;
        (&nibbles[j * self.k / 2..(j + 1) * self.k / 2], &d[j * blocks..(j + 1) * blocks], &m[j * blocks..(j + 1) * blocks])
    }

    /// Columns `cols` of every row, in tiles of 4 rows x 2 columns: a tile loads and unpacks each
    /// weight block once for 4 rows and each activation block once for 2 columns.
    #[cfg(wick_vnni)]
    fn tiles_vnni(&self, cols: std::ops::Range<usize>, acts: &Activations, m: usize, out: SharedOut<f32>) {
        let write = |r: usize, j: usize, v: f32| {
            // SAFETY: this thread owns columns `cols` of every row; (r, j) is one of them.
            unsafe { out.part(r * self.n + j, 1)[0] = v };
        };
        let mut j = cols.start;
        while j < cols.end {
            let pair = j + 1 < cols.end;
            let mut r = 0;
            while r < m {
                // SAFETY (all calls): the cfg guarantees the instructions; lengths follow from `k`.
                if r + 4 <= m && pair {
                    let rows = [acts.row(r), acts.row(r + 1), acts.row(r + 2), acts.row(r + 3)];
                    let y = unsafe { tile_vnni(&[self.vnni_row(j), self.vnni_row(j + 1)], &rows) };
                    (0..4).for_each(|t| (0..2).for_each(|c| write(r + t, j + c, y[t][c])));
                    r += 4;
                } else if pair {
                    let y = unsafe { tile_vnni(&[self.vnni_row(j), self.vnni_row(j + 1)], &[acts.row(r)]) };
                    (0..2).for_each(|c| write(r, j + c, y[0][c]));
                    r += 1;
                } else {
                    write(r, j, unsafe { tile_vnni(&[self.vnni_row(j)], &[acts.row(r)]) }[0][0]);
                    r += 1;
                }
            }
            j += if pair { 2 } else { 1 };
        }
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
            Layout::Vnni { nibbles, d, m } => {
                let (nib, d, m) = (
                    &nibbles[j * self.k / 2..(j + 1) * self.k / 2],
                    &d[j * blocks..(j + 1) * blocks],
                    &m[j * blocks..(j + 1) * blocks],
                );
                #[cfg(wick_vnni)]
                // SAFETY: the cfg guarantees the instructions; lengths follow from `k`.
                return unsafe { tile_vnni(&[(nib, d, m)], &[a]) }[0][0];
                #[allow(unreachable_code)]
                {
                    let _ = (nib, d, m);
                    unreachable!("the VNNI layout is only built when VNNI is compiled in")
                }
            }
        }
    }
}

fn repack(data: &[u8], n: usize, k: usize) -> Layout {
    let blocks = k / BLOCK;
    let (mut nibbles, mut d, mut m) =
        (Vec::with_capacity(n * k / 2), Vec::with_capacity(n * blocks), Vec::with_capacity(n * blocks));
    for row in data.chunks_exact(blocks * BLOCK_BYTES) {
        let w = |t: usize| nibble(&row[(t / BLOCK) * BLOCK_BYTES..], t % BLOCK);
        let mut base = 0;
        while base < k {
            let half = if k - base >= 128 { 64 } else { 32 };
            for i in 0..half {
                nibbles.push(w(base + i) | (w(base + half + i) << 4));
            }
            base += 2 * half;
        }
        for b in row.chunks_exact(BLOCK_BYTES) {
            d.push(f16_bits(&b[0..2]));
            m.push(f16_bits(&b[2..4]));
        }
    }
    Layout::Vnni { nibbles, d, m }
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

#[cfg(wick_vnni)]
type WeightRow<'a> = (&'a [u8], &'a [u16], &'a [u16]);
#[cfg(wick_vnni)]
type ActRow<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// `R` activation rows times `C` weight rows (VNNI layout). Every (row, column) pair goes through the
/// same operations in the same order whatever `R` and `C` are, so results do not depend on the tile.
#[cfg(wick_vnni)]
#[inline(always)]
unsafe fn tile_vnni<const R: usize, const C: usize>(w: &[WeightRow<'_>; C], a: &[ActRow<'_>; R]) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let k = a[0].0.len();
    for (nib, wd, _) in w {
        assert!(nib.len() * 2 == k && wd.len() * BLOCK == k);
    }
    for (q, ad, _) in a {
        assert!(q.len() == k && ad.len() * BLOCK == k);
    }
    let mask = _mm512_set1_epi8(0x0F);
    // Lanes 0-7 of a dot-product vector belong to the first block of a pair, lanes 8-15 to the second.
    let first_pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let second_pair = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let groups = k / 128;
    for g in 0..groups {
        let mut lo = [_mm512_setzero_si512(); C];
        let mut hi = [_mm512_setzero_si512(); C];
        let mut wlo = [_mm512_setzero_ps(); C];
        let mut whi = [_mm512_setzero_ps(); C];
        for c in 0..C {
            let x = _mm512_loadu_si512(w[c].0.as_ptr().add(64 * g) as *const _);
            lo[c] = _mm512_and_si512(x, mask);
            hi[c] = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
            let dw = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64(w[c].1.as_ptr().add(4 * g) as *const __m128i)));
            wlo[c] = _mm512_permutexvar_ps(first_pair, dw);
            whi[c] = _mm512_permutexvar_ps(second_pair, dw);
        }
        for r in 0..R {
            let a0 = _mm512_loadu_si512(a[r].0.as_ptr().add(128 * g) as *const _);
            let a1 = _mm512_loadu_si512(a[r].0.as_ptr().add(128 * g + 64) as *const _);
            let ad = _mm512_castps128_ps512(_mm_loadu_ps(a[r].1.as_ptr().add(4 * g)));
            let (alo, ahi) = (_mm512_permutexvar_ps(first_pair, ad), _mm512_permutexvar_ps(second_pair, ad));
            for c in 0..C {
                let p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[c], a0);
                let p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[c], a1);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_mul_ps(wlo[c], alo), acc[r][c]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_mul_ps(whi[c], ahi), acc[r][c]);
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = _mm512_reduce_add_ps(acc[r][c]) + tail_and_offsets_vnni(w[c], a[r]);
        }
    }
    out
}

/// The parts of a VNNI dot product outside the 128-weight groups: the last 64 weights when `k` is
/// not a multiple of 128, and the weights' offsets (`m * s` per block).
#[cfg(wick_vnni)]
#[inline(always)]
unsafe fn tail_and_offsets_vnni((nib, wd, wm): WeightRow<'_>, (q, ad, asum): ActRow<'_>) -> f32 {
    use std::arch::x86_64::*;
    let k = q.len();
    let groups = k / 128;
    let mut offsets = _mm_setzero_ps();
    for g in 0..groups {
        let mins = _mm_cvtph_ps(_mm_loadl_epi64(wm.as_ptr().add(4 * g) as *const __m128i));
        offsets = _mm_fmadd_ps(mins, _mm_loadu_ps(asum.as_ptr().add(4 * g)), offsets);
    }
    let mut total = hsum128(offsets);
    if k % 128 == 64 {
        // The last two blocks: 32 bytes, low nibbles one block, high nibbles the other.
        let (b, base) = (4 * groups, 128 * groups);
        let mask = _mm256_set1_epi8(0x0F);
        let x = _mm256_loadu_si256(nib.as_ptr().add(64 * groups) as *const __m256i);
        let a0 = _mm256_loadu_si256(q.as_ptr().add(base) as *const __m256i);
        let a1 = _mm256_loadu_si256(q.as_ptr().add(base + 32) as *const __m256i);
        let p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(x, mask), a0);
        let p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(_mm256_srli_epi16(x, 4), mask), a1);
        let t = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(p1),
            _mm256_set1_ps(f16(wd[b + 1]) * ad[b + 1]),
            _mm256_mul_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(f16(wd[b]) * ad[b])),
        );
        total += hsum256(t) + f16(wm[b]) * asum[b] + f16(wm[b + 1]) * asum[b + 1];
    }
    total
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
        // k = 576 has a 64-weight tail in the VNNI layout; k = 96 is not a multiple of 64 (ggml layout).
        for (n, k, m) in [(200, 576, 3), (70, 96, 2), (33, 128, 5)] {
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
        for k in [64, 576, 1536] {
            let (data, _) = q4_1(8, k);
            let q = Q4_1Matrix::new(data.clone(), 8, k).unwrap();
            let acts = Activations::quantize(&random(k, 4), k);
            for j in 0..8 {
                let w = &data[j * k / BLOCK * BLOCK_BYTES..(j + 1) * k / BLOCK * BLOCK_BYTES];
                let (a, b) = (q.dot(j, acts.row(0)), dot_ggml_scalar(w, acts.row(0)));
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "k={k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let (data, _) = q4_1(130, 576);
        let q = Q4_1Matrix::new(data, 130, 576).unwrap();
        let x = random(7 * 576, 5);
        let batched = q.matmul(&x, 7);
        for r in 0..7 {
            let alone = q.matmul(&x[r * 576..(r + 1) * 576], 1);
            assert_eq!(&batched[r * 130..(r + 1) * 130], &alone[..], "row {r}");
        }
    }
}
