//! Streaming sample-rate conversion of mono f32, on rubato's synchronous FFT resampler.
//!
//! The audio arrives a sentence at a time, and resampling each sentence on its own would restart the
//! filter at every boundary (a click, and a few ms of lost or doubled signal). So one resampler runs
//! over the whole response: input is queued until a full chunk is there, the filter's state carries
//! over between chunks, and only `finish` pads with silence. The result is the same, sample for
//! sample, however the input was split (a test checks this).
//!
//! The FFT resampler fits: the ratio is fixed (22,050 -> 24,000 is 147:160) and it costs far less per
//! sample than a sinc interpolator of the same quality.

use anyhow::{Context, Result};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// Input frames per resampler call (about 46 ms at 22.05 kHz). Less than this stays queued until
/// the next push or `finish`; rubato splits a chunk into FFT blocks of about 256 frames, which is
/// what sets the filter's delay (about 7 ms), not this.
const CHUNK: usize = 1024;

pub struct Resampler {
    inner: Fft<f32>,
    from: u32,
    to: u32,
    /// Input not yet handed to `inner`: less than one chunk between calls.
    pending: Vec<f32>,
    /// Scratch output of one `inner` call.
    scratch: Vec<f32>,
    /// Leading output frames still to drop: `inner`'s delay, so that output starts where input did.
    skip: usize,
    /// Input frames taken and output frames given so far, to give exactly the right total at the end.
    taken: u64,
    given: u64,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Result<Self> {
        let inner = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Input)
            .with_context(|| format!("resampler {from} Hz -> {to} Hz"))?;
        let skip = inner.output_delay();
        let scratch = vec![0.0; inner.output_frames_max()];
        Ok(Self { inner, from, to, pending: Vec::new(), scratch, skip, taken: 0, given: 0 })
    }

    /// Resamples what can be resampled now. Output lags input by up to one chunk plus the filter's
    /// delay; `finish` returns the rest.
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        self.taken += input.len() as u64;
        self.pending.extend_from_slice(input);
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        let mut at = 0;
        while pending.len() - at >= self.inner.input_frames_next() {
            at += self.run(&pending[at..], None, &mut out)?;
        }
        self.pending = pending;
        self.pending.drain(..at);
        Ok(out)
    }

    /// Flushes: the queued input, then silence until the output has exactly `round(taken * to / from)`
    /// frames, the length the input has at the new rate (the silence itself is cut off).
    pub fn finish(mut self) -> Result<Vec<f32>> {
        let total = (self.taken * u64::from(self.to) + u64::from(self.from) / 2) / u64::from(self.from);
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.run(&pending, Some(pending.len()), &mut out)?;
        }
        while self.given < total {
            // Silence pushes the tail through the filter's delay.
            self.run(&[], Some(0), &mut out)?;
        }
        let extra = (self.given - total) as usize;
        out.truncate(out.len() - extra.min(out.len()));
        Ok(out)
    }

    /// One `inner` call on the start of `input` (`partial`: only that many frames are real, the
    /// rest of the chunk is silence). Appends the output, less what is still to skip; returns the
    /// input frames used.
    fn run(&mut self, input: &[f32], partial: Option<usize>, out: &mut Vec<f32>) -> Result<usize> {
        let frames = partial.unwrap_or_else(|| self.inner.input_frames_next());
        let buf_in = InterleavedSlice::new(input, 1, frames).context("resampler input")?;
        let n_out = self.scratch.len();
        let mut buf_out = InterleavedSlice::new_mut(&mut self.scratch[..], 1, n_out).context("resampler output")?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (used, produced) =
            self.inner.process_into_buffer(&buf_in, &mut buf_out, indexing.as_ref()).context("resampling")?;
        let dropped = self.skip.min(produced);
        self.skip -= dropped;
        out.extend_from_slice(&self.scratch[dropped..produced]);
        self.given += (produced - dropped) as u64;
        Ok(used.min(frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::testutil::{rms, sine, AMP, FREQ, RATE, SINE_RMS};

    fn resample_in_chunks(input: &[f32], chunks: &[usize], to: u32) -> Vec<f32> {
        let mut r = Resampler::new(RATE, to).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        for len in chunks.iter().cycle() {
            if at >= input.len() {
                break;
            }
            let end = (at + len).min(input.len());
            out.extend(r.process(&input[at..end]).unwrap());
            at = end;
        }
        out.extend(r.finish().unwrap());
        out
    }

    /// One second of the tone at 22,050 Hz becomes exactly 24,000 samples of the same tone, in time
    /// with the input (the filter's delay is taken off), at the same level.
    #[test]
    fn sine_to_24k_is_the_same_sine() {
        let input = sine(RATE as usize, RATE);
        let out = resample_in_chunks(&input, &[RATE as usize], 24_000);
        assert_eq!(out.len(), 24_000);
        let ideal = sine(24_000, 24_000);
        // Away from the two ends (where the tone starts and stops abruptly and the filter rings),
        // the output is the ideal tone sampled at 24 kHz.
        let err = crate::max_abs_diff(&out[240..23_760], &ideal[240..23_760]);
        assert!(err < 2e-3, "max error {err}");
        assert!((rms(&out) - SINE_RMS).abs() < 0.01 * SINE_RMS);
    }

    /// Chunk boundaries change nothing: the output is the same, sample for sample, however the
    /// input was split. So a sentence boundary cannot click.
    #[test]
    fn chunking_does_not_change_the_output() {
        let input = sine(30_000, RATE);
        let whole = resample_in_chunks(&input, &[input.len()], 24_000);
        for chunks in [&[1usize][..], &[7, 1000, 3], &[1023, 1024, 1025], &[5000, 0, 1]] {
            let split = resample_in_chunks(&input, chunks, 24_000);
            assert_eq!(split.len(), whole.len(), "{chunks:?}");
            let diff = crate::max_abs_diff(&split, &whole);
            assert!(diff < 1e-6, "{chunks:?}: differs by {diff}");
        }
        // And no jump beyond what the tone itself does from one sample to the next (away from
        // the ends, where the tone starts and stops abruptly).
        let max_step = whole[240..whole.len() - 240].windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f32::max);
        let tone_step = 2.0 * std::f32::consts::PI * FREQ / 24_000.0 * AMP;
        assert!(max_step < 1.05 * tone_step, "step {max_step} vs {tone_step}");
    }

    /// Lengths round to the nearest output frame, also for inputs shorter than one chunk or the
    /// filter's delay, and for no input at all.
    #[test]
    fn output_length_is_input_length_at_the_new_rate() {
        for n in [0usize, 1, 2, 100, 1023, 1024, 1025, 4410, 22_051] {
            let out = resample_in_chunks(&sine(n, RATE), &[333], 24_000);
            let want = (n as f64 * 24_000.0 / 22_050.0).round() as usize;
            assert_eq!(out.len(), want, "{n} input samples");
        }
        let out = resample_in_chunks(&sine(22_050, RATE), &[4096], 48_000);
        assert_eq!(out.len(), 48_000);
    }

    /// The passband reaches well into the voice's range: a 5 kHz tone keeps its level.
    #[test]
    fn high_tone_keeps_its_level() {
        let input: Vec<f32> = (0..RATE as usize)
            .map(|i| AMP * (2.0 * std::f32::consts::PI * 5000.0 * i as f32 / RATE as f32).sin())
            .collect();
        let out = resample_in_chunks(&input, &[2000], 24_000);
        let r = rms(&out[2400..21_600]);
        assert!((r - SINE_RMS).abs() < 0.02 * SINE_RMS, "rms {r}");
    }
}
