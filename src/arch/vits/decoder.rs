//! The HiFi-GAN generator (`dec`): upsampling transposed convolutions, each followed by the mean of
//! parallel residual blocks with different kernels and dilations, then a last convolution and tanh.
//!
//! Batches of different lengths: every convolution's input is multiplied by the mask at its
//! resolution, so a padded position reads zeros exactly where a lone sequence's padding would, and a
//! sequence decodes to the same samples alone or batched.

use super::layers::{leaky_relu, per_sequence, Conv1d, ConvTranspose1d, CpuUpsample};
use super::{ResBlockKind, VitsConfig};
use crate::arch::cpu::conv1d::{leaky_conv_here, PackedConv, Rows};
use crate::arch::cpu::rowwise::tanh_in_place;
use crate::arch::cpu::{parallel_for, window_steps, SharedOut};
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
    /// On CPU, the same weights for our fused kernel (most of the voice's time is here).
    cpu: Option<CpuResBlock>,
}

struct CpuResBlock {
    dilated: Vec<PackedConv>,
    plain: Vec<PackedConv>,
}

impl CpuResBlock {
    /// How far an output reaches for its inputs through the whole chain, on either side.
    fn halo(&self) -> usize {
        self.dilated.iter().chain(&self.plain).map(PackedConv::reach).sum()
    }

    /// `ResBlock::forward` for one window of one sequence, on the calling thread: `input` is
    /// `[channels][len]` steps, all of them inside the sequence. Returns `[channels][len]`.
    fn forward_here(&self, input: Rows, len: usize) -> Vec<f32> {
        let conv = |x: Rows, c: &PackedConv, residual: Option<Rows>| {
            leaky_conv_here(x, len, 0..len, SLOPE as f32, c, residual)
        };
        // The first step reads the stage's input in place; each later one reads the last output.
        let mut out: Option<Vec<f32>> = None;
        for (j, c) in self.dilated.iter().enumerate() {
            let x = out.as_deref().map_or(input, |o| Rows::whole(o, len));
            out = Some(match self.plain.get(j) {
                None => conv(x, c, Some(x)),
                Some(p) => conv(Rows::whole(&conv(x, c, None), len), p, Some(x)),
            });
        }
        out.unwrap_or_else(|| (0..input.rows()).flat_map(|c| input.row(c, 0..len)).copied().collect())
    }
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
        let parts = |convs: &[Conv1d]| convs.iter().map(|c| c.packed()).collect::<Result<Option<Vec<_>>>>();
        let cpu = match (parts(&dilated)?, parts(&plain)?) {
            (Some(dilated), Some(plain)) => Some(CpuResBlock { dilated, plain }),
            _ => None,
        };
        Ok(Self { dilated, plain, cpu })
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
    /// On CPU, `conv_pre` and `conv_post` for our kernel. (candle's path copies `conv_post`'s
    /// 32-channel input into an im2col matrix 7 times its size for a single output channel.)
    ends_cpu: Option<(PackedConv, PackedConv)>,
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
        let conv_pre = Conv1d::load(vb.pp("conv_pre"), cfg.inter_channels, d.initial_channels, 7, 1, 1)?;
        let ends_cpu = conv_pre.packed()?.zip(conv_post.packed()?);
        Ok(Self { conv_pre, stages, conv_post, ends_cpu })
    }

    /// Frames `[b, inter, t]` with `mask` `[b, 1, t]` -> audio `[b, 1, t * hop]`.
    pub fn forward(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let Some((stages, (pre, post))) = self.cpu_parts() else {
            return self.forward_candle(z, mask);
        };
        let hop = self.stages.iter().map(|s| s.rate).product();
        per_sequence(&z.broadcast_mul(mask)?, mask, 1, hop, |seq, _, valid| {
            Self::forward_cpu(&stages, pre, post, seq, valid)
        })
    }

    /// The CPU kernels' weights of every layer; `None` on another device.
    fn cpu_parts(&self) -> Option<(Vec<CpuStage<'_>>, &(PackedConv, PackedConv))> {
        let stages = self
            .stages
            .iter()
            .map(|s| Some((s.up.cpu.as_ref()?, s.blocks.iter().map(|b| b.cpu.as_ref()).collect::<Option<Vec<_>>>()?)))
            .collect::<Option<Vec<_>>>()?;
        Some((stages, self.ends_cpu.as_ref()?))
    }

    /// The decoder for one sequence on CPU, `z` `[inter][len]` all valid: the activations stay
    /// plain vectors from the frames to the audio.
    fn forward_cpu(stages: &[CpuStage], pre: &PackedConv, post: &PackedConv, z: &[f32], len: usize) -> Vec<f32> {
        // No activation before `conv_pre`: a leaky slope of 1.
        let (mut x, mut len) = (pre.apply(z, len), len);
        for (i, stage @ (up, _)) in stages.iter().enumerate() {
            // The last stage's windows end with `conv_post` and tanh, while they are in cache.
            let last = (i + 1 == stages.len()).then_some(post);
            x = stage_in_windows(stage, &x, len, last);
            len *= up.stride();
        }
        x
    }

    /// The same with candle's ops, where our CPU kernels do not run.
    fn forward_candle(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut mask = mask.clone();
        let mut x = self.conv_pre.forward(&z.broadcast_mul(&mask)?)?;
        for stage in &self.stages {
            x = stage.up.forward(&leaky_relu(&x, SLOPE)?.broadcast_mul(&mask)?)?;
            mask = upsample_mask(&mask, stage.rate)?;
            let mut sum: Option<Tensor> = None;
            for block in &stage.blocks {
                let y = block.forward(&x, &mask)?;
                sum = Some(match sum {
                    Some(s) => (s + y)?,
                    None => y,
                });
            }
            x = (sum.expect("at least one resblock") / stage.blocks.len() as f64)?;
        }
        let x = self.conv_post.forward(&leaky_relu(&x, LAST_SLOPE)?.broadcast_mul(&mask)?)?;
        x.tanh()?.broadcast_mul(&mask)
    }
}

