//! The other common ggml types times f32 activations, batched: Q4_0, Q5_0 and the K-quants Q4_K,
//! Q5_K and Q6_K, which a Q4_K_M file mixes (Q5_0 where a row is not a whole 256-weight super-block,
//! as in Gemma 3 270M's 640-wide matrices).
//!
//! Why ours: candle 0.11's kernels for these are SIMD on some types and scalar on others in a
//! baseline build (its Q5_0 ran 3-9x slower than this one, `cargo bench --bench qmatmul`), and they
//! choose their path by the number of rows: its Q6_K gives a row another result batched than alone
//! (batched rows take a repacked tile), and its Q4_K takes AMX tiles from 32 rows on a CPU that has
//! them. Either makes a greedy completion depend on its batch. candle's Q4_K and Q6_K are faster
//! than this kernel on AVX2 (1.6-2.9x, BENCHMARKS.md); a lanes layout like `q4_1`'s is the way to
//! catch up.
//!
//! One kernel for five types. Every type's block is read as sub-blocks of 32 weights that are small
//! signed integers times a scale per half (16 weights) plus an offset per sub-block:
//! `w[i] = scale[i / 16] * q[i] + offset`, `q` in -32..32 (`Sub`). Each type only says how its bytes
//! give that (`Format::decode`); the dot product of a sub-block with a 32-value block of quantized
//! activations (`x = dx * qx`) is then
//! `dx * (scale[0] * sum(q qx over the first half) + scale[1] * ...) + offset * s`,
//! with `s = dx * sum(qx)` from `quant::Activations`, whatever the type. Q4_K and Q5_K put their
//! minimum in the offset, Q4_0, Q5_0 and Q6_K centre `q` instead, and only Q6_K's scales differ
//! between halves.
//!
//! The variants, chosen by `isa`:
//! - `avx2` (and `avx512`, which has no faster form here yet): a column's blocks are decoded in SIMD
//!   once per tile of 4 activation rows, and each sub-block's integer sums take two instructions per
//!   row, `maddubs` and `madd`, as llama.cpp does. A K-quant's activations share one scale per
//!   super-block (`Activations::quantize_shared`, as ggml's Q8_K), so its 8 sub-blocks are summed in
//!   integers, each weighted by its integer scale, before one float multiply;
//! - `portable`: the scalar reference, whose integer sums the compiler vectorises for the baseline.
//!
//! Every path is batch-invariant (see `quant`): a row's sums run through the same operations in the
//! same order whatever the tile.

use super::isa::Variant;
use super::quant::{by_column, f16_at, Activations, Row, BLOCK};
use candle_core::quantized::GgmlDType;

/// A ggml block type this kernel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 32 weights `d * (q - 8)`, q a nibble.
    Q4_0,
    /// 32 weights `d * (q - 16)`, q five bits (a nibble plus one bit of `qh`).
    Q5_0,
    /// 256 weights in 8 sub-blocks `d * sc * q - dmin * m`, q a nibble, sc and m six bits.
    Q4K,
    /// Q4_K with a fifth bit per weight.
    Q5K,
    /// 256 weights in 16 groups of 16 `d * sc * (q - 32)`, q six bits, sc an i8.
    Q6K,
}

/// 32 weights as `scale[i / 16] * q[i] + offset`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sub {
    pub q: [i8; 32],
    pub scale: [f32; 2],
    pub offset: f32,
}

/// The most sub-blocks one block holds (a K-quant super-block of 256 weights).
const MAX_SUBS: usize = 8;

impl Format {
    /// The blocks of a matrix stored in `self`, written as ggml Q8_0 blocks with the same values,
    /// bit for bit: a Q4_0 or Q5_0 block is a half-precision scale over 32 small integers, which
    /// Q8_0's scale and int8s hold exactly. None for the K-quants, whose sub-block scales and offsets
    /// Q8_0 cannot hold.
    ///
    /// Why: `cpu::q8_0`'s lanes layout reads about three times the bytes per second of this kernel's
    /// ggml layout (a decode step of Gemma 3 270M, 2026-12-07), which outweighs Q8_0's 8.5 bits against
    /// Q5_0's 5.5 and Q4_0's 4.5.
    pub fn exactly_as_q8_0(self, blocks: &[u8]) -> Option<Vec<u8>> {
        if !matches!(self, Self::Q4_0 | Self::Q5_0) {
            return None;
        }
        let mut out = Vec::with_capacity(blocks.len() / self.bytes() * 34);
        let mut subs = [Sub::default(); MAX_SUBS];
        for block in blocks.chunks_exact(self.bytes()) {
            self.decode(block, &mut subs);
            out.extend_from_slice(&block[0..2]); // the same f16 scale
            out.extend(subs[0].q.iter().map(|&q| q as u8));
        }
        Some(out)
    }

