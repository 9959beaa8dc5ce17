//! Audio output of `POST /v1/audio/speech`: one streaming encoder per OpenAI `response_format`.
//!
//! The voice hands over mono f32 samples in [-1, 1] (22,050 Hz), one sentence at a time, and the
//! endpoint sends bytes as they come (a chunked body), so every encoder is incremental: `push` returns
//! what can be sent now and `finish` the rest, and the concatenation is one valid file.
//!
//! Output per format (the rate each one runs at is chosen in [`AudioFormat::output_rate`]):
//! - `pcm`: raw s16le mono at 24 kHz, no header: exactly what OpenAI sends, so clients that hard-code
//!   24 kHz play it at the right speed. Resampled ([`resample`]).
//! - `wav`: the same s16le at the input rate behind a 44-byte header; its sizes are the true ones
//!   in a file sent whole ([`Encoder::whole`], which holds the data until `finish`) and say
//!   "unknown" in a streamed one.
//! - `flac`: lossless at the input rate, one FLAC frame per 4096 samples.
//! - `mp3`: LAME, CBR, at the input rate (22.05 kHz is an MPEG-2 Layer III rate).
//! - `aac`: fdk-aac AAC-LC in ADTS at the input rate (22.05 kHz is an AAC rate).
//! - `opus`: Opus (pure Rust, `opus-rs`) in Ogg at 24 kHz (Opus has no 22.05 kHz mode). Resampled.

mod aac;
mod flac;
mod mp3;
mod opus;
mod pcm;
pub mod resample;
mod wav;

#[cfg(test)]
mod testutil;

use anyhow::{bail, Context, Result};

/// An OpenAI `response_format` for speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    Mp3,
    Opus,
    Aac,
    Flac,
    Wav,
    Pcm,
}

impl AudioFormat {
    pub const ALL: [AudioFormat; 6] = [Self::Mp3, Self::Opus, Self::Aac, Self::Flac, Self::Wav, Self::Pcm];

    /// The lowercase names OpenAI accepts; anything else (including other casings) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp3 => "mp3",
            Self::Opus => "opus",
            Self::Aac => "aac",
            Self::Flac => "flac",
            Self::Wav => "wav",
            Self::Pcm => "pcm",
        }
    }

    /// The `Content-Type` OpenAI answers with (`opus` is Ogg Opus, `aac` is ADTS).
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Mp3 => "audio/mpeg",
            Self::Opus => "audio/opus",
            Self::Aac => "audio/aac",
            Self::Flac => "audio/flac",
            Self::Wav => "audio/wav",
            Self::Pcm => "audio/pcm",
        }
    }

    /// The sample rate the encoded stream has for a given input rate. Where the codec can take the
    /// input rate as it is, it does: resampling costs CPU and a voice at 22.05 kHz has nothing above
    /// 11 kHz to keep. Otherwise the nearest rate the codec has at or above the input.
    pub(crate) fn output_rate(self, input_rate: u32) -> u32 {
        // Rates LAME can write (MPEG-1, MPEG-2 and MPEG-2.5 Layer III).
        const MP3: &[u32] = &[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
        // The rates with an ADTS sampling-frequency index that fdk-aac encodes at.
        const AAC: &[u32] = &[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000];
        // Opus runs at these alone (the Ogg granule clock is 48 kHz whatever the rate).
        const OPUS: &[u32] = &[8000, 12000, 16000, 24000, 48000];
        match self {
            // OpenAI's pcm is 24 kHz, and the bytes carry no header to say otherwise.
            Self::Pcm => pcm::RATE,
            Self::Wav | Self::Flac => input_rate,
            Self::Mp3 => at_or_above(input_rate, MP3),
            Self::Aac => at_or_above(input_rate, AAC),
            Self::Opus => at_or_above(input_rate, OPUS),
        }
    }
}

