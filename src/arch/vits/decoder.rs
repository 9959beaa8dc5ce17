//! The HiFi-GAN generator (`dec`): upsampling transposed convolutions, each followed by the mean of
//! parallel residual blocks with different kernels and dilations, then a last convolution and tanh.
//!
//! Batches of different lengths: every convolution's input is multiplied by the mask at its
//! resolution, so a padded position reads zeros exactly where a lone sequence's padding would, and a
//! sequence decodes to the same samples alone or batched.

use super::layers::{leaky_relu, Conv1d, ConvTranspose1d};
use super::{ResBlockKind, VitsConfig};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

const SLOPE: f64 = 0.1;
/// The reference's last activation uses PyTorch's default slope, not the generator's 0.1.
const LAST_SLOPE: f64 = 0.01;

/// HiFi-GAN's ResBlock1 (pairs of dilated and plain convolutions) or ResBlock2 (dilated only).
struct ResBlock {
    dilated: Vec<Conv1d>,
    plain: Vec<Conv1d>,
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
        let dilated = dilations
            .iter()
            .enumerate()
            .map(|(j, &d)| Conv1d::load(vb.pp(dilated_name).pp(j), channels, channels, kernel, d, 1))
            .collect::<Result<_>>()?;
        Ok(Self { dilated, plain })
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
        Ok(Self {
            conv_pre: Conv1d::load(vb.pp("conv_pre"), cfg.inter_channels, d.initial_channels, 7, 1, 1)?,
            stages,
            conv_post: Conv1d::load_with(vb.pp("conv_post"), channels, 1, 7, 1, 1, false)?,
        })
    }

    /// Frames `[b, inter, t]` with `mask` `[b, 1, t]` -> audio `[b, 1, t * hop]`.
    pub fn forward(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
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

/// Each frame's mask value repeated `rate` times.
fn upsample_mask(mask: &Tensor, rate: usize) -> Result<Tensor> {
    let (b, _, t) = mask.dims3()?;
    mask.unsqueeze(3)?.broadcast_as((b, 1, t, rate))?.reshape((b, 1, t * rate))
}
