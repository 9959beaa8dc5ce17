//! The text encoder (`enc_p`): phoneme embeddings, a transformer whose attention adds learned
//! relative-position terms within a window, and a projection to the prior's mean and log-scale.

mod cpu;

use super::layers::{per_sequence, ChannelNorm, Conv1d};
use super::VitsConfig;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Multi-head self-attention with relative-position keys and values (VITS' `window_size`).
///
/// Positions further apart than the window get no relative term (the reference pads its embeddings
/// with zeros there), so the terms are computed on the band |j - i| <= window only.
struct RelativeAttention {
    q: Conv1d,
    k: Conv1d,
    v: Conv1d,
    o: Conv1d,
    /// `[2 * window + 1, k_channels]`, index `window + (j - i)`.
    rel_k: Tensor,
    rel_v: Tensor,
    heads: usize,
    window: usize,
}

impl RelativeAttention {
    fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let h = cfg.hidden_channels;
        let kc = h / cfg.n_heads;
        let band = 2 * cfg.window_size + 1;
        Ok(Self {
            q: Conv1d::load(vb.pp("conv_q"), h, h, 1, 1, 1)?,
            k: Conv1d::load(vb.pp("conv_k"), h, h, 1, 1, 1)?,
            v: Conv1d::load(vb.pp("conv_v"), h, h, 1, 1, 1)?,
            o: Conv1d::load(vb.pp("conv_o"), h, h, 1, 1, 1)?,
            rel_k: vb.get((1, band, kc), "emb_rel_k")?.squeeze(0)?,
            rel_v: vb.get((1, band, kc), "emb_rel_v")?.squeeze(0)?,
            heads: cfg.n_heads,
            window: cfg.window_size,
        })
    }

    /// `x`: `[b, h, t]`; `pair_mask`: `[b, 1, t, t]`, 1 where both positions are real.
    fn forward(&self, x: &Tensor, pair_mask: &Tensor) -> Result<Tensor> {
        let (b, h, t) = x.dims3()?;
        let kc = h / self.heads;
        let split = |y: Tensor| y.reshape((b, self.heads, kc, t))?.transpose(2, 3)?.contiguous();
        let q = (split(self.q.forward(x)?)? / (kc as f64).sqrt())?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;

        let scores = q.matmul(&k.t()?.contiguous()?)?;
        // q . rel_k for each of the 2w+1 offsets, then placed at (i, j = i + offset).
        let band_logits = q.broadcast_matmul(&self.rel_k.t()?.contiguous()?)?; // [b, heads, t, 2w+1]
        let scores = (scores + self.band_to_square(&band_logits, t)?)?;
        let neg = Tensor::full(-1e4f32, scores.shape(), scores.device())?;
        let scores = pair_mask.broadcast_as(scores.shape())?.ne(0f32)?.where_cond(&scores, &neg)?;
        let p = candle_nn::ops::softmax_last_dim(&scores)?;

        let out = p.matmul(&v)?;
        // Attention weights gathered back onto the band, times the relative values.
        let p_band = self.square_to_band(&p, t)?; // [b, heads, t, 2w+1]
        let out = (out + p_band.broadcast_matmul(&self.rel_v)?)?;
        let out = out.transpose(2, 3)?.reshape((b, h, t))?;
        self.o.forward(&out)
    }

    /// `[.., t, 2w+1]` -> `[.., t, t]`: entry (i, j) = band[i][j - i + w] within the window, else 0.
    fn band_to_square(&self, band: &Tensor, t: usize) -> Result<Tensor> {
        let w = self.window as i64;
        let width = 2 * self.window + 1;
        let padded = Tensor::cat(&[band, &band.narrow(D::Minus1, 0, 1)?.zeros_like()?], D::Minus1)?;
        let idx: Vec<u32> = (0..t as i64)
            .flat_map(|i| {
                (0..t as i64).map(move |j| if (j - i).abs() <= w { (j - i + w) as u32 } else { width as u32 })
            })
            .collect();
        let idx = Tensor::from_vec(idx, (1, 1, t, t), band.device())?;
        let (b, heads) = (band.dim(0)?, band.dim(1)?);
        padded.contiguous()?.gather(&idx.broadcast_as((b, heads, t, t))?.contiguous()?, D::Minus1)
    }

    /// `[.., t, t]` -> `[.., t, 2w+1]`: entry (i, d) = square[i][i + d - w] where that is inside, else 0.
    fn square_to_band(&self, square: &Tensor, t: usize) -> Result<Tensor> {
        let w = self.window as i64;
        let width = 2 * self.window + 1;
        let padded = Tensor::cat(&[square, &square.narrow(D::Minus1, 0, 1)?.zeros_like()?], D::Minus1)?;
        let idx: Vec<u32> = (0..t as i64)
            .flat_map(|i| {
                (0..width as i64).map(move |d| {
                    let j = i + d - w;
                    if (0..t as i64).contains(&j) {
                        j as u32
                    } else {
                        t as u32
                    }
                })
            })
            .collect();
        let idx = Tensor::from_vec(idx, (1, 1, t, width), square.device())?;
        let (b, heads) = (square.dim(0)?, square.dim(1)?);
        padded.contiguous()?.gather(&idx.broadcast_as((b, heads, t, width))?.contiguous()?, D::Minus1)
    }
}

