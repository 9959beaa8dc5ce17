//! `aac`: AAC-LC in ADTS (what OpenAI's `audio/aac` is: self-framed, streamable, no MP4 box), by
//! fdk-aac, built from the sources bundled in `fdk-aac-sys`. Mono at the input rate: 22.05 kHz is
//! an AAC sampling rate. Each encoder call yields at most one 1024-sample frame with its 7-byte
//! ADTS header, so every frame goes out as soon as it is complete.

use anyhow::{anyhow, ensure, Result};
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

/// Transparent for speech; well under AAC-LC's limit at 22.05 kHz mono (about 132 kb/s).
const BITRATE: u32 = 64_000;
/// Samples per AAC-LC frame.
const FRAME: usize = 1024;

pub struct AacEncoder {
    fdk: Encoder,
    /// Room for one frame's bytes, as fdk-aac reports it.
    buf: Vec<u8>,
    /// fdk-aac's delay: input sample `i` is sample `i + delay` of the decoded stream.
    delay: usize,
    samples_in: usize,
    frames_out: usize,
}

impl AacEncoder {
    pub fn new(rate: u32) -> Result<Self> {
        let fdk = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(BITRATE),
            sample_rate: rate,
            transport: Transport::Adts,
            channels: ChannelMode::Mono,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| anyhow!("fdk-aac at {rate} Hz: {e}"))?;
        let info = fdk.info().map_err(|e| anyhow!("fdk-aac: {e}"))?;
        ensure!(info.frameLength as usize == FRAME, "fdk-aac frame length {}", info.frameLength);
        Ok(Self {
            buf: vec![0; info.maxOutBufBytes as usize],
            delay: info.nDelay as usize,
            fdk,
            samples_in: 0,
            frames_out: 0,
        })
    }

    /// Feeds `pcm` and collects the frames that come out, until all of it is taken and no frame
    /// is left to give (fdk-aac holds the remainder, less than a frame plus its lookahead).
    fn feed(&mut self, mut pcm: &[i16], out: &mut Vec<u8>) -> Result<()> {
        loop {
            let info = self.fdk.encode(pcm, &mut self.buf).map_err(|e| anyhow!("fdk-aac: {e}"))?;
            out.extend_from_slice(&self.buf[..info.output_size]);
            if info.output_size > 0 {
                self.frames_out += 1;
            }
            pcm = &pcm[info.input_consumed.min(pcm.len())..];
            if info.output_size == 0 {
                if pcm.is_empty() {
                    return Ok(());
                }
                // Never seen; looping again would spin and returning would drop audio.
                ensure!(info.input_consumed > 0, "fdk-aac took no input and gave no frame");
            }
        }
    }
}

impl super::Codec for AacEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        self.samples_in += pcm.len();
        let mut out = Vec::new();
        self.feed(pcm, &mut out)?;
        Ok(out)
    }

    /// Pushes silence until the frames out cover every input sample past the codec's delay. The
    /// crate has no handle on fdk-aac's own flush (`numInSamples = -1`), which pads the same way.
    /// ADTS has nowhere to say how much is priming (fdk-aac's delay: 2048 samples, 93 ms at
    /// 22.05 kHz) or padding (less than a frame, 46 ms), so players play both as silence.
    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if self.samples_in == 0 {
            return Ok(out);
        }
        let silence = [0i16; FRAME];
        let want = (self.samples_in + self.delay).div_ceil(FRAME);
        // Bounded: each frame of silence yields a frame once fdk-aac's lookahead is full.
        for _ in 0..want + self.delay.div_ceil(FRAME) + 2 {
            if self.frames_out >= want {
                return Ok(out);
            }
            self.feed(&silence, &mut out)?;
        }
        Err(anyhow!("fdk-aac gave {} of {want} frames", self.frames_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::testutil::{assert_is_tone, decode_symphonia, encode_uneven, sine, RATE};
    use crate::audio::AudioFormat;

    /// Decoded (symphonia's ADTS reader) at 22,050 Hz, as long as the input plus fdk-aac's delay
    /// rounded up to whole frames (so up to 1023 samples more); the tone within 5% of its level
    /// once the delay is skipped; most bytes streamed before `finish`.
    #[test]
    fn one_second_of_sine() {
        let input = sine(RATE as usize, RATE);
        let (bytes, streamed) = encode_uneven(AudioFormat::Aac, &input);
        assert_eq!((bytes[0], bytes[1] & 0xf6), (0xff, 0xf0), "starts with an ADTS sync word");
        assert!(streamed > bytes.len() / 2, "only {streamed} of {} bytes before finish", bytes.len());

        let delay = AacEncoder::new(RATE).unwrap().delay;
        let (rate, decoded) = decode_symphonia(bytes, "aac");
        assert_eq!(rate, RATE);
        let want = (input.len() + delay).div_ceil(FRAME) * FRAME;
        assert_eq!(decoded.len(), want, "delay {delay}");
        assert_is_tone(&decoded[delay..], RATE, 0.05);
    }
}
