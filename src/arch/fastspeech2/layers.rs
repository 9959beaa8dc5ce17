//! FastSpeech2's blocks (TensorFlowTTS's `TFFastSpeechLayer`, `TFFastSpeechVariantPredictor`,
//! `TFTacotronPostnet`), on sequences laid end to end: `Seqs` holds every sentence's rows without
//! padding, so that no sentence's result depends on another's (batch invariance), and the
//! row-wise layers run over all of them in one call.

use super::hybrid::{Conv, Dense};

/// Sentences' rows end to end: `lens[i]` rows of `width` values for sentence `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Seqs {
    pub data: Vec<f32>,
    pub lens: Vec<usize>,
    pub width: usize,
}

impl Seqs {
    pub fn new(data: Vec<f32>, lens: Vec<usize>, width: usize) -> Self {
        assert_eq!(data.len(), lens.iter().sum::<usize>() * width, "rows x width");
        Self { data, lens, width }
    }

    /// Sentence `i`'s rows.
    pub fn seq(&self, i: usize) -> &[f32] {
        let start: usize = self.lens[..i].iter().sum();
        &self.data[start * self.width..(start + self.lens[i]) * self.width]
    }

    /// Each sentence's rows as its own vector.
    pub fn split(&self) -> Vec<Vec<f32>> {
        (0..self.lens.len()).map(|i| self.seq(i).to_vec()).collect()
    }
}

/// Keras's LayerNormalization over each row (TensorFlowTTS sets epsilon 1e-5), in the order of the
/// graph's own operators: `mul = gamma / sqrt(var + eps)`, `x * mul + (beta - mean * mul)`, the mean
/// and the variance summed as TF Lite's MEAN sums (`tflite_mean`). The output is the next layer's
/// input, which is quantized: a last bit can move a value across a rounding tie. Checked against
/// TF Lite 2.15.1 running Keras's layer: equal to the bit.
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

pub const LAYER_NORM_EPS: f32 = 1e-5;

impl LayerNorm {
    pub fn apply(&self, x: &mut [f32]) {
        let n = self.gamma.len();
        let mut squares = vec![0f32; n];
        for row in x.chunks_exact_mut(n) {
            let mean = tflite_mean(row);
            for (s, v) in squares.iter_mut().zip(row.iter()) {
                *s = (v - mean) * (v - mean);
            }
            let var = tflite_mean(&squares);
            let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                let mul = inv * g;
                *v = *v * mul + (b - mean * mul);
            }
        }
    }
}

/// The mean of `x` as TF Lite's MEAN over the last axis computes it (Eigen's vectorized reduction,
/// AVX): two accumulators of 8 lanes take alternate packets of 8, so lane `l` of 16 sums `x[l]`,
/// `x[l + 16]`, ... in order; the two are added, the 8 lanes reduced by halves, then any values
/// past the last 16 added one by one, and the sum divided by the count.
pub fn tflite_mean(x: &[f32]) -> f32 {
    let whole = x.len() / 16 * 16;
    let mut lanes = [0f32; 16];
    for chunk in x[..whole].chunks_exact(16) {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    let mut v = [0f32; 8];
    for (l, v) in v.iter_mut().enumerate() {
        *v = lanes[l] + lanes[l + 8];
    }
    for half in [4, 2, 1] {
        for i in 0..half {
            v[i] += v[i + half];
        }
    }
    let sum = x[whole..].iter().fold(v[0], |s, x| s + x);
    sum / x.len() as f32
}

/// mish(x) = x tanh(softplus(x)), softplus as the graph computes it: ln(e^x + 1) (TF Lite's EXP
/// and LOG are the C library's, as Rust's are), tanh as TF Lite's TANH computes it.
pub fn mish(x: &mut [f32]) {
    for v in x {
        *v *= tflite_tanh((v.exp() + 1.0).ln());
    }
}

/// tanh as TF Lite's TANH kernel computes it for f32: Eigen's rational approximation (degree 13
/// over 6, clamped at +-7.905; TensorFlow's wheels are built without FMA, so each step rounds
/// separately). It differs from the C library's tanh in the last bit for about two values in
/// three, and the next layer quantizes its input to int8: a last bit can carry a value across a
/// rounding tie, and that difference then spreads through the quantized layers after it.
// Eigen's constants as written there (f32 rounds them as C++'s float literals do).
#[allow(clippy::excessive_precision)]
pub fn tflite_tanh(a: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        4.89352455891786e-03,
        6.37261928875436e-04,
        1.48572235717979e-05,
        5.12229709037114e-08,
        -8.60467152213735e-11,
        2.00018790482477e-13,
        -2.76076847742355e-16,
    ];
    const BETA: [f32; 4] = [4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06];
    const CLAMP: f32 = 7.90531110763549805;
    if a.abs() < 4e-4 {
        return a;
    }
    let x = a.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = x2 * ALPHA[6] + ALPHA[5];
    for c in ALPHA[..5].iter().rev() {
        p = x2 * p + c;
    }
    let p = x * p;
    let mut q = x2 * BETA[3] + BETA[2];
    for c in BETA[..2].iter().rev() {
        q = x2 * q + c;
    }
    p / q
}

pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `x += y`, element by element.
pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// One feed-forward Transformer block: self-attention, then two convolutions with mish between,
/// each with a residual and a LayerNorm after it.
pub struct FftLayer {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub heads: usize,
    pub output: Dense,
    pub attention_norm: LayerNorm,
    pub conv1: Conv,
    pub conv2: Conv,
    pub output_norm: LayerNorm,
}

impl FftLayer {
    pub fn forward(&self, x: &Seqs) -> Seqs {
        let (q, k, v) = (self.query.forward(&x.data), self.key.forward(&x.data), self.value.forward(&x.data));
        let all = self.query.0.outputs();
        let mut context = vec![0f32; q.len()];
        let mut start = 0;
        for &len in &x.lens {
            let rows = start * all..(start + len) * all;
            attend(&q[rows.clone()], &k[rows.clone()], &v[rows.clone()], all, self.heads, &mut context[rows]);
            start += len;
        }
        let mut attended = self.output.forward(&context);
        add(&mut attended, &x.data);
        self.attention_norm.apply(&mut attended);
        let mut hidden = self.conv1.forward(&attended, &x.lens);
        mish(&mut hidden);
        let mut out = self.conv2.forward(&hidden, &x.lens);
        add(&mut out, &attended);
        self.output_norm.apply(&mut out);
        Seqs::new(out, x.lens.clone(), x.width)
    }
}

/// Scaled dot-product attention of one sentence (no mask: a sentence is never padded here), rows of
/// `heads * d` values, head h in columns h*d..(h+1)*d.
fn attend(q: &[f32], k: &[f32], v: &[f32], width: usize, heads: usize, out: &mut [f32]) {
    let len = q.len() / width;
    let d = width / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; len];
    for h in 0..heads {
        let cols = h * d..(h + 1) * d;
        for i in 0..len {
            let qi = &q[i * width..][cols.clone()];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let kj = &k[j * width..][cols.clone()];
                *s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*s);
            }
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[i * width..][cols.clone()];
            o.fill(0.0);
            for (j, s) in scores.iter().enumerate() {
                let p = s / sum;
                for (o, vj) in o.iter_mut().zip(&v[j * width..][cols.clone()]) {
                    *o += p * vj;
                }
            }
        }
    }
}

/// A duration, pitch or energy predictor: two convolutions, each with relu and LayerNorm after
/// it, then a float dense layer to one value per row.
pub struct VariancePredictor {
    pub convs: [(Conv, LayerNorm); 2],
    /// The output layer's weights (`[1, width]`) and bias.
    pub dense: Vec<f32>,
    pub dense_bias: f32,
}

impl VariancePredictor {
    /// One value per row of `x`.
    pub fn forward(&self, x: &Seqs) -> Vec<f32> {
        let mut h = x.data.clone();
        for (conv, norm) in &self.convs {
            h = conv.forward(&h, &x.lens);
            relu(&mut h);
            norm.apply(&mut h);
        }
        h.chunks_exact(self.dense.len())
            .map(|row| row.iter().zip(&self.dense).map(|(a, b)| a * b).sum::<f32>() + self.dense_bias)
            .collect()
    }
}

/// Tacotron's postnet: five convolutions, each followed by a batch norm (folded by the converter
/// into `x * mul + sub`), tanh after all but the last. Its output is added to the mel it refines.
pub struct Postnet {
    pub convs: Vec<(Conv, Vec<f32>, Vec<f32>)>,
}

impl Postnet {
    pub fn forward(&self, mel: &Seqs) -> Vec<f32> {
        let mut h = mel.data.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, mul, sub)) in self.convs.iter().enumerate() {
            h = conv.forward(&h, &mel.lens);
            for row in h.chunks_exact_mut(mul.len()) {
                for ((v, m), s) in row.iter_mut().zip(mul).zip(sub) {
                    *v = *v * m + s;
                    if i < last {
                        *v = tflite_tanh(*v);
                    }
                }
            }
        }
        h
    }
}
