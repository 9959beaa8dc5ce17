//! `wav`: a 44-byte RIFF/WAVE header, then s16le mono at the input rate.
//!
//! Sent whole (a response body, `stream_format: audio`), the data is held until the end so that the
//! header states the true RIFF and `data` sizes: `soxi` and every reader then give the true length.
//! Streamed (`stream_format: sse`), the header goes out before the length is known, so its two sizes
//! are 0xFFFFFFFF, "as long as the stream goes": what OpenAI itself sends for streamed wav. ffmpeg,
//! libsndfile (python's `soundfile`), python's `wave` and symphonia all read such a file to its end
//! (`wave` reports a frame count of about 2^31 but reads what is there; `soxi` a length of 27 hours).

use anyhow::Result;

use super::pcm::s16le;

/// The RIFF and `data` chunk sizes of a stream whose length was unknown when the header was sent.
const UNKNOWN_SIZE: u32 = u32::MAX;
/// The RIFF size counts everything after its own field: "WAVE", the `fmt ` chunk and the `data`
/// chunk's header, before the data.
const RIFF_OVERHEAD: u32 = 36;

pub struct WavEncoder {
    rate: u32,
    mode: Mode,
}

enum Mode {
    /// The header (sizes unknown) goes out with the first bytes; `true` once it has.
    Streamed { header_sent: bool },
    /// The data so far, sent behind a true header by `finish`.
    Whole { data: Vec<u8> },
}

impl WavEncoder {
    /// A WAV sent as it comes, its sizes unknown.
    pub fn streamed(rate: u32) -> Self {
        Self { rate, mode: Mode::Streamed { header_sent: false } }
    }

    /// A WAV sent whole at `finish`, its sizes true.
    pub fn whole(rate: u32) -> Self {
        Self { rate, mode: Mode::Whole { data: Vec::new() } }
    }
}

/// Canonical 44-byte header: PCM (format 1), mono, 16-bit, with `data_bytes` of data (`None`:
/// unknown; a length past what the sizes can say is unknown too).
fn header(rate: u32, data_bytes: Option<usize>) -> [u8; 44] {
    let (channels, bits) = (1u16, 16u16);
    let block_align = channels * bits / 8;
    let data_size = data_bytes
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n <= u32::MAX - RIFF_OVERHEAD)
        .unwrap_or(UNKNOWN_SIZE);
    let riff_size = if data_size == UNKNOWN_SIZE { UNKNOWN_SIZE } else { RIFF_OVERHEAD + data_size };
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_size.to_le_bytes());
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
    h[40..44].copy_from_slice(&data_size.to_le_bytes());
    h
}

impl super::Codec for WavEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        match &mut self.mode {
            Mode::Streamed { header_sent } => {
                let mut out = if *header_sent { Vec::new() } else { header(self.rate, None).to_vec() };
                *header_sent = true;
                out.extend(s16le(pcm));
                Ok(out)
            }
            Mode::Whole { data } => {
                data.extend(s16le(pcm));
                Ok(Vec::new())
            }
        }
    }

    /// Streamed: only the header if no audio came at all (an empty but well-formed file). Whole:
    /// the file.
    fn finish(self: Box<Self>) -> Result<Vec<u8>> {
        Ok(match self.mode {
            Mode::Streamed { header_sent: true } => Vec::new(),
            Mode::Streamed { header_sent: false } => header(self.rate, None).to_vec(),
            Mode::Whole { data } => {
                let mut out = header(self.rate, Some(data.len())).to_vec();
                out.extend(data);
                out
            }
        })
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
        let whole = crate::audio::Encoder::whole(AudioFormat::Wav, RATE).unwrap().finish().unwrap();
        assert_eq!(whole.len(), 44);
        assert_eq!(size(&whole, 4), 36, "RIFF size of an empty file");
        assert_eq!(size(&whole, 40), 0, "data size of an empty file");
    }

    fn size(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// Sent whole, the file comes at the end with its true sizes: the RIFF size is the file's length
    /// less 8, the data size what follows the header, and the duration the header implies (as
    /// `soxi` computes it) that of the samples.
    #[test]
    fn a_whole_file_states_its_true_sizes() {
        let input = sine(RATE as usize * 3 / 2, RATE);
        let mut enc = crate::audio::Encoder::whole(AudioFormat::Wav, RATE).unwrap();
        for chunk in input.chunks(1000) {
            assert!(enc.push(chunk).unwrap().is_empty(), "nothing goes out before the end");
        }
        let bytes = enc.finish().unwrap();
        assert_eq!(bytes.len(), 44 + 2 * input.len());
        assert_eq!(size(&bytes, 4) as usize, bytes.len() - 8);
        assert_eq!(size(&bytes, 40) as usize, bytes.len() - 44);
        let byte_rate = size(&bytes, 28);
        assert_eq!(size(&bytes, 40) as f64 / byte_rate as f64, 1.5, "seconds");
        let (rate, decoded) = decode_symphonia(bytes, "wav");
        assert_eq!((rate, decoded.len()), (RATE, input.len()));
        assert_is_tone(&decoded, RATE, 0.01);
    }
}