/// A stage's upsampling and resblocks, as our CPU kernels take them.
type CpuStage<'a> = (&'a CpuUpsample, Vec<&'a CpuResBlock>);

/// One stage over one sequence (`x` `[in channels][len]`, all valid): the upsampling, then the
/// mean of the resblocks, a window of time steps at a time on each thread. The chain of
/// convolutions then works on a few hundred kilobytes that stay in the core's cache. Over the whole
/// sequence at once, the last stage's intermediates (32 channels x 50,000 samples, 6 MB each) went
/// through memory between every convolution, and the stage ran at a third of the kernel's speed
/// (BENCHMARKS.md). The upsampled input, too, is made window by window, from `x`.
///
/// Each resblock of a window reads as many more steps on each side as an output reaches through
/// its own chain (`halo`: 3 steps for the 3-tap block, 45 for the 7-tap one of the default voice),
/// and the ones `post` reaches for the mean. Where that margin is cut by the window's edge (not the
/// sequence's), the outputs near the edge are wrong, but they lie in the margin and are thrown
/// away; every kept output is computed from the same values in the same order as over the whole
/// sequence. (One margin for all, the widest, cost 18% more work on 505-step windows; its own
/// per block, 11%.)
///
/// With `post`, each window's mean then goes through `conv_post` and tanh, and the answer is the
/// audio, `[1][len * stride]`; without, `[channels][len * stride]`.
fn stage_in_windows(stage: &CpuStage, x: &[f32], len: usize, post: Option<&PackedConv>) -> Vec<f32> {
    let (up, blocks) = stage;
    let (channels, len, in_len) = (up.out_channels(), len * up.stride(), len);
    if len == 0 {
        return vec![];
    }
    let window = window_steps(len);
    let post_reach = post.map_or(0, PackedConv::reach);
    let widest = blocks.iter().map(|b| b.halo()).max().unwrap_or(0);
    let scale = 1.0 / blocks.len() as f32;
    let out_channels = if post.is_some() { 1 } else { channels };
    let mut out = vec![0f32; out_channels * len];
    let shared = SharedOut::new(&mut out);
    parallel_for(len.div_ceil(window), |range| {
        for w in range {
            let (t0, t1) = (w * window, ((w + 1) * window).min(len));
            // The steps of the mean this window needs, and of the upsampled input its blocks read.
            let (start, end) = (t0.saturating_sub(post_reach), (t1 + post_reach).min(len));
            let (wide_start, wide_end) = (start.saturating_sub(widest), (end + widest).min(len));
            let wide = up.forward_range(x, in_len, in_len, SLOPE as f32, wide_start..wide_end);
            let wide_width = wide_end - wide_start;
            let width = end - start;
            let mut sum = vec![0f32; channels * width];
            for block in blocks {
                let halo = block.halo();
                let (from, to) = (start.saturating_sub(halo), (end + halo).min(len));
                let y = block.forward_here(Rows::window(&wide, wide_width, from - wide_start), to - from);
                for (s, y) in sum.chunks_exact_mut(width).zip(y.chunks_exact(to - from)) {
                    s.iter_mut().zip(&y[start - from..]).for_each(|(s, v)| *s += v);
                }
            }
            sum.iter_mut().for_each(|v| *v *= scale);
            if let Some(post) = post {
                sum = leaky_conv_here(Rows::whole(&sum, width), width, 0..width, LAST_SLOPE as f32, post, None);
                tanh_in_place(&mut sum);
            }
            for c in 0..out_channels {
                // SAFETY: each window writes only its own time steps of each row.
                let dst = unsafe { shared.part(c * len + t0, t1 - t0) };
                dst.copy_from_slice(&sum[c * width + (t0 - start)..][..t1 - t0]);
            }
        }
    });
    out
}

