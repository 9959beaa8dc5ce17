//! A dilated 1-D convolution with the activation before it and the residual after it fused in:
//! `y = residual + bias + conv(leaky_relu(x) masked to its valid length)`, HiFi-GAN's resblock step
//! ("same" padding), and with padding on the left only, one phase of its upsampling convolutions.
//!
//! candle's CPU path copies every input into an im2col matrix (kernel x channels x samples) and runs
//! the activation, the mask and the residual add as separate single-threaded passes; at 22,050
//! samples per second of audio that was most of the voice's time (BENCHMARKS.md). Here the input is
//! activated once into a zero-padded buffer, and each thread owns a block of time steps.
//!
//! Within a block the work is register-blocked: `OUT_BLOCK` output channels times `MICRO` time
//! steps of accumulators stay in vector registers while the loop runs over every input channel and
//! kernel tap, so each loaded input vector feeds `OUT_BLOCK` fused multiply-adds and nothing is
//! stored until the end. (An accumulator in memory instead, one output channel at a time, cost two
//! loads and a store per multiply-add and ran at about a third of this speed: BENCHMARKS.md.)

use super::{parallel_for, SharedOut};

/// Time steps per work item handed to a thread.
const TILE: usize = 256;
/// Output channels whose accumulators are held at once.
const OUT_BLOCK: usize = 4;
/// Time steps per accumulator row: with `OUT_BLOCK` rows, 128 floats, sixteen 256-bit registers.
const MICRO: usize = 32;

/// The weights of one convolution.
pub struct ConvWeights<'a> {
    /// `[out channels][channels][kernel]` (PyTorch layout).
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub dilation: usize,
    /// Zeros before the input: output `t` reads inputs `t - left + j * dilation`. The output is as
    /// long as the input.
    pub left: usize,
}

impl<'a> ConvWeights<'a> {
    /// "Same" padding for an odd kernel: output `t` is centred on input `t`.
    pub fn same(weight: &'a [f32], bias: &'a [f32], kernel: usize, dilation: usize) -> Self {
        Self { weight, bias, kernel, dilation, left: dilation * (kernel - 1) / 2 }
    }
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
    let ConvWeights { weight, bias, kernel, dilation, left } = *conv;
    assert_eq!(x.len(), channels * len);
    let out_channels = bias.len();
    assert_eq!(weight.len(), out_channels * channels * kernel);
    if let Some(r) = residual {
        assert_eq!(r.len(), out_channels * len);
    }
    let span = dilation * (kernel - 1);
    assert!(left <= span, "left padding {left} beyond the kernel's span {span}");
    // `left` zeros before every row, and after it the rest of the span plus enough for a whole last
    // micro tile.
    let width = len.next_multiple_of(MICRO) + span;
    let mut act = vec![0f32; channels * width];
    for c in 0..channels {
        let row = &x[c * len..c * len + valid.min(len)];
        for (a, &v) in act[c * width + left..].iter_mut().zip(row) {
            *a = if v >= 0.0 { v } else { v * slope };
        }
    }
    let packed = pack_weights(weight, out_channels, channels, kernel);
    let mut y = vec![0f32; out_channels * len];
    let out = SharedOut::new(&mut y);
    let blocks = out_channels.div_ceil(OUT_BLOCK);
    parallel_for(len.div_ceil(TILE), |range| {
        for tile in range {
            let tile_end = ((tile + 1) * TILE).min(len);
            for block in 0..blocks {
                let w = &packed[block * channels * kernel * OUT_BLOCK..][..channels * kernel * OUT_BLOCK];
                for t0 in (tile * TILE..tile_end).step_by(MICRO) {
                    let acc = micro_tile(&act, width, channels, kernel, dilation, w, t0);
                    let n = MICRO.min(len - t0);
                    for (i, row) in acc.iter().enumerate() {
                        let o = block * OUT_BLOCK + i;
                        if o == out_channels {
                            break;
                        }
                        // SAFETY: each tile writes only its own time steps of each row.
                        let dst = unsafe { out.part(o * len + t0, n) };
                        match residual {
                            Some(r) => {
                                for ((d, &a), &rv) in dst.iter_mut().zip(row).zip(&r[o * len + t0..]) {
                                    *d = rv + bias[o] + a;
                                }
                            }
                            None => dst.iter_mut().zip(row).for_each(|(d, &a)| *d = bias[o] + a),
                        }
                    }
                }
            }
        }
    });
    y
}

/// `[out block][channels][kernel][OUT_BLOCK]`, the last block padded with zero channels: the
/// `OUT_BLOCK` weights one input value meets are adjacent.
fn pack_weights(weight: &[f32], out_channels: usize, channels: usize, kernel: usize) -> Vec<f32> {
    let blocks = out_channels.div_ceil(OUT_BLOCK);
    let mut packed = vec![0f32; blocks * channels * kernel * OUT_BLOCK];
    for o in 0..out_channels {
        let (block, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
        for c in 0..channels {
            for j in 0..kernel {
                packed[((block * channels + c) * kernel + j) * OUT_BLOCK + lane] =
                    weight[(o * channels + c) * kernel + j];
            }
        }
    }
    packed
}

/// One block of output channels over `MICRO` time steps from `t0`. Fixed sizes let the compiler
/// keep `acc` in registers and unroll the two inner loops into vector fused multiply-adds.
#[inline(always)]
fn micro_tile(
    act: &[f32],
    width: usize,
    channels: usize,
    kernel: usize,
    dilation: usize,
    w: &[f32],
    t0: usize,
) -> [[f32; MICRO]; OUT_BLOCK] {
    let mut acc = [[0f32; MICRO]; OUT_BLOCK];
    for c in 0..channels {
        let row = &act[c * width + t0..];
        let wc = &w[c * kernel * OUT_BLOCK..][..kernel * OUT_BLOCK];
        for (j, wj) in wc.chunks_exact(OUT_BLOCK).enumerate() {
            let src: &[f32; MICRO] = row[j * dilation..][..MICRO].try_into().expect("MICRO floats");
            for (a, &wo) in acc.iter_mut().zip(wj) {
                for (a, &s) in a.iter_mut().zip(src) {
                    *a = fma(wo, s, *a);
                }
            }
        }
    }
    acc
}

/// `a * b + c` in one instruction where the target has one; without it, `mul_add` would be a
/// slow library call, so multiply and add instead.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
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
            let conv = ConvWeights::same(&w, &b, kernel, dilation);
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