    /// The format of a ggml type, if this kernel reads it.
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Weights per block.
    pub const fn weights(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q5_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block, as ggml stores it.
    pub const fn bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q5_0 => 22,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Decodes one block (`self.bytes()` bytes) into its `self.weights() / 32` sub-blocks.
    #[inline(always)]
    pub fn decode(self, b: &[u8], out: &mut [Sub; MAX_SUBS]) {
        match self {
            Self::Q4_0 => {
                let d = f16_at(&b[0..2]);
                let qs = &b[2..18];
                let s = &mut out[0];
                for (l, &byte) in qs.iter().enumerate() {
                    s.q[l] = (byte & 0x0F) as i8 - 8;
                    s.q[l + 16] = (byte >> 4) as i8 - 8;
                }
                *s = Sub { scale: [d, d], offset: 0.0, ..*s };
            }
            Self::Q5_0 => {
                let d = f16_at(&b[0..2]);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                let s = &mut out[0];
                for (l, &byte) in qs.iter().enumerate() {
                    let high = (((qh >> l) & 1) << 4) as u8;
                    let high2 = (((qh >> (l + 16)) & 1) << 4) as u8;
                    s.q[l] = ((byte & 0x0F) | high) as i8 - 16;
                    s.q[l + 16] = ((byte >> 4) | high2) as i8 - 16;
                }
                *s = Sub { scale: [d, d], offset: 0.0, ..*s };
            }
            Self::Q4K | Self::Q5K => {
                let (d, dmin) = (f16_at(&b[0..2]), f16_at(&b[2..4]));
                let scales = &b[4..16];
                let (qh, qs) = if self == Self::Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                // Each 32 bytes of `qs` hold two sub-blocks: the low nibbles, then the high ones.
                for (pair, bytes) in qs.chunks_exact(32).enumerate() {
                    for half in 0..2 {
                        let j = 2 * pair + half;
                        let (sc, m) = k_scale_min(scales, j);
                        let s = &mut out[j];
                        for l in 0..32 {
                            let nibble = if half == 0 { bytes[l] & 0x0F } else { bytes[l] >> 4 };
                            let fifth = if qh.is_empty() { 0 } else { ((qh[l] >> j) & 1) << 4 };
                            s.q[l] = (nibble | fifth) as i8;
                        }
                        let scale = d * sc as f32;
                        *s = Sub { scale: [scale, scale], offset: -dmin * m as f32, ..*s };
                    }
                }
            }
            Self::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(&b[208..210]);
                // Two halves of 128 weights; in each, sub-block t (0..4) takes the low (t < 2) or
                // high nibbles of `ql` bytes 32 (t % 2) + l, and bits 2t..2t + 2 of `qh` byte l.
                for h in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
                    for t in 0..4 {
                        let s = &mut out[4 * h + t];
                        for l in 0..32 {
                            let byte = ql[32 * (t % 2) + l];
                            let low = if t < 2 { byte & 0x0F } else { byte >> 4 };
                            let high = ((qh[l] >> (2 * t)) & 3) << 4;
                            s.q[l] = (low | high) as i8 - 32;
                        }
                        let scale = [d * sc[2 * t] as i8 as f32, d * sc[2 * t + 1] as i8 as f32];
                        *s = Sub { scale, offset: 0.0, ..*s };
                    }
                }
            }
        }
    }
}

/// Q4_K's and Q5_K's six-bit scale and minimum of sub-block `j` (0..8), packed in 12 bytes: the
/// first four sub-blocks' in the low six bits of bytes 0..8, the last four's in nibbles of bytes
/// 8..12 with their top two bits in the spare bits of bytes 0..8.
#[inline(always)]
fn k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// A matrix `[n, k]` (n output features, k inputs) of one `Format`, in ggml's layout.
pub struct BlockMatrix {
    pub n: usize,
    pub k: usize,
    format: Format,
    data: Vec<u8>,
    variant: Variant,
}