/// Each frame's mask value repeated `rate` times.
fn upsample_mask(mask: &Tensor, rate: usize) -> Result<Tensor> {
    let (b, _, t) = mask.dims3()?;
    mask.unsqueeze(3)?.broadcast_as((b, 1, t, rate))?.reshape((b, 1, t * rate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use crate::arch::vits::layers::sequence_mask;
    use crate::arch::vits::tests::{random_vb, tiny_config};
    use crate::arch::vits::DecoderConfig;
    use candle_core::Device;

    /// The CPU path (phase-split upsampling, resblocks in windows, our kernel) against candle's ops
    /// on a batch of two lengths, for both kinds of resblock. The longer sequence is long enough that
    /// every stage is cut into several windows (of up to 1,024 steps), even on one thread.
    #[test]
    fn the_cpu_decoder_matches_candles() {
        for resblock in [ResBlockKind::One, ResBlockKind::Two] {
            let cfg = VitsConfig {
                decoder: DecoderConfig {
                    resblock,
                    resblock_dilations: vec![vec![1, 3], vec![2, 5]],
                    ..tiny_config().decoder
                },
                ..tiny_config()
            };
            let decoder = Decoder::load(random_vb().pp("dec"), &cfg).unwrap();
            assert!(decoder.cpu_parts().is_some());
            let (c, len) = (cfg.inter_channels, 560);
            let mask = sequence_mask(&[len, 397], len, &Device::Cpu).unwrap();
            let z = Tensor::from_vec(values(9, 2 * c * len), (2, c, len), &Device::Cpu).unwrap();
            let got = decoder.forward(&z, &mask).unwrap();
            let want = decoder.forward_candle(&z, &mask).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{resblock:?}: {diff}");
            let loud = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(loud > 1e-2, "silence proves nothing ({loud})");
        }
    }
}
