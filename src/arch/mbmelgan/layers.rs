//! The vocoder's layers on our CPU kernels: convolutions after a mirror pad, the residual blocks,
//! and the stages, computed a window of time steps at a time on each thread.

use super::graph::ConvSpec;
use crate::arch::cpu::conv1d::{leaky_conv, leaky_conv_here, PackedConv, Rows};
use crate::arch::cpu::rowwise::tanh_in_place;
use crate::arch::cpu::{parallel_for, window_steps, SharedOut};
use crate::arch::vits::layers::CpuUpsample;
use anyhow::{ensure, Result};
use std::ops::Range;

/// A convolution whose input is padded first (mirrored or with zeros) to keep its length.
pub(super) struct PaddedConv {
    pub conv: PackedConv,
    /// Mirrored steps before and after; (0, 0) where the padding is zeros (`conv`'s own).
    pub reflect: (usize, usize),
    /// Of the leaky ReLU before it; 1 for none.
    pub slope: f32,
}

impl PaddedConv {
    pub fn new(spec: &ConvSpec) -> Result<Self> {
        ensure!(!spec.transposed && spec.snap.is_none(), "operator {}: not a plain convolution", spec.op);
        let span = spec.dilation * (spec.kernel - 1);
        ensure!(
            spec.pad.0 + spec.pad.1 == span,
            "operator {}: padding {:?} does not keep the length (kernel {}, dilation {})",
            spec.op,
            spec.pad,
            spec.kernel,
            spec.dilation
        );
        // The windows below rely on it: a window at a sequence's end holds the steps it mirrors.
        ensure!(!spec.reflect || spec.pad.0 == spec.pad.1, "operator {}: uneven mirror pad {:?}", spec.op, spec.pad);
        let left = if spec.reflect { 0 } else { spec.pad.0 };
        Ok(Self {
            conv: PackedConv::new(&spec.weight, &spec.bias, spec.kernel, spec.dilation, left),
            reflect: if spec.reflect { spec.pad } else { (0, 0) },
            slope: spec.slope.unwrap_or(1.0),
        })
    }

    /// A whole sequence on the pool: `x` `[in][len]` -> `[out][len]`.
    pub fn forward(&self, x: &[f32], len: usize) -> Vec<f32> {
        if self.reflect == (0, 0) {
            return leaky_conv(x, len, len, self.slope, &self.conv, None);
        }
        // Over the padded rows, output t reads steps t .. t + span: the first `len` outputs are the
        // VALID convolution. (The kernel makes as many outputs as it reads steps; the rest are cut.)
        let width = self.reflect.0 + len + self.reflect.1;
        let y = leaky_conv(&reflect_pad(x, len, self.reflect), width, width, self.slope, &self.conv, None);
        y.chunks_exact(width).flat_map(|row| &row[..len]).copied().collect()
    }

    /// The steps `region` of a sequence of `len` steps, `x` `[in][region.len()]`, on the calling
    /// thread -> the outputs it determines (those whose inputs lie in the region or beyond the
    /// sequence's ends, where they mirror), and which steps they are. The outputs are rows of the
    /// returned stride, the valid ones first in each.
    fn forward_window(&self, x: &[f32], region: Range<usize>, len: usize) -> (Vec<f32>, Range<usize>, usize) {
        let (before, after) = self.reflect;
        let out = kept(&region, len, self.reflect);
        let steps = out.start as isize - before as isize..(out.end + after) as isize;
        let width = steps.len();
        let padded = mirrored(x, &region, len, steps);
        let y = leaky_conv_here(Rows::whole(&padded, width), width, 0..width, self.slope, &self.conv, None);
        (y, out, width)
    }
}

/// The outputs a convolution that reaches `before` steps back and `after` ahead determines from
/// the steps `region` of a sequence of `len`: all the way to a sequence end the region touches.
fn kept(region: &Range<usize>, len: usize, (before, after): (usize, usize)) -> Range<usize> {
    let start = if region.start == 0 { 0 } else { region.start + before };
    let end = if region.end == len { len } else { region.end.saturating_sub(after) };
    start..end.max(start)
}

