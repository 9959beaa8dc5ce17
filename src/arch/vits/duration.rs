//! The stochastic duration predictor (`dp`), run in reverse: noise (scaled by `noise_w`) goes back
//! through its flows, conditioned on the text encoding, and comes out as log-durations per phoneme.
//!
//! Its flows are an elementwise affine map and `ConvFlow`s: a rational-quadratic spline on one
//! channel whose knots a small dilated depthwise-separable conv net (`DDSConv`) predicts from the
//! other. In reverse VITS drops the first `ConvFlow` (it only models the unused second channel).

mod cpu;

use super::layers::{per_sequence, ChannelNorm, Conv1d};
use super::VitsConfig;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Dilated depthwise-separable convolutions: dilation kernel^i, layer norms, GELU, residual.
struct DdsConv {
    sep: Vec<Conv1d>,
    pointwise: Vec<Conv1d>,
    norms_1: Vec<ChannelNorm>,
    norms_2: Vec<ChannelNorm>,
}

impl DdsConv {
    fn load(vb: VarBuilder, channels: usize, kernel: usize, layers: usize) -> Result<Self> {
        let mut s = Self { sep: vec![], pointwise: vec![], norms_1: vec![], norms_2: vec![] };
        for i in 0..layers {
            let dilation = kernel.pow(i as u32);
            s.sep.push(Conv1d::load(vb.pp("convs_sep").pp(i), channels, channels, kernel, dilation, channels)?);
            s.pointwise.push(Conv1d::load(vb.pp("convs_1x1").pp(i), channels, channels, 1, 1, 1)?);
            s.norms_1.push(ChannelNorm::load(vb.pp("norms_1").pp(i), channels)?);
            s.norms_2.push(ChannelNorm::load(vb.pp("norms_2").pp(i), channels)?);
        }
        Ok(s)
    }

    fn forward(&self, x: &Tensor, mask: &Tensor, g: Option<&Tensor>) -> Result<Tensor> {
        let mut x = match g {
            Some(g) => (x + g)?,
            None => x.clone(),
        };
        for i in 0..self.sep.len() {
            let y = self.sep[i].forward(&x.broadcast_mul(mask)?)?;
            let y = self.norms_1[i].forward(&y)?.gelu_erf()?;
            let y = self.pointwise[i].forward(&y)?;
            let y = self.norms_2[i].forward(&y)?.gelu_erf()?;
            x = (x + y)?;
        }
        x.broadcast_mul(mask)
    }
}

/// Rational-quadratic spline flow on the second channel, its knots from the first.
struct ConvFlow {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    filter_channels: usize,
    bins: usize,
    tail_bound: f32,
}

impl ConvFlow {
    fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let f = cfg.dp_filter_channels;
        Ok(Self {
            pre: Conv1d::load(vb.pp("pre"), 1, f, 1, 1, 1)?,
            convs: DdsConv::load(vb.pp("convs"), f, cfg.dp_kernel_size, 3)?,
            proj: Conv1d::load(vb.pp("proj"), f, 3 * cfg.dp_bins - 1, 1, 1, 1)?,
            filter_channels: f,
            bins: cfg.dp_bins,
            tail_bound: cfg.dp_tail_bound,
        })
    }

    fn reverse(&self, x: &Tensor, mask: &Tensor, g: &Tensor) -> Result<Tensor> {
        let x0 = x.narrow(1, 0, 1)?;
        let x1 = x.narrow(1, 1, 1)?;
        let h = self.pre.forward(&x0)?;
        let h = self.convs.forward(&h, mask, Some(g))?;
        let h = self.proj.forward(&h)?.broadcast_mul(mask)?; // [b, 3 * bins - 1, t]
        let (b, _, t) = h.dims3()?;
        let params = h.transpose(1, 2)?.contiguous()?.to_vec3::<f32>()?; // [b][t][3 * bins - 1]
        let inputs = x1.squeeze(1)?.to_vec2::<f32>()?;
        let scale = 1.0 / (self.filter_channels as f32).sqrt();
        let mut out = Vec::with_capacity(b * t);
        for (row, p_row) in inputs.iter().zip(&params) {
            for (&v, p) in row.iter().zip(p_row) {
                let widths: Vec<f32> = p[..self.bins].iter().map(|w| w * scale).collect();
                let heights: Vec<f32> = p[self.bins..2 * self.bins].iter().map(|w| w * scale).collect();
                let derivatives = &p[2 * self.bins..];
                out.push(spline::inverse(v, &widths, &heights, derivatives, self.tail_bound));
            }
        }
        let x1 = Tensor::from_vec(out, (b, 1, t), x.device())?;
        Tensor::cat(&[&x0, &x1], 1)?.broadcast_mul(mask)
    }
}

enum Flow {
    /// `(x - m) * exp(-logs)`, per channel.
    Affine {
        m: Tensor,
        logs: Tensor,
    },
    Conv(ConvFlow),
    /// Swaps the two channels.
    Flip,
}

