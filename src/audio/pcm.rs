//! `pcm`: what OpenAI sends for it, raw signed 16-bit little-endian mono at 24 kHz with no header.
//! Nothing in the bytes says the rate, so it has to be OpenAI's for clients written against it.

use anyhow::Result;

/// OpenAI's rate for `pcm`; the voice's 22,050 Hz is resampled to it.
pub const RATE: u32 = 24_000;

pub struct PcmEncoder;

/// s16 samples as little-endian bytes: the payload of `pcm` and of `wav`.
pub fn s16le(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

impl super::Codec for PcmEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        Ok(s16le(pcm))
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::testutil::{assert_is_tone, encode_uneven, sine};
    use crate::audio::AudioFormat;

    /// One second at 22,050 Hz comes out as exactly 24,000 samples of the same tone (resampled,
    /// lossless otherwise: within 1% of the tone's RMS), and most of it while streaming.
    #[test]
    fn one_second_of_sine() {
        let (bytes, streamed) = encode_uneven(AudioFormat::Pcm, &sine(22_050, 22_050));
        assert_eq!(bytes.len(), 2 * 24_000);
        assert!(streamed >= bytes.len() * 9 / 10, "only {streamed} bytes before finish");
        let decoded: Vec<f32> =
            bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32767.0).collect();
        assert_is_tone(&decoded, RATE, 0.01);
        // In time with the input: the ideal 24 kHz tone, to within the resampler's error and one
        // step of 16-bit quantisation.
        let ideal = sine(24_000, RATE);
        let err = crate::max_abs_diff(&decoded[240..23_760], &ideal[240..23_760]);
        assert!(err < 3e-3, "max error {err}");
    }

    #[test]
    fn little_endian() {
        assert_eq!(s16le(&[1, -2, 0x1234]), [1, 0, 0xfe, 0xff, 0x34, 0x12]);
    }
}
