//! Finding MB-MelGAN's layers in a TFLite graph by the operators that read the weights.
//!
//! The converter folds and renames constants (a bias may be called `.../conv1d` and its kernel
//! `.../conv1d1`, and one zero bias is shared by many convolutions), so nothing here goes by tensor
//! names. Each convolution (`CONV_2D` or `TRANSPOSE_CONV`) is read with what surrounds it on its data
//! path: walking back from its input, the reshapes (`EXPAND_DIMS`), the dilation's
//! `SPACE_TO_BATCH_ND`, a `MIRROR_PAD` or zero `PAD`, an int8 round trip (`QUANTIZE`, `DEQUANTIZE`) and
//! a `LEAKY_RELU`, down to the tensor the chain starts from; walking forward from its output, the
//! reshapes, the dilation's `BATCH_TO_SPACE_ND` and the `ADD`s of a constant bias. `SHAPE` and the
//! integer ops that compute run-time shapes from it are not on any data path and are skipped.

use crate::loader::tflite::TfLite;
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;

/// One convolution as the graph computes it.
#[derive(Debug)]
pub(super) struct ConvSpec {
    pub op: usize,
    pub transposed: bool,
    /// `[out][in][kernel]` for a convolution, `[in][out][kernel]` for a transposed one (PyTorch's
    /// layouts).
    pub weight: Vec<f32>,
    /// The convolution's own bias operand plus every constant added after it.
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub dilation: usize,
    /// A transposed convolution's upsampling factor (1 for a convolution).
    pub stride: usize,
    /// Padding before and after along time, and whether it mirrors (`MIRROR_PAD` REFLECT) or is
    /// zeros (`PAD`).
    pub pad: (usize, usize),
    pub reflect: bool,
    /// The slope of the leaky ReLU applied to `input` first, if any.
    pub slope: Option<f32>,
    /// `(scale, zero point)` of an int8 round trip on the way from `input`, if any.
    pub snap: Option<(f32, i64)>,
    /// The tensor the input chain starts from, and the one the bias adds end at.
    pub input: i32,
    pub output: i32,
    /// The `ADD`s of a constant found after it.
    pub bias_adds: usize,
}

/// The graph's operators indexed by the tensors they write and read.
pub(super) struct Graph<'a> {
    pub model: &'a TfLite,
    producer: HashMap<i32, usize>,
    consumers: HashMap<i32, Vec<usize>>,
}

/// Ops that only reshape (batch 1 throughout the converted graph).
const RESHAPES: [&str; 3] = ["EXPAND_DIMS", "SQUEEZE", "RESHAPE"];

impl<'a> Graph<'a> {
    pub fn new(model: &'a TfLite) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<i32, Vec<usize>> = HashMap::new();
        for (k, op) in model.operators().iter().enumerate() {
            for &t in &op.outputs {
                producer.insert(t, k);
            }
            if op.op == "SHAPE" {
                continue;
            }
            for &t in op.inputs.iter().filter(|&&t| t >= 0) {
                consumers.entry(t).or_default().push(k);
            }
        }
        Self { model, producer, consumers }
    }

    /// The operators (other than `SHAPE`) that read tensor `t`.
    pub fn consumers(&self, t: i32) -> &[usize] {
        self.consumers.get(&t).map_or(&[], Vec::as_slice)
    }

    /// The operator of kind `op` that reads exactly `inputs` (in any order).
    pub fn find_op(&self, op: &str, inputs: &[i32]) -> Option<usize> {
        let first = *inputs.first()?;
        self.consumers(first).iter().copied().find(|&k| {
            let o = &self.model.operators()[k];
            let mut a = o.inputs.clone();
            let mut b = inputs.to_vec();
            a.sort();
            b.sort();
            o.op == op && a == b
        })
    }