struct FeedForward {
    conv_1: Conv1d,
    conv_2: Conv1d,
}

impl FeedForward {
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let y = self.conv_1.forward(&x.broadcast_mul(mask)?)?.relu()?;
        self.conv_2.forward(&y.broadcast_mul(mask)?)?.broadcast_mul(mask)
    }
}

struct Layer {
    attn: RelativeAttention,
    norm_1: ChannelNorm,
    ffn: FeedForward,
    norm_2: ChannelNorm,
}

pub struct TextEncoder {
    emb: Tensor,
    layers: Vec<Layer>,
    proj: Conv1d,
    hidden: usize,
    /// On CPU, the same layers for our kernels, one sequence at a time.
    cpu: Option<cpu::CpuEncoder>,
}

/// What the encoder hands on: the hidden states (for the duration predictor) and the prior.
pub struct Encoded {
    pub x: Tensor,
    pub mean: Tensor,
    pub log_scale: Tensor,
}

impl TextEncoder {
    pub fn load(vb: VarBuilder, cfg: &VitsConfig) -> Result<Self> {
        let h = cfg.hidden_channels;
        let enc = vb.pp("encoder");
        let layers = (0..cfg.n_layers)
            .map(|i| {
                Ok(Layer {
                    attn: RelativeAttention::load(enc.pp("attn_layers").pp(i), cfg)?,
                    norm_1: ChannelNorm::load(enc.pp("norm_layers_1").pp(i), h)?,
                    ffn: FeedForward {
                        conv_1: Conv1d::load(
                            enc.pp("ffn_layers").pp(i).pp("conv_1"),
                            h,
                            cfg.filter_channels,
                            cfg.kernel_size,
                            1,
                            1,
                        )?,
                        conv_2: Conv1d::load(
                            enc.pp("ffn_layers").pp(i).pp("conv_2"),
                            cfg.filter_channels,
                            h,
                            cfg.kernel_size,
                            1,
                            1,
                        )?,
                    },
                    norm_2: ChannelNorm::load(enc.pp("norm_layers_2").pp(i), h)?,
                })
            })
            .collect::<Result<_>>()?;
        let mut enc = Self {
            emb: vb.get((cfg.n_vocab, h), "emb.weight")?,
            layers,
            proj: Conv1d::load(vb.pp("proj"), h, 2 * cfg.inter_channels, 1, 1, 1)?,
            hidden: h,
            cpu: None,
        };
        enc.cpu = cpu::CpuEncoder::new(&enc)?;
        Ok(enc)
    }

