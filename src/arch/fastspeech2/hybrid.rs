//! TFLite's "hybrid" int8 layers, as the FastSpeech2 file was converted (dynamic-range
//! quantization): each weight matrix is int8 with one f32 scale, and the interpreter quantizes the
//! float input to int8 on the fly, multiplies in integers and scales the sums back. Our results
//! match the reference only if we quantize the inputs the same way, so we do, on our Q8_0 kernels
//! (`cpu::q8_0`, dispatched per CPU): the weights are stored as Q8_0 blocks with a scale of 1, the
//! activations with the scale TFLite would choose, and the layer's own scale multiplies the sums.
//!
//! The scale of an input: `max|x| / 127` over one row for a fully-connected layer, over one whole
//! sequence for a convolution (TFLite's conv quantizes per batch item; a sentence is one).

use crate::arch::cpu::q8_0::{Q8_0Matrix, BLOCK_BYTES};
use crate::arch::cpu::quant::{Activations, BLOCK};
use anyhow::{ensure, Result};

/// An int8 matrix `[n, k]` (n outputs) with one scale and a bias, over inputs padded to whole blocks.
pub struct HybridMatrix {
    weights: Q8_0Matrix,
    scale: f32,
    bias: Vec<f32>,
    n: usize,
    /// Inputs the layer reads; rows are padded with zeros to `padded`, a multiple of 32.
    k: usize,
    padded: usize,
}

impl HybridMatrix {
    /// `q` row-major `[n, k]`, as TFLite stores a fully-connected layer's weights.
    pub fn new(q: &[i8], n: usize, k: usize, scale: f32, bias: Vec<f32>) -> Result<Self> {
        ensure!(q.len() == n * k, "int8 weights have {} values for {n}x{k}", q.len());
        ensure!(bias.len() == n, "bias has {} values for {n} outputs", bias.len());
        let padded = k.div_ceil(BLOCK) * BLOCK;
        let one = half::f16::from_f32(1.0).to_le_bytes();
        let mut blocks = Vec::with_capacity(n * padded / BLOCK * BLOCK_BYTES);
        for row in q.chunks_exact(k) {
            for b in 0..padded / BLOCK {
                blocks.extend_from_slice(&one);
                for i in b * BLOCK..(b + 1) * BLOCK {
                    blocks.push(row.get(i).copied().unwrap_or(0) as u8);
                }
            }
        }
        Ok(Self { weights: Q8_0Matrix::new(blocks, n, padded)?, scale, bias, n, k, padded })
    }

    pub fn outputs(&self) -> usize {
        self.n
    }

    /// `x` holds rows of `padded` values; row `r` is quantized for the range `ranges[r]`.
    /// The kernel gives each output's integer sum (scales of 1 on both sides); it becomes
    /// `bias + sum * (input scale * weight scale)`, TFLite's own arithmetic, to the bit.
    fn apply(&self, x: &[f32], ranges: &[f32]) -> Vec<f32> {
        let acts = Activations::with_row_ranges(x, self.padded, ranges);
        let mut y = self.weights.matmul_quantized(&acts);
        for (row, range) in y.chunks_exact_mut(self.n).zip(ranges) {
            let scale = range / 127.0 * self.scale;
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v = b + *v * scale;
            }
        }
        y
    }
}

/// The range TFLite quantizes `x` for: its largest magnitude (the scale is that over 127).
pub fn input_range(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// A fully-connected layer: each row of the input is quantized on its own.
pub struct Dense(pub HybridMatrix);

impl Dense {
    /// `x` is rows of `k` values; returns rows of `n`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let m = &self.0;
        let rows = x.len() / m.k;
        let ranges: Vec<f32> = x.chunks_exact(m.k).map(input_range).collect();
        if m.padded == m.k {
            return m.apply(x, &ranges);
        }
        let mut padded = vec![0f32; rows * m.padded];
        for (dst, src) in padded.chunks_exact_mut(m.padded).zip(x.chunks_exact(m.k)) {
            dst[..m.k].copy_from_slice(src);
        }
        m.apply(&padded, &ranges)
    }
}

/// A 1-D convolution with "same" padding (TensorFlow's: `(kernel - 1) / 2` zeros before, the rest
/// after), stored as TFLite stores a Conv1D: `[c_out, 1, kernel, c_in]`, which is the matrix
/// `[c_out, kernel * c_in]` that multiplies a window of `kernel` input rows laid end to end.
pub struct Conv {
    matrix: HybridMatrix,
    kernel: usize,
    c_in: usize,
}

impl Conv {
    pub fn new(q: &[i8], c_out: usize, kernel: usize, c_in: usize, scale: f32, bias: Vec<f32>) -> Result<Self> {
        Ok(Self { matrix: HybridMatrix::new(q, c_out, kernel * c_in, scale, bias)?, kernel, c_in })
    }

    pub fn outputs(&self) -> usize {
        self.matrix.n
    }