/// `rate` if the codec has it, else the lowest supported rate above it, else the highest there is.
fn at_or_above(rate: u32, supported: &[u32]) -> u32 {
    supported.iter().copied().find(|&r| r >= rate).unwrap_or(supported[supported.len() - 1])
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One codec behind the shared resampling and sample conversion: takes s16 mono at the rate it was
/// built for, returns the bytes that are complete.
trait Codec: Send {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>>;
    fn finish(self: Box<Self>) -> Result<Vec<u8>>;
}

/// A streaming encoder for one response: `push` each chunk the voice produces and send what comes
/// back (possibly nothing yet), then send what `finish` returns.
pub struct Encoder {
    format: AudioFormat,
    resampler: Option<resample::Resampler>,
    codec: Box<dyn Codec>,
}

impl Encoder {
    pub fn new(format: AudioFormat, input_sample_rate: u32) -> Result<Self> {
        Self::build(format, input_sample_rate, false)
    }

    /// An encoder for a file sent whole rather than streamed: where the format's header states the
    /// length (wav), nothing comes out before `finish`, so that the header states the true one.
    /// Other formats come out as with [`Encoder::new`].
    pub fn whole(format: AudioFormat, input_sample_rate: u32) -> Result<Self> {
        Self::build(format, input_sample_rate, true)
    }

    fn build(format: AudioFormat, input_sample_rate: u32, whole: bool) -> Result<Self> {
        if input_sample_rate == 0 {
            bail!("input sample rate must be positive");
        }
        let rate = format.output_rate(input_sample_rate);
        let resampler =
            if rate == input_sample_rate { None } else { Some(resample::Resampler::new(input_sample_rate, rate)?) };
        let codec: Box<dyn Codec> = match format {
            AudioFormat::Pcm => Box::new(pcm::PcmEncoder),
            AudioFormat::Wav if whole => Box::new(wav::WavEncoder::whole(rate)),
            AudioFormat::Wav => Box::new(wav::WavEncoder::streamed(rate)),
            AudioFormat::Flac => Box::new(flac::FlacEncoder::new(rate)?),
            AudioFormat::Mp3 => Box::new(mp3::Mp3Encoder::new(rate)?),
            AudioFormat::Aac => Box::new(aac::AacEncoder::new(rate)?),
            AudioFormat::Opus => Box::new(opus::OpusEncoder::new(rate)?),
        };
        Ok(Self { format, resampler, codec })
    }

    /// Encodes `samples` (mono, in [-1, 1], at the input rate) and returns the bytes ready to send.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>> {
        let pcm = match &mut self.resampler {
            Some(r) => to_i16(&r.process(samples)?),
            None => to_i16(samples),
        };
        if pcm.is_empty() {
            return Ok(Vec::new());
        }
        self.codec.encode(&pcm).with_context(|| format!("encoding {}", self.format))
    }

    /// Flushes the resampler and the codec: the last bytes of the file.
    pub fn finish(self) -> Result<Vec<u8>> {
        let format = self.format;
        let mut codec = self.codec;
        let mut out = match self.resampler {
            Some(r) => codec.encode(&to_i16(&r.finish()?)).with_context(|| format!("encoding {format}"))?,
            None => Vec::new(),
        };
        out.extend(codec.finish().with_context(|| format!("finishing {format}"))?);
        Ok(out)
    }
}

/// f32 in [-1, 1] to s16: clamped (a voice can overshoot a little, and wrapping around would be a
/// loud click), scaled by 32767 so that ±1.0 map to ±32767, and rounded rather than truncated
/// (truncation biases every sample towards zero). NaN becomes 0 (`as` saturates and maps NaN to 0).
pub(crate) fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_content_types_match_openai() {
        for f in AudioFormat::ALL {
            assert_eq!(AudioFormat::parse(f.as_str()), Some(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!(AudioFormat::parse("MP3"), None);
        assert_eq!(AudioFormat::parse("ogg"), None);
        assert_eq!(AudioFormat::parse(""), None);
        let types: Vec<_> = AudioFormat::ALL.iter().map(|f| f.content_type()).collect();
        assert_eq!(types, ["audio/mpeg", "audio/opus", "audio/aac", "audio/flac", "audio/wav", "audio/pcm"]);
    }

    #[test]
    fn output_rates() {
        let at = |f: AudioFormat| f.output_rate(22_050);
        assert_eq!(at(AudioFormat::Pcm), 24_000);
        assert_eq!(at(AudioFormat::Opus), 24_000);
        assert_eq!(at(AudioFormat::Mp3), 22_050);
        assert_eq!(at(AudioFormat::Aac), 22_050);
        assert_eq!(at(AudioFormat::Flac), 22_050);
        assert_eq!(at(AudioFormat::Wav), 22_050);
        assert_eq!(AudioFormat::Opus.output_rate(44_100), 48_000);
        assert_eq!(AudioFormat::Opus.output_rate(16_000), 16_000);
        assert_eq!(AudioFormat::Mp3.output_rate(96_000), 48_000);
        assert_eq!(AudioFormat::Aac.output_rate(96_000), 96_000);
    }

    #[test]
    fn to_i16_clamps_and_rounds() {
        let got = to_i16(&[0.0, 1.0, -1.0, 2.0, -7.5, 0.5, -0.5, 1.4 / 32767.0, 1.6 / 32767.0, f32::NAN]);
        assert_eq!(got, [0, 32767, -32767, 32767, -32767, 16384, -16384, 1, 2, 0]);
    }

    #[test]
    fn zero_rate_is_refused() {
        assert!(Encoder::new(AudioFormat::Wav, 0).is_err());
    }

    #[test]
    fn encoder_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<Encoder>();
    }

    /// A response with no audio at all still finishes cleanly, whatever the format.
    #[test]
    fn finish_without_push() {
        for f in AudioFormat::ALL {
            let mut enc = Encoder::new(f, 22_050).unwrap();
            assert!(enc.push(&[]).unwrap().is_empty(), "{f}");
            enc.finish().unwrap_or_else(|e| panic!("{f}: {e:#}"));
        }
    }
}
