//! What the quantized matmuls (`q4_1`, `q8_0`) share: activations quantized per block, and the two
//! ways of splitting a matmul over the worker pool.
//!
//! Batch invariance: a row's result never depends on which other rows share the call. Each (row,
//! column) is reduced over the blocks in the same order whatever `m` is, and a tile of several rows
//! runs every row through the same operations as a tile of one, so a greedy completion gives the
//! same tokens alone or batched.

use super::isa::Variant;
use super::{parallel_for, parallel_rows, SharedOut};

/// Weights per block, in every ggml type the kernels take (Q4_1, Q8_0).
pub const BLOCK: usize = 32;

/// Rows of activations quantized per block: `x ~= d * q`, and `s = d * sum(q)`, which turns a
/// weight offset (Q4_1's mins, the +128 that makes Q8_0 unsigned for `vpdpbusd`) into one multiply.
pub struct Activations {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    k: usize,
}

/// One row of `Activations`: its i8 values, per-block scales and per-block scaled sums.
pub type Row<'a> = (&'a [i8], &'a [f32], &'a [f32]);

impl Activations {
    pub fn quantize(x: &[f32], k: usize) -> Self {
        Self::quantize_shared(x, k, 1)
    }

    /// As `quantize`, with one scale shared by each run of `group` blocks (the largest magnitude of
    /// the run sets it), as ggml's Q8_K shares one per 256 values. The layout is the same (a scale
    /// and a sum per block), so every kernel reads it; a kernel for a type whose super-blocks span
    /// the run (the K-quants) can then sum a whole super-block in integers before one multiply.
    pub fn quantize_shared(x: &[f32], k: usize, group: usize) -> Self {
        assert!(k.is_multiple_of(BLOCK * group) && x.len().is_multiple_of(k), "activations are whole groups");
        let blocks = x.len() / BLOCK;
        let mut a = Self { q: vec![0; x.len()], d: vec![0.0; blocks], s: vec![0.0; blocks], k };
        let (q, d, s) = (SharedOut::new(&mut a.q), SharedOut::new(&mut a.d), SharedOut::new(&mut a.s));
        // A 1-stream step's rows are a few dozen blocks: not worth a parallel region.
        let width = BLOCK * group;
        parallel_rows(blocks / group, width, |groups| {
            let range = groups.start * group..groups.end * group;
            // SAFETY: block ranges are disjoint, so are their parts of the three buffers.
            let (qs, ds, ss) = unsafe {
                (
                    q.part(range.start * BLOCK, range.len() * BLOCK),
                    d.part(range.start, range.len()),
                    s.part(range.start, range.len()),
                )
            };
            for (g, run) in x[range.start * BLOCK..range.end * BLOCK].chunks_exact(width).enumerate() {
                let amax = run.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                for (i, xs) in run.chunks_exact(BLOCK).enumerate() {
                    let b = g * group + i;
                    let mut sum = 0i32;
                    for (q, &v) in qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(xs) {
                        *q = (v * inv).round() as i8;
                        sum += *q as i32;
                    }
                    ds[b] = scale;
                    ss[b] = scale * sum as f32;
                }
            }
        });
        a
    }

