//! VITS, as Piper's voices use it: phoneme ids in, 22,050 Hz audio out.
//!
//! text_encoder.rs (`enc_p`) -> duration.rs (`dp`, stochastic, in reverse) -> durations expand the
//! prior over frames -> flow.rs (`flow`, in reverse) -> decoder.rs (`dec`, HiFi-GAN).
//!
//! A batch holds sentences of different lengths: every stage carries masks, and each sentence comes
//! out exactly as it would alone.

pub mod decoder;
pub mod duration;
pub mod flow;
pub mod layers;
pub mod text_encoder;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResBlockKind {
    One,
    Two,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub initial_channels: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub resblock: ResBlockKind,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilations: Vec<Vec<usize>>,
}

/// The model's sizes, as VITS' `SynthesizerTrn` names them.
#[derive(Debug, Clone, PartialEq)]
pub struct VitsConfig {
    pub n_vocab: usize,
    pub hidden_channels: usize,
    pub inter_channels: usize,
    pub filter_channels: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub kernel_size: usize,
    pub window_size: usize,
    pub dp_filter_channels: usize,
    pub dp_kernel_size: usize,
    pub dp_flows: usize,
    pub dp_bins: usize,
    pub dp_tail_bound: f32,
    pub flow_layers: usize,
    pub flow_wn_layers: usize,
    pub flow_kernel_size: usize,
    pub flow_dilation_rate: usize,
    pub decoder: DecoderConfig,
}

/// How much noise and how slow: Piper's `scales` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Noise in the prior sample (`noise_scale`).
    pub noise: f32,
    /// Duration multiplier (`length_scale`): 2.0 speaks half as fast.
    pub length: f32,
    /// Noise in the duration predictor (`noise_w`).
    pub noise_w: f32,
}

pub struct Vits {
    pub cfg: VitsConfig,
    encoder: text_encoder::TextEncoder,
    durations: duration::DurationPredictor,
    flow: flow::Flow,
    decoder: decoder::Decoder,
    device: Device,
}

/// Samples per frame: the product of the upsampling rates.
pub fn hop_length(cfg: &VitsConfig) -> usize {
    cfg.decoder.upsample_rates.iter().product()
}

impl Vits {
    /// Builds the model from weights under their PyTorch names (`enc_p.emb.weight`, ...).
    pub fn load(vb: VarBuilder, cfg: VitsConfig) -> Result<Self> {
        Ok(Self {
            encoder: text_encoder::TextEncoder::load(vb.pp("enc_p"), &cfg)?,
            durations: duration::DurationPredictor::load(vb.pp("dp"), &cfg)?,
            flow: flow::Flow::load(vb.pp("flow"), &cfg)?,
            decoder: decoder::Decoder::load(vb.pp("dec"), &cfg)?,
            device: vb.device().clone(),
            cfg,
        })
    }

    /// Synthesises a batch of phoneme-id sequences; one waveform (in [-1, 1]) per sequence.
    pub fn synthesize(&self, batch: &[Vec<u32>], scales: Scales) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let dev = &self.device;
        let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
        let max_t = *lengths.iter().max().expect("non-empty");
        if max_t == 0 {
            candle_core::bail!("an empty phoneme sequence");
        }
        let ids: Vec<u32> =
            batch.iter().flat_map(|s| s.iter().copied().chain(std::iter::repeat(0)).take(max_t)).collect();
        let ids = Tensor::from_vec(ids, (batch.len(), max_t), dev)?;
        let x_mask = layers::sequence_mask(&lengths, max_t, dev)?;

        let enc = self.encoder.forward(&ids, &x_mask)?;
        let dp_noise = noise(&[batch.len(), 2, max_t], scales.noise_w, dev)?;
        let logw = self.durations.reverse(&enc.x, &x_mask, &dp_noise)?;
        let w = (logw.exp()?.broadcast_mul(&x_mask)? * scales.length as f64)?.squeeze(1)?.to_vec2::<f32>()?;