pub struct DurationPredictor {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    /// In the order they run in reverse.
    reverse_flows: Vec<Flow>,
    /// On CPU, the same predictor in plain vectors, one sequence at a time.
    cpu: Option<cpu::CpuDurations>,
}

impl DurationPredictor {
    pub fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let (h, f) = (cfg.hidden_channels, cfg.dp_filter_channels);
        // Forward order: affine, then (ConvFlow, Flip) n_flows times.
        // In reverse: (Flip, ConvFlow) for flows n_flows..2, a last Flip, then the affine flow. The first
        // ConvFlow (flows.1) is skipped, as the reference does ("a useless vflow"); exporters drop
        // its weights.
        let mut reverse_flows = Vec::new();
        for i in (1..cfg.dp_flows).rev() {
            reverse_flows.push(Flow::Flip);
            reverse_flows.push(Flow::Conv(ConvFlow::load(vb.pp("flows").pp(1 + 2 * i), cfg)?));
        }
        reverse_flows.push(Flow::Flip);
        reverse_flows.push(Flow::Affine { m: vb.get((2, 1), "flows.0.m")?, logs: vb.get((2, 1), "flows.0.logs")? });
        let mut dp = Self {
            pre: Conv1d::load(vb.pp("pre"), h, f, 1, 1, 1)?,
            convs: DdsConv::load(vb.pp("convs"), f, cfg.dp_kernel_size, 3)?,
            proj: Conv1d::load(vb.pp("proj"), f, f, 1, 1, 1)?,
            reverse_flows,
            cpu: None,
        };
        dp.cpu = cpu::CpuDurations::new(&dp)?;
        Ok(dp)
    }

    /// Log-durations `[b, 1, t]` from the encoder's hidden states; `noise` is `[b, 2, t]` (already
    /// scaled by `noise_w`; zeros for a deterministic voice).
    pub fn reverse(&self, x: &Tensor, mask: &Tensor, noise: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(cpu) => {
                let inputs = Tensor::cat(&[&x.broadcast_mul(mask)?, &noise.broadcast_mul(mask)?], 1)?;
                per_sequence(&inputs, mask, 1, 1, |seq, _, len| cpu.reverse(seq, len))
            }
            None => self.reverse_candle(x, mask, noise),
        }
    }

    /// The same with candle's ops, where our CPU kernels do not run.
    fn reverse_candle(&self, x: &Tensor, mask: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let g = self.pre.forward(x)?;
        let g = self.convs.forward(&g, mask, None)?;
        let g = self.proj.forward(&g)?.broadcast_mul(mask)?;
        let mut z = noise.clone();
        for flow in &self.reverse_flows {
            z = match flow {
                Flow::Affine { m, logs } => z
                    .broadcast_sub(&m.unsqueeze(0)?)?
                    .broadcast_mul(&logs.neg()?.exp()?.unsqueeze(0)?)?
                    .broadcast_mul(mask)?,
                Flow::Conv(c) => c.reverse(&z, mask, &g)?,
                Flow::Flip => Tensor::cat(&[z.narrow(1, 1, 1)?, z.narrow(1, 0, 1)?], 1)?,
            };
        }
        z.narrow(1, 0, 1)
    }
}

/// The inverse of a monotonic rational-quadratic spline on [-B, B] with identity tails (Durkan et
/// al., "Neural Spline Flows"; the `unconstrained_rational_quadratic_spline` of VITS' transforms.py).
pub mod spline {
    const MIN_BIN_WIDTH: f32 = 1e-3;
    const MIN_BIN_HEIGHT: f32 = 1e-3;
    const MIN_DERIVATIVE: f32 = 1e-3;

