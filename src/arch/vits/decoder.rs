//! The HiFi-GAN generator (`dec`): upsampling transposed convolutions, each followed by the mean of
//! parallel residual blocks with different kernels and dilations, then a last convolution and tanh.
//!
//! Batches of different lengths: every convolution's input is multiplied by the mask at its
//! resolution, so a padded position reads zeros exactly where a lone sequence's padding would, and a
//! sequence decodes to the same samples alone or batched.

use super::layers::{leaky_relu, Conv1d, ConvTranspose1d, CpuConv};
use super::{ResBlockKind, VitsConfig};
use crate::arch::cpu::conv1d::{leaky_conv, ConvWeights};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

const SLOPE: f64 = 0.1;
/// The reference's last activation uses PyTorch's default slope, not the generator's 0.1.
const LAST_SLOPE: f64 = 0.01;
const POST_KERNEL: usize = 7;

/// HiFi-GAN's ResBlock1 (pairs of dilated and plain convolutions) or ResBlock2 (dilated only).
struct ResBlock {
    dilated: Vec<Conv1d>,
    plain: Vec<Conv1d>,
    kernel: usize,
    /// On CPU, the same weights for our fused kernel (most of the voice's time is here).
    cpu: Option<CpuResBlock>,
}

struct CpuResBlock {
    dilated: Vec<CpuConv>,
    plain: Vec<CpuConv>,
}

impl ResBlock {
    fn load(vb: VarBuilder, kind: ResBlockKind, channels: usize, kernel: usize, dilations: &[usize]) -> Result<Self> {
        let (dilated_name, plain) = match kind {
            ResBlockKind::One => (
                "convs1",
                (0..dilations.len())
                    .map(|j| Conv1d::load(vb.pp("convs2").pp(j), channels, channels, kernel, 1, 1))
                    .collect::<Result<Vec<_>>>()?,
            ),
            ResBlockKind::Two => ("convs", vec![]),
        };
        let dilated: Vec<Conv1d> = dilations
            .iter()
            .enumerate()
            .map(|(j, &d)| Conv1d::load(vb.pp(dilated_name).pp(j), channels, channels, kernel, d, 1))
            .collect::<Result<_>>()?;
        let parts = |convs: &[Conv1d]| convs.iter().map(|c| c.cpu_parts()).collect::<Result<Option<Vec<_>>>>();
        let cpu = match (parts(&dilated)?, parts(&plain)?) {
            (Some(dilated), Some(plain)) => Some(CpuResBlock { dilated, plain }),
            _ => None,
        };
        Ok(Self { dilated, plain, kernel, cpu })
    }

    /// The same as `forward` for one sequence on CPU: `x` is `[channels][len]`, valid up to `valid`.
    fn forward_cpu(&self, cpu: &CpuResBlock, input: &[f32], channels: usize, len: usize, valid: usize) -> Vec<f32> {
        let kernel = self.kernel;
        fn conv(c: &CpuConv, kernel: usize) -> ConvWeights<'_> {
            ConvWeights::same(&c.0, &c.1, kernel, c.2)
        }
        // The first step reads the stage's input in place; each later one reads the last output.
        let mut out: Option<Vec<f32>> = None;
        for (j, c) in cpu.dilated.iter().enumerate() {
            let x = out.as_deref().unwrap_or(input);
            out = Some(match cpu.plain.get(j) {
                None => leaky_conv(x, channels, len, valid, SLOPE as f32, &conv(c, kernel), Some(x)),
                Some(p) => {
                    let xt = leaky_conv(x, channels, len, valid, SLOPE as f32, &conv(c, kernel), None);
                    leaky_conv(&xt, channels, len, valid, SLOPE as f32, &conv(p, kernel), Some(x))
                }
            });
        }
        out.unwrap_or_else(|| input.to_vec())
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, conv) in self.dilated.iter().enumerate() {
            let mut xt = conv.forward(&leaky_relu(&x, SLOPE)?.broadcast_mul(mask)?)?;
            if let Some(plain) = self.plain.get(j) {
                xt = plain.forward(&leaky_relu(&xt, SLOPE)?.broadcast_mul(mask)?)?;
            }
            x = (x + xt)?;
        }
        Ok(x)
    }
}

struct Stage {
    up: ConvTranspose1d,
    rate: usize,
    blocks: Vec<ResBlock>,
}

pub struct Decoder {
    conv_pre: Conv1d,
    stages: Vec<Stage>,
    conv_post: Conv1d,
    /// On CPU, `conv_post`'s weights for our kernel: candle's path copies its 32-channel input into
    /// an im2col matrix 7 times its size for a single output channel (~100 ms of a 4.7 s batch).
    post_cpu: Option<CpuConv>,
}