    /// Every convolution of the graph, in execution order.
    pub fn convolutions(&self) -> Result<Vec<ConvSpec>> {
        let ops = self.model.operators();
        (0..ops.len())
            .filter(|&k| matches!(ops[k].op.as_str(), "CONV_2D" | "TRANSPOSE_CONV"))
            .map(|k| self.convolution(k).with_context(|| format!("operator {k} ({})", ops[k].op)))
            .collect()
    }

    fn convolution(&self, k: usize) -> Result<ConvSpec> {
        let m = self.model;
        let op = &m.operators()[k];
        let transposed = op.op == "TRANSPOSE_CONV";
        // CONV_2D: input, filter, bias. TRANSPOSE_CONV: output shape, filter, input, optional bias.
        let (data, filter, bias) = match transposed {
            false => (op.inputs.first(), op.inputs.get(1), op.inputs.get(2)),
            true => (op.inputs.get(2), op.inputs.get(1), op.inputs.get(3)),
        };
        let (data, filter) = (*data.context("no input")?, *filter.context("no filter")?);
        let options = m.options(k)?;
        // Options: padding 0 (SAME 0, VALID 1), stride_w 1, stride_h 2, fused activation 3, and for
        // CONV_2D dilation_w 4, dilation_h 5.
        ensure!(options.u8(3, 0)? == 0, "a fused activation");
        let (stride_w, stride_h) = (options.i32(1, 1)?, options.i32(2, 1)?);
        let padding = options.u8(0, 0)?;
        // Filters are [out, kh, kw, in]: time runs along whichever of kh, kw is not 1.
        let (shape, w) = m.dequantized(usize::try_from(filter).context("no filter")?)?;
        let &[c_out, kh, kw, c_in] = shape.as_slice() else { bail!("a filter of shape {shape:?}") };
        ensure!(kh == 1 || kw == 1, "a 2-D filter {shape:?}");
        let kernel = kh * kw;
        let (stride, other) = if kh > 1 || stride_h > 1 { (stride_h, stride_w) } else { (stride_w, stride_h) };
        ensure!(other == 1 && stride >= 1, "strides {stride_w}x{stride_h}");
        let stride = stride as usize;
        let mut dilation = 1;
        if transposed {
            ensure!(padding == 0, "a transposed convolution with VALID padding");
        } else {
            ensure!(padding == 1 && stride == 1, "a convolution with SAME padding or a stride");
            let (dw, dh) = (options.i32(4, 1)?, options.i32(5, 1)?);
            ensure!(dw >= 1 && dh >= 1, "dilations {dw}x{dh}");
            dilation = (dw * dh) as usize;
        }
        let weight: Vec<f32> = match transposed {
            // [out][k][in] -> [in][out][k]
            false => (0..c_out)
                .flat_map(|o| (0..c_in).flat_map(move |i| (0..kernel).map(move |j| (o, i, j))))
                .map(|(o, i, j)| w[(o * kernel + j) * c_in + i])
                .collect(),
            true => (0..c_in)
                .flat_map(|i| (0..c_out).flat_map(move |o| (0..kernel).map(move |j| (o, i, j))))
                .map(|(o, i, j)| w[(o * kernel + j) * c_in + i])
                .collect(),
        };
        let mut spec = ConvSpec {
            op: k,
            transposed,
            weight,
            bias: vec![0.0; c_out],
            c_in,
            c_out,
            kernel,
            dilation,
            stride,
            pad: (0, 0),
            reflect: false,
            slope: None,
            snap: None,
            input: data,
            output: *op.outputs.first().context("no output")?,
            bias_adds: 0,
        };
        if let Some(&b) = bias.filter(|&&b| b >= 0) {
            add_bias(&mut spec.bias, &m.dequantized(b as usize)?.1)?;
        }
        self.walk_input(&mut spec)?;
        self.walk_output(&mut spec)?;
        Ok(spec)
    }

