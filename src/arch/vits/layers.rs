//! The building blocks VITS uses everywhere, on `[batch, channels, time]` tensors: 1-D convolutions
//! with "same" padding, layer norm over channels, and masks for batches of different lengths.

use crate::arch::cpu::conv1d::{leaky_conv_here, PackedConv, Rows};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use std::ops::Range;

/// A 1-D convolution (weight-norm already folded into the weight by the exporter).
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    dilation: usize,
    groups: usize,
}

impl Conv1d {
    /// "Same" padding for an odd kernel: the output is as long as the input.
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Self> {
        Self::load_with(vb, c_in, c_out, kernel, dilation, groups, true)
    }

    pub fn load_with(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in / groups, kernel), "weight")?;
        let bias = if bias { Some(vb.get(c_out, "bias")?) } else { None };
        Ok(Self { weight, bias, padding: dilation * (kernel - 1) / 2, dilation, groups })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dim(0).expect("3-d weight")
    }

    /// The weights packed for our CPU kernel ("same" padding); `None` on another device.
    pub fn packed(&self) -> Result<Option<PackedConv>> {
        if !self.weight.device().is_cpu() || self.groups != 1 {
            return Ok(None);
        }
        let bias = match &self.bias {
            Some(b) => b.to_vec1()?,
            None => vec![0.0; self.out_channels()],
        };
        let kernel = self.weight.dim(2)?;
        Ok(Some(PackedConv::same(&self.weight.flatten_all()?.to_vec1()?, &bias, kernel, self.dilation)))
    }

    /// The weights for `CpuDepthwise`; `None` on another device or for a convolution that is not
    /// depthwise.
    pub fn depthwise_cpu(&self) -> Result<Option<CpuDepthwise>> {
        let (channels, per_group, kernel) = self.weight.dims3()?;
        if !self.weight.device().is_cpu() || per_group != 1 || self.groups != channels {
            return Ok(None);
        }
        let bias = match &self.bias {
            Some(b) => b.to_vec1()?,
            None => vec![0.0; channels],
        };
        let weight = self.weight.flatten_all()?.to_vec1()?;
        Ok(Some(CpuDepthwise { weight, bias, kernel, dilation: self.dilation }))
    }

    /// Convolutions of one input with the same kernel, as one whose outputs are theirs in order.
    pub fn packed_together(convs: &[&Conv1d]) -> Result<PackedConv> {
        let first = convs.first().expect("at least one convolution");
        let cat = |t: Vec<Tensor>| Tensor::cat(&t, 0);
        let weight = cat(convs.iter().map(|c| c.weight.clone()).collect())?;
        let bias = match convs.iter().map(|c| c.bias.clone()).collect::<Option<Vec<_>>>() {
            Some(b) => cat(b)?,
            None => candle_core::bail!("packed_together needs every convolution to have a bias"),
        };
        let joined = Conv1d { weight, bias: Some(bias), ..**first };
        Ok(joined.packed()?.expect("CPU weights"))
    }
}

