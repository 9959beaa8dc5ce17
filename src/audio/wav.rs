//! `wav`: a 44-byte RIFF/WAVE header, then s16le mono at the input rate.
//!
//! The header goes out before the length is known, so its two sizes (RIFF and `data`) are
//! 0xFFFFFFFF, "as long as the stream goes": what OpenAI itself sends for streamed wav. ffmpeg,
//! libsndfile (python's `soundfile`), python's `wave` and symphonia all read such a file to its end
//! (`wave` reports a frame count of about 2^31 but reads what is there).

use anyhow::Result;

use super::pcm::s16le;

/// The RIFF and `data` chunk sizes of a stream whose length was unknown when the header was sent.
const UNKNOWN_SIZE: u32 = u32::MAX;

pub struct WavEncoder {
    /// The header, until the first bytes go out with it.
    header: Option<[u8; 44]>,
}

impl WavEncoder {
    pub fn new(rate: u32) -> Self {
        Self { header: Some(header(rate)) }
    }

    fn take_header(&mut self) -> Vec<u8> {
        self.header.take().map(Vec::from).unwrap_or_default()
    }
}

/// Canonical 44-byte header: PCM (format 1), mono, 16-bit.
fn header(rate: u32) -> [u8; 44] {
    let (channels, bits) = (1u16, 16u16);
    let block_align = channels * bits / 8;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&bits.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    h
}

impl super::Codec for WavEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        let mut out = self.take_header();
        out.extend(s16le(pcm));
        Ok(out)
    }

    /// Only the header if no audio came at all: an empty but well-formed file.
    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        Ok(self.take_header())
    }
}

#[cfg(test)]
mod tests {
    use crate::audio::testutil::{assert_is_tone, decode_symphonia, encode_uneven, sine, RATE};
    use crate::audio::{to_i16, AudioFormat};

    /// The header, then every sample exactly (wav is lossless): symphonia reads it back at 22,050 Hz
    /// with the same 22,050 samples, though the header gives no length.
    #[test]
    fn one_second_of_sine() {
        let input = sine(RATE as usize, RATE);
        let (bytes, streamed) = encode_uneven(AudioFormat::Wav, &input);
        assert_eq!(bytes.len(), 44 + 2 * input.len());
        assert_eq!(streamed, bytes.len(), "everything goes out as it comes");
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[4..8], &[0xff; 4]);
        assert_eq!(&bytes[40..44], &[0xff; 4]);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), RATE);

        let (rate, decoded) = decode_symphonia(bytes, "wav");
        assert_eq!(rate, RATE);
        assert_eq!(decoded.len(), input.len());
        let want = to_i16(&input);
        let got: Vec<i16> = decoded.iter().map(|&s| (s * 32768.0).round() as i16).collect();
        assert_eq!(got, want);
        assert_is_tone(&decoded, RATE, 0.01);
    }

    #[test]
    fn no_audio_is_just_the_header() {
        let enc = crate::audio::Encoder::new(AudioFormat::Wav, RATE).unwrap();
        assert_eq!(enc.finish().unwrap().len(), 44);
    }
}
