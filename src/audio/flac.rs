//! `flac`: lossless, 16-bit mono at the input rate, by `flacenc` (pure Rust).
//!
//! Streamed frame by frame: `flacenc` encodes one frame at a time, so each full block of 4096
//! samples (186 ms at 22.05 kHz) goes out as soon as it is there, and `finish` sends the shorter
//! last one. The STREAMINFO header has to go out first, before the stream's length, MD5 or frame
//! sizes are known; FLAC defines 0 as "unknown" for each of these (ffmpeg writes the same when its
//! FLAC goes to a pipe), and decoders then read frames until the end: ffmpeg, symphonia and libFLAC
//! (`flac -t`: ok, with a warning that there is no MD5 to check) do. libsndfile (python's
//! `soundfile`) opens such a file but fails reading to its end (`psf_fseek() failed`), as it does
//! with ffmpeg's piped FLAC; a client that needs it can ask for wav. Buffering the whole response
//! to write a complete STREAMINFO would fix that at the cost of streaming.

use anyhow::{anyhow, Context, Result};
use flacenc::bitsink::MemSink;
use flacenc::component::{BitRepr, Stream, StreamInfo};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Fill, FrameBuf};

/// Samples per frame: the reference encoder's default, and a good size for compression at any rate.
const BLOCK: usize = 4096;

pub struct FlacEncoder {
    config: Verified<config::Encoder>,
    info: StreamInfo,
    /// STREAMINFO, until the first bytes go out with it.
    header: Option<Vec<u8>>,
    /// Samples of the block being filled (fewer than `BLOCK`).
    block: Vec<i32>,
    frame_number: usize,
}

impl FlacEncoder {
    pub fn new(rate: u32) -> Result<Self> {
        let mut info = StreamInfo::new(rate as usize, 1, 16).map_err(|e| anyhow!("flac stream info: {e}"))?;
        // A fixed block size (the last frame may be shorter, as FLAC allows); frame sizes unknown.
        info.set_block_sizes(BLOCK, BLOCK).map_err(|e| anyhow!("flac block size: {e}"))?;
        info.set_frame_sizes(0, 0).map_err(|e| anyhow!("flac frame sizes: {e}"))?;
        let mut sink = MemSink::<u8>::new();
        Stream::with_stream_info(info.clone()).write(&mut sink).map_err(|e| anyhow!("flac header: {e}"))?;
        // Single-threaded: a speech response is encoded a block at a time as it streams, and the
        // server runs many at once.
        let mut config = config::Encoder::default();
        config.block_size = BLOCK;
        config.multithread = false;
        let config = config.into_verified().map_err(|(_, e)| anyhow!("flac config: {e}"))?;
        Ok(Self { config, info, header: Some(sink.into_inner()), block: Vec::with_capacity(BLOCK), frame_number: 0 })
    }

    fn take_header(&mut self) -> Vec<u8> {
        self.header.take().unwrap_or_default()
    }

    /// Encodes `self.block` as the next frame, appends it to `out`, and empties the block.
    fn flush_block(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let mut buf = FrameBuf::with_size(1, BLOCK).map_err(|e| anyhow!("flac frame buffer: {e}"))?;
        buf.fill_interleaved(&self.block).map_err(|e| anyhow!("flac frame buffer: {e}"))?;
        let frame = flacenc::encode_fixed_size_frame(&self.config, &buf, self.frame_number, &self.info)
            .map_err(|e| anyhow!("flac frame {}: {e}", self.frame_number))?;
        let mut sink = MemSink::<u8>::with_capacity(frame.count_bits());
        frame.write(&mut sink).map_err(|e| anyhow!("flac frame {}: {e}", self.frame_number))?;
        out.extend_from_slice(sink.as_slice());
        self.frame_number += 1;
        self.block.clear();
        Ok(())
    }
}

impl super::Codec for FlacEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        let mut out = self.take_header();
        for chunk in pcm.chunks(BLOCK) {
            let room = BLOCK - self.block.len();
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            self.block.extend(now.iter().map(|&s| i32::from(s)));
            if self.block.len() == BLOCK {
                self.flush_block(&mut out).context("flac")?;
            }
            self.block.extend(later.iter().map(|&s| i32::from(s)));
        }
        Ok(out)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let mut out = self.take_header();
        if !self.block.is_empty() {
            self.flush_block(&mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::audio::testutil::{assert_is_tone, decode_symphonia, encode_uneven, sine, RATE};
    use crate::audio::{to_i16, AudioFormat, Encoder};

    /// Lossless: symphonia decodes exactly the 22,050 samples that went in, at 22,050 Hz, though
    /// the header gives no length; all whole frames go out before `finish`.
    #[test]
    fn one_second_of_sine() {
        let input = sine(RATE as usize, RATE);
        let (bytes, streamed) = encode_uneven(AudioFormat::Flac, &input);
        assert_eq!(&bytes[0..4], b"fLaC");
        assert!(streamed > bytes.len() / 2, "only {streamed} of {} bytes before finish", bytes.len());
        assert!(bytes.len() < input.len(), "{} bytes: not compressed", bytes.len());

        let (rate, decoded) = decode_symphonia(bytes, "flac");
        assert_eq!(rate, RATE);
        let got: Vec<i16> = decoded.iter().map(|&s| (s * 32768.0).round() as i16).collect();
        assert_eq!(got, to_i16(&input));
        assert_is_tone(&decoded, RATE, 0.01);
    }

    /// Lengths that end just after a block boundary or short of the smallest block FLAC allows
    /// still decode to exactly the input.
    #[test]
    fn odd_lengths() {
        for n in [1usize, 15, 4096, 4097, 8191] {
            let input = sine(n, RATE);
            let mut enc = Encoder::new(AudioFormat::Flac, RATE).unwrap();
            let mut bytes = enc.push(&input).unwrap();
            bytes.extend(enc.finish().unwrap());
            let (_, decoded) = decode_symphonia(bytes, "flac");
            let got: Vec<i16> = decoded.iter().map(|&s| (s * 32768.0).round() as i16).collect();
            assert_eq!(got, to_i16(&input), "{n} samples");
        }
    }
}