impl BlockMatrix {
    /// `data` holds ggml blocks, row after row; read by this process's kernel variant.
    pub fn new(data: Vec<u8>, format: Format, n: usize, k: usize) -> anyhow::Result<Self> {
        Self::for_variant(data, format, n, k, super::isa::variant())
    }

    /// Read by the kernels of `variant`, which the CPU must run (the tests go through each).
    pub fn for_variant(data: Vec<u8>, format: Format, n: usize, k: usize, variant: Variant) -> anyhow::Result<Self> {
        let per = format.weights();
        anyhow::ensure!(k.is_multiple_of(per), "{format:?} rows must be whole blocks of {per} (k = {k})");
        let want = n * k / per * format.bytes();
        anyhow::ensure!(data.len() == want, "{format:?} data has {} bytes for {n}x{k} (want {want})", data.len());
        assert!(variant.runs_here(), "this CPU cannot run the {variant} kernels");
        let variant = variant.min(Variant::Avx2);
        Ok(Self { n, k, format, data, variant })
    }

    /// Bytes of the stored weights.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// `y = x W^T` for `x` of shape `[m, k]` (row-major); returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k);
        // One activation scale per block of the format: a K-quant's super-block then sums in integers.
        let acts = Activations::quantize_shared(x, self.k, self.format.weights() / BLOCK);
        let row_bytes = self.k / self.format.weights() * self.format.bytes();
        let w = |j: usize| &self.data[j * row_bytes..(j + 1) * row_bytes];
        let f = self.format;
        match self.variant {
            // SAFETY (both): the matrix is only built with a variant this CPU runs.
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => by_column(
                self.n,
                &acts,
                |j, rows| unsafe { avx2::dot(f, w(j), rows) },
                |j, row| unsafe { avx2::dot(f, w(j), &[row])[0] },
            ),
            _ => by_column(self.n, &acts, |j, rows| dot_scalar(f, w(j), rows), |j, row| dot_scalar(f, w(j), &[row])[0]),
        }
    }
}