impl Decoder {
    pub fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let d = &cfg.decoder;
        let mut channels = d.initial_channels;
        let mut stages = Vec::new();
        for (i, (&rate, &kernel)) in d.upsample_rates.iter().zip(&d.upsample_kernel_sizes).enumerate() {
            let out = channels / 2;
            let blocks = d
                .resblock_kernel_sizes
                .iter()
                .zip(&d.resblock_dilations)
                .enumerate()
                .map(|(j, (&k, dil))| {
                    let index = i * d.resblock_kernel_sizes.len() + j;
                    ResBlock::load(vb.pp("resblocks").pp(index), d.resblock, out, k, dil)
                })
                .collect::<Result<_>>()?;
            stages.push(Stage {
                up: ConvTranspose1d::load(vb.pp("ups").pp(i), channels, out, kernel, rate)?,
                rate,
                blocks,
            });
            channels = out;
        }
        let conv_post = Conv1d::load_with(vb.pp("conv_post"), channels, 1, POST_KERNEL, 1, 1, false)?;
        Ok(Self {
            conv_pre: Conv1d::load(vb.pp("conv_pre"), cfg.inter_channels, d.initial_channels, 7, 1, 1)?,
            stages,
            post_cpu: conv_post.cpu_parts()?,
            conv_post,
        })
    }

    /// Frames `[b, inter, t]` with `mask` `[b, 1, t]` -> audio `[b, 1, t * hop]`.
    pub fn forward(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut mask = mask.clone();
        let mut x = self.conv_pre.forward(&z.broadcast_mul(&mask)?)?;
        for stage in &self.stages {
            x = match &stage.up.cpu {
                Some(up) => per_sequence(&x, &mask, up.out_channels(), stage.rate, |seq, channels, valid| {
                    up.forward(seq, channels, valid, valid, SLOPE as f32)
                })?,
                None => stage.up.forward(&leaky_relu(&x, SLOPE)?.broadcast_mul(&mask)?)?,
            };
            mask = upsample_mask(&mask, stage.rate)?;
            x = match stage.blocks.iter().map(|b| b.cpu.as_ref()).collect::<Option<Vec<_>>>() {
                Some(cpu) => Self::resblocks_cpu(&stage.blocks, &cpu, &x, &mask)?,
                None => {
                    let mut sum: Option<Tensor> = None;
                    for block in &stage.blocks {
                        let y = block.forward(&x, &mask)?;
                        sum = Some(match sum {
                            Some(s) => (s + y)?,
                            None => y,
                        });
                    }
                    (sum.expect("at least one resblock") / stage.blocks.len() as f64)?
                }
            };
        }
        if let Some(post) = &self.post_cpu {
            return per_sequence(&x, &mask, 1, 1, |seq, channels, valid| {
                let conv = ConvWeights::same(&post.0, &post.1, POST_KERNEL, post.2);
                let mut y = leaky_conv(seq, channels, valid, valid, LAST_SLOPE as f32, &conv, None);
                y.iter_mut().for_each(|v| *v = v.tanh());
                y
            });
        }
        let x = self.conv_post.forward(&leaky_relu(&x, LAST_SLOPE)?.broadcast_mul(&mask)?)?;
        x.tanh()?.broadcast_mul(&mask)
    }
}

impl Decoder {
    /// The mean of a stage's resblocks with our CPU kernel, one sequence at a time.
    fn resblocks_cpu(blocks: &[ResBlock], cpu: &[&CpuResBlock], x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let channels = x.dim(1)?;
        per_sequence(x, mask, channels, 1, |seq, channels, valid| {
            let mut sum = vec![0f32; channels * valid];
            for (block, cpu) in blocks.iter().zip(cpu) {
                let y = block.forward_cpu(cpu, seq, channels, valid, valid);
                sum.iter_mut().zip(&y).for_each(|(s, v)| *s += v);
            }
            let scale = 1.0 / blocks.len() as f32;
            sum.iter_mut().for_each(|v| *v *= scale);
            sum
        })
    }
}

/// Runs `f` on each sequence of `x` (`[b, channels, len]`) cut to its valid length, as
/// `[channels][valid]`, and pads its `[out_channels][valid * rate]` answer back with zeros to
/// `len * rate`. What lies beyond the valid length reads as zeros anyway, so a short sentence in a
/// batch costs its own length, not the longest one's.
fn per_sequence(
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

/// Each frame's mask value repeated `rate` times.
fn upsample_mask(mask: &Tensor, rate: usize) -> Result<Tensor> {
    let (b, _, t) = mask.dims3()?;
    mask.unsqueeze(3)?.broadcast_as((b, 1, t, rate))?.reshape((b, 1, t * rate))
}