        // Each frame reads the prior of the token whose (ceiled) duration covers it.
        let mut frames_of: Vec<Vec<u32>> = Vec::with_capacity(batch.len());
        for (row, &len) in w.iter().zip(&lengths) {
            let mut frames = Vec::new();
            for (token, &d) in row[..len].iter().enumerate() {
                frames.extend(std::iter::repeat_n(token as u32, d.ceil().max(0.0) as usize));
            }
            if frames.is_empty() {
                frames.push(0); // the reference clamps the length to at least one frame
            }
            frames_of.push(frames);
        }
        let y_lengths: Vec<usize> = frames_of.iter().map(Vec::len).collect();
        let max_y = *y_lengths.iter().max().expect("non-empty");
        let index: Vec<u32> =
            frames_of.iter().flat_map(|f| f.iter().copied().chain(std::iter::repeat(0)).take(max_y)).collect();
        let inter = self.cfg.inter_channels;
        let index = Tensor::from_vec(index, (batch.len(), 1, max_y), dev)?
            .broadcast_as((batch.len(), inter, max_y))?
            .contiguous()?;
        let y_mask = layers::sequence_mask(&y_lengths, max_y, dev)?;
        let mean = enc.mean.contiguous()?.gather(&index, 2)?;
        let mut z_p = mean;
        if scales.noise > 0.0 {
            let log_scale = enc.log_scale.contiguous()?.gather(&index, 2)?;
            let eps = noise(&[batch.len(), inter, max_y], scales.noise, dev)?;
            z_p = (z_p + eps.mul(&log_scale.exp()?)?)?;
        }
        let z = self.flow.reverse(&z_p.broadcast_mul(&y_mask)?, &y_mask)?;
        let audio = self.decoder.forward(&z, &y_mask)?.squeeze(1)?.to_vec2::<f32>()?;
        let hop = hop_length(&self.cfg);
        Ok(audio
            .into_iter()
            .zip(&y_lengths)
            .map(|(mut a, &y)| {
                a.truncate(y * hop);
                a
            })
            .collect())
    }
}

/// Standard normal noise times `scale`; zeros when the scale is 0, so a voice with noise scales 0 is
/// deterministic.
fn noise(shape: &[usize], scale: f32, dev: &Device) -> Result<Tensor> {
    if scale == 0.0 {
        return Tensor::zeros(shape, DType::F32, dev);
    }
    Tensor::randn(0f32, scale, shape, dev)
}

