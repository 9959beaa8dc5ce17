//! A dilated 1-D convolution with the activation before it and the residual after it fused in:
//! `y = residual + bias + conv(leaky_relu(x) masked to its valid length)`, HiFi-GAN's resblock step
//! ("same" padding), and with padding on the left only, one phase of its upsampling convolutions.
//!
//! candle's CPU path copies every input into an im2col matrix (kernel x channels x samples) and runs
//! the activation, the mask and the residual add as separate single-threaded passes; at 22,050
//! samples per second of audio that was most of the voice's time (BENCHMARKS.md). Here the input is
//! activated once into a zero-padded buffer, and each thread owns a block of time steps.
//!
//! The arithmetic is in micro tiles, one variant per instruction set (`tile`).

mod tile;
mod winograd;

use super::isa::{self, Variant};
use super::rowwise::padded_leaky_relu;
use super::{parallel_for, SharedOut};
use std::ops::Range;
use std::sync::OnceLock;
use tile::{micro_tile_for, Activations, Finish, MicroTile};
use winograd::Winograd;

/// Time steps per work item handed to a thread.
const TILE: usize = 256;
/// Work items a call is cut into at least (where it has enough output channels), so that both
/// threads stay busy to the end.
const MIN_ITEMS: usize = 8;
/// Output channels whose accumulators are held at once: six rows of two 256-bit vectors are twelve
/// of AVX2's sixteen registers, the shape of the classic AVX2 SGEMM kernel. Against four rows, each
/// loaded input vector feeds 6 multiply-adds instead of 4: the kernel ran 1.2-1.4x faster on Zen 3
/// even with 32 channels padded to 36 (BENCHMARKS.md).
const OUT_BLOCK: usize = 6;
/// Time steps per accumulator row at most, the widest strip of any variant: with `OUT_BLOCK` rows,
/// eighteen 512-bit registers. Every variant's strip divides it.
const MICRO: usize = 48;

/// The weights of one convolution, packed for the kernel once when the model loads.
pub struct PackedConv {
    /// `[out block][channels][kernel][OUT_BLOCK]`, the last block padded with zero channels: the
    /// `OUT_BLOCK` weights one input value meets are adjacent.
    packed: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    dilation: usize,
    /// Zeros before the input: output `t` reads inputs `t - left + j * dilation`. The output is as
    /// long as the input.
    left: usize,
    /// The same filters in Winograd's form, for the shapes where it pays (`winograd_pays`). Built
    /// on the first call that can use it (one thread): many convolutions of these shapes run only
    /// on the pool (the flow's, the text encoder's), and the form holds 1.6-3.3x their weights.
    winograd: Option<OnceLock<Winograd>>,
}

/// Whether Winograd's form is faster than the direct one for a convolution. Its transforms cost a
/// few passes over each input and output row, and what they save grows with the channels summed:
/// at the voice's shapes (one thread, AVX2 on Zen 1, BENCHMARKS.md), 128 channels take 0.55-0.71x
/// the direct time with 3, 5 and 7 taps, 64 channels 0.64-0.89x, and 32 channels 1.0-1.2x.
fn winograd_pays(channels: usize, kernel: usize) -> bool {
    (3..=7).contains(&kernel) && channels >= 64
}

