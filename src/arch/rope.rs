//! Rotary position embeddings: the cos/sin tables that attention rotates q and k by, and the
//! frequency scalings that stretch a model past the context it was trained on.
//!
//! A scaling is held as one factor per rotary pair, each pair's frequency divided by its own: the
//! form llama.cpp's GGUF files carry (`rope_freqs.weight`, which its converter writes for Llama 3's
//! scaling), and one that a linear scaling (the same factor for every pair) fits too. Scalings that
//! also change the attention's magnitude or need more than a divisor (yarn, longrope) are refused
//! by the loaders, by name.

/// How a GGUF and a Hugging Face checkpoint lay out the rotary pairs: llama.cpp permutes q and k at
/// conversion so that rotated pairs are adjacent; Hugging Face rotates the two halves of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Interleaved,
    Halves,
}

/// Llama 3.1's scaling, as config.json's `rope_scaling` gives it (`rope_type: llama3`): pairs whose
/// wavelength is short against the original context keep their frequency, long ones are divided by
/// `factor`, and those between are blended smoothly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_context: f64,
}

impl Llama3Scaling {
    /// Each rotary pair's frequency divisor, as Hugging Face's `_compute_llama3_parameters` scales
    /// the frequencies and llama.cpp's converter writes them into `rope_freqs.weight`.
    pub fn freq_factors(&self, head_dim: usize, theta: f32) -> Vec<f32> {
        let low_freq_wavelen = self.original_context / self.low_freq_factor;
        let high_freq_wavelen = self.original_context / self.high_freq_factor;
        (0..head_dim / 2)
            .map(|i| {
                let wavelen = 2.0 * std::f64::consts::PI * unscaled_period(theta, i, head_dim);
                let factor = if wavelen < high_freq_wavelen {
                    1.0
                } else if wavelen > low_freq_wavelen {
                    self.factor
                } else {
                    let smooth = (self.original_context / wavelen - self.low_freq_factor)
                        / (self.high_freq_factor - self.low_freq_factor);
                    1.0 / ((1.0 - smooth) / self.factor + smooth)
                };
                factor as f32
            })
            .collect()
    }
}

/// `theta^(2i / head_dim)`: the inverse of pair `i`'s frequency before any scaling.
fn unscaled_period(theta: f32, i: usize, head_dim: usize) -> f64 {
    (theta as f64).powf(2.0 * i as f64 / head_dim as f64)
}

/// cos/sin tables for every position up to the context length.
pub struct Rope {
    style: RopeStyle,
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// The tables for heads of `head_dim`; `freq_factors` (one per pair, `head_dim / 2`) divide
    /// each pair's frequency, for a scaled model.
    pub fn new(
        head_dim: usize,
        theta: f32,
        max_positions: usize,
        style: RopeStyle,
        freq_factors: Option<&[f32]>,
    ) -> Self {
        let half = head_dim / 2;
        if let Some(factors) = freq_factors {
            assert_eq!(factors.len(), half, "one rope frequency factor per rotary pair");
        }
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / (unscaled_period(theta, i, head_dim) * freq_factors.map_or(1.0, |f| f[i] as f64)))
            .collect();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for &inv in &inv_freq {
                let angle = pos as f64 * inv;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Self { style, half, cos, sin }
    }

    /// The cos and sin tables, `[position][half]` each, and `half` (for the GPU's copy).
    pub fn tables(&self) -> (&[f32], &[f32], usize) {
        (&self.cos, &self.sin, self.half)
    }

    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates one head vector (length head_dim) in place for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let cos = &self.cos[pos * self.half..(pos + 1) * self.half];
        let sin = &self.sin[pos * self.half..(pos + 1) * self.half];
        match self.style {
            RopeStyle::Interleaved => {
                for i in 0..self.half {
                    let (a, b) = (x[2 * i], x[2 * i + 1]);
                    x[2 * i] = a * cos[i] - b * sin[i];
                    x[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
            RopeStyle::Halves => {
                for i in 0..self.half {
                    let (a, b) = (x[i], x[i + self.half]);
                    x[i] = a * cos[i] - b * sin[i];
                    x[i + self.half] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_styles_rotate_different_pairs() {
        let mut a = vec![1.0, 0.0, 0.0, 0.0];
        let mut b = a.clone();
        Rope::new(4, 1.0, 4, RopeStyle::Interleaved, None).apply(&mut a, 1);
        Rope::new(4, 1.0, 4, RopeStyle::Halves, None).apply(&mut b, 1);
        assert!((a[1] - 1f32.sin()).abs() < 1e-6, "interleaved rotates (0,1): {a:?}");
        assert!((b[2] - 1f32.sin()).abs() < 1e-6, "halves rotates (0,2): {b:?}");
    }

    /// Llama 3.1 8B's own setting (factor 8, 1 and 4, 8192 original positions; theta 500000, heads
    /// of 128): the fastest pairs keep their frequency, the slowest are divided by 8, and the
    /// blended ones lie between, falling with the frequency. The values at the band's edges are
    /// those of the formula by hand.
    #[test]
    fn llama3_scaling_keeps_fast_pairs_divides_slow_ones_and_blends_between() {
        let scaling =
            Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192.0 };
        let f = scaling.freq_factors(128, 500_000.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        let blended: Vec<usize> = (0..64).filter(|&i| f[i] > 1.0 && f[i] < 8.0).collect();
        assert!(!blended.is_empty() && blended.windows(2).all(|w| f[w[0]] < f[w[1]]), "{f:?}");
        // Pair 40: wavelength 2 pi 500000^(80/128) = 22,911 > 8192, so divided by the full factor.
        assert_eq!(f[40], 8.0);
        // Pair 30: wavelength 2 pi 500000^(60/128) = 2,948, between 2048 and 8192: smooth =
        // (8192 / 2948 - 1) / 3 = 0.5928, factor 1 / (0.4072 / 8 + 0.5928) = 1.5534.
        assert!((f[30] - 1.5534).abs() < 1e-3, "{}", f[30]);
    }

    #[test]
    fn frequency_factors_divide_each_pairs_frequency() {
        let (plain, scaled) = (
            Rope::new(4, 100.0, 8, RopeStyle::Halves, None),
            Rope::new(4, 100.0, 8, RopeStyle::Halves, Some(&[1.0, 4.0])),
        );
        let (plain_cos, ..) = plain.tables();
        let (scaled_cos, ..) = scaled.tables();
        // Pair 0 keeps its frequency; pair 1 at position 4 turns as far as unscaled at position 1.
        assert_eq!(plain_cos[4 * 2], scaled_cos[4 * 2]);
        assert!((scaled_cos[4 * 2 + 1] - plain_cos[2 + 1]).abs() < 1e-6);
        assert!((scaled_cos[4 * 2 + 1] - plain_cos[4 * 2 + 1]).abs() > 1e-3);
    }
}
