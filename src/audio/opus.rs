//! `opus`: Opus (the `opus-rs` crate, a pure-Rust port of libopus 1.6, so that the build needs no
//! cmake or C toolchain) in an Ogg stream (RFC 7845), which is what OpenAI's `audio/opus` is. The
//! tests decode what it writes with the reference libopus.
//!
//! Opus runs at 8, 12, 16, 24 or 48 kHz only, so the 22.05 kHz voice is resampled to 24 kHz: its
//! band ends at 11 kHz, and 24 kHz keeps all of it for half the work of 48 kHz.
//!
//! Stream layout: a page with OpusHead alone (beginning of stream), a page with OpusTags, then
//! 20 ms packets, with a page ended after each `push` so that what was encoded goes out now.
//! Granule positions count 48 kHz samples whatever the encoding rate, and include the encoder's
//! lookahead, which OpusHead's pre-skip tells the decoder to drop. At the end the input is padded
//! with silence to cover the lookahead and a whole last packet, and the last page's granule
//! position says where the real audio ends, so decoders play back exactly the input's length.

use anyhow::{anyhow, Result};
use ogg::{PacketWriteEndInfo, PacketWriter};
use opus_rs::Application;

/// Good speech at 24 kHz mono; a third of mp3's and aac's 64 kb/s, as Opus is that much better.
const BITRATE: i32 = 32_000;
/// The Ogg granule clock, fixed by RFC 7845.
const GRANULE_RATE: u32 = 48_000;
/// A packet is at most 1275 bytes per frame (RFC 6716); this is the size libopus's docs use.
const MAX_PACKET: usize = 4000;

pub struct OpusEncoder {
    opus: opus_rs::OpusEncoder,
    ogg: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    /// Samples per 20 ms packet at the encoding rate, and the same in granule (48 kHz) units.
    frame: usize,
    frame_granule: u64,
    /// 48 kHz granules per sample at the encoding rate (48000 / rate, a whole number for Opus's rates).
    scale: u64,
    /// The encoder's lookahead at the encoding rate; OpusHead carries it as pre-skip (48 kHz).
    lookahead: usize,
    /// Input not yet encoded: less than one packet between calls.
    pending: Vec<i16>,
    samples_in: u64,
    packets_out: u64,
}

impl OpusEncoder {
    pub fn new(rate: u32) -> Result<Self> {
        let mut opus = opus_rs::OpusEncoder::new(i32::try_from(rate)?, 1, Application::Audio)
            .map_err(|e| anyhow!("Opus at {rate} Hz: {e}"))?;
        opus.bitrate_bps = BITRATE;
        // What libopus's OPUS_GET_LOOKAHEAD reports for every application but restricted low delay:
        // 2.5 ms of the CELT overlap plus the 4 ms delay compensation (opus_encoder.c).
        let lookahead = rate as usize / 400 + rate as usize / 250;
        let scale = u64::from(GRANULE_RATE / rate);
        let pre_skip = u16::try_from(lookahead as u64 * scale)?;
        let frame = rate as usize / 50;

        let serial = rand::random();
        let mut ogg = PacketWriter::new(Vec::new());
        // Each header ends its own page, as RFC 7845 requires; the granule position of both is 0.
        ogg.write_packet(opus_head(pre_skip, rate), serial, PacketWriteEndInfo::EndPage, 0)?;
        ogg.write_packet(opus_tags(), serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self {
            opus,
            ogg,
            serial,
            frame,
            frame_granule: frame as u64 * scale,
            scale,
            lookahead,
            pending: Vec::new(),
            samples_in: 0,
            packets_out: 0,
        })
    }