impl PackedConv {
    /// `weight` is `[out channels][channels][kernel]` (PyTorch's layout), `bias` one per output.
    pub fn new(weight: &[f32], bias: &[f32], kernel: usize, dilation: usize, left: usize) -> Self {
        let out_channels = bias.len();
        assert!(kernel > 0 && out_channels > 0);
        let channels = weight.len() / (out_channels * kernel);
        assert_eq!(weight.len(), out_channels * channels * kernel, "weight is not [out][in][kernel]");
        let span = dilation * (kernel - 1);
        assert!(left <= span, "left padding {left} beyond the kernel's span {span}");
        let blocks = out_channels.div_ceil(OUT_BLOCK);
        let mut packed = vec![0f32; blocks * channels * kernel * OUT_BLOCK];
        for o in 0..out_channels {
            let (block, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
            for c in 0..channels {
                for j in 0..kernel {
                    packed[((block * channels + c) * kernel + j) * OUT_BLOCK + lane] =
                        weight[(o * channels + c) * kernel + j];
                }
            }
        }
        let winograd = winograd_pays(channels, kernel).then(OnceLock::new);
        Self { packed, bias: bias.to_vec(), channels, kernel, dilation, left, winograd }
    }

    /// "Same" padding for an odd kernel: output `t` is centred on input `t`.
    pub fn same(weight: &[f32], bias: &[f32], kernel: usize, dilation: usize) -> Self {
        Self::new(weight, bias, kernel, dilation, dilation * (kernel - 1) / 2)
    }

    /// The filters in PyTorch's layout again, `[out channels][channels][kernel]`, from `packed`.
    fn weight(&self) -> Vec<f32> {
        let (channels, kernel) = (self.channels, self.kernel);
        let mut weight = vec![0f32; self.out_channels() * channels * kernel];
        for (o, filters) in weight.chunks_exact_mut(channels * kernel).enumerate() {
            let (block, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
            for (c, taps) in filters.chunks_exact_mut(kernel).enumerate() {
                for (j, w) in taps.iter_mut().enumerate() {
                    *w = self.packed[((block * channels + c) * kernel + j) * OUT_BLOCK + lane];
                }
            }
        }
        weight
    }

    /// Winograd's form of the filters, if it pays for this shape, built on first use.
    fn winograd(&self) -> Option<&Winograd> {
        let cell = self.winograd.as_ref()?;
        Some(cell.get_or_init(|| Winograd::new(&self.weight(), self.out_channels(), self.channels, self.kernel)))
    }

    pub fn out_channels(&self) -> usize {
        self.bias.len()
    }

    pub fn in_channels(&self) -> usize {
        self.channels
    }

    /// The convolution alone (no activation, no residual) over a whole sequence, `x`
    /// `[channels][len]` -> `[out channels][len]`.
    pub fn apply(&self, x: &[f32], len: usize) -> Vec<f32> {
        leaky_conv(x, len, len, 1.0, self, None)
    }

    /// How many steps an output reaches for its inputs, on its farther side.
    pub fn reach(&self) -> usize {
        let span = self.dilation * (self.kernel - 1);
        self.left.max(span - self.left)
    }
}

/// `x`: `[channels][x_len]` row-major, `valid <= x_len`; positions at or after `valid` read as
/// zero (the mask). Returns `residual + bias + conv(leaky_relu(x, slope) * mask)` (no residual:
/// zeros), `[out channels][len]`. A slope of 1 is no activation. Runs on every thread of the pool.
pub fn leaky_conv(
    x: &[f32],
    len: usize,
    valid: usize,
    slope: f32,
    conv: &PackedConv,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    assert!(x.len().is_multiple_of(conv.channels), "x is not [channels][x_len]");
    let x = Rows::whole(x, x.len() / conv.channels);
    let residual = residual.map(|r| Rows::whole(r, len));
    conv_rows(x, len, 0..valid.min(len), slope, conv, residual, Threads::Pool)
}

/// `leaky_conv` on the calling thread alone, for callers that already split their work over the
/// pool, with positions outside `valid` (a window's part inside its sequence) read as zero. The
/// input and the residual are views, so a window of a wider buffer is read in place.
pub fn leaky_conv_here(
    x: Rows,
    len: usize,
    valid: Range<usize>,
    slope: f32,
    conv: &PackedConv,
    residual: Option<Rows>,
) -> Vec<f32> {
    conv_rows(x, len, valid, slope, conv, residual, Threads::Here)
}

/// Rows of a `[channels][stride]` buffer seen from step `start`: step `t` of row `c` is
/// `data[c * stride + start + t]`. A window of a sequence, or of a wider window, without a copy.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    start: usize,
}

impl<'a> Rows<'a> {
    /// `data` is `[rows][len]`, seen whole.
    pub fn whole(data: &'a [f32], len: usize) -> Self {
        Self::window(data, len, 0)
    }

    /// `data` is `[rows][stride]`, seen from step `start` on.
    pub fn window(data: &'a [f32], stride: usize, start: usize) -> Self {
        assert!(stride > 0 && data.len().is_multiple_of(stride), "data is not [rows][{stride}]");
        assert!(start <= stride, "start {start} beyond a row of {stride}");
        Self { data, stride, start }
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.stride
    }