    /// Sequences laid end to end (`lens` rows each, `c_in` values a row); each sequence is padded
    /// and quantized on its own, so a sequence's result does not depend on the others.
    pub fn forward(&self, x: &[f32], lens: &[usize]) -> Vec<f32> {
        let (k, c) = (self.kernel, self.c_in);
        let width = self.matrix.padded;
        let rows: usize = lens.iter().sum();
        assert_eq!(x.len(), rows * c, "conv input");
        let before = (k - 1) / 2;
        let mut windows = vec![0f32; rows * width];
        let mut ranges = Vec::with_capacity(rows);
        let mut start = 0;
        for &len in lens {
            let seq = &x[start * c..(start + len) * c];
            let range = input_range(seq);
            for t in 0..len {
                let window = &mut windows[(start + t) * width..(start + t + 1) * width];
                for j in 0..k {
                    // Input row t + j - before, zero outside the sequence.
                    let Some(src) = (t + j).checked_sub(before).filter(|&s| s < len) else { continue };
                    window[j * c..(j + 1) * c].copy_from_slice(&seq[src * c..(src + 1) * c]);
                }
                ranges.push(range);
            }
            start += len;
        }
        self.matrix.apply(&windows, &ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: TFLite's hybrid arithmetic written out, one value at a time, in its order.
    fn hybrid_reference(q: &[i8], scale: f32, bias: &[f32], x: &[f32], range: f32, k: usize) -> Vec<f32> {
        let x_scale = range / 127.0;
        let xq: Vec<i32> = x
            .iter()
            .map(|v| if range > 0.0 { (v * (127.0 / range)).round().clamp(-127.0, 127.0) as i32 } else { 0 })
            .collect();
        q.chunks_exact(k)
            .zip(bias)
            .map(|(w, b)| b + w.iter().zip(&xq).map(|(&w, &x)| w as i32 * x).sum::<i32>() as f32 * (x_scale * scale))
            .collect()
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn weights(n: usize) -> Vec<i8> {
        pseudo(n, 7).iter().map(|v| (v * 127.0) as i8).collect()
    }

    #[test]
    fn a_dense_layer_quantizes_each_row_as_tflite_does() {
        let (n, k) = (5, 40); // k not a multiple of 32: the padding must not count
        let q = weights(n * k);
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let dense = Dense(HybridMatrix::new(&q, n, k, 0.02, bias.clone()).unwrap());
        let mut x = pseudo(3 * k, 1);
        x[k..2 * k].iter_mut().for_each(|v| *v *= 9.0); // rows of very different ranges
        let y = dense.forward(&x);
        for r in 0..3 {
            let row = &x[r * k..(r + 1) * k];
            let want = hybrid_reference(&q, 0.02, &bias, row, input_range(row), k);
            for (a, b) in y[r * n..(r + 1) * n].iter().zip(&want) {
                assert_eq!(a.to_bits(), b.to_bits(), "row {r}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn many_rows_and_wide_layers_agree_with_the_reference() {
        for (n, k, rows) in [(32, 256, 144), (256, 32, 150), (1024, 768, 70)] {
            let q = weights(n * k);
            let dense = Dense(HybridMatrix::new(&q, n, k, 0.01, vec![0.0; n]).unwrap());
            let x = pseudo(rows * k, 5);
            let y = dense.forward(&x);
            for r in 0..rows {
                let row = &x[r * k..(r + 1) * k];
                let want = hybrid_reference(&q, 0.01, &vec![0.0; n], row, input_range(row), k);
                for (j, (a, b)) in y[r * n..(r + 1) * n].iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{n}x{k}, {rows} rows: row {r} col {j}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_conv_pads_and_quantizes_each_sequence_alone() {
        let (c_out, kernel, c_in) = (6, 3, 4);
        let q = weights(c_out * kernel * c_in);
        let conv = Conv::new(&q, c_out, kernel, c_in, 0.05, vec![0.0; c_out]).unwrap();
        let a = pseudo(5 * c_in, 3);
        let b: Vec<f32> = pseudo(2 * c_in, 4).iter().map(|v| v * 30.0).collect();
        let alone_a = conv.forward(&a, &[5]);
        let alone_b = conv.forward(&b, &[2]);
        let together = conv.forward(&[a.clone(), b].concat(), &[5, 2]);
        assert_eq!(together, [alone_a.clone(), alone_b].concat(), "batch invariance");
        // Row 0 of `a` sees a zero row before it, then rows 0 and 1.
        let mut window = vec![0.0; c_in];
        window.extend_from_slice(&a[..2 * c_in]);
        let want = hybrid_reference(&q, 0.05, &vec![0.0; c_out], &window, input_range(&a), kernel * c_in);
        for (x, y) in alone_a[..c_out].iter().zip(&want) {
            assert_eq!(x.to_bits(), y.to_bits(), "{x} vs {y}");
        }
    }
}