impl Conv1d {
    /// A depthwise convolution as `kernel` shifted multiply-adds: candle would run one small
    /// convolution per channel.
    fn depthwise(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t) = x.dims3()?;
        let k = self.weight.dim(2)?;
        let padded = x.pad_with_zeros(2, self.padding, self.padding)?;
        let mut y: Option<Tensor> = None;
        for i in 0..k {
            let tap = self.weight.narrow(2, i, 1)?.reshape((1, (), 1))?;
            let term = padded.narrow(2, i * self.dilation, t)?.broadcast_mul(&tap)?;
            y = Some(match y {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        Ok(y.expect("a kernel has at least one tap"))
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.groups > 1 && self.groups == x.dim(1)? && self.weight.dim(1)? == 1 {
            self.depthwise(x)?
        } else {
            x.conv1d(&self.weight, self.padding, 1, self.dilation, self.groups)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
            None => Ok(y),
        }
    }
}

/// A transposed 1-D convolution that upsamples by `stride`.
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    /// On CPU, the same weights split by phase for our kernel.
    pub cpu: Option<CpuUpsample>,
}

impl ConvTranspose1d {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Result<Self> {
        let weight = vb.get((c_in, c_out, kernel), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        let padding = (kernel - stride) / 2;
        let cpu = CpuUpsample::new(&weight, &bias, stride, padding)?;
        Ok(Self { weight, bias, stride, padding, cpu })
    }
}

/// A transposed convolution split by output phase, for our CPU kernel (candle's CPU
/// `conv_transpose1d` takes a dot product per output: 130 ms of a 4.7 s batch, BENCHMARKS.md).
///
/// Output `t` of a stride-`s` transposed convolution with padding `p` gets, from input `i`, the tap
/// `k = t + p - i*s`. Writing `t + p = q*s + r`, only taps `k = r + m*s` meet it, from inputs `q - m`.
/// So for each phase `r`, the outputs `q*s + r - p` are an ordinary convolution of the input with
/// the `kernel / s` taps `w[.., .., r + m*s]`, reading back from `q`. The phases read the same
/// inputs at the same taps, so they run as one convolution with `s * c_out` outputs (phase-major)
/// on the register-blocked kernel, interleaved afterwards. (One call per phase activated and
/// copied the input `s` times and ran at a third of the kernel's speed.)
pub struct CpuUpsample {
    /// Output `r * c_out + o` is phase `r` of channel `o`; the taps reversed: tap `j` reads input
    /// `q - (taps - 1) + j`.
    phases: PackedConv,
    c_out: usize,
    stride: usize,
    padding: usize,
}

impl CpuUpsample {
    /// `None` on another device, or for a kernel that is not a multiple of the stride or does not
    /// give exactly `stride` outputs per input.
    fn new(weight: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Option<Self>> {
        let (c_in, _, kernel) = weight.dims3()?;
        if !weight.device().is_cpu() || kernel != stride + 2 * padding {
            return Ok(None);
        }
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::from_weights(&w, &bias.to_vec1::<f32>()?, c_in, kernel, stride, padding))
    }

    /// TensorFlow's SAME transposed convolution: exactly `stride` outputs per input, the full
    /// output cropped by `(kernel - stride) / 2` at the start (and the rest at the end). `weight` is
    /// `[c_in][c_out][kernel]`. `None` for a kernel that is not a multiple of the stride.
    pub fn same(weight: &[f32], bias: &[f32], c_in: usize, kernel: usize, stride: usize) -> Option<Self> {
        Self::from_weights(weight, bias, c_in, kernel, stride, kernel.checked_sub(stride)? / 2)
    }

    /// The first `len * stride` outputs of the transposed convolution after `padding` cropped at the
    /// start, which they all lie in where `padding + stride <= kernel`.
    fn from_weights(
        weight: &[f32],
        bias: &[f32],
        c_in: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        let c_out = bias.len();
        if stride == 0
            || !kernel.is_multiple_of(stride)
            || padding + stride > kernel
            || weight.len() != c_in * c_out * kernel
        {
            return None;
        }
        let taps = kernel / stride;
        let mut phases = Vec::with_capacity(stride * c_out * c_in * taps);
        for r in 0..stride {
            for o in 0..c_out {
                for i in 0..c_in {
                    let row = &weight[(i * c_out + o) * kernel..][..kernel];
                    phases.extend((0..taps).map(|j| row[r + (taps - 1 - j) * stride]));
                }
            }
        }
        let biases: Vec<f32> = (0..stride).flat_map(|_| bias.iter().copied()).collect();
        let phases = PackedConv::new(&phases, &biases, taps, 1, taps - 1);
        Some(Self { phases, c_out, stride, padding })
    }