    /// A pointer to step `steps.start` of row `c0`, from which rows `c0..c0 + rows` each hold
    /// `steps` (checked), `stride` apart.
    fn block_ptr(&self, c0: usize, rows: usize, steps: Range<usize>) -> *const f32 {
        assert!(rows > 0 && c0 + rows <= self.rows());
        self.row(c0 + rows - 1, steps.clone());
        self.data[c0 * self.stride + self.start + steps.start..].as_ptr()
    }

    /// Steps `steps` of row `c`.
    pub fn row(&self, c: usize, steps: Range<usize>) -> &'a [f32] {
        assert!(self.start + steps.end <= self.stride, "steps {steps:?} beyond the row");
        &self.data[c * self.stride + self.start..][steps]
    }
}

/// Where a call runs: on every thread of the pool, or on the calling one alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Threads {
    Pool,
    Here,
}

fn conv_rows(
    x: Rows,
    len: usize,
    valid: Range<usize>,
    slope: f32,
    conv: &PackedConv,
    residual: Option<Rows>,
    threads: Threads,
) -> Vec<f32> {
    let PackedConv { ref packed, ref bias, channels, kernel, dilation, left, .. } = *conv;
    assert_eq!(x.rows(), channels, "x is not [channels][..]");
    assert!(valid.end <= len);
    if len == 0 {
        return vec![];
    }
    let out_channels = bias.len();
    if let Some(r) = residual {
        assert_eq!(r.rows(), out_channels, "the residual is not [out channels][..]");
        r.row(0, 0..len); // every row holds `len` steps
    }
    let variant = isa::variant();
    let (micro_tile, strip) = micro_tile_for(variant);
    // Winograd's form only on one thread (the decoder's windows). Cut for the pool's threads, the
    // short inputs that come here (the flow's and the text encoder's few hundred steps) leave
    // partly empty vectors of tiles in each part, and the direct form was as fast (BENCHMARKS.md).
    if let Some(w) = (threads == Threads::Here).then(|| conv.winograd()).flatten() {
        let call = winograd::Call { x, len, valid, slope, bias, dilation, left, residual, micro_tile, strip };
        return winograd::conv(w, &call, out_channels);
    }
    let span = dilation * (kernel - 1);
    // `left` zeros before every row, and after it the rest of the span plus enough for a whole last
    // strip of any variant.
    let width = row_stride(len.next_multiple_of(MICRO) + span);
    let mut act = Scratch::take(channels * width);
    for (c, dst) in act.chunks_exact_mut(width).enumerate() {
        padded_leaky_relu(dst, left + valid.start, x.row(c, valid.clone()), slope);
    }
    let mut y = vec![0f32; out_channels * len];
    let blocks = out_channels.div_ceil(OUT_BLOCK);
    // Work items are (time tile, group of output blocks). Long inputs split by time alone; a short
    // one (the flow's frames) also by output channels, or one thread would do it all.
    let tiles = len.div_ceil(TILE);
    let groups = (MIN_ITEMS.div_ceil(tiles)).clamp(1, blocks);
    let per_group = blocks.div_ceil(groups);
    let job = Job {
        input: Activations { act: &act, width, channels, kernel, dilation },
        packed,
        bias,
        residual,
        out: SharedOut::new(&mut y),
        len,
        groups,
        per_group,
        micro_tile,
        strip,
    };
    let items = |items: Range<usize>| match variant {
        // SAFETY: the chosen variant's instruction sets are present (`isa`).
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 | Variant::Avx2 => unsafe { job.items_avx2(items) },
        _ => job.items(items),
    };
    match threads {
        Threads::Pool => parallel_for(tiles * groups, items),
        Threads::Here => items(0..tiles * groups),
    }
    y
}

/// One call's work items (time tile, group of output blocks), shared by the threads.
struct Job<'a> {
    input: Activations<'a>,
    packed: &'a [f32],
    bias: &'a [f32],
    residual: Option<Rows<'a>>,
    out: SharedOut<f32>,
    len: usize,
    groups: usize,
    per_group: usize,
    micro_tile: MicroTile,
    strip: usize,
}