    /// Encodes the whole packets in `pending` (keeping the rest) and writes them, ending the page
    /// after the last (`end` says how: a page, or the stream with its final granule position).
    fn encode_pending(&mut self, end: PacketWriteEndInfo, final_granule: u64) -> Result<()> {
        let whole = self.pending.len() / self.frame * self.frame;
        let mut packets = Vec::with_capacity(whole / self.frame);
        let mut buf = [0u8; MAX_PACKET];
        for frame in self.pending[..whole].chunks_exact(self.frame) {
            let len = self.opus.encode_i16(frame, self.frame, &mut buf).map_err(|e| anyhow!("Opus: {e}"))?;
            packets.push(buf[..len].to_vec());
        }
        self.pending.drain(..whole);
        let count = packets.len();
        for (i, packet) in packets.into_iter().enumerate() {
            self.packets_out += 1;
            let last = i + 1 == count;
            let (info, granule) = match end {
                PacketWriteEndInfo::EndStream if last => (end, final_granule),
                _ if last => (PacketWriteEndInfo::EndPage, self.packets_out * self.frame_granule),
                _ => (PacketWriteEndInfo::NormalPacket, self.packets_out * self.frame_granule),
            };
            self.ogg.write_packet(packet, self.serial, info, granule)?;
        }
        Ok(())
    }
}

/// OpusHead (RFC 7845 section 5.1): version 1, mono, no gain, mapping family 0. The rate field is
/// informational (what went into the encoder); decoders run at 48 kHz regardless.
fn opus_head(pre_skip: u16, rate: u32) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(1);
    h.extend(pre_skip.to_le_bytes());
    h.extend(rate.to_le_bytes());
    h.extend(0i16.to_le_bytes());
    h.push(0);
    h
}

/// OpusTags (RFC 7845 section 5.2): the encoder library as vendor, no comments.
fn opus_tags() -> Vec<u8> {
    let vendor = b"opus-rs (libopus 1.6 port)";
    let mut t = b"OpusTags".to_vec();
    t.extend((vendor.len() as u32).to_le_bytes());
    t.extend(vendor);
    t.extend(0u32.to_le_bytes());
    t
}

impl super::Codec for OpusEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        self.samples_in += pcm.len() as u64;
        self.pending.extend_from_slice(pcm);
        self.encode_pending(PacketWriteEndInfo::EndPage, 0)?;
        Ok(std::mem::take(self.ogg.inner_mut()))
    }

    /// Pads with silence through the lookahead to a whole packet, so that there is always at least
    /// one last packet to carry the end of stream and the true length.
    fn finish(mut self: Box<Self>) -> Result<Vec<u8>> {
        let encoded = self.packets_out * self.frame as u64;
        let needed = (self.samples_in + self.lookahead as u64).div_ceil(self.frame as u64) * self.frame as u64;
        let pad = usize::try_from(needed - encoded)? - self.pending.len();
        self.pending.resize(self.pending.len() + pad, 0);
        let pre_skip = self.lookahead as u64 * self.scale;
        let final_granule = pre_skip + self.samples_in * self.scale;
        self.encode_pending(PacketWriteEndInfo::EndStream, final_granule)?;
        if !self.pending.is_empty() {
            return Err(anyhow!("{} samples left over", self.pending.len()));
        }
        Ok(std::mem::take(self.ogg.inner_mut()))
    }
}

#[cfg(test)]
mod tests {
    use crate::audio::testutil::{assert_is_tone, decode_ogg_opus as decode, encode_uneven, sine, RATE};
    use crate::audio::AudioFormat;

    /// Exactly the input's length at 48 kHz (the granule positions make it exact), the tone at its
    /// level within 5%, and everything but the last packets streamed before `finish`.
    #[test]
    fn one_second_of_sine() {
        let (bytes, streamed) = encode_uneven(AudioFormat::Opus, &sine(RATE as usize, RATE));
        assert_eq!(&bytes[0..4], b"OggS");
        assert!(streamed > bytes.len() * 3 / 4, "only {streamed} of {} bytes before finish", bytes.len());
        let decoded = decode(bytes);
        assert_eq!(decoded.len(), 48_000);
        assert_is_tone(&decoded, 48_000, 0.05);
    }

    /// Lengths shorter than a packet or the lookahead, and none at all, still end where the
    /// input did (to the 48 kHz sample: 24 kHz samples times two).
    #[test]
    fn short_streams() {
        for n in [0usize, 1, 100, 441, 480, 1000] {
            let mut enc = crate::audio::Encoder::new(AudioFormat::Opus, RATE).unwrap();
            let mut bytes = enc.push(&sine(n, RATE)).unwrap();
            bytes.extend(enc.finish().unwrap());
            let at_24k = (n as f64 * 24_000.0 / RATE as f64).round() as usize;
            assert_eq!(decode(bytes).len(), 2 * at_24k, "{n} samples");
        }
    }
}