/// The reference: what every SIMD path computes, one value at a time. Also the `portable` variant.
pub fn dot_scalar<const R: usize>(f: Format, w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
    let mut subs = [Sub::default(); MAX_SUBS];
    let per_block = f.weights() / BLOCK;
    let mut total = [0f32; R];
    for (b, block) in w.chunks_exact(f.bytes()).enumerate() {
        f.decode(block, &mut subs);
        for (i, sub) in subs[..per_block].iter().enumerate() {
            let a = b * per_block + i;
            for (t, (q, d, s)) in rows.iter().enumerate() {
                let x = &q[a * BLOCK..][..BLOCK];
                let half = |h: usize| -> i32 { (16 * h..16 * h + 16).map(|l| sub.q[l] as i32 * x[l] as i32).sum() };
                let sums = sub.scale[0] * half(0) as f32 + sub.scale[1] * half(1) as f32;
                total[t] += d[a] * sums + sub.offset * s[a];
            }
        }
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{k_scale_min, Format, Row, BLOCK, MAX_SUBS};
    use crate::arch::cpu::quant::x86::hsum256;
    use std::arch::x86_64::*;

    /// A 32-weight block (Q4_0, Q5_0) as this kernel decodes it: weights `d * q[i] + offset`, `q`
    /// unsigned bytes.
    #[derive(Clone, Copy)]
    struct Block32 {
        q: __m256i,
        d: f32,
        offset: f32,
    }

    /// Column `w` (a row of ggml blocks) dotted with `R` activation rows. Each block is decoded once
    /// for all of them, in SIMD. Each row goes through the same operations whatever `R` is, so
    /// results do not depend on the batch.
    ///
    /// # Safety
    /// The CPU must run the avx2 variant.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot<const R: usize>(f: Format, w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
        // The format is matched once per column, not once per block. The decoders are types, not
        // closures: a closure is compiled without this function's target features, and its
        // intrinsics would become calls.
        match f {
            Format::Q4_0 => dot_32::<R, Q4_0>(w, rows),
            Format::Q5_0 => dot_32::<R, Q5_0>(w, rows),
            Format::Q4K => dot_k::<R, false, Q4K>(w, rows),
            Format::Q5K => dot_k::<R, false, Q5K>(w, rows),
            Format::Q6K => dot_k::<R, true, Q6K>(w, rows),
        }
    }

    /// A K-quant super-block as this kernel decodes it: 8 sub-blocks of 32 weights
    /// `d * scale[j][i / 16] * q[j][i] + min[j]`, with integer sub-block scales, as `i16` lanes
    /// lined up with what `maddubs` gives each half (lanes 0..8 the first 16 weights).
    struct Super {
        q: [__m256i; MAX_SUBS],
        scale: [__m256i; MAX_SUBS],
        d: f32,
        min: [f32; MAX_SUBS],
    }

    /// `dot` for a K-quant, whose activations share one scale per super-block
    /// (`Activations::quantize_shared`): a super-block's 8 sub-blocks are summed in integers, each
    /// weighted by its integer scale (`madd`), before one float multiply, as llama.cpp does with
    /// Q8_K. Largest sums: Q5_K's 2 x 31 x 127 per `maddubs` pair, times 2 x 63 per `madd`, times
    /// 8 sub-blocks, well inside an i32.
    #[inline(always)]
    unsafe fn dot_k<const R: usize, const SIGNED: bool, D: Decode<Super>>(w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
        let bytes = D::FORMAT.bytes();
        let subs_total = w.len() / bytes * MAX_SUBS;
        for (q, d, s) in rows {
            assert!(q.len() >= subs_total * BLOCK && d.len() >= subs_total && s.len() >= subs_total);
        }
        let zero = _mm256_setzero_si256();
        let mut sb = Super { q: [zero; MAX_SUBS], scale: [zero; MAX_SUBS], d: 0.0, min: [0.0; MAX_SUBS] };
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offsets = [0f32; R];
        for (b, block) in w.chunks_exact(bytes).enumerate() {
            D::decode(block.as_ptr(), &mut sb);
            let a0 = b * MAX_SUBS;
            for (r, (x, d, s)) in rows.iter().enumerate() {
                let mut isum = _mm256_setzero_si256();
                for j in 0..MAX_SUBS {
                    let mut xv = _mm256_loadu_si256(x.as_ptr().add((a0 + j) * BLOCK) as *const __m256i);
                    let magnitude = if SIGNED {
                        xv = _mm256_sign_epi8(xv, sb.q[j]);
                        _mm256_sign_epi8(sb.q[j], sb.q[j])
                    } else {
                        sb.q[j]
                    };
                    let pairs = _mm256_maddubs_epi16(magnitude, xv);
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, sb.scale[j]));
                    offsets[r] += sb.min[j] * s[a0 + j];
                }
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(sb.d * d[a0]), acc[r]);
            }
        }
        std::array::from_fn(|r| hsum256(acc[r]) + offsets[r])
    }

    /// `dot` for a 32-weight format: its weights, centred by the block's offset rather than in
    /// `q`, are unsigned and multiply the activations directly (`maddubs` takes unsigned times
    /// signed bytes: pair sums of at most 2 x 31 x 127 fit 16 bits).
    #[inline(always)]
    unsafe fn dot_32<const R: usize, D: Decode<Block32>>(w: &[u8], rows: &[Row<'_>; R]) -> [f32; R] {
        let bytes = D::FORMAT.bytes();
        let blocks = w.len() / bytes;
        for (q, d, s) in rows {
            assert!(q.len() >= blocks * BLOCK && d.len() >= blocks && s.len() >= blocks);
        }
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offsets = [0f32; R];
        let mut block = Block32 { q: _mm256_setzero_si256(), d: 0.0, offset: 0.0 };
        for (a, bytes) in w.chunks_exact(bytes).enumerate() {
            D::decode(bytes.as_ptr(), &mut block);
            for (r, (x, d, s)) in rows.iter().enumerate() {
                let x = _mm256_loadu_si256(x.as_ptr().add(a * BLOCK) as *const __m256i);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(block.q, x), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(block.d * d[a]), acc[r]);
                offsets[r] += block.offset * s[a];
            }
        }
        std::array::from_fn(|r| hsum256(acc[r]) + offsets[r])
    }

    #[inline(always)]
    unsafe fn f16(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32)))
    }

    /// 16 bytes of nibbles as 32 bytes: the low nibbles first (weights 0..16), then the high ones.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p as *const __m128i);
        let low = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), low), _mm_and_si128(v, low))
    }

    /// Byte `l` of the result is 0x10 where bit `l` of the 32 bits `bits` is set, else 0.
    #[inline(always)]
    unsafe fn bits_as_16s(bits: u32) -> __m256i {
        // Byte l takes the byte of `bits` that holds bit l, then tests that bit.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10))
    }

    /// How one format's block becomes what a dot product reads (`Out`).
    trait Decode<Out> {
        const FORMAT: Format;
        /// # Safety
        /// `b` points at a whole block; the CPU runs the avx2 variant.
        unsafe fn decode(b: *const u8, out: &mut Out);
    }

    struct Q4_0;
    struct Q5_0;
    struct Q4K;
    struct Q5K;
    struct Q6K;

    impl Decode<Block32> for Q4_0 {
        const FORMAT: Format = Format::Q4_0;
        #[inline(always)]
        unsafe fn decode(b: *const u8, out: &mut Block32) {
            let d = f16(b);
            *out = Block32 { q: nibbles(b.add(2)), d, offset: -8.0 * d };
        }
    }

    impl Decode<Block32> for Q5_0 {
        const FORMAT: Format = Format::Q5_0;
        #[inline(always)]
        unsafe fn decode(b: *const u8, out: &mut Block32) {
            let d = f16(b);
            let high = bits_as_16s((b.add(2) as *const u32).read_unaligned());
            *out = Block32 { q: _mm256_or_si256(nibbles(b.add(6)), high), d, offset: -16.0 * d };
        }
    }

    impl Decode<Super> for Q4K {
        const FORMAT: Format = Format::Q4K;
        #[inline(always)]
        unsafe fn decode(b: *const u8, out: &mut Super) {
            q45_k(b, out, false)
        }
    }

    impl Decode<Super> for Q5K {
        const FORMAT: Format = Format::Q5K;
        #[inline(always)]
        unsafe fn decode(b: *const u8, out: &mut Super) {
            q45_k(b, out, true)
        }
    }

    impl Decode<Super> for Q6K {
        const FORMAT: Format = Format::Q6K;
        #[inline(always)]
        unsafe fn decode(b: *const u8, out: &mut Super) {
            q6_k(b, out)
        }
    }

    #[inline(always)]
    unsafe fn q45_k(b: *const u8, out: &mut Super, fifth: bool) {
        let dmin = f16(b.add(2));
        out.d = f16(b);
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let qh = _mm256_loadu_si256(b.add(16) as *const __m256i);
        let qs = b.add(if fifth { 48 } else { 16 });
        let low = _mm256_set1_epi8(0x0F);
        for pair in 0..4 {
            let v = _mm256_loadu_si256(qs.add(32 * pair) as *const __m256i);
            let halves = [_mm256_and_si256(v, low), _mm256_and_si256(_mm256_srli_epi16(v, 4), low)];
            for (half, mut q) in halves.into_iter().enumerate() {
                let j = 2 * pair + half;
                if fifth {
                    let bit = _mm256_set1_epi8((1u8 << j) as i8);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                    q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
                }
                let (sc, m) = k_scale_min(scales, j);
                out.q[j] = q;
                out.scale[j] = _mm256_set1_epi16(sc as i16);
                out.min[j] = -dmin * m as f32;
            }
        }
    }

    #[inline(always)]
    unsafe fn q6_k(b: *const u8, out: &mut Super) {
        out.d = f16(b.add(208));
        let (low, two_bits, centre) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
        for h in 0..2 {
            let ql = [
                _mm256_loadu_si256(b.add(64 * h) as *const __m256i),
                _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i),
            ];
            let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
            let sc = b.add(192 + 8 * h) as *const i8;
            // As `Format::decode` says: sub-block t takes the low (t < 2) or high nibbles of `ql`
            // vector t % 2, and bits 2t..2t + 2 of `qh`.
            let nibble = [
                _mm256_and_si256(ql[0], low),
                _mm256_and_si256(ql[1], low),
                _mm256_and_si256(_mm256_srli_epi16(ql[0], 4), low),
                _mm256_and_si256(_mm256_srli_epi16(ql[1], 4), low),
            ];
            let high = [
                _mm256_and_si256(qh, two_bits),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits),
                _mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits),
                _mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits),
            ];
            for t in 0..4 {
                let j = 4 * h + t;
                out.q[j] = _mm256_sub_epi8(_mm256_or_si256(nibble[t], _mm256_slli_epi16(high[t], 4)), centre);
                let (s0, s1) = (*sc.add(2 * t) as i16, *sc.add(2 * t + 1) as i16);
                out.scale[j] = _mm256_setr_m128i(_mm_set1_epi16(s0), _mm_set1_epi16(s1));
                out.min[j] = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::cpu::quant::testing::{self, quantized, random};

    const ALL: [GgmlDType; 5] = [GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

    fn build(dtype: GgmlDType) -> Box<testing::Build> {
        Box::new(move |data, n, k, v| {
            let q = BlockMatrix::for_variant(data, Format::of(dtype).unwrap(), n, k, v).unwrap();
            Box::new(move |x, m| q.matmul(x, m))
        })
    }

    /// Each format's decoding gives ggml's own dequantization (candle's copy of it), exactly.
    #[test]
    fn decoding_equals_ggml_dequantization() {
        for dtype in ALL {
            let f = Format::of(dtype).unwrap();
            let (data, dense) = quantized(dtype, 4, 512);
            let dense: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();
            let mut subs = [Sub::default(); MAX_SUBS];
            let mut got = Vec::new();
            for block in data.chunks_exact(f.bytes()) {
                f.decode(block, &mut subs);
                for sub in &subs[..f.weights() / BLOCK] {
                    got.extend((0..32).map(|i| sub.scale[i / 16] * sub.q[i] as f32 + sub.offset));
                }
            }
            assert_eq!(got.len(), dense.len());
            for (i, (a, b)) in got.iter().zip(&dense).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{dtype:?} weight {i}: {a} vs {b}");
            }
        }
    }

    /// Q4_0 and Q5_0 written as Q8_0 dequantize to the same values, to the bit; K-quants are not.
    #[test]
    fn small_block_formats_are_exactly_q8_0() {
        for dtype in ALL {
            let f = Format::of(dtype).unwrap();
            let (data, dense) = quantized(dtype, 4, 512);
            let Some(q8_0) = f.exactly_as_q8_0(&data) else {
                assert_eq!(f.weights(), 256, "{dtype:?}");
                continue;
            };
            let dense: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f32> = q8_0
                .chunks_exact(34)
                .flat_map(|b| {
                    let d = f16_at(&b[0..2]);
                    b[2..].iter().map(move |&q| d * q as i8 as f32)
                })
                .collect();
            assert_eq!(got, dense, "{dtype:?}");
        }
    }

    #[test]
    fn every_variant_matches_dense_matmul_of_the_dequantized_weights() {
        for dtype in ALL {
            // The shared test's shapes have k = 576 and 96, not whole super-blocks.
            if Format::of(dtype).unwrap().weights() == 32 {
                testing::every_variant_matches_dense(dtype, &*build(dtype));
            }
            for variant in Variant::all_here() {
                for (n, k, m) in [(40, 512, 6), (9, 768, 3), (3, 256, 1)] {
                    let (data, dense) = quantized(dtype, n, k);
                    let x = random(m * k, 9);
                    let y = build(dtype)(data, n, k, variant)(&x, m);
                    let want = testing::dense_matmul(&x, m, k, &dense);
                    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for (a, b) in y.iter().zip(&want) {
                        assert!((a - b).abs() < 0.02 * scale, "{dtype:?} {variant} k={k}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_variant_equals_the_scalar_reference() {
        for dtype in ALL {
            let f = Format::of(dtype).unwrap();
            for variant in Variant::all_here() {
                let (n, k) = (12, 1024);
                let (data, _) = quantized(dtype, n, k);
                let q = BlockMatrix::for_variant(data.clone(), f, n, k, variant).unwrap();
                let x = random(k, 4);
                let acts = Activations::quantize_shared(&x, k, f.weights() / BLOCK);
                let row_bytes = k / f.weights() * f.bytes();
                for (j, a) in q.matmul(&x, 1).iter().enumerate() {
                    let b = dot_scalar(f, &data[j * row_bytes..(j + 1) * row_bytes], &[acts.row(0)])[0];
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{dtype:?} {variant} col {j}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch_in_any_variant() {
        for dtype in ALL {
            for variant in Variant::all_here() {
                let (n, k) = (20, 512);
                let (data, _) = quantized(dtype, n, k);
                let matmul = build(dtype)(data, n, k, variant);
                let x = random(7 * k, 5);
                let batched = matmul(&x, 7);
                for r in 0..7 {
                    let alone = matmul(&x[r * k..(r + 1) * k], 1);
                    assert_eq!(&batched[r * n..(r + 1) * n], &alone[..], "{dtype:?} {variant} row {r}");
                }
            }
        }
    }
}
