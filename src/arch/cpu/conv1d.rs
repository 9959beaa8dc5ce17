//! A "same"-padded, dilated 1-D convolution with the activation before it and the residual after it
//! fused in: `y = residual + bias + conv(leaky_relu(x) masked to its valid length)`, HiFi-GAN's
//! resblock step.
//!
//! candle's CPU path copies every input into an im2col matrix (kernel x channels x samples) and runs
//! the activation, the mask and the residual add as separate single-threaded passes; at 22,050
//! samples per second of audio that was most of the voice's time (BENCHMARKS.md). Here the input is
//! activated once into a zero-padded buffer, and each thread owns a block of time steps: for every
//! output channel it accumulates `weight * shifted input row` into a block-long accumulator that
//! stays in L1, which the compiler vectorises.

use super::{parallel_for, SharedOut};

/// Time steps per work item: the accumulator (TILE floats) and the input rows it reads stay in cache.
const TILE: usize = 256;

/// The weights of one convolution.
pub struct ConvWeights<'a> {
    /// `[out channels][channels][kernel]` (PyTorch layout).
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub dilation: usize,
}

/// `x`: `[channels][len]` row-major; positions at or after `valid` read as zero (the mask).
/// Returns `residual + bias + conv(leaky_relu(x, slope) * mask)` (no residual: zeros),
/// `[out channels][len]`.
pub fn leaky_conv(
    x: &[f32],
    channels: usize,
    len: usize,
    valid: usize,
    slope: f32,
    conv: &ConvWeights,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let ConvWeights { weight, bias, kernel, dilation } = *conv;
    assert_eq!(x.len(), channels * len);
    let out_channels = bias.len();
    assert_eq!(weight.len(), out_channels * channels * kernel);
    if let Some(r) = residual {
        assert_eq!(r.len(), out_channels * len);
    }
    let pad = dilation * (kernel - 1) / 2;
    let width = len + 2 * pad;
    // The activated, masked input with `pad` zeros on both sides of every row.
    let mut act = vec![0f32; channels * width];
    for c in 0..channels {
        let row = &x[c * len..c * len + valid.min(len)];
        for (a, &v) in act[c * width + pad..].iter_mut().zip(row) {
            *a = if v >= 0.0 { v } else { v * slope };
        }
    }
    let mut y = vec![0f32; out_channels * len];
    let out = SharedOut::new(&mut y);
    let tiles = len.div_ceil(TILE);
    parallel_for(tiles, |range| {
        let mut acc = [0f32; TILE];
        for tile in range {
            let t0 = tile * TILE;
            let n = TILE.min(len - t0);
            for o in 0..out_channels {
                let acc = &mut acc[..n];
                match residual {
                    Some(r) => {
                        for (a, &rv) in acc.iter_mut().zip(&r[o * len + t0..o * len + t0 + n]) {
                            *a = rv + bias[o];
                        }
                    }
                    None => acc.fill(bias[o]),
                }
                for c in 0..channels {
                    let w = &weight[(o * channels + c) * kernel..(o * channels + c + 1) * kernel];
                    let row = &act[c * width..(c + 1) * width];
                    for (j, &wj) in w.iter().enumerate() {
                        let src = &row[t0 + j * dilation..t0 + j * dilation + n];
                        for (a, &s) in acc.iter_mut().zip(src) {
                            *a += wj * s;
                        }
                    }
                }
                // SAFETY: each tile writes only its own time steps of each row.
                unsafe { out.part(o * len + t0, n) }.copy_from_slice(acc);
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::test_values as values;
    use candle_core::{Device, Tensor};

    /// Against candle's conv1d on the same activated, masked input.
    #[test]
    fn matches_candle_with_masks_dilations_and_ragged_tiles() {
        let dev = Device::Cpu;
        for (channels, len, valid, kernel, dilation) in [(4, 700, 650, 3, 1), (3, 257, 257, 5, 6), (2, 40, 10, 7, 12)] {
            let x = values(1, channels * len);
            let w = values(2, channels * channels * kernel);
            let b = values(3, channels);
            let conv = ConvWeights { weight: &w, bias: &b, kernel, dilation };
            let got = leaky_conv(&x, channels, len, valid, 0.1, &conv, Some(&x));
            let plain = leaky_conv(&x, channels, len, valid, 0.1, &conv, None);
            assert!(got.iter().zip(&plain).zip(&x).all(|((g, p), x)| (g - p - x).abs() < 1e-5));

            let xt = Tensor::from_vec(x.clone(), (1, channels, len), &dev).unwrap();
            let mask: Vec<f32> = (0..len).map(|t| if t < valid { 1.0 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (1, 1, len), &dev).unwrap();
            let act = crate::arch::vits::layers::leaky_relu(&xt, 0.1).unwrap().broadcast_mul(&mask).unwrap();
            let wt = Tensor::from_vec(w, (channels, channels, kernel), &dev).unwrap();
            let conv = act.conv1d(&wt, dilation * (kernel - 1) / 2, 1, dilation, 1).unwrap();
            let bt = Tensor::from_vec(b, (1, channels, 1), &dev).unwrap();
            let want =
                (xt + conv.broadcast_add(&bt).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{channels}x{len} k{kernel} d{dilation}: {diff}");
        }
    }
}
