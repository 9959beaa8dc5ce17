//! The normalising flow (`flow`), run in reverse: from the prior's sample to the decoder's input.
//! Mean-only affine coupling layers whose shift a WaveNet-style stack predicts from the other half,
//! each followed by a channel flip.

use super::layers::{per_sequence, Conv1d};
use super::VitsConfig;
use crate::arch::cpu::conv1d::PackedConv;
use crate::arch::cpu::rowwise::tanh_gate_in_place;
use crate::arch::cpu::{parallel_for, SharedOut};
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
    /// On CPU, the same layers for our convolution kernel, one sequence at a time: candle's path
    /// (im2col, gemm, then a pass per elementwise op) ran the flow at a third of the kernel's speed.
    cpu: Option<Vec<CpuCoupling>>,
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
            .collect::<Result<Vec<_>>>()?;
        let cpu = layers.iter().map(CpuCoupling::new).collect::<Result<Option<Vec<_>>>>()?;
        Ok(Self { layers, cpu })
    }

    /// `z`: `[b, inter, t]`, `mask`: `[b, 1, t]`.
    pub fn reverse(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        if let Some(cpu) = &self.cpu {
            return per_sequence(z, mask, z.dim(1)?, 1, |seq, _, valid| reverse_cpu(cpu, seq, valid));
        }
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

/// A coupling layer's convolutions packed for our CPU kernel.
struct CpuCoupling {
    pre: PackedConv,
    in_layers: Vec<PackedConv>,
    res_skip_layers: Vec<PackedConv>,
    post: PackedConv,
    half: usize,
    hidden: usize,
}

impl CpuCoupling {
    /// `None` on another device.
    fn new(layer: &CouplingLayer) -> Result<Option<Self>> {
        let convs = |c: &[Conv1d]| c.iter().map(Conv1d::packed).collect::<Result<Option<Vec<_>>>>();
        let (Some(pre), Some(in_layers), Some(res_skip_layers), Some(post)) = (
            layer.pre.packed()?,
            convs(&layer.enc.in_layers)?,
            convs(&layer.enc.res_skip_layers)?,
            layer.post.packed()?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Self { pre, in_layers, res_skip_layers, post, half: layer.half, hidden: layer.enc.hidden }))
    }

    /// `CouplingLayer::reverse` for one sequence: `x` is `[channels][len]`, all of it valid, and
    /// its second half is updated in place.
    fn reverse(&self, x: &mut [f32], len: usize) {
        let (x0, x1) = x.split_at_mut(self.half * len);
        let mut h = self.pre.apply(x0, len);
        let mut skip = vec![0f32; self.hidden * len];
        let last = self.in_layers.len() - 1;
        for (i, (inl, rs)) in self.in_layers.iter().zip(&self.res_skip_layers).enumerate() {
            let acts = gated_tanh(&inl.apply(&h, len), self.hidden * len);
            let rs = rs.apply(&acts, len);
            let skip_part = if i < last {
                h.iter_mut().zip(&rs).for_each(|(h, r)| *h += r);
                &rs[self.hidden * len..]
            } else {
                &rs[..]
            };
            skip.iter_mut().zip(skip_part).for_each(|(s, r)| *s += r);
        }
        let m = self.post.apply(&skip, len);
        x1.iter_mut().zip(&m).for_each(|(x, m)| *x -= m);
    }
}

/// WaveNet's gate, `tanh(a) * sigmoid(b)` for the two halves `[a; b]` of `x` (`n` values each),
/// on both threads: it is a transcendental pair per value.
fn gated_tanh(x: &[f32], n: usize) -> Vec<f32> {
    const CHUNK: usize = 4096;
    let (a, b) = x.split_at(n);
    let mut out = vec![0f32; n];
    let shared = SharedOut::new(&mut out);
    parallel_for(n.div_ceil(CHUNK), |range| {
        for chunk in range {
            let start = chunk * CHUNK;
            let end = (start + CHUNK).min(n);
            // SAFETY: each chunk writes only its own range.
            let dst = unsafe { shared.part(start, end - start) };
            dst.copy_from_slice(&a[start..end]);
            tanh_gate_in_place(dst, &b[start..end]);
        }
    });
    out
}

/// `Flow::reverse` for one sequence, `z` `[channels][len]` all valid.
fn reverse_cpu(layers: &[CpuCoupling], z: &[f32], len: usize) -> Vec<f32> {
    let mut z = z.to_vec();
    for layer in layers.iter().rev() {
        // The flip: channel order reversed.
        z = z.chunks(len.max(1)).rev().flatten().copied().collect();
        layer.reverse(&mut z, len);
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use crate::arch::vits::layers::sequence_mask;
    use crate::arch::vits::tests::{random_vb, tiny_config};
    use candle_core::Device;

    /// The per-sequence CPU path against the candle ops it replaces, on a batch of two lengths.
    #[test]
    fn the_cpu_flow_matches_candles() {
        let cfg = VitsConfig { flow_dilation_rate: 2, ..tiny_config() };
        let mut flow = Flow::load(random_vb().pp("flow"), &cfg).unwrap();
        assert!(flow.cpu.is_some());
        let (c, len) = (cfg.inter_channels, 70);
        let mask = sequence_mask(&[len, 41], len, &Device::Cpu).unwrap();
        let z = Tensor::from_vec(values(7, 2 * c * len), (2, c, len), &Device::Cpu).unwrap();
        let z = z.broadcast_mul(&mask).unwrap();
        let got = flow.reverse(&z, &mask).unwrap();
        flow.cpu = None;
        let want = flow.reverse(&z, &mask).unwrap();
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
        let moved = (want - &z).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(moved > 1e-2, "the flow changed nothing ({moved}): the comparison proves nothing");
    }
}
