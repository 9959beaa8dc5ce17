//! Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for `conv1d`'s 3-, 5- and 7-tap convolutions: fewer multiply-adds for the same
//! outputs.
//!
//! A tile of `m` consecutive outputs of a `k`-tap filter reads `m + k - 1` inputs. The direct form
//! spends `m * k` multiply-adds per input channel and output channel on it. Winograd's spends
//! `m + k - 1`: the tile's inputs and the filter are each evaluated at `m + k - 1` points (input and
//! filter transforms), multiplied point by point, and interpolated back (output transform). Over
//! channels the pointwise products become sums: for each point, one 1x1 convolution (a matrix
//! product) over every tile at once, which runs on `conv1d`'s own micro tile with one tap. The
//! transforms are linear, so each costs a pass over the input or the output, not over both channel
//! counts.
//!
//! The points are 0, ±1, ±2, ±1/2 and infinity: 6 outputs per tile for 3 taps and 4 for 5, 2.25x
//! and 2.5x fewer multiply-adds. 7 taps add ±3/2, ten points, for 4 outputs per tile (2.8x fewer;
//! eight points would leave 2 outputs, and twice the transforms per output). A tile's rounding
//! error is then ~1e-6 of its values with eight points and ~4e-6 with ten, well within the voice's
//! parity with onnxruntime (tests/speech_parity.rs).
//!
//! A dilated filter (`dilation` d) is an undilated one over each of the d interleaved subsequences
//! `t mod d`. A tile's inputs are `d` steps apart and consecutive tiles' first inputs `d * m`; the
//! activation pass therefore writes the input split into `d * m` phase rows (`phase(i) = i mod d*m`),
//! in which eight consecutive tiles of a subsequence read eight consecutive floats.
//!
//! Where it pays is `conv1d::winograd_pays`: the transforms cost a few passes over every input and
//! output row, whatever the channels, so it takes many channels for the saved sums to outweigh them.

use super::tile::{Activations, Finish, MicroTile};
use super::{row_stride, Rows, Scratch, OUT_BLOCK};
use crate::arch::cpu::isa::{self, Variant};
use crate::arch::cpu::rowwise::padded_leaky_relu;
use crate::arch::cpu::SharedOut;
use std::ops::Range;

/// The points: seven finite ones and infinity.
/// The finite points, best-conditioned first; a filter uses `points(kernel) - 1` of them.
const FINITE: [f64; 9] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5];

/// How many points a filter of `kernel` taps uses: eight (6 outputs a tile for 3 taps, 4 for 5),
/// and ten for 7 taps, so that its tiles have 4 outputs rather than 2.
fn points(kernel: usize) -> usize {
    if kernel <= 5 {
        8
    } else {
        10
    }
}
/// Tiles per vector in the transforms: eight floats, one AVX2 register.
const LANES: usize = 8;

/// One row of a transform, each coefficient repeated over the lanes.
type Coefficients = Vec<[f32; LANES]>;

/// One convolution's filters in Winograd's form.
pub(super) struct Winograd {
    /// Outputs per tile.
    m: usize,
    /// Points per tile: `m + kernel - 1`.
    points: usize,
    /// The transformed filters, per point a 1x1 convolution packed as `PackedConv` packs a filter of
    /// one tap: `[point][out block][channels][OUT_BLOCK]`.
    packed: Vec<f32>,
    /// The input transform: point `p` of a tile is `sum over s of input[p][s] * tile input s`.
    /// Each coefficient is repeated over a vector's lanes, so the transforms load it as a vector.
    input: Vec<Coefficients>,
    /// The output transform: output `i` of a tile is `sum over p of output[i][p] * product p`.
    output: Vec<Coefficients>,
}

/// The Vandermonde matrix of the points for polynomials of `cols` coefficients: row `p` evaluates
/// one at point `p`; the last row, infinity, takes its leading coefficient.
fn vandermonde(points: usize, cols: usize) -> Vec<Vec<f64>> {
    let mut rows: Vec<Vec<f64>> =
        FINITE[..points - 1].iter().map(|&x| (0..cols).map(|j| x.powi(j as i32)).collect()).collect();
    let mut infinity = vec![0.0; cols];
    infinity[cols - 1] = 1.0;
    rows.push(infinity);
    rows
}