/// Reads a VITS config from the weights' shapes, and from the ONNX graph what shapes cannot tell:
/// upsampling strides and dilations (`node_ints(node, attribute)`).
pub fn infer_config(
    weights: &HashMap<String, Tensor>,
    node_ints: impl Fn(&str, &str) -> Option<Vec<i64>>,
) -> anyhow::Result<VitsConfig> {
    let dims = |name: &str| -> anyhow::Result<Vec<usize>> {
        Ok(weights.get(name).with_context(|| format!("the voice has no tensor `{name}`"))?.dims().to_vec())
    };
    let count = |prefix: &str, suffix: &str| {
        (0..).take_while(|i| weights.contains_key(&format!("{prefix}{i}{suffix}"))).count()
    };
    let emb = dims("enc_p.emb.weight")?;
    let (n_vocab, hidden) = (emb[0], emb[1]);
    let rel = dims("enc_p.encoder.attn_layers.0.emb_rel_k")?;
    let ffn = dims("enc_p.encoder.ffn_layers.0.conv_1.weight")?;
    // The duration predictor's ConvFlows sit at odd indices; flows.1 is dropped by exporters.
    let last_conv_flow: usize = (1..64usize)
        .step_by(2)
        .filter(|i| weights.contains_key(&format!("dp.flows.{i}.proj.weight")))
        .max()
        .context("the voice has no duration-predictor flows")?;
    let dp_proj = dims(&format!("dp.flows.{last_conv_flow}.proj.weight"))?;
    let flow_layers =
        (0..64).step_by(2).take_while(|i| weights.contains_key(&format!("flow.flows.{i}.pre.weight"))).count();
    let wn = dims("flow.flows.0.enc.in_layers.0.weight")?;
    let flow_dilation_rate = match node_ints("/flow/flows.0/enc/in_layers.1/Conv", "dilations") {
        Some(d) if !d.is_empty() => d[0] as usize,
        _ => 1,
    };
    let ups = count("dec.ups.", ".weight");
    if ups == 0 {
        bail!("the voice has no decoder upsampling layers");
    }
    let mut upsample_rates = Vec::new();
    let mut upsample_kernel_sizes = Vec::new();
    for i in 0..ups {
        let k = dims(&format!("dec.ups.{i}.weight"))?[2];
        upsample_kernel_sizes.push(k);
        // HiFi-GAN's kernels are twice their stride; the graph says for sure when there is one.
        let stride = node_ints(&format!("/dec/ups.{i}/ConvTranspose"), "strides").and_then(|s| s.first().copied());
        upsample_rates.push(stride.map_or(k / 2, |s| s as usize));
    }
    let resblock =
        if weights.contains_key("dec.resblocks.0.convs1.0.weight") { ResBlockKind::One } else { ResBlockKind::Two };
    let per_stage = count(
        "dec.resblocks.",
        match resblock {
            ResBlockKind::One => ".convs1.0.weight",
            ResBlockKind::Two => ".convs.0.weight",
        },
    ) / ups;
    let conv_name = match resblock {
        ResBlockKind::One => "convs1",
        ResBlockKind::Two => "convs",
    };
    let mut resblock_kernel_sizes = Vec::new();
    let mut resblock_dilations = Vec::new();
    for j in 0..per_stage {
        resblock_kernel_sizes.push(dims(&format!("dec.resblocks.{j}.{conv_name}.0.weight"))?[2]);
        let n = count(&format!("dec.resblocks.{j}.{conv_name}."), ".weight");
        let dilations = (0..n)
            .map(|m| {
                node_ints(&format!("/dec/resblocks.{j}/{conv_name}.{m}/Conv"), "dilations")
                    .and_then(|d| d.first().copied())
                    .map(|d| d as usize)
                    .with_context(|| format!("the dilation of dec.resblocks.{j}.{conv_name}.{m} is not in the graph"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        resblock_dilations.push(dilations);
    }
    Ok(VitsConfig {
        n_vocab,
        hidden_channels: hidden,
        inter_channels: dims("enc_p.proj.weight")?[0] / 2,
        filter_channels: ffn[0],
        n_heads: hidden / rel[2],
        n_layers: count("enc_p.encoder.attn_layers.", ".conv_q.weight"),
        kernel_size: ffn[2],
        window_size: (rel[1] - 1) / 2,
        dp_filter_channels: dims("dp.pre.weight")?[0],
        dp_kernel_size: dims("dp.convs.convs_sep.0.weight")?[2],
        dp_flows: last_conv_flow.div_ceil(2),
        dp_bins: (dp_proj[0] + 1) / 3,
        // Not stored anywhere: VITS' value.
        dp_tail_bound: 5.0,
        flow_layers,
        flow_wn_layers: count("flow.flows.0.enc.in_layers.", ".weight"),
        flow_kernel_size: wn[2],
        flow_dilation_rate,
        decoder: DecoderConfig {
            initial_channels: dims("dec.conv_pre.weight")?[0],
            upsample_rates,
            upsample_kernel_sizes,
            resblock,
            resblock_kernel_sizes,
            resblock_dilations,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_nn::var_builder::SimpleBackend;
    use std::sync::Mutex;

    /// Deterministic pseudo-random weights for any name and shape, remembered for inspection.
    #[derive(Default)]
    struct RandomWeights {
        made: Mutex<HashMap<String, Tensor>>,
    }

    impl SimpleBackend for RandomWeights {
        fn get(
            &self,
            s: candle_core::Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> Result<Tensor> {
            let mut made = self.made.lock().unwrap();
            if let Some(t) = made.get(name) {
                return Ok(t.clone());
            }
            let mut state =
                name.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| (h ^ b as u64).wrapping_mul(0x1000_0000_01B3)) | 1;
            let values: Vec<f32> = (0..s.elem_count())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.3
                })
                .collect();
            let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
            made.insert(name.to_string(), t.clone());
            Ok(t)
        }

        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
            self.made.lock().unwrap().get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("no {name}")))
        }

        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    pub(crate) fn tiny_config() -> VitsConfig {
        VitsConfig {
            n_vocab: 20,
            hidden_channels: 8,
            inter_channels: 8,
            filter_channels: 16,
            n_heads: 2,
            n_layers: 2,
            kernel_size: 3,
            window_size: 2,
            dp_filter_channels: 8,
            dp_kernel_size: 3,
            dp_flows: 3,
            dp_bins: 4,
            dp_tail_bound: 5.0,
            flow_layers: 2,
            flow_wn_layers: 2,
            flow_kernel_size: 3,
            flow_dilation_rate: 1,
            decoder: DecoderConfig {
                initial_channels: 16,
                upsample_rates: vec![2, 2],
                upsample_kernel_sizes: vec![4, 4],
                resblock: ResBlockKind::Two,
                resblock_kernel_sizes: vec![3, 5],
                resblock_dilations: vec![vec![1, 2], vec![2, 3]],
            },
        }
    }

    /// A var builder of deterministic pseudo-random weights, for testing one part alone.
    pub(crate) fn random_vb() -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(RandomWeights::default()), DType::F32, Device::Cpu)
    }

    fn tiny() -> (Vits, HashMap<String, Tensor>) {
        let backend = std::sync::Arc::new(RandomWeights::default());
        struct Shared(std::sync::Arc<RandomWeights>);
        impl SimpleBackend for Shared {
            fn get(
                &self,
                s: candle_core::Shape,
                n: &str,
                h: candle_nn::Init,
                d: DType,
                dev: &Device,
            ) -> Result<Tensor> {
                self.0.get(s, n, h, d, dev)
            }
            fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> Result<Tensor> {
                self.0.get_unchecked(n, d, dev)
            }
            fn contains_tensor(&self, n: &str) -> bool {
                self.0.contains_tensor(n)
            }
        }
        let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, Device::Cpu);
        let model = Vits::load(vb, tiny_config()).unwrap();
        let weights = backend.made.lock().unwrap().clone();
        (model, weights)
    }

    const DETERMINISTIC: Scales = Scales { noise: 0.0, length: 1.0, noise_w: 0.0 };

    #[test]
    fn speaks_whole_frames_in_range() {
        let (model, _) = tiny();
        let audio = model.synthesize(&[vec![1, 0, 5, 0, 7, 0, 2]], DETERMINISTIC).unwrap();
        let hop = hop_length(&model.cfg);
        assert_eq!(hop, 4);
        assert!(!audio[0].is_empty() && audio[0].len() % hop == 0, "{}", audio[0].len());
        assert!(audio[0].iter().all(|s| s.abs() <= 1.0));
        assert!(audio[0].iter().any(|s| s.abs() > 1e-4), "not silence");
        // Slower speech is longer.
        let slow = model.synthesize(&[vec![1, 0, 5, 0, 7, 0, 2]], Scales { length: 3.0, ..DETERMINISTIC }).unwrap();
        assert!(slow[0].len() > audio[0].len());
    }

    #[test]
    fn a_sentence_sounds_the_same_alone_and_batched() {
        let (model, _) = tiny();
        let a = vec![1, 0, 5, 0, 7, 0, 9, 0, 11, 0, 2];
        let b = vec![1, 0, 3, 0, 2];
        let alone_a = model.synthesize(std::slice::from_ref(&a), DETERMINISTIC).unwrap().remove(0);
        let alone_b = model.synthesize(std::slice::from_ref(&b), DETERMINISTIC).unwrap().remove(0);
        let batch = model.synthesize(&[a, b], DETERMINISTIC).unwrap();
        for (alone, batched) in [(&alone_a, &batch[0]), (&alone_b, &batch[1])] {
            assert_eq!(alone.len(), batched.len());
            let diff = crate::max_abs_diff(alone, batched);
            assert!(diff < 1e-5, "batched differs by {diff}");
        }
    }

    /// An empty sequence beside a real one: the per-sequence CPU paths see a length of zero.
    #[test]
    fn an_empty_sequence_in_a_batch_breaks_nothing() {
        let (model, _) = tiny();
        let b = vec![1, 0, 3, 0, 2];
        let alone = model.synthesize(std::slice::from_ref(&b), DETERMINISTIC).unwrap().remove(0);
        let batch = model.synthesize(&[vec![], b], DETERMINISTIC).unwrap();
        assert_eq!(batch[1], alone);
        assert_eq!(batch[0].len(), hop_length(&model.cfg), "one frame, as the reference clamps it");
    }

    #[test]
    fn config_is_read_back_from_the_weights_and_graph() {
        let (model, weights) = tiny();
        let cfg = model.cfg.clone();
        let node_ints = |node: &str, attr: &str| -> Option<Vec<i64>> {
            // What an exported graph would say: strides of the upsamplers, dilations of the convs.
            let d = &cfg.decoder;
            if let Some(i) = node.strip_prefix("/dec/ups.").and_then(|r| r.strip_suffix("/ConvTranspose")) {
                return (attr == "strides").then(|| vec![d.upsample_rates[i.parse::<usize>().unwrap()] as i64]);
            }
            let rest = node.strip_prefix("/dec/resblocks.")?;
            let (j, rest) = rest.split_once("/convs.")?;
            let m = rest.strip_suffix("/Conv")?;
            (attr == "dilations")
                .then(|| vec![d.resblock_dilations[j.parse::<usize>().unwrap()][m.parse::<usize>().unwrap()] as i64])
        };
        assert_eq!(infer_config(&weights, node_ints).unwrap(), cfg);
    }
}
