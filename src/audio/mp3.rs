//! `mp3`: LAME (3.100, built from source by `mp3lame-sys`), mono CBR at the input rate.
//!
//! 22.05 kHz is an MPEG-2 Layer III rate, so the voice goes in as it is. Constant bitrate and no
//! Xing/LAME tag: that tag sits in the first frame but is only known at the end, and a stream
//! cannot go back to fill it in; a stale one would give players a wrong length. Without it players
//! take the length from the (constant) bitrate, which is exact for CBR. The price is that they
//! cannot trim LAME's priming (1105 samples, 50 ms at 22.05 kHz) and the last frame's padding.

use std::mem::MaybeUninit;

use anyhow::{anyhow, Result};
use mp3lame_encoder::{max_required_buffer_size, Bitrate, Builder, FlushGap, Mode, MonoPcm, Quality, VbrMode};

/// Plenty for speech at 22.05 kHz mono (MPEG-2 allows up to 160 kb/s).
const BITRATE: Bitrate = Bitrate::Kbps64;

pub struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
}

impl Mp3Encoder {
    pub fn new(rate: u32) -> Result<Self> {
        let lame = (|| {
            let mut b = Builder::new().ok_or_else(|| anyhow!("out of memory"))?;
            b.set_num_channels(1).map_err(|e| anyhow!("channels: {e}"))?;
            b.set_sample_rate(rate).map_err(|e| anyhow!("input rate {rate}: {e}"))?;
            // Not LAME's own choice of output rate (it would pick 16 kHz for 64 kb/s): keep the input's.
            b.set_output_sample_rate(std::num::NonZeroU32::new(rate))
                .map_err(|e| anyhow!("output rate {rate}: {e}"))?;
            b.set_mode(Mode::Mono).map_err(|e| anyhow!("mode: {e}"))?;
            b.set_vbr_mode(VbrMode::Off).map_err(|e| anyhow!("vbr: {e}"))?;
            b.set_brate(BITRATE).map_err(|e| anyhow!("bitrate: {e}"))?;
            b.set_to_write_vbr_tag(false).map_err(|e| anyhow!("vbr tag: {e}"))?;
            // LAME's default speed/quality trade-off ("-q 5").
            b.set_quality(Quality::Good).map_err(|e| anyhow!("quality: {e}"))?;
            b.build().map_err(|e| anyhow!("init: {e}"))
        })()
        .map_err(|e| e.context("LAME"))?;
        Ok(Self { lame })
    }
}

/// Runs one LAME call into a buffer of the size LAME's docs ask for, and returns the bytes written.
fn run(size: usize, call: impl FnOnce(&mut [MaybeUninit<u8>]) -> Result<usize>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    let n = call(out.spare_capacity_mut())?;
    assert!(n <= out.capacity(), "LAME wrote past its buffer");
    // SAFETY: LAME initialised the first `n` bytes of the spare capacity, and `n` fits in it.
    unsafe { out.set_len(n) };
    Ok(out)
}

impl super::Codec for Mp3Encoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        let lame = &mut self.lame;
        run(max_required_buffer_size(pcm.len()), |buf| lame.encode(MonoPcm(pcm), buf).map_err(|e| anyhow!("LAME: {e}")))
    }

    /// The frames LAME still holds, the last one padded with silence ("gap", not "no gap": there is
    /// no next file to run on into).
    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let lame = &mut self.lame;
        run(max_required_buffer_size(0), |buf| lame.flush::<FlushGap>(buf).map_err(|e| anyhow!("LAME flush: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::audio::testutil::{assert_is_tone, decode_symphonia, encode_uneven, sine, RATE};
    use crate::audio::AudioFormat;

    /// LAME's delay before the first input sample (encoder 576 + decoder 529).
    const PRIMING: usize = 1105;
    /// Samples in one MPEG-2 Layer III frame.
    const FRAME: usize = 576;

    /// Decoded at 22,050 Hz; as long as the input plus LAME's priming plus at most two frames of
    /// padding (the flush rounds up to whole frames, and the decoder's own lag); the 440 Hz tone
    /// at its level within 8%; and most bytes streamed before `finish`. (LAME gives this pure tone
    /// 5% less RMS at any bitrate, 64 to 160 kb/s; ffmpeg's own libmp3lame encoder does the same.)
    #[test]
    fn one_second_of_sine() {
        let input = sine(RATE as usize, RATE);
        let (bytes, streamed) = encode_uneven(AudioFormat::Mp3, &input);
        assert_eq!(bytes[0], 0xff, "starts with a frame sync, no ID3 or Xing");
        assert!(streamed > bytes.len() / 2, "only {streamed} of {} bytes before finish", bytes.len());
        // 64 kb/s for a second, give or take a frame.
        assert!((7_000..9_500).contains(&bytes.len()), "{} bytes", bytes.len());

        let (rate, decoded) = decode_symphonia(bytes, "mp3");
        assert_eq!(rate, RATE);
        let n = input.len();
        assert!(decoded.len() >= n + PRIMING && decoded.len() <= n + PRIMING + 2 * FRAME, "{} samples", decoded.len());
        assert_is_tone(&decoded[PRIMING..], RATE, 0.08);
    }
}