    /// `ids`: `[b, t]` (padded); `mask`: `[b, 1, t]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Encoded> {
        let x = self.embed(ids)?;
        let Some(cpu) = &self.cpu else {
            return self.forward_candle(x, mask);
        };
        let h = self.hidden;
        let out = per_sequence(&x.broadcast_mul(mask)?, mask, h + self.proj.out_channels(), 1, |seq, _, valid| {
            cpu.forward(seq, valid)
        })?;
        let inter = self.proj.out_channels() / 2;
        Ok(Encoded {
            x: out.narrow(1, 0, h)?,
            mean: out.narrow(1, h, inter)?,
            log_scale: out.narrow(1, h + inter, inter)?,
        })
    }

    /// `[b, t]` ids -> `[b, hidden, t]`, scaled as the reference does.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.emb.embedding(&ids.flatten_all()?)?.reshape((b, t, self.hidden))?;
        (x * (self.hidden as f64).sqrt())?.transpose(1, 2)?.contiguous()
    }

    /// The same with candle's ops, where our CPU kernels do not run.
    fn forward_candle(&self, mut x: Tensor, mask: &Tensor) -> Result<Encoded> {
        let pair_mask = mask.unsqueeze(2)?.broadcast_mul(&mask.unsqueeze(3)?)?; // [b, 1, t, t]
        x = x.broadcast_mul(mask)?;
        for layer in &self.layers {
            let y = layer.attn.forward(&x, &pair_mask)?;
            x = layer.norm_1.forward(&(x + y)?)?;
            let y = layer.ffn.forward(&x, mask)?;
            x = layer.norm_2.forward(&(x + y)?)?;
        }
        let x = x.broadcast_mul(mask)?;
        let stats = self.proj.forward(&x)?.broadcast_mul(mask)?;
        let inter = stats.dim(1)? / 2;
        Ok(Encoded { mean: stats.narrow(1, 0, inter)?, log_scale: stats.narrow(1, inter, inter)?, x })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use candle_core::{DType, Device};

    /// The per-sequence CPU path against candle's batched ops, on two lengths with padding.
    #[test]
    fn the_cpu_encoder_matches_candles() {
        let cfg = crate::arch::vits::tests::tiny_config();
        let enc = TextEncoder::load(crate::arch::vits::tests::random_vb().pp("enc_p"), &cfg).unwrap();
        assert!(enc.cpu.is_some());
        let dev = Device::Cpu;
        let lengths = [13usize, 6];
        let ids: Vec<u32> =
            (0..2 * 13).map(|i| if i % 13 < lengths[i / 13] { (i * 7 % 19) as u32 } else { 0 }).collect();
        let ids = Tensor::from_vec(ids, (2, 13), &dev).unwrap();
        let mask = crate::arch::vits::layers::sequence_mask(&lengths, 13, &dev).unwrap();
        let got = enc.forward(&ids, &mask).unwrap();
        let want = enc.forward_candle(enc.embed(&ids).unwrap(), &mask).unwrap();
        for (name, a, b) in
            [("x", &got.x, &want.x), ("mean", &got.mean, &want.mean), ("log_scale", &got.log_scale, &want.log_scale)]
        {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{name}: {diff}");
            let size = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(size > 1e-2, "{name} is all zeros: the comparison proves nothing");
        }
    }

    /// The closed form of VITS' relative attention, with loops: scores q.k + q.rel_k[j-i+w] within
    /// the window, -1e4 where masked, softmax, then p.v + sum over the window of p * rel_v.
    #[test]
    fn relative_attention_matches_a_naive_reference() {
        let cfg = crate::arch::vits::tests::tiny_config(); // hidden 8, 2 heads, window 2
        let (h, heads, w, t, len) = (cfg.hidden_channels, cfg.n_heads, cfg.window_size, 7usize, 5usize);
        let kc = h / heads;
        let dev = Device::Cpu;
        let mut weights = std::collections::HashMap::new();
        let mut seed = 0;
        let mut tensor = |shape: &[usize]| {
            seed += 1;
            Tensor::from_vec(values(seed, shape.iter().product()), shape, &dev).unwrap()
        };
        for c in ["conv_q", "conv_k", "conv_v", "conv_o"] {
            weights.insert(format!("{c}.weight"), tensor(&[h, h, 1]));
            weights.insert(format!("{c}.bias"), tensor(&[h]));
        }
        weights.insert("emb_rel_k".into(), tensor(&[1, 2 * w + 1, kc]));
        weights.insert("emb_rel_v".into(), tensor(&[1, 2 * w + 1, kc]));
        let x = tensor(&[1, h, t]);
        let attn = RelativeAttention::load(VarBuilder::from_tensors(weights.clone(), DType::F32, &dev), &cfg).unwrap();
        let mask = crate::arch::vits::layers::sequence_mask(&[len], t, &dev).unwrap();
        let pair = mask.unsqueeze(2).unwrap().broadcast_mul(&mask.unsqueeze(3).unwrap()).unwrap();
        let got = attn.forward(&x, &pair).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();

        let get = |n: &str| weights[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xv = x.squeeze(0).unwrap().to_vec2::<f32>().unwrap(); // [h][t]
        let conv = |name: &str, input: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            let (wt, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
            (0..h)
                .map(|o| (0..t).map(|i| b[o] + (0..h).map(|c| wt[o * h + c] * input[c][i]).sum::<f32>()).collect())
                .collect()
        };
        let (q, k, v) = (conv("conv_q", &xv), conv("conv_k", &xv), conv("conv_v", &xv));
        let (rk, rv) = (get("emb_rel_k"), get("emb_rel_v"));
        let mut out = vec![vec![0f32; t]; h];
        for hd in 0..heads {
            let ch = |c: usize| hd * kc + c;
            for i in 0..t {
                let mut scores: Vec<f32> = (0..t)
                    .map(|j| {
                        let mut s: f32 = (0..kc).map(|c| q[ch(c)][i] * k[ch(c)][j]).sum();
                        let d = j as i64 - i as i64;
                        if d.unsigned_abs() as usize <= w {
                            let r = (d + w as i64) as usize;
                            s += (0..kc).map(|c| q[ch(c)][i] * rk[r * kc + c]).sum::<f32>();
                        }
                        s /= (kc as f32).sqrt();
                        if i < len && j < len {
                            s
                        } else {
                            -1e4
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                scores.iter_mut().for_each(|s| *s = (*s - max).exp());
                let sum: f32 = scores.iter().sum();
                for c in 0..kc {
                    let mut o: f32 = (0..t).map(|j| scores[j] / sum * v[ch(c)][j]).sum();
                    for j in i.saturating_sub(w)..(i + w + 1).min(t) {
                        o += scores[j] / sum * rv[(j + w - i) * kc + c];
                    }
                    out[ch(c)][i] = o;
                }
            }
        }
        let want = conv("conv_o", &out);
        for o in 0..h {
            for i in 0..t {
                assert!((got[o][i] - want[o][i]).abs() < 1e-4, "({o}, {i}): {} vs {}", got[o][i], want[o][i]);
            }
        }
    }
}