impl Job<'_> {
    /// Where a strip is cut short, the bias and residual are added after the tile in plain Rust,
    /// which the compiler vectorises for the build's baseline, 128-bit SSE on x86-64; on AVX2 and
    /// AVX-512 CPUs it is compiled again with AVX2. Adds give the same bits at either width.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn items_avx2(&self, items: Range<usize>) {
        self.items(items)
    }

    #[inline(always)]
    fn items(&self, items: Range<usize>) {
        let Job { input, packed, bias, residual, out, len, groups, per_group, micro_tile, strip } = *self;
        let out_channels = bias.len();
        let blocks = out_channels.div_ceil(OUT_BLOCK);
        let block_len = input.channels * input.kernel * OUT_BLOCK;
        let mut acc = [[0f32; MICRO]; OUT_BLOCK];
        for item in items {
            let (tile, group) = (item / groups, item % groups);
            let tile_end = ((tile + 1) * TILE).min(len);
            // A strip of time steps at a time, and in it every block of output channels: the
            // strip's activations (`channels` x a few cache lines) stay in L1 while each block's
            // weights stream through once, in order. Block by block over the whole tile instead
            // read a tile of 128 channels' activations (~130 KB) from L2 once per block, and ran
            // at 57 GFLOP/s against 83 for 64 channels (AVX2, Zen 3: BENCHMARKS.md).
            for t0 in (tile * TILE..tile_end).step_by(strip) {
                let n = strip.min(len - t0);
                for block in group * per_group..((group + 1) * per_group).min(blocks) {
                    let w = &packed[block * block_len..][..block_len];
                    let o0 = block * OUT_BLOCK;
                    if n == strip && o0 + OUT_BLOCK <= out_channels {
                        // A whole strip of whole rows: the tile adds the bias and the residual
                        // and stores to the output itself, from its registers.
                        let finish = Finish {
                            dst: out.ptr_at(o0 * len + t0, (OUT_BLOCK - 1) * len + n),
                            stride: len,
                            bias: bias[o0..o0 + OUT_BLOCK].try_into().expect("a block of biases"),
                            residual: residual.map(|r| (r.block_ptr(o0, OUT_BLOCK, t0..t0 + n), r.stride)),
                        };
                        // SAFETY: rows o0.. of the output and the residual hold `n` steps from
                        // `t0` (`ptr_at`, `block_ptr`), and only this item writes them.
                        unsafe { micro_tile(&input, w, t0, n, finish) };
                        continue;
                    }
                    // The end of a row or of the channels: into `acc`, then the valid part out.
                    // SAFETY: `acc` holds `MICRO` >= strip steps per row.
                    unsafe { micro_tile(&input, w, t0, n, Finish::sums_into(&mut acc)) };
                    for (i, row) in acc.iter().enumerate() {
                        let o = block * OUT_BLOCK + i;
                        if o == out_channels {
                            break;
                        }
                        // SAFETY: each item writes only its own time steps of its own rows.
                        let dst = unsafe { out.part(o * len + t0, n) };
                        match residual {
                            Some(r) => {
                                for ((d, &a), &rv) in dst.iter_mut().zip(row).zip(r.row(o, t0..t0 + n)) {
                                    *d = rv + bias[o] + a;
                                }
                            }
                            None => dst.iter_mut().zip(row).for_each(|(d, &a)| *d = bias[o] + a),
                        }
                    }
                }
            }
        }
    }
}