/// The inverse of a square matrix, by Gauss-Jordan elimination with partial pivoting, in f64.
fn inverse(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("rows");
        assert!(a[pivot][col].abs() > 1e-12, "the points are distinct, so the matrix is invertible");
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        a[col].iter_mut().for_each(|v| *v /= p);
        inv[col].iter_mut().for_each(|v| *v /= p);
        for row in 0..n {
            let f = a[row][col];
            if row != col && f != 0.0 {
                for j in 0..n {
                    a[row][j] -= f * a[col][j];
                    inv[row][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

impl Winograd {
    /// `weight` is `[out channels][channels][kernel]`. A linear convolution of a tile's `m` outputs
    /// with the filter, `s = V^-1 ((V_m a) . (V_k g))`, read backwards (its transpose) is the
    /// correlation a convolution layer computes: `y = V_m^T ((V_k g) . (V^-T d))`.
    pub fn new(weight: &[f32], out_channels: usize, channels: usize, kernel: usize) -> Self {
        let points = points(kernel);
        assert!((2..points).contains(&kernel), "{kernel} taps: a tile would have no output");
        let m = points + 1 - kernel;
        let inv = inverse(vandermonde(points, points));
        let input: Vec<Vec<f64>> = (0..points).map(|p| (0..points).map(|s| inv[s][p]).collect()).collect();
        let eval_m = vandermonde(points, m);
        let output: Vec<Vec<f64>> = (0..m).map(|i| (0..points).map(|p| eval_m[p][i]).collect()).collect();
        check_symmetry(&input, &output);
        let repeat = |rows: Vec<Vec<f64>>| {
            rows.into_iter().map(|r| r.into_iter().map(|c| [c as f32; LANES]).collect()).collect()
        };
        let (input, output) = (repeat(input), repeat(output));
        let eval_k = vandermonde(points, kernel);
        let blocks = out_channels.div_ceil(OUT_BLOCK);
        let mut packed = vec![0f32; points * blocks * channels * OUT_BLOCK];
        for o in 0..out_channels {
            let (block, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
            for c in 0..channels {
                let g = &weight[(o * channels + c) * kernel..][..kernel];
                for (p, eval) in eval_k.iter().enumerate() {
                    let u: f64 = eval.iter().zip(g).map(|(&e, &w)| e * f64::from(w)).sum();
                    packed[((p * blocks + block) * channels + c) * OUT_BLOCK + lane] = u as f32;
                }
            }
        }
        Self { m, points, packed, input, output }
    }
}

/// The structure `transform_input` and `transform_output` rely on, which follows from the points
/// (0, pairs ±x, infinity) and is checked here rather than trusted: in the input transform, point
/// -x's row is point x's with the odd inputs negated, a pair's rows read neither the first nor the
/// last input, point 0 reads only even inputs and infinity only odd ones; in the output transform,
/// point -x's coefficient for output `i` is (-1)^i times point x's, and point 0 and infinity add 1
/// to the first and the last output alone.
fn check_symmetry(input: &[Vec<f64>], output: &[Vec<f64>]) {
    let points = input.len();
    let zero = |v: f64| v.abs() < 1e-9;
    let sign = |j: usize| if j.is_multiple_of(2) { 1.0 } else { -1.0 };
    assert!(FINITE[1..points - 1].chunks(2).all(|pair| pair[0] == -pair[1]), "the points come in pairs ±x");
    for (s, (&at_zero, &at_infinity)) in input[0].iter().zip(&input[points - 1]).enumerate() {
        assert!(s.is_multiple_of(2) || zero(at_zero), "point 0 reads input {s}");
        assert!(!s.is_multiple_of(2) || zero(at_infinity), "infinity reads input {s}");
    }
    for a in (1..points - 1).step_by(2) {
        for (s, (&x, &minus_x)) in input[a].iter().zip(&input[a + 1]).enumerate() {
            assert!(zero(minus_x - sign(s) * x), "points {a} and {} are not a pair", a + 1);
            assert!((1..points - 1).contains(&s) || zero(x), "point {a} reads input {s}");
        }
    }
    let last = output.len() - 1;
    for (i, row) in output.iter().enumerate() {
        assert!(zero(row[0] - f64::from(u8::from(i == 0))), "point 0 in output {i}");
        assert!(zero(row[points - 1] - f64::from(u8::from(i == last))), "infinity in output {i}");
        for a in (1..points - 1).step_by(2) {
            assert!(zero(row[a + 1] - sign(i) * row[a]), "points {a} and {} in output {i}", a + 1);
        }
    }
}

/// What one call computes: `conv1d::conv_rows`'s arguments, for the Winograd form.
pub(super) struct Call<'a> {
    pub x: Rows<'a>,
    pub len: usize,
    pub valid: Range<usize>,
    pub slope: f32,
    pub bias: &'a [f32],
    pub dilation: usize,
    pub left: usize,
    pub residual: Option<Rows<'a>>,
    pub micro_tile: MicroTile,
    pub strip: usize,
}

/// Where each step's values live: `classes` subsequences (the dilation), each cut into
/// `class_tiles` tiles of `m` outputs; tile `(r, q)` is number `r * class_tiles + q`. The
/// transforms work on `tiles` per subsequence (the next multiple of `LANES`): a last vector's
/// extra points land on the next subsequence's first tiles, which are written after them, and a
/// last vector's extra outputs are never read. (Padding each subsequence's tiles instead added up
/// to a quarter to the products at a dilation of 12.)
#[derive(Clone)]
struct Layout {
    /// The window's output steps.
    steps: Range<usize>,
    m: usize,
    classes: usize,
    class_tiles: usize,
    tiles: usize,
    /// `classes * m` phase rows per input channel, of `phase_len` floats.
    phases: usize,
    phase_len: usize,
    /// Floats per row of the transformed inputs and of the products: every tile, and then enough
    /// for a whole last strip of the micro tile.
    width: usize,
}

impl Layout {
    fn new(w: &Winograd, steps: Range<usize>, dilation: usize, strip: usize) -> Self {
        let (m, len) = (w.m, steps.len());
        let class_tiles = len.div_ceil(dilation).div_ceil(m);
        let tiles = class_tiles.next_multiple_of(LANES);
        // A vector of tiles from `q` reads phase rows up to `q + (points - 1) / m`.
        let phase_len = tiles + (w.points - 1) / m;
        let width = row_stride((dilation * class_tiles + LANES).next_multiple_of(strip));
        Self { steps, m, classes: dilation, class_tiles, tiles, phases: dilation * m, phase_len, width }
    }

    fn all_tiles(&self) -> usize {
        self.classes * self.class_tiles
    }
}

/// `y = residual + bias + conv(leaky_relu(x) masked to valid)`, as `conv1d::conv_rows` computes
/// it, in Winograd's form, on this thread.
pub(super) fn conv(w: &Winograd, call: &Call, out_channels: usize) -> Vec<f32> {
    let mut y = vec![0f32; out_channels * call.len];
    conv_window(w, call, out_channels, 0..call.len, SharedOut::new(&mut y));
    y
}

/// The output steps `steps` of every output channel, on this thread. (`steps` is the whole output
/// today; a part of it must start at a multiple of `dilation * m` steps.)
fn conv_window(w: &Winograd, call: &Call, out_channels: usize, steps: Range<usize>, out: SharedOut<f32>) {
    let variant = isa::variant();
    let channels = call.x.rows();
    let layout = Layout::new(w, steps.clone(), call.dilation, call.strip);
    let blocks = out_channels.div_ceil(OUT_BLOCK);

    // 1. Per input channel, each tile's points.
    let mut points = Scratch::take(w.points * channels * layout.width);
    let point_rows = SharedOut::new(&mut points);
    with_variant!(variant, w.points, prepare(w, call, &layout, point_rows));

    // 2. Per point, the products: `[out channels][tiles]` = filters x points, a 1x1 convolution.
    let mut products = Scratch::take(w.points * blocks * OUT_BLOCK * layout.width);
    let product_rows = SharedOut::new(&mut products);
    let block_len = channels * OUT_BLOCK;
    let all_tiles = layout.all_tiles();
    for p in 0..w.points {
        let input = Activations {
            act: &points[p * channels * layout.width..][..channels * layout.width],
            width: layout.width,
            channels,
            kernel: 1,
            dilation: 1,
        };
        let filters = &w.packed[p * blocks * block_len..][..blocks * block_len];
        for t0 in (0..all_tiles).step_by(call.strip) {
            let n = call.strip.min(all_tiles - t0);
            for block in 0..blocks {
                let row = (p * blocks + block) * OUT_BLOCK;
                let finish = Finish {
                    dst: product_rows.ptr_at(row * layout.width + t0, (OUT_BLOCK - 1) * layout.width + call.strip),
                    stride: layout.width,
                    bias: [0.0; OUT_BLOCK],
                    residual: None,
                };
                // SAFETY: every product row holds a whole strip from `t0` (`width`).
                unsafe { (call.micro_tile)(&input, &filters[block * block_len..][..block_len], t0, n, finish) };
            }
        }
    }

    // 3. Per output channel: each tile's outputs from its products, plus the residual and bias.
    let products = Products { data: &products, rows: blocks * OUT_BLOCK, width: layout.width };
    with_variant!(variant, w.points, finish(w, call, &layout, out_channels, products, out));
}

/// Runs `f::<FMA, P>(args)` for the variant's instruction set and the filter's points: compiled
/// with AVX2 and FMA for AVX-512 too (the transforms work on eight tiles at a time), with the
/// build's baseline otherwise.
macro_rules! with_variant {
    ($variant:expr, $points:expr, $f:ident($($arg:expr),*)) => {
        match ($variant, $points) {
            // SAFETY: the variant's instruction sets are present (`isa`).
            #[cfg(target_arch = "x86_64")]
            (Variant::Avx512 | Variant::Avx2, 8) => unsafe { x86::$f::<8>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Variant::Avx512 | Variant::Avx2, _) => unsafe { x86::$f::<10>($($arg),*) },
            (_, 8) => $f::<false, 8>($($arg),*),
            _ => $f::<false, 10>($($arg),*),
        }
    };
}
use with_variant;

/// The transforms compiled for AVX2 and FMA, each its own function: inlined together into one,
/// LLVM stopped inlining the small helpers inside them (the transforms ran 1.5x slower).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn prepare<const P: usize>(w: &Winograd, call: &Call, layout: &Layout, out: SharedOut<f32>) {
        super::prepare::<true, P>(w, call, layout, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn finish<const P: usize>(
        w: &Winograd,
        call: &Call,
        layout: &Layout,
        out_channels: usize,
        products: Products,
        out: SharedOut<f32>,
    ) {
        super::finish::<true, P>(w, call, layout, out_channels, products, out)
    }
}

/// `acc + a * b`, fused where the instruction set has it.
#[inline(always)]
fn madd<const FMA: bool>(acc: f32, a: f32, b: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// A vector of tiles' values, one per lane.
type Vector = [f32; LANES];

/// `acc + c * x`, lane by lane.
#[inline(always)]
fn madd_lanes<const FMA: bool>(acc: Vector, c: &Vector, x: &Vector) -> Vector {
    std::array::from_fn(|l| madd::<FMA>(acc[l], c[l], x[l]))
}

#[inline(always)]
fn add_lanes(a: &Vector, b: &Vector) -> Vector {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub_lanes(a: &Vector, b: &Vector) -> Vector {
    std::array::from_fn(|l| a[l] - b[l])
}

/// `sum over s in inputs of row[s] * v[s]`: one half (even or odd `s`) of a row of the input
/// transform.
#[inline(always)]
fn half_row<const FMA: bool, const P: usize>(row: &[Vector], v: &[Vector; P], inputs: Range<usize>) -> Vector {
    let mut acc = [0f32; LANES];
    for s in inputs.step_by(2) {
        acc = madd_lanes::<FMA>(acc, &row[s], &v[s]);
    }
    acc
}

/// The input transform of a vector of tiles (`v`: each tile's `P` inputs) into their `P` points,
/// by the points' symmetry (`Winograd::new` checks it): point -x's row is point x's with the odd
/// inputs' signs flipped, so the even and odd halves of one row give both, and neither reads the
/// first or last input; point 0 reads only the even inputs and infinity only the odd ones. That
/// is 4P multiply-adds and adds for P = 8 where the whole matrix takes P * P, in chains of
/// P / 2, not P.
#[inline(always)]
fn transform_input<const FMA: bool, const P: usize>(rows: &[Coefficients], v: &[Vector; P]) -> [Vector; P] {
    let mut points = [[0f32; LANES]; P];
    points[0] = half_row::<FMA, P>(&rows[0], v, 0..P);
    points[P - 1] = half_row::<FMA, P>(&rows[P - 1], v, 1..P);
    for a in (1..P - 1).step_by(2) {
        let even = half_row::<FMA, P>(&rows[a], v, 2..P - 1);
        let odd = half_row::<FMA, P>(&rows[a], v, 1..P - 1);
        points[a] = add_lanes(&even, &odd);
        points[a + 1] = sub_lanes(&even, &odd);
    }
    points
}

/// The output transform of a vector of tiles' `P` products into their outputs (`outputs`, one per
/// row of `rows`), by the same symmetry: output `i` takes x^i of point x and (-x)^i of point -x,
/// so each pair enters as its sum (even `i`) or difference (odd `i`) times x^i. Point 0 adds only
/// to the first output and infinity only to the last, each with a coefficient of 1.
#[inline(always)]
fn transform_output<const FMA: bool, const P: usize>(rows: &[Coefficients], pr: &[Vector; P], outputs: &mut [Vector]) {
    let mut sums = [[0f32; LANES]; P];
    let mut differences = [[0f32; LANES]; P];
    for a in (1..P - 1).step_by(2) {
        sums[a] = add_lanes(&pr[a], &pr[a + 1]);
        differences[a] = sub_lanes(&pr[a], &pr[a + 1]);
    }
    let last = rows.len() - 1;
    for (i, (row, out)) in rows.iter().zip(outputs).enumerate() {
        let pairs = if i % 2 == 0 { &sums } else { &differences };
        let mut acc = match i {
            0 => pr[0],
            _ if i == last => pr[P - 1],
            _ => [0f32; LANES],
        };
        for a in (1..P - 1).step_by(2) {
            acc = madd_lanes::<FMA>(acc, &row[a], &pairs[a]);
        }
        *out = acc;
    }
}

/// Every input channel into its points (`out`: `[point][channel][tile]`), `P` per tile. Each
/// channel is activated into its phase rows, and tile `(r, q)`'s input `s`, padded step
/// `r + dilation * (m * q + s)`, is read from phase row `r + dilation * (s mod m)`, float
/// `q + s / m`.
#[inline(always)]
fn prepare<const FMA: bool, const P: usize>(w: &Winograd, call: &Call, layout: &Layout, out: SharedOut<f32>) {
    let Layout { m, classes, class_tiles, tiles, phases, phase_len, width, .. } = *layout;
    let point_stride = call.x.rows() * width;
    let mut rows = Scratch::take(phases * phase_len);
    let mut padded = Scratch::take(phases * phase_len);
    // Input `s` of the vector of tiles from float `q0` of phase row `r` is at `q0 + r * phase_len
    // + offsets[s]` (a division each, worked out once, not per vector).
    let offsets: [usize; P] = std::array::from_fn(|s| classes * (s % m) * phase_len + s / m);
    for c in 0..call.x.rows() {
        split_into_phases(&mut rows, &mut padded, call, c, layout);
        for r in 0..classes {
            for q0 in (0..tiles).step_by(LANES) {
                let from = r * phase_len + q0;
                let mut inputs = [[0f32; LANES]; P];
                for (v, &offset) in inputs.iter_mut().zip(&offsets) {
                    v.copy_from_slice(&rows[from + offset..][..LANES]);
                }
                let points = transform_input::<FMA, P>(&w.input, &inputs);
                let dst = out.ptr_at(c * width + r * class_tiles + q0, (P - 1) * point_stride + LANES);
                for (p, v) in points.iter().enumerate() {
                    // SAFETY: `ptr_at` checked the span; point `p` of channel `c` is this item's.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(p * point_stride), LANES) };
                }
            }
        }
    }
}

/// Channel `c`'s activated, masked input into its phase rows: padded step `i` (input step
/// `i - left`) is phase row `i mod phases`, float `i / phases`. `padded` is scratch for the padded
/// row. (Plain loops over `chunks`: an iterator adaptor's closure built outside the AVX2 function
/// was not inlined into it, and a call per float cost more than the transform.)
#[inline(always)]
fn split_into_phases(rows: &mut [f32], padded: &mut [f32], call: &Call, c: usize, layout: &Layout) {
    let Layout { phases, phase_len, .. } = *layout;
    // The window's padded step 0 is input step `first`; it reads the valid steps from there on
    // that its rows hold.
    let first = layout.steps.start as isize - call.left as isize;
    let from = (call.valid.start as isize).max(first);
    let to = (call.valid.end as isize).min(first + padded.len() as isize);
    if from < to {
        let src = call.x.row(c, from as usize..to as usize);
        padded_leaky_relu(padded, (from - first) as usize, src, call.slope);
    } else {
        padded.fill(0.0);
    }
    for (f, row) in rows.chunks_exact_mut(phase_len).enumerate() {
        for (r, step) in row.iter_mut().zip(padded[f..].chunks(phases)) {
            *r = step[0];
        }
    }
}

/// The products of one call, `[point][out channel][tile]`.
#[derive(Clone, Copy)]
struct Products<'a> {
    data: &'a [f32],
    rows: usize,
    width: usize,
}

/// The window's steps of every output channel from its products (`out`: `[out channel][len]`).
/// Tile `(r, q)`'s output `i` is step `r + dilation * (m * q + i)`: each channel's outputs go to
/// phase rows first, in vectors, and then into place with the residual and bias, as
/// `(residual + bias) + sum`.
#[inline(always)]
fn finish<const FMA: bool, const P: usize>(
    w: &Winograd,
    call: &Call,
    layout: &Layout,
    out_channels: usize,
    products: Products,
    out: SharedOut<f32>,
) {
    let Layout { m, classes, class_tiles, tiles, phases, .. } = *layout;
    let steps = layout.steps.clone();
    let mut rows = Scratch::take(phases * tiles);
    let point_stride = products.rows * products.width;
    for o in 0..out_channels {
        let row = &products.data[o * products.width..];
        for r in 0..classes {
            for q0 in (0..tiles).step_by(LANES) {
                let at = r * class_tiles + q0;
                let mut products = [[0f32; LANES]; P];
                for (p, v) in products.iter_mut().enumerate() {
                    v.copy_from_slice(&row[p * point_stride + at..][..LANES]);
                }
                let mut outputs = [[0f32; LANES]; P];
                transform_output::<FMA, P>(&w.output, &products, &mut outputs);
                for (i, v) in outputs[..m].iter().enumerate() {
                    rows[(r + classes * i) * tiles + q0..][..LANES].copy_from_slice(v);
                }
            }
        }
        // SAFETY: these steps of row `o` of the output are this window's alone.
        let dst = unsafe { out.part(o * call.len + steps.start, steps.len()) };
        let bias = call.bias[o];
        // Step `q * phases + f` is float `q` of phase row `f`: the output is written in order and
        // the phase rows read across (strided stores were twice as slow as strided loads).
        match call.residual {
            Some(res) => {
                let res = res.row(o, steps.clone());
                for (q, (d, r)) in dst.chunks_mut(phases).zip(res.chunks(phases)).enumerate() {
                    for (f, (d, &r)) in d.iter_mut().zip(r).enumerate() {
                        *d = (r + bias) + rows[f * tiles + q];
                    }
                }
            }
            None => {
                for (q, d) in dst.chunks_mut(phases).enumerate() {
                    for (f, d) in d.iter_mut().enumerate() {
                        *d = bias + rows[f * tiles + q];
                    }
                }
            }
        }
    }
}