/// Where step `p` of a sequence of `len` steps reads from when its ends are mirrored (REFLECT: the
/// end step itself is not repeated); farther out it reflects again (numpy's "reflect"), and a
/// single step repeats.
fn mirror(p: isize, len: usize) -> usize {
    let period = 2 * len.saturating_sub(1) as isize;
    if period == 0 {
        return 0;
    }
    let m = p.rem_euclid(period);
    (if m < len as isize { m } else { period - m }) as usize
}

/// Rows of `x` (`[channels][len]`) with `before` and `after` steps mirrored about their ends.
pub(super) fn reflect_pad(x: &[f32], len: usize, (before, after): (usize, usize)) -> Vec<f32> {
    mirrored(x, &(0..len), len, -(before as isize)..(len + after) as isize)
}

/// The sequence steps `steps` (which may pass its ends, where they mirror) from `x`, the rows of
/// its steps `region` (`[channels][region.len()]`), which must hold every step they read.
fn mirrored(x: &[f32], region: &Range<usize>, len: usize, steps: Range<isize>) -> Vec<f32> {
    let n = region.len();
    let mut out = Vec::with_capacity(x.len() / n.max(1) * steps.len());
    for row in x.chunks_exact(n) {
        // Inside the region, a copy; the mirrored steps one by one.
        let lo = steps.start.clamp(0, len as isize) as usize;
        let inside = lo..(steps.end.max(0) as usize).clamp(lo, len);
        out.extend((steps.start..inside.start as isize).map(|p| row[mirror(p, len) - region.start]));
        out.extend_from_slice(&row[inside.start - region.start..inside.end - region.start]);
        out.extend((inside.end as isize..steps.end).map(|p| row[mirror(p, len) - region.start]));
    }
    out
}

/// `x = shortcut(x) + pointwise(leaky(dilated(x)))`, `dilated` with its leaky ReLU and mirror pad.
pub(super) struct ResBlock {
    pub shortcut: PackedConv,
    pub dilated: PaddedConv,
    pub pointwise: PackedConv,
    pub slope: f32,
}

impl ResBlock {
    /// `PaddedConv::forward_window` for the block: its output `[channels][kept steps]`, and those
    /// steps.
    fn forward_window(&self, x: &[f32], region: Range<usize>, len: usize) -> (Vec<f32>, Range<usize>) {
        let (h, out, stride) = self.dilated.forward_window(x, region.clone(), len);
        let n = out.len();
        if n == 0 {
            return (vec![], out);
        }
        let x = Rows::window(x, region.len(), out.start - region.start);
        let shortcut = leaky_conv_here(x, n, 0..n, 1.0, &self.shortcut, None);
        let h = Rows::window(&h, stride, 0);
        let y = leaky_conv_here(h, n, 0..n, self.slope, &self.pointwise, Some(Rows::whole(&shortcut, n)));
        (y, out)
    }
}

/// Leaky ReLU, a transposed convolution, residual blocks.
pub(super) struct Stage {
    /// Of the leaky ReLU before the upsampling.
    pub slope: f32,
    pub up: CpuUpsample,
    pub blocks: Vec<ResBlock>,
}

