//! Shared by the encoders' tests: a test tone fed in awkward chunks, and decoding back.

use super::{AudioFormat, Encoder};

pub const RATE: u32 = 22_050;
pub const FREQ: f32 = 440.0;
pub const AMP: f32 = 0.5;
/// RMS of a sine of amplitude `AMP`.
pub const SINE_RMS: f32 = AMP * std::f32::consts::FRAC_1_SQRT_2;

/// `n` samples of the test tone at `rate`.
pub fn sine(n: usize, rate: u32) -> Vec<f32> {
    (0..n).map(|i| AMP * (2.0 * std::f32::consts::PI * FREQ * i as f32 / rate as f32).sin()).collect()
}

/// Chunk lengths that are neither frame- nor block-aligned, including 0, 1 and some larger than
/// every codec's frame: where buffering between pushes goes wrong, this shows it.
const CHUNKS: [usize; 8] = [0, 1, 997, 17, 4801, 2205, 333, 6000];

/// Encodes `samples` (at [`RATE`]) pushed in uneven chunks. Returns the whole file and how many
/// bytes came out of `push` (before `finish`), to check that the encoder streams.
pub fn encode_uneven(format: AudioFormat, samples: &[f32]) -> (Vec<u8>, usize) {
    let mut enc = Encoder::new(format, RATE).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    for len in CHUNKS.iter().cycle() {
        if at >= samples.len() {
            break;
        }
        let end = (at + len).min(samples.len());
        out.extend(enc.push(&samples[at..end]).unwrap());
        at = end;
    }
    let streamed = out.len();
    out.extend(enc.finish().unwrap());
    (out, streamed)
}

pub fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|&v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Sign changes per second: about `2 * FREQ` for the test tone, far more for noise, none for silence.
pub fn crossings_per_second(x: &[f32], rate: u32) -> f32 {
    let n = x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    n as f32 * rate as f32 / x.len() as f32
}

/// Checks that `decoded` (mono, at `rate`) is the test tone: its middle (codec delay and edges left
/// out) has about the tone's RMS, within `rms_tolerance` (relative), and crosses zero at 440 Hz.
pub fn assert_is_tone(decoded: &[f32], rate: u32, rms_tolerance: f32) {
    let edge = rate as usize / 8;
    assert!(decoded.len() > 4 * edge, "only {} samples", decoded.len());
    let middle = &decoded[edge..decoded.len() - edge];
    let r = rms(middle);
    assert!((r - SINE_RMS).abs() <= rms_tolerance * SINE_RMS, "rms {r}, want {SINE_RMS} within {rms_tolerance}");
    let zc = crossings_per_second(middle, rate);
    assert!((zc - 2.0 * FREQ).abs() < 0.02 * 2.0 * FREQ, "{zc} zero crossings per second");
}

// The decoders are shared with the HTTP tests (tests/common): one copy.
#[path = "../../tests/common/decode.rs"]
mod decode;
pub use decode::{decode_ogg_opus, decode_symphonia};