    pub fn out_channels(&self) -> usize {
        self.c_out
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// `x`: `[c_in][len]`, positions from `valid` on read as zero, activated by leaky ReLU with
    /// `slope` first. Returns the output steps `range` (of `len * stride`), `[c_out][range.len()]`,
    /// computed on the calling thread: the decoder asks for one window at a time, so that the
    /// upsampled stage never exists whole (at the last stage, 6 MB per second of audio).
    pub fn forward_range(&self, x: &[f32], len: usize, valid: usize, slope: f32, range: Range<usize>) -> Vec<f32> {
        let (s, p, c_out) = (self.stride, self.padding, self.c_out);
        assert!(len > 0 && x.len().is_multiple_of(len), "x is not [c_in][len]");
        assert!(range.end <= len * s, "steps {range:?} beyond {}", len * s);
        if range.is_empty() {
            return vec![];
        }
        // Output t = q*s + r - p is phase r's output q, which reads inputs q - (taps - 1) ..= q.
        let (q0, q1) = ((range.start + p) / s, (range.end - 1 + p) / s + 1);
        // From input `a` on: the first `q0 - a` phase outputs read before it and are not used.
        let a = q0.saturating_sub(self.phases.reach());
        let b = q1.min(len);
        let q_len = q1 - a;
        let z = leaky_conv_here(Rows::window(x, len, a), q_len, 0..valid.clamp(a, b) - a, slope, &self.phases, None);
        // Phase by phase: a contiguous run of phase r's outputs lands every `s` steps of the row.
        // (Step by step instead, walking q and r, was 2.3% of the voice's time.)
        let n = range.len();
        let mut y = vec![0f32; c_out * n];
        for r in 0..s {
            // The first step of the range that is phase r's, and its q.
            let first = (r + s - (range.start + p) % s) % s;
            if first >= n {
                continue;
            }
            let q = (range.start + first + p) / s - a;
            let count = (n - first).div_ceil(s);
            for o in 0..c_out {
                let src = &z[(r * c_out + o) * q_len + q..][..count];
                let dst = &mut y[o * n + first..];
                for (d, &v) in dst.iter_mut().step_by(s).zip(src) {
                    *d = v;
                }
            }
        }
        y
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose1d(&self.weight, self.padding, 0, self.stride, 1, 1)?.broadcast_add(&self.bias.reshape((
            1,
            (),
            1,
        ))?)
    }
}

/// Layer norm over the channel axis of `[batch, channels, time]` (VITS' `LayerNorm`, `gamma`/`beta`).
pub struct ChannelNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl ChannelNorm {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { gamma: vb.get(channels, "gamma")?, beta: vb.get(channels, "beta")? })
    }

    /// The same norm for one sequence on CPU.
    pub fn cpu(&self) -> Result<CpuNorm> {
        Ok(CpuNorm { gamma: self.gamma.to_vec1()?, beta: self.beta.to_vec1()? })
    }
}

impl Module for ChannelNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.transpose(1, 2)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        normed.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?.transpose(1, 2)
    }
}

/// `ChannelNorm` on one sequence's `[channels][len]` vectors.
pub struct CpuNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl CpuNorm {
    /// Layer norm over the channels of each position (eps 1e-5), in place.
    ///
    /// Row by row (a channel's positions are contiguous), so the sums vectorise across positions;
    /// a column at a time read floats `len` apart. Each position's sums still add the channels
    /// in order.
    pub fn apply(&self, x: &mut [f32], len: usize) {
        let channels = self.gamma.len();
        assert_eq!(x.len(), channels * len);
        if len == 0 {
            return;
        }
        let mut mean = vec![0f32; len];
        for row in x.chunks_exact(len) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= channels as f32);
        let mut inv = vec![0f32; len];
        for row in x.chunks_exact(len) {
            for ((s, &v), &m) in inv.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        inv.iter_mut().for_each(|s| *s = 1.0 / (*s / channels as f32 + 1e-5).sqrt());
        for ((row, &g), &b) in x.chunks_exact_mut(len).zip(&self.gamma).zip(&self.beta) {
            for ((v, &m), &i) in row.iter_mut().zip(&mean).zip(&inv) {
                *v = (*v - m) * i * g + b;
            }
        }
    }
}

/// A depthwise convolution with "same" padding on one sequence's `[channels][len]` vectors.
pub struct CpuDepthwise {
    /// `[channels][kernel]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    kernel: usize,
    dilation: usize,
}

impl CpuDepthwise {
    pub fn forward(&self, x: &[f32], len: usize) -> Vec<f32> {
        let (k, d) = (self.kernel, self.dilation);
        let pad = d * (k - 1) / 2;
        let mut y = vec![0f32; x.len()];
        if len == 0 {
            return y;
        }
        for (c, (row, out)) in x.chunks_exact(len).zip(y.chunks_exact_mut(len)).enumerate() {
            out.fill(self.bias[c]);
            for j in 0..k {
                let w = self.weight[c * k + j];
                // Output i reads input i + j*d - pad where that is inside the row.
                let shift = (j * d) as isize - pad as isize;
                let lo = (-shift).max(0) as usize;
                let hi = (len as isize - shift).clamp(0, len as isize) as usize;
                for i in lo..hi {
                    out[i] += w * row[(i as isize + shift) as usize];
                }
            }
        }
        y
    }
}

pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.maximum(&(x * slope)?)
}

/// Runs `f` on each sequence of `x` (`[b, channels, len]`) cut to its valid length, as
/// `[channels][valid]`, and pads its `[out_channels][valid * rate]` answer back with zeros to
/// `len * rate`. What lies beyond the valid length reads as zeros anyway, so a short sentence in a
/// batch costs its own length, not the longest one's.
pub fn per_sequence(
    x: &Tensor,
    mask: &Tensor,
    out_channels: usize,
    rate: usize,
    f: impl Fn(&[f32], usize, usize) -> Vec<f32>,
) -> Result<Tensor> {
    let (b, channels, len) = x.dims3()?;
    let valid = valid_lengths(mask)?;
    let rows = x.to_vec3::<f32>()?;
    let out_len = len * rate;
    let mut out = Vec::with_capacity(b * out_channels * out_len);
    for (seq, &valid) in rows.into_iter().zip(&valid) {
        let flat: Vec<f32> = seq.iter().flat_map(|row| row[..valid].iter().copied()).collect();
        let y = f(&flat, channels, valid);
        let valid_out = valid * rate;
        debug_assert_eq!(y.len(), out_channels * valid_out);
        if valid == 0 {
            out.extend(std::iter::repeat_n(0f32, out_channels * out_len));
            continue;
        }
        for row in y.chunks(valid_out) {
            out.extend_from_slice(row);
            out.extend(std::iter::repeat_n(0f32, out_len - valid_out));
        }
    }
    Tensor::from_vec(out, (b, out_channels, out_len), x.device())
}

/// How many positions of each sequence are valid, from a `[b, 1, len]` mask.
fn valid_lengths(mask: &Tensor) -> Result<Vec<usize>> {
    Ok(mask.sum(2)?.squeeze(1)?.to_vec1::<f32>()?.iter().map(|&v| v.round() as usize).collect())
}

/// `[batch, 1, max_len]`: 1 where a position is inside its sequence.
pub fn sequence_mask(lengths: &[usize], max_len: usize, device: &candle_core::Device) -> Result<Tensor> {
    let values: Vec<f32> =
        lengths.iter().flat_map(|&l| (0..max_len).map(move |t| if t < l { 1.0 } else { 0.0 })).collect();
    Tensor::from_vec(values, (lengths.len(), 1, max_len), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use candle_core::Device;

    /// The phase-split upsampling against candle's transposed convolution of the activated, masked
    /// input, at HiFi-GAN's shapes (kernel twice the stride).
    #[test]
    fn phase_split_upsampling_matches_candle() {
        let dev = Device::Cpu;
        for (c_in, c_out, len, valid, stride, kernel) in [(6, 3, 20, 17, 8, 16), (4, 5, 9, 9, 4, 8), (3, 2, 7, 3, 2, 4)]
        {
            let w = Tensor::from_vec(values(1, c_in * c_out * kernel), (c_in, c_out, kernel), &dev).unwrap();
            let b = Tensor::from_vec(values(2, c_out), c_out, &dev).unwrap();
            let padding = (kernel - stride) / 2;
            let up = CpuUpsample::new(&w, &b, stride, padding).unwrap().expect("a CPU split");
            let x = values(3, c_in * len);
            let xt = Tensor::from_vec(x.clone(), (1, c_in, len), &dev).unwrap();
            let mask = sequence_mask(&[valid], len, &dev).unwrap();
            let act = leaky_relu(&xt, 0.1).unwrap().broadcast_mul(&mask).unwrap();
            let layer = ConvTranspose1d { weight: w, bias: b, stride, padding, cpu: None };
            let want = layer.forward(&act).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let out_len = len * stride;
            assert_eq!(want[0].len(), out_len);
            // The whole output, and windows that start and end inside a phase, at both edges.
            for range in [0..out_len, 0..stride + 1, 3..out_len / 2 + 1, out_len - stride - 1..out_len, 5..6] {
                let got = up.forward_range(&x, len, valid, 0.1, range.clone());
                assert_eq!(got.len(), c_out * range.len());
                let want: Vec<f32> = want.iter().flat_map(|row| &row[range.clone()]).copied().collect();
                let diff = crate::max_abs_diff(&got, &want);
                assert!(diff < 1e-4, "{c_in}->{c_out} x{stride} k{kernel} {range:?}: {diff}");
            }
        }
    }
}