    /// Rows quantized as TFLite's "hybrid" int8 layers quantize their float inputs: row `r` with
    /// the scale `ranges[r] / 127`, where `ranges[r]` is the largest magnitude of the values that
    /// share its scale (the row itself for a fully-connected layer, a whole sequence for a
    /// convolution): `q = round(x * 127 / range)`, half away from zero, clamped to +-127. A zero
    /// range gives zeros.
    ///
    /// The blocks carry the scale 1, not `range / 127`: against weights of scale 1 a kernel then
    /// sums exact integer products (exact in f32 below 2^24), and the caller applies the scales
    /// once, as TFLite does (`acc * (input scale * weight scale)`), rather than rounding each
    /// block's product on the way.
    pub fn with_row_ranges(x: &[f32], k: usize, ranges: &[f32]) -> Self {
        assert!(k.is_multiple_of(BLOCK) && x.len() == k * ranges.len(), "activations are whole rows");
        let blocks = x.len() / BLOCK;
        let mut a = Self { q: vec![0; x.len()], d: vec![0.0; blocks], s: vec![0.0; blocks], k };
        for (r, &range) in ranges.iter().enumerate() {
            // TFLite's SymmetricQuantizeFloats: the inverse is 127 / range, not 1 / scale, which can
            // differ in the last bit and move a value across a rounding tie.
            let inv = if range > 0.0 { 127.0 / range } else { 0.0 };
            for b in r * k / BLOCK..(r + 1) * k / BLOCK {
                let mut sum = 0i32;
                for (q, &v) in a.q[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(&x[b * BLOCK..(b + 1) * BLOCK]) {
                    *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                    sum += *q as i32;
                }
                a.d[b] = 1.0;
                a.s[b] = sum as f32;
            }
        }
        a
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn rows(&self) -> usize {
        self.q.len() / self.k
    }

    pub fn row(&self, r: usize) -> Row<'_> {
        let blocks = self.k / BLOCK;
        (
            &self.q[r * self.k..(r + 1) * self.k],
            &self.d[r * blocks..(r + 1) * blocks],
            &self.s[r * blocks..(r + 1) * blocks],
        )
    }
}

/// `[m, n]` results, one column at a time (the ggml layouts' kernels): `tile(j, rows)` is weight
/// column `j` dotted with `ROW_TILE` activation rows, `single(j, row)` with one. Whole tiles of rows
/// go through `tile`, so that a column's weights are decoded once for several rows; the rest
/// through `single`. Columns are split across threads; each writes its columns of every row.
pub fn by_column(
    n: usize,
    acts: &Activations,
    tile: impl Fn(usize, &[Row<'_>; ROW_TILE]) -> [f32; ROW_TILE] + Sync,
    single: impl Fn(usize, Row<'_>) -> f32 + Sync,
) -> Vec<f32> {
    let m = acts.rows();
    let mut y = vec![0f32; m * n];
    let out = SharedOut::new(&mut y);
    parallel_for(n, |cols| {
        for j in cols {
            // SAFETY: column ranges are disjoint, so are the values each thread writes.
            let write = |r: usize, v: f32| unsafe { out.part(r * n + j, 1) }[0] = v;
            let mut r = 0;
            while r + ROW_TILE <= m {
                let rows: [Row<'_>; ROW_TILE] = std::array::from_fn(|t| acts.row(r + t));
                for (t, v) in tile(j, &rows).into_iter().enumerate() {
                    write(r + t, v);
                }
                r += ROW_TILE;
            }
            for r in r..m {
                write(r, single(j, acts.row(r)));
            }
        }
    });
    y
}

/// Repacks `n` rows of ggml blocks (`block_bytes` each: `header` f16 fields, then the weights'
/// bytes) into a lanes layout of `w` columns side by side. Per group of `w` columns and per block:
/// each header field of the `w` columns in turn, then for every 4 bytes of weights a `4w`-byte
/// vector whose bytes 4c..4c + 4 are column c's, each XORed with `flip`. The size is unchanged.
/// Every group is written by one worker, so a cold start repacks on all cores.
pub fn interleave_lanes(data: &[u8], n: usize, block_bytes: usize, header: usize, w: usize, flip: u8) -> Vec<u8> {
    assert!(n.is_multiple_of(w) && data.len().is_multiple_of(n));
    let row_bytes = data.len() / n;
    assert!(row_bytes.is_multiple_of(block_bytes));
    let group_bytes = w * row_bytes;
    let mut out = vec![0u8; data.len()];
    let shared = SharedOut::new(&mut out);
    parallel_for(n / w, |groups| {
        for g in groups {
            // SAFETY: each group writes only its own bytes of `out`, which outlives the call.
            let group = unsafe { shared.part(g * group_bytes, group_bytes) };
            for (b, dst) in group.chunks_exact_mut(w * block_bytes).enumerate() {
                let (fields, weights) = dst.split_at_mut(2 * header * w);
                for c in 0..w {
                    let src = &data[(w * g + c) * row_bytes + b * block_bytes..][..block_bytes];
                    for f in 0..header {
                        fields[2 * (f * w + c)..][..2].copy_from_slice(&src[2 * f..][..2]);
                    }
                    for (t, step) in src[2 * header..].chunks_exact(4).enumerate() {
                        for (d, &q) in weights[4 * (t * w + c)..][..4].iter_mut().zip(step) {
                            *d = q ^ flip;
                        }
                    }
                }
            }
        }
    });
    out
}

/// Columns per group of a lanes layout (`by_lane_group`): one per 32-bit lane of the variant's
/// vectors, 16 for AVX-512 and 8 for AVX2.
pub fn lane_width(variant: Variant) -> usize {
    if variant == Variant::Avx512 {
        16
    } else {
        8
    }
}

/// Up to this many activation rows share one pass over a column group's weights.
pub const ROW_TILE: usize = 4;

/// `[m, n]` results, `W` columns at a time (the lanes layouts' kernels: 16 for AVX-512, 8 for
/// AVX2): `tile(g, rows)` gives columns `W*g..W*g+W` for `ROW_TILE` rows, `single(g, row)` for one.
/// Whole tiles of rows go through `tile`, the rest through `single`; groups are split across threads.
pub fn by_lane_group<const W: usize>(
    n: usize,
    acts: &Activations,
    tile: impl Fn(usize, &[Row<'_>; ROW_TILE]) -> [[f32; W]; ROW_TILE] + Sync,
    single: impl Fn(usize, Row<'_>) -> [f32; W] + Sync,
) -> Vec<f32> {
    assert!(n.is_multiple_of(W));
    let m = acts.rows();
    let mut y = vec![0f32; m * n];
    let out = SharedOut::new(&mut y);
    parallel_for(n / W, |groups| {
        for g in groups {
            // SAFETY: this thread owns column group `g` of every row.
            let write = |r: usize, lanes: &[f32; W]| unsafe { out.part(r * n + W * g, W) }.copy_from_slice(lanes);
            let mut r = 0;
            while r + ROW_TILE <= m {
                let rows: [Row<'_>; ROW_TILE] = std::array::from_fn(|t| acts.row(r + t));
                for (t, lanes) in tile(g, &rows).iter().enumerate() {
                    write(r + t, lanes);
                }
                r += ROW_TILE;
            }
            for r in r..m {
                write(r, &single(g, acts.row(r)));
            }
        }
    });
    y
}

pub fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// Horizontal sums for the AVX2 kernels.
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    /// The sum of the eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn hsum256(x: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let s2 = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }
}

/// Test inputs shared by the kernels' tests.
#[cfg(test)]
pub mod testing {
    use crate::arch::cpu::isa::Variant;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `n` deterministic values in [-1, 1): the model tests' `arch::test_values`, doubled.
    pub fn random(n: usize, seed: u32) -> Vec<f32> {
        crate::arch::test_values(seed.into(), n).into_iter().map(|v| 2.0 * v).collect()
    }

    /// A random `[n, k]` matrix in `dtype`: its ggml bytes and its dequantized values.
    pub fn quantized(dtype: GgmlDType, n: usize, k: usize) -> (Vec<u8>, Tensor) {
        let w = Tensor::from_vec(random(n * k, 3), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        (q.data().unwrap().into_owned(), q.dequantize(&Device::Cpu).unwrap())
    }

    /// A kernel's matmul: `[m, k]` activations in, `[m, n]` out.
    pub type Matmul = Box<dyn Fn(&[f32], usize) -> Vec<f32>>;
    /// A kernel under test: a matrix of `[n, k]` ggml bytes packed for a variant, as its matmul.
    pub type Build = dyn Fn(Vec<u8>, usize, usize, Variant) -> Matmul;

    /// Every variant this CPU runs gives what dense f32 gives on the dequantized weights, up to the
    /// activations' 8-bit quantization. Multiples of 16 (8 under avx2) columns take a
    /// lanes layout, the others ggml's.
    pub fn every_variant_matches_dense(dtype: GgmlDType, build: &Build) {
        for variant in Variant::all_here() {
            for (n, k, m) in [(48, 576, 6), (200, 576, 3), (70, 96, 2), (33, 128, 5)] {
                let (data, dense) = quantized(dtype, n, k);
                let x = random(m * k, 9);
                let y = build(data, n, k, variant)(&x, m);
                let want = dense_matmul(&x, m, k, &dense);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in y.iter().zip(&want) {
                    assert!((a - b).abs() < 0.02 * scale, "{dtype:?} {variant} k={k}: {a} vs {b}");
                }
            }
        }
    }

    /// A row's result is the same alone or in a batch of 7 (a tile of 4 and 3 single rows), in every
    /// variant: 144 columns take a lanes layout, 130 ggml's.
    pub fn rows_do_not_depend_on_their_batch(dtype: GgmlDType, build: &Build) {
        for variant in Variant::all_here() {
            for n in [144, 130] {
                let (data, _) = quantized(dtype, n, 576);
                let matmul = build(data, n, 576, variant);
                let x = random(7 * 576, 5);
                let batched = matmul(&x, 7);
                for r in 0..7 {
                    let alone = matmul(&x[r * 576..(r + 1) * 576], 1);
                    assert_eq!(&batched[r * n..(r + 1) * n], &alone[..], "{dtype:?} {variant} n={n} row {r}");
                }
            }
        }
    }

    /// `x W^T` in f32 through candle, from the dequantized weights.
    pub fn dense_matmul(x: &[f32], m: usize, k: usize, dense: &Tensor) -> Vec<f32> {
        let x = Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap();
        x.matmul(&dense.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }
}
