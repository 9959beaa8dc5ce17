//! The normalising flow (`flow`), run in reverse: from the prior's sample to the decoder's input.
//! Mean-only affine coupling layers whose shift a WaveNet-style stack predicts from the other half,
//! each followed by a channel flip.

use super::layers::Conv1d;
use super::VitsConfig;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Gated dilated convolutions with residual and skip outputs (VITS' `WN`, no speaker conditioning).
struct WaveNet {
    in_layers: Vec<Conv1d>,
    res_skip_layers: Vec<Conv1d>,
    hidden: usize,
}

impl WaveNet {
    fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let h = cfg.hidden_channels;
        let mut s = Self { in_layers: vec![], res_skip_layers: vec![], hidden: h };
        for i in 0..cfg.flow_wn_layers {
            let dilation = cfg.flow_dilation_rate.pow(i as u32);
            s.in_layers.push(Conv1d::load(vb.pp("in_layers").pp(i), h, 2 * h, cfg.flow_kernel_size, dilation, 1)?);
            let out = if i + 1 < cfg.flow_wn_layers { 2 * h } else { h };
            s.res_skip_layers.push(Conv1d::load(vb.pp("res_skip_layers").pp(i), h, out, 1, 1, 1)?);
        }
        Ok(s)
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.hidden;
        let mut x = x.clone();
        let mut out: Option<Tensor> = None;
        let last = self.in_layers.len() - 1;
        for (i, (inl, rs)) in self.in_layers.iter().zip(&self.res_skip_layers).enumerate() {
            let xi = inl.forward(&x)?;
            let acts = (xi.narrow(1, 0, h)?.tanh()? * candle_nn::ops::sigmoid(&xi.narrow(1, h, h)?)?)?;
            let rs = rs.forward(&acts)?;
            let skip = if i < last {
                x = (x + rs.narrow(1, 0, h)?)?.broadcast_mul(mask)?;
                rs.narrow(1, h, h)?
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => (o + skip)?,
                None => skip,
            });
        }
        out.expect("at least one layer").broadcast_mul(mask)
    }
}

struct CouplingLayer {
    pre: Conv1d,
    enc: WaveNet,
    post: Conv1d,
    half: usize,
}

impl CouplingLayer {
    fn reverse(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x0 = x.narrow(1, 0, self.half)?;
        let x1 = x.narrow(1, self.half, self.half)?;
        let h = self.pre.forward(&x0)?.broadcast_mul(mask)?;
        let h = self.enc.forward(&h, mask)?;
        let m = self.post.forward(&h)?.broadcast_mul(mask)?;
        let x1 = (x1 - m)?.broadcast_mul(mask)?;
        Tensor::cat(&[&x0, &x1], 1)
    }
}

pub struct Flow {
    /// Coupling layers in forward order; each is followed by a flip.
    layers: Vec<CouplingLayer>,
}

impl Flow {
    pub fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let (c, h) = (cfg.inter_channels, cfg.hidden_channels);
        let half = c / 2;
        let layers = (0..cfg.flow_layers)
            .map(|i| {
                let vb = vb.pp("flows").pp(2 * i);
                Ok(CouplingLayer {
                    pre: Conv1d::load(vb.pp("pre"), half, h, 1, 1, 1)?,
                    enc: WaveNet::load(vb.pp("enc"), cfg)?,
                    post: Conv1d::load(vb.pp("post"), h, half, 1, 1, 1)?,
                    half,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `z`: `[b, inter, t]`, `mask`: `[b, 1, t]`.
    pub fn reverse(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut z = z.clone();
        for layer in self.layers.iter().rev() {
            z = flip_channels(&z)?;
            z = layer.reverse(&z, mask)?;
        }
        Ok(z)
    }
}

fn flip_channels(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let idx: Vec<u32> = (0..c as u32).rev().collect();
    x.index_select(&Tensor::new(idx, x.device())?, 1)
}