/// A buffer of floats the thread keeps between calls: the decoder makes six convolutions per
/// window, and a fresh activation buffer each time was zeroed first (`memset`, 2% of the voice's
/// time) and then written again. Its values are stale: every one is written before it is read.
/// Each thread keeps a few (Winograd's form takes three at once).
pub(super) struct Scratch {
    buffer: Vec<f32>,
    len: usize,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer beyond this many floats (4 MiB) is freed after the call instead of kept.
const SCRATCH_KEPT: usize = 1 << 20;
/// Buffers a thread keeps at most.
const SCRATCH_COUNT: usize = 4;

impl Scratch {
    /// `len` floats of unspecified (stale) values: the smallest kept buffer that holds them, else
    /// the largest, grown. A buffer is never shortened, so it is zeroed only where it first grows.
    pub(super) fn take(len: usize) -> Self {
        let mut buffer = SCRATCH.with_borrow_mut(|kept| {
            let fits = (0..kept.len()).filter(|&i| kept[i].len() >= len).min_by_key(|&i| kept[i].len());
            let pick = fits.or_else(|| (0..kept.len()).max_by_key(|&i| kept[i].len()));
            pick.map(|i| kept.swap_remove(i)).unwrap_or_default()
        });
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        Self { buffer, len }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.buffer.len() <= SCRATCH_KEPT {
            let v = std::mem::take(&mut self.buffer);
            SCRATCH.with_borrow_mut(|kept| (kept.len() < SCRATCH_COUNT).then(|| kept.push(v)));
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buffer[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[..self.len]
    }
}

/// Floats from one activation row to the next: at least `floats`, and an odd number of cache
/// lines. A tile reads the same few lines of every row; rows a power-of-two multiple of lines
/// apart fall into a few of the L1 cache's sets and evict each other (128 channels of 514 floats,
/// ~2 KiB apart, ran at half the speed of 530).
fn row_stride(floats: usize) -> usize {
    const LINE: usize = 16;
    let lines = floats.div_ceil(LINE);
    (lines | 1) * LINE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use candle_core::{Device, Tensor};

    /// Against candle's conv1d on the same activated, masked input.
    #[test]
    fn matches_candle_with_masks_dilations_and_ragged_tiles() {
        let dev = Device::Cpu;
        // The last case has too few samples for one tile per thread, so it is cut by output
        // channels, in groups that leave some items empty.
        for (channels, len, valid, kernel, dilation) in
            [(4, 700, 650, 3, 1), (3, 257, 257, 5, 6), (2, 40, 10, 7, 12), (40, 100, 90, 5, 1)]
        {
            let x = values(1, channels * len);
            let w = values(2, channels * channels * kernel);
            let b = values(3, channels);
            let conv = PackedConv::same(&w, &b, kernel, dilation);
            let got = leaky_conv(&x, len, valid, 0.1, &conv, Some(&x));
            let plain = leaky_conv(&x, len, valid, 0.1, &conv, None);
            assert!(got.iter().zip(&plain).zip(&x).all(|((g, p), x)| (g - p - x).abs() < 1e-5));

            let xt = Tensor::from_vec(x.clone(), (1, channels, len), &dev).unwrap();
            let mask: Vec<f32> = (0..len).map(|t| if t < valid { 1.0 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (1, 1, len), &dev).unwrap();
            let act = crate::arch::vits::layers::leaky_relu(&xt, 0.1).unwrap().broadcast_mul(&mask).unwrap();
            let wt = Tensor::from_vec(w, (channels, channels, kernel), &dev).unwrap();
            let conv = act.conv1d(&wt, dilation * (kernel - 1) / 2, 1, dilation, 1).unwrap();
            let bt = Tensor::from_vec(b, (1, channels, 1), &dev).unwrap();
            let want =
                (xt + conv.broadcast_add(&bt).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = crate::max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{channels}x{len} k{kernel} d{dilation}: {diff}");
        }
    }

    /// Winograd's form against the direct one on the same filters: every tap count it takes, with
    /// dilations up to the voice's 12, left-only padding (the upsampling's phases), a window whose
    /// valid steps start after 0, a residual, and lengths that leave ragged last tiles.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        for (channels, out_channels, len, valid, kernel, dilation, left) in [
            (8, 12, 300, 0..300, 3, 1, 1),
            (5, 4, 97, 3..90, 5, 3, 6),
            (6, 8, 211, 10..211, 7, 12, 36),
            (16, 7, 64, 0..64, 5, 1, 4),
            (4, 4, 9, 0..9, 3, 2, 0),
        ] {
            let x = values(1, channels * len);
            let w = values(2, out_channels * channels * kernel);
            let b = values(3, out_channels);
            let residual = values(4, out_channels * len);
            let mut direct = PackedConv::new(&w, &b, kernel, dilation, left);
            direct.winograd = None;
            let mut winograd = PackedConv::new(&w, &b, kernel, dilation, left);
            winograd.winograd = Some(OnceLock::new());
            let run = |conv: &PackedConv| {
                let (x, r) = (Rows::whole(&x, len), Some(Rows::whole(&residual, len)));
                leaky_conv_here(x, len, valid.clone(), 0.2, conv, r)
            };
            let (got, want) = (run(&winograd), run(&direct));
            assert!(winograd.winograd.as_ref().unwrap().get().is_some(), "the one-thread call built the form");
            let diff = crate::max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "{channels}->{out_channels} x{len} k{kernel} d{dilation}: {diff}");
            assert!(want.iter().any(|v| v.abs() > 0.1), "zeros prove nothing");
        }
    }
}