impl Stage {
    /// The stage over one sequence `x` (`[in channels][len]`), then `post` (the last convolution,
    /// and `finish_bands` with its snap) if given, a window of time steps at a time on each thread: the chain of
    /// convolutions then works on a few hundred kilobytes that stay in the core's cache (at the last
    /// stage, the whole sequence is 48 channels of 300 steps per frame, 5.4 MB for a 4.7 s sentence,
    /// and went through memory between every convolution), with Winograd's form of the filters
    /// where it pays. Each window computes its outputs from a margin of upsampled steps on either
    /// side, as many as the blocks (and `post`) reach; where the margin would pass the sequence's
    /// end, the window takes the end and mirrors about it, as the whole sequence does.
    ///
    /// Returns `[out channels][len * stride]`.
    pub fn forward(&self, x: &[f32], in_len: usize, post: Option<(&PaddedConv, Snap)>) -> Vec<f32> {
        let len = in_len * self.up.stride();
        let channels = post.map_or(self.up.out_channels(), |(p, _)| p.conv.out_channels());
        let mut out = vec![0f32; channels * len];
        if len == 0 {
            return out;
        }
        let reaches = self.blocks.iter().map(|b| b.dilated.reflect).chain(post.map(|(p, _)| p.reflect));
        let (before, after) = reaches.fold((0, 0), |(b, a), (rb, ra)| (b + rb, a + ra));
        // Each window recomputes its neighbours' margins (40 steps a side at 300 per frame).
        let window = window_steps(len);
        let shared = SharedOut::new(&mut out);
        parallel_for(len.div_ceil(window), |windows| {
            for w in windows {
                let (t0, t1) = (w * window, ((w + 1) * window).min(len));
                let region = t0.saturating_sub(before)..(t1 + after).min(len);
                let mut y = self.up.forward_range(x, in_len, in_len, self.slope, region.clone());
                let (mut region, mut stride) = (region.clone(), region.len());
                for block in &self.blocks {
                    (y, region) = block.forward_window(&y, region, len);
                    stride = region.len();
                }
                if let Some((post, snap)) = post {
                    (y, region, stride) = post.forward_window(&y, region, len);
                    finish_bands(&mut y, snap);
                }
                debug_assert!(region.start <= t0 && t1 <= region.end, "{region:?} misses {t0}..{t1}");
                for (c, row) in y.chunks_exact(stride).enumerate() {
                    // SAFETY: each window writes only its own steps of each row.
                    let dst = unsafe { shared.part(c * len + t0, t1 - t0) };
                    dst.copy_from_slice(&row[t0 - region.start..t1 - region.start]);
                }
            }
        });
        out
    }
}

/// `(scale, zero point)` of an int8 round trip, if any.
pub(super) type Snap = Option<(f32, i64)>;

/// The sub-bands' last steps: tanh, then the int8 snap if the graph has one.
pub(super) fn finish_bands(x: &mut [f32], snap: Snap) {
    tanh_in_place(x);
    if let Some((scale, zero)) = snap {
        snap_to_int8(x, scale, zero);
    }
}

/// TFLite's QUANTIZE to int8 and DEQUANTIZE back: `q = clamp(round(x / scale) + zero, -128, 127)`
/// (halves away from zero), `x = (q - zero) * scale`.
pub(super) fn snap_to_int8(x: &mut [f32], scale: f32, zero: i64) {
    for v in x {
        let q = ((*v / scale).round() as i64 + zero).clamp(-128, 127);
        *v = (q - zero) as f32 * scale;
    }
}

/// A transposed convolution over a whole sequence, in windows of output steps spread over the pool
/// (`CpuUpsample::forward_range` runs on the calling thread).
pub(super) fn upsample(up: &CpuUpsample, x: &[f32], len: usize, slope: f32) -> Vec<f32> {
    let (channels, out_len) = (up.out_channels(), len * up.stride());
    let mut y = vec![0f32; channels * out_len];
    if out_len == 0 {
        return y;
    }
    let window = window_steps(out_len);
    let shared = SharedOut::new(&mut y);
    parallel_for(out_len.div_ceil(window), |windows| {
        for w in windows {
            let range = w * window..((w + 1) * window).min(out_len);
            let part = up.forward_range(x, len, len, slope, range.clone());
            for (c, row) in part.chunks_exact(range.len()).enumerate() {
                // SAFETY: each window writes only its own steps of each row.
                unsafe { shared.part(c * out_len + range.start, range.len()) }.copy_from_slice(row);
            }
        }
    });
    y
}
