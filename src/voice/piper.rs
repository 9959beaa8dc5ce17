//! Piper's voices: VITS weights in `NAME.onnx` with `NAME.onnx.json` beside it (`loader::voice`), run
//! by our VITS (`arch::vits`); text becomes phonemes with espeak-ng (`loader::phonemize`), clause by
//! clause as Piper does it, one utterance per sentence. A Piper voice has one speaker and one style.

use super::{Family, FrontEndError, Language, SpeechModel, Utterance};
use crate::loader::phonemize::{phonemize, unspeakable_letter};
use crate::loader::voice::{config_path, Voice};
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::Path;

pub const FAMILY: Family = Family { name: "piper", recognizes, language, load };

fn recognizes(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "onnx")
}

/// The language of the voice's espeak-ng voice (`en-us`: English), from its `.onnx.json`.
fn language(path: &Path) -> Result<Language> {
    #[derive(serde::Deserialize)]
    struct Config {
        espeak: Espeak,
    }
    #[derive(serde::Deserialize)]
    struct Espeak {
        voice: String,
    }
    let json = config_path(path);
    let text = std::fs::read_to_string(&json).with_context(|| format!("read {}", json.display()))?;
    let config: Config = serde_json::from_str(&text).with_context(|| format!("{}", json.display()))?;
    Ok(Language::from_tag(&config.espeak.voice))
}

fn load(path: &Path, device: &Device) -> Result<Box<dyn SpeechModel>> {
    Ok(Box::new(PiperVoice(Voice::load(path, device)?)))
}

pub struct PiperVoice(pub Voice);

impl SpeechModel for PiperVoice {
    fn sample_rate(&self) -> u32 {
        self.0.info.sample_rate
    }

    fn frame_samples(&self) -> usize {
        self.0.info.frame_samples
    }

    /// Refuses letters of another script than the voice's language's (espeak-ng would spell them
    /// out as "Chinese letter"), then phonemises and maps each sentence to Piper's ids.
    fn utterances(&self, text: &str, speed: f32) -> Result<Vec<Utterance>, FrontEndError> {
        let info = &self.0.info;
        if let Some(character) = unspeakable_letter(text, &info.espeak_voice) {
            return Err(FrontEndError::Unspeakable { character, language: Language::from_tag(&info.espeak_voice) });
        }
        let sentences = phonemize(text, &info.espeak_voice).map_err(FrontEndError::Failed)?;
        Ok(sentences.iter().map(|s| Utterance { ids: info.ids(&s.phonemes), speed, silence_after: 0 }).collect())
    }

    /// One forward per speed in the batch (one, as the engine batches): speed divides the voice's
    /// length scale, as Piper's `--length-scale` does; its noise scales stay the voice's own.
    fn synthesize(&self, batch: &[Utterance]) -> Result<Vec<Vec<f32>>> {
        super::per_speed(batch, |ids, speed| {
            let mut scales = self.0.info.scales;
            scales.length /= speed;
            Ok(self.0.model.synthesize(ids, scales)?)
        })
    }
}
