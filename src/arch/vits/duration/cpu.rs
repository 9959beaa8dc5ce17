//! The duration predictor in reverse on CPU, one sequence at a time in plain vectors.
//!
//! Its convolutions are small (192 channels over a sentence's phonemes) and many: with candle's ops
//! it made ~300 dispatches per sentence, and took 9 ms of a 95-phoneme sentence for a few million
//! multiply-adds (BENCHMARKS.md). One sequence alone needs no masks: every position is real.

use super::{ConvFlow, DdsConv, DurationPredictor, Flow};
use crate::arch::cpu::conv1d::PackedConv;
use crate::arch::cpu::rowwise::gelu_in_place;
use crate::arch::vits::layers::{ChannelNorm, Conv1d, CpuDepthwise, CpuNorm};
use candle_core::Result;

pub(super) struct CpuDurations {
    pre: PackedConv,
    convs: CpuDds,
    proj: PackedConv,
    flows: Vec<CpuFlow>,
}

struct CpuDds {
    sep: Vec<CpuDepthwise>,
    pointwise: Vec<PackedConv>,
    norms_1: Vec<CpuNorm>,
    norms_2: Vec<CpuNorm>,
}

enum CpuFlow {
    /// `(x - m) * scale` per channel, `scale = exp(-logs)`.
    Affine {
        m: Vec<f32>,
        scale: Vec<f32>,
    },
    Conv {
        pre: PackedConv,
        convs: CpuDds,
        proj: PackedConv,
        bins: usize,
        tail_bound: f32,
        knot_scale: f32,
    },
    Flip,
}

impl CpuDds {
    fn new(d: &DdsConv) -> Result<Option<Self>> {
        let sep = d.sep.iter().map(|c| c.depthwise_cpu()).collect::<Result<Option<Vec<_>>>>()?;
        let pointwise = d.pointwise.iter().map(Conv1d::packed).collect::<Result<Option<Vec<_>>>>()?;
        let (Some(sep), Some(pointwise)) = (sep, pointwise) else {
            return Ok(None);
        };
        let norms = |n: &[ChannelNorm]| n.iter().map(|n| n.cpu()).collect::<Result<Vec<_>>>();
        Ok(Some(Self { sep, pointwise, norms_1: norms(&d.norms_1)?, norms_2: norms(&d.norms_2)? }))
    }

    /// `DdsConv::forward` on `x` (`[channels][len]`), in place.
    fn forward(&self, x: &mut [f32], len: usize) {
        for i in 0..self.sep.len() {
            let mut y = self.sep[i].forward(x, len);
            self.norms_1[i].apply(&mut y, len);
            gelu_in_place(&mut y);
            let mut y = self.pointwise[i].apply(&y, len);
            self.norms_2[i].apply(&mut y, len);
            gelu_in_place(&mut y);
            x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        }
    }
}

impl CpuDurations {
    /// `None` on another device.
    pub(super) fn new(dp: &DurationPredictor) -> Result<Option<Self>> {
        let (Some(pre), Some(convs), Some(proj)) = (dp.pre.packed()?, CpuDds::new(&dp.convs)?, dp.proj.packed()?)
        else {
            return Ok(None);
        };
        let mut flows = Vec::new();
        for flow in &dp.reverse_flows {
            flows.push(match flow {
                Flow::Affine { m, logs } => CpuFlow::Affine {
                    m: m.flatten_all()?.to_vec1()?,
                    scale: logs.neg()?.exp()?.flatten_all()?.to_vec1()?,
                },
                Flow::Flip => CpuFlow::Flip,
                Flow::Conv(ConvFlow { pre, convs, proj, filter_channels, bins, tail_bound }) => {
                    let (Some(pre), Some(convs), Some(proj)) = (pre.packed()?, CpuDds::new(convs)?, proj.packed()?)
                    else {
                        return Ok(None);
                    };
                    let knot_scale = 1.0 / (*filter_channels as f32).sqrt();
                    CpuFlow::Conv { pre, convs, proj, bins: *bins, tail_bound: *tail_bound, knot_scale }
                }
            });
        }
        Ok(Some(Self { pre, convs, proj, flows }))
    }

    /// One sequence: `x` is the encoder's hidden states (`[hidden][len]`) followed by the noise
    /// (`[2][len]`). Returns the log-durations, `[len]`.
    pub(super) fn reverse(&self, x: &[f32], len: usize) -> Vec<f32> {
        if len == 0 {
            return vec![];
        }
        let (x, noise) = x.split_at(x.len() - 2 * len);
        let mut g = self.pre.apply(x, len);
        self.convs.forward(&mut g, len);
        let g = self.proj.apply(&g, len);
        let mut z = noise.to_vec();
        for flow in &self.flows {
            match flow {
                CpuFlow::Affine { m, scale } => {
                    for (c, row) in z.chunks_exact_mut(len).enumerate() {
                        row.iter_mut().for_each(|v| *v = (*v - m[c]) * scale[c]);
                    }
                }
                CpuFlow::Flip => {
                    let (a, b) = z.split_at_mut(len);
                    a.swap_with_slice(b);
                }
                CpuFlow::Conv { pre, convs, proj, bins, tail_bound, knot_scale } => {
                    let (x0, x1) = z.split_at_mut(len);
                    let mut h = pre.apply(x0, len);
                    h.iter_mut().zip(&g).for_each(|(h, g)| *h += g);
                    convs.forward(&mut h, len);
                    let params = proj.apply(&h, len); // [3 * bins - 1][len]
                    for (i, v) in x1.iter_mut().enumerate() {
                        let p: Vec<f32> = (0..3 * bins - 1).map(|c| params[c * len + i]).collect();
                        let widths: Vec<f32> = p[..*bins].iter().map(|w| w * knot_scale).collect();
                        let heights: Vec<f32> = p[*bins..2 * bins].iter().map(|w| w * knot_scale).collect();
                        *v = super::spline::inverse(*v, &widths, &heights, &p[2 * bins..], *tail_bound);
                    }
                }
            }
        }
        z.truncate(len);
        z
    }
}