    fn softmax(v: &[f32]) -> Vec<f32> {
        let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn softplus(x: f32) -> f32 {
        if x > 20.0 {
            x
        } else {
            x.exp().ln_1p()
        }
    }

    /// Knot positions from unnormalised bin sizes: softmax, a minimum size, cumulated over [lo, hi].
    fn knots(unnormalized: &[f32], min: f32, lo: f32, hi: f32) -> Vec<f32> {
        let n = unnormalized.len();
        let sizes: Vec<f32> = softmax(unnormalized).iter().map(|s| min + (1.0 - min * n as f32) * s).collect();
        let mut knots = Vec::with_capacity(n + 1);
        let mut acc = 0.0f32;
        knots.push(lo);
        for s in &sizes[..n - 1] {
            acc += s;
            knots.push((hi - lo) * acc + lo);
        }
        knots.push(hi);
        knots
    }

    /// A spline's knots (x and y) and its derivative at each knot.
    struct Knots {
        xs: Vec<f32>,
        ys: Vec<f32>,
        ds: Vec<f32>,
    }

    impl Knots {
        /// `derivatives` has one fewer entry than the bins: the outer knots get the derivative 1 of
        /// the identity tails.
        fn new(widths: &[f32], heights: &[f32], derivatives: &[f32], bound: f32) -> Self {
            // Padding with this makes min + softplus(c) exactly 1 at the ends.
            let end = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
            let ds = std::iter::once(end)
                .chain(derivatives.iter().copied())
                .chain(std::iter::once(end))
                .map(|raw| MIN_DERIVATIVE + softplus(raw))
                .collect();
            Self {
                xs: knots(widths, MIN_BIN_WIDTH, -bound, bound),
                ys: knots(heights, MIN_BIN_HEIGHT, -bound, bound),
                ds,
            }
        }

        /// The bin whose range on `axis` holds `v` (the last knot counts as inside, as
        /// searchsorted's eps makes it).
        fn bin(axis: &[f32], v: f32) -> usize {
            axis[..axis.len() - 1].iter().rposition(|&knot| v >= knot).unwrap_or(0)
        }
    }

    /// `y` -> `x`.
    pub fn inverse(y: f32, widths: &[f32], heights: &[f32], derivatives: &[f32], bound: f32) -> f32 {
        if !(-bound..=bound).contains(&y) {
            return y;
        }
        let Knots { xs, ys, ds } = Knots::new(widths, heights, derivatives, bound);
        let k = Knots::bin(&ys, y);
        let (w, h) = (xs[k + 1] - xs[k], ys[k + 1] - ys[k]);
        let delta = h / w;
        let (d0, d1) = (ds[k], ds[k + 1]);
        let dy = y - ys[k];
        let a = dy * (d0 + d1 - 2.0 * delta) + h * (delta - d0);
        let b = h * d0 - dy * (d0 + d1 - 2.0 * delta);
        let c = -delta * dy;
        let disc = (b * b - 4.0 * a * c).max(0.0);
        let theta = (2.0 * c) / (-b - disc.sqrt());
        theta * w + xs[k]
    }

    /// `x` -> `y`, for testing the inverse.
    #[cfg(test)]
    pub fn forward(x: f32, widths: &[f32], heights: &[f32], derivatives: &[f32], bound: f32) -> f32 {
        if !(-bound..=bound).contains(&x) {
            return x;
        }
        let Knots { xs, ys, ds } = Knots::new(widths, heights, derivatives, bound);
        let k = Knots::bin(&xs, x);
        let (w, h) = (xs[k + 1] - xs[k], ys[k + 1] - ys[k]);
        let delta = h / w;
        let theta = (x - xs[k]) / w;
        let t1 = theta * (1.0 - theta);
        let num = h * (delta * theta * theta + ds[k] * t1);
        let den = delta + (ds[k] + ds[k + 1] - 2.0 * delta) * t1;
        ys[k] + num / den
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn inverse_undoes_forward_and_tails_are_identity() {
            let widths = [0.3, -1.0, 0.5, 2.0, 0.0, 0.1, -0.4, 0.9, 1.2, -2.0];
            let heights = [1.0, 0.2, -0.3, 0.0, 0.7, -1.5, 0.4, 0.4, 0.0, 0.3];
            let derivs = [0.5, -0.5, 1.0, 0.0, 2.0, -1.0, 0.3, 0.8, -0.2];
            for i in -50..=50 {
                let x = i as f32 / 10.0;
                let y = super::forward(x, &widths, &heights, &derivs, 5.0);
                let back = super::inverse(y, &widths, &heights, &derivs, 5.0);
                assert!((back - x).abs() < 1e-4, "x {x} -> y {y} -> {back}");
            }
            assert_eq!(super::inverse(7.5, &widths, &heights, &derivs, 5.0), 7.5);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use crate::arch::vits::layers::sequence_mask;
    use crate::arch::vits::tests::{random_vb, tiny_config};
    use candle_core::Device;

    /// The per-sequence CPU path against candle's batched ops, on two lengths with noise, so that
    /// every flow and the splines do something.
    #[test]
    fn the_cpu_durations_match_candles() {
        let cfg = tiny_config();
        let dp = DurationPredictor::load(random_vb().pp("dp"), &cfg).unwrap();
        assert!(dp.cpu.is_some());
        let (dev, len) = (Device::Cpu, 40);
        let mask = sequence_mask(&[len, 23], len, &dev).unwrap();
        let x = Tensor::from_vec(values(11, 2 * cfg.hidden_channels * len), (2, cfg.hidden_channels, len), &dev)
            .unwrap()
            .broadcast_mul(&mask)
            .unwrap();
        let noise = (Tensor::from_vec(values(12, 2 * 2 * len), (2, 2, len), &dev).unwrap() * 2.0).unwrap();
        let got = dp.reverse(&x, &mask, &noise).unwrap();
        let want = dp.reverse_candle(&x, &mask, &noise).unwrap();
        let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
        let size = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(size > 1e-2, "all zeros proves nothing");
    }
}