    /// Back from the convolution's input to where its chain starts.
    fn walk_input(&self, spec: &mut ConvSpec) -> Result<()> {
        let m = self.model;
        loop {
            let Some(&p) = self.producer.get(&spec.input) else { return Ok(()) };
            let op = &m.operators()[p];
            let first = *op.inputs.first().context("an op without inputs")?;
            match op.op.as_str() {
                name if RESHAPES.contains(&name) => {}
                "SPACE_TO_BATCH_ND" => {
                    let block = m.i32s(op.inputs[1] as usize).context("block shape")?;
                    let &[d] = block.as_slice() else { bail!("block shape {block:?}") };
                    ensure!(d >= 1, "block shape {d}");
                    spec.dilation *= d as usize;
                }
                "MIRROR_PAD" | "PAD" => {
                    ensure!(spec.pad == (0, 0), "two paddings");
                    spec.pad = time_padding(m, op.inputs.get(1).copied())?;
                    spec.reflect = op.op == "MIRROR_PAD";
                    if spec.reflect {
                        ensure!(m.options(p)?.u8(0, 0)? == 0, "a SYMMETRIC mirror pad");
                    }
                }
                "DEQUANTIZE" => {}
                "QUANTIZE" => {
                    let out = &m.tensors()[op.outputs[0] as usize];
                    let q = out.quantization.as_ref().context("a QUANTIZE without scales")?;
                    ensure!(q.scales.len() == 1, "per-axis quantization of an activation");
                    spec.snap = Some((q.scales[0], q.zero_points.first().copied().unwrap_or(0)));
                }
                "LEAKY_RELU" => {
                    spec.slope = Some(m.options(p)?.f32(0, 0.0)?);
                    spec.input = self.root(first);
                    return Ok(());
                }
                _ => return Ok(()),
            }
            spec.input = first;
        }
    }

    /// Forward from the convolution's output through reshapes and bias adds.
    fn walk_output(&self, spec: &mut ConvSpec) -> Result<()> {
        let m = self.model;
        while let &[c] = self.consumers(spec.output) {
            let op = &m.operators()[c];
            match op.op.as_str() {
                name if RESHAPES.contains(&name) || name == "BATCH_TO_SPACE_ND" => {}
                "ADD" => {
                    let other = *op.inputs.iter().find(|&&t| t != spec.output).context("x + x")?;
                    if other < 0 || !m.is_constant(other as usize) {
                        break;
                    }
                    ensure!(m.options(c)?.u8(0, 0)? == 0, "a bias add with a fused activation");
                    add_bias(&mut spec.bias, &m.dequantized(other as usize)?.1)?;
                    spec.bias_adds += 1;
                }
                _ => break,
            }
            spec.output = op.outputs[0];
        }
        spec.output = self.root(spec.output);
        Ok(())
    }

    /// The tensor that `t` is a reshape of (itself, if none): where the input walks end.
    pub fn root(&self, mut t: i32) -> i32 {
        while let Some(&p) = self.producer.get(&t) {
            let op = &self.model.operators()[p];
            match op.inputs.first() {
                Some(&first) if RESHAPES.contains(&op.op.as_str()) => t = first,
                _ => break,
            }
        }
        t
    }
}

fn add_bias(bias: &mut [f32], add: &[f32]) -> Result<()> {
    ensure!(add.len() == bias.len(), "a bias of {} for {} channels", add.len(), bias.len());
    bias.iter_mut().zip(add).for_each(|(b, a)| *b += a);
    Ok(())
}

/// The padding along the one padded axis of a `[rank, 2]` paddings constant.
fn time_padding(m: &TfLite, paddings: Option<i32>) -> Result<(usize, usize)> {
    let t = paddings.filter(|&t| t >= 0).context("no paddings")?;
    let p = m.i32s(t as usize).context("paddings")?;
    ensure!(p.len().is_multiple_of(2) && p.iter().all(|&v| v >= 0), "paddings {p:?}");
    let padded: Vec<&[i32]> = p.chunks_exact(2).filter(|c| c != &[0, 0]).collect();
    match padded.as_slice() {
        [] => Ok((0, 0)),
        [pair] => Ok((pair[0] as usize, pair[1] as usize)),
        _ => bail!("paddings {p:?} along more than one axis"),
    }
}
