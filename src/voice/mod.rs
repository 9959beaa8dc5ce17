//! Voices, whatever their family: the seam between `POST /v1/audio/speech` (and its engine) and the
//! models that speak.
//!
//! A family (Piper's VITS voices, ...) is one file of this folder: it implements [`SpeechModel`]
//! (text to utterances, front end included; batched synthesis; sample rate) and states a [`Family`]
//! (which files are its voices, their language before they load, how to load them), listed once in
//! [`FAMILIES`]. Nothing above this module knows a family's front end, ids or scales.
//!
//! [`input_language`] reads which language a request's input is in, by its script, so that
//! `tts-1` can go to a voice that speaks it.

pub mod baker;
pub mod mandarin;
pub mod piper;

use anyhow::Result;
use candle_core::Device;
use std::borrow::Cow;
use std::path::Path;

/// A model that turns text into speech. Shared between the HTTP side (which calls `utterances`, off
/// the async runtime) and its engine's worker (which calls `synthesize`).
pub trait SpeechModel: Send + Sync {
    /// Output samples per second (mono, in [-1, 1]).
    fn sample_rate(&self) -> u32;
    /// Samples per frame of output: usage counts one output token per frame.
    fn frame_samples(&self) -> usize;
    /// The text's utterances (a sentence each, as the family splits them), front end included, each
    /// to be spoken at `speed` (0.25 to 4.0; 2.0 is twice as fast). Text the voice cannot speak is
    /// [`FrontEndError::Unspeakable`], naming the first character it cannot say. Blocking.
    fn utterances(&self, text: &str, speed: f32) -> Result<Vec<Utterance>, FrontEndError>;
    /// The samples of each utterance, in order (without its `silence_after`, which the engine adds).
    /// The engine batches utterances of one speed together, but any batch must be answered. Blocking.
    fn synthesize(&self, batch: &[Utterance]) -> Result<Vec<Vec<f32>>>;
}

/// Runs `forward` once per speed in `batch` (on the ids of that speed's utterances, in order) and
/// puts each output back in its utterance's place: what a family's `synthesize` does when its model
/// takes one speed a forward.
pub fn per_speed(
    batch: &[Utterance],
    mut forward: impl FnMut(&[Vec<u32>], f32) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); batch.len()];
    let mut done = vec![false; batch.len()];
    while let Some(first) = done.iter().position(|d| !d) {
        let speed = batch[first].speed;
        let members: Vec<usize> =
            (first..batch.len()).filter(|&i| !done[i] && batch[i].speed.to_bits() == speed.to_bits()).collect();
        let ids: Vec<Vec<u32>> = members.iter().map(|&i| batch[i].ids.clone()).collect();
        let audio = forward(&ids, speed)?;
        anyhow::ensure!(audio.len() == ids.len(), "{} utterances gave {} outputs", ids.len(), audio.len());
        for (i, audio) in members.into_iter().zip(audio) {
            out[i] = audio;
            done[i] = true;
        }
    }
    Ok(out)
}

/// One utterance of a request: the model's input ids and how to speak them.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// The model's input (phoneme or symbol ids); what usage counts as input tokens.
    pub ids: Vec<u32>,
    /// 1.0 is the voice's own pace; 2.0 twice as fast.
    pub speed: f32,
    /// Samples of silence after it, for families that pause between sentences (0 for Piper, whose
    /// sentences keep their punctuation's pauses).
    pub silence_after: usize,
}

/// Why a voice's front end turned text down.
#[derive(Debug, thiserror::Error)]
pub enum FrontEndError {
    /// The text has a letter of another script than the voice's language (Chinese to an English
    /// voice): babble, not speech.
    #[error("the voice speaks {language} and cannot pronounce '{character}'")]
    Unspeakable { character: char, language: Language },
    /// The front end itself failed (a library it needs is missing, ...).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// A language, as its ISO 639-1 code (lowercase, without region): `en`, `zh` (Mandarin), `de`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Language(Cow<'static, str>);

impl Language {
    pub const ENGLISH: Language = Language(Cow::Borrowed("en"));
    pub const MANDARIN: Language = Language(Cow::Borrowed("zh"));
    pub const JAPANESE: Language = Language(Cow::Borrowed("ja"));

    /// From a language tag as voices state it: BCP 47 (`en-US`), POSIX (`en_US`) or an espeak-ng
    /// voice name (`en-us`, `cmn` for Mandarin). Only the language counts, not the region.
    pub fn from_tag(tag: &str) -> Self {
        let code = tag.split(['-', '_']).next().unwrap_or("").trim().to_ascii_lowercase();
        match code.as_str() {
            "en" => Self::ENGLISH,
            "zh" | "cmn" => Self::MANDARIN,
            "ja" => Self::JAPANESE,
            _ => Self(Cow::Owned(code)),
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Language {
    /// Its English name where routing knows it (`English`, `Mandarin`), else its code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code() {
            "en" => f.write_str("English"),
            "zh" => f.write_str("Mandarin"),
            "ja" => f.write_str("Japanese"),
            code => f.write_str(code),
        }
    }
}

/// What an input's script says about its language (see [`input_language`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLanguage {
    /// Mostly Latin script (English) or mostly Han characters (Mandarin).
    Of(Language),
    /// It has Kana (the first is named): Japanese, which no voice of Wick speaks, though its kanji
    /// would read as Mandarin.
    Japanese(char),
    /// Neither a Latin letter nor a Han character (digits, punctuation, other scripts).
    Unknown,
}

/// The language of `text`, decided by script for the whole text:
/// - any Hiragana or Katakana letter makes it Japanese;
/// - else Latin-script words (runs of Latin letters; an apostrophe or hyphen inside one does not
///   split it) are counted against Han characters, and the larger count wins: Latin is English, Han
///   is Mandarin. A tie goes to the script of the first of them in the text;
/// - digits, punctuation, spaces, symbols and other scripts count for neither.
///
/// Words against characters, rather than letters against characters, because a Han character is
/// one spoken syllable and a word one or a few: "iPhone 15 很好" (one word, two characters) is a
/// Mandarin sentence about a phone, though it has six Latin letters.
pub fn input_language(text: &str) -> InputLanguage {
    let mut words = 0usize;
    let mut han = 0usize;
    let mut first = None;
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_kana(c) {
            return InputLanguage::Japanese(c);
        }
        if is_latin_letter(c) {
            if !in_word {
                words += 1;
                in_word = true;
                first.get_or_insert(Language::ENGLISH);
            }
            continue;
        }
        // "don't", "well-known": one word.
        let joins = matches!(c, '\'' | '\u{2019}' | '-') && chars.peek().is_some_and(|&n| is_latin_letter(n));
        in_word &= joins;
        if is_han(c) {
            han += 1;
            first.get_or_insert(Language::MANDARIN);
        }
    }
    match (words.cmp(&han), first) {
        (_, None) => InputLanguage::Unknown,
        (std::cmp::Ordering::Greater, _) => InputLanguage::Of(Language::ENGLISH),
        (std::cmp::Ordering::Less, _) => InputLanguage::Of(Language::MANDARIN),
        (std::cmp::Ordering::Equal, Some(first)) => InputLanguage::Of(first),
    }
}

/// A letter of the Latin script (Basic Latin, Latin-1, Extended-A/B, Extended Additional,
/// Extended-C/D, fullwidth).
pub fn is_latin_letter(c: char) -> bool {
    c.is_alphabetic()
        && matches!(c as u32, 0x0041..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xFF21..=0xFF5A)
}

/// A Han character (CJK Unified Ideographs and their extensions, compatibility ideographs).
pub fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x323AF)
}

/// A Hiragana or Katakana letter (punctuation of those blocks, as `・`, is not).
pub fn is_kana(c: char) -> bool {
    c.is_alphabetic() && matches!(c as u32, 0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

/// One family of voices: which files are its voices, what they say before they load, and how they
/// load.
pub struct Family {
    /// As logs and errors name it (`piper`).
    pub name: &'static str,
    /// Whether `path` (a catalog entry's `main`, a file given to `--model`) is a voice of this
    /// family, by its name alone: a catalog voice not pulled yet has no file.
    pub recognizes: fn(&Path) -> bool,
    /// The language of the voice at `path`, from its metadata alone (read when a deployment is
    /// created, so that routing knows it before the voice loads).
    pub language: fn(&Path) -> Result<Language>,
    /// Loads the voice at `path`. Blocking.
    pub load: fn(&Path, &Device) -> Result<Box<dyn SpeechModel>>,
}

/// Every family Wick serves, the first that recognises a file taking it. A new family is a file of
/// this folder and a line here.
pub const FAMILIES: &[Family] = &[piper::FAMILY, baker::FAMILY];

/// The family whose voice `path` is.
pub fn family_of(path: &Path) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| (f.recognizes)(path))
}

/// What is known of a voice deployment before it loads: what routing reads.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceCard {
    /// Its [`Family::name`].
    pub family: &'static str,
    pub language: Language,
    /// The names it answers to as `voice` besides OpenAI's (and its deployment's name): the voice
    /// file's stem (`en_US-joe-medium`).
    pub names: Vec<String>,
}

impl VoiceCard {
    /// The card of the voice at `path` (which may not exist yet when `language` is given: a catalog
    /// entry states it), else read from the file's metadata.
    pub fn new(path: &Path, language: Option<Language>) -> Result<Self> {
        let Some(family) = family_of(path) else {
            anyhow::bail!("{} is not a voice of any family Wick serves (a Piper `.onnx`)", path.display());
        };
        let language = match language {
            Some(l) => l,
            None => (family.language)(path)?,
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { family: family.name, language, names: vec![stem] })
    }
}

/// Loads the voice at `path` with its family. Blocking.
pub fn load(path: &Path, device: &Device) -> Result<Box<dyn SpeechModel>> {
    match family_of(path) {
        Some(family) => (family.load)(path, device),
        None => anyhow::bail!("{} is not a voice of any family Wick serves", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> InputLanguage {
        input_language(text)
    }

    #[test]
    fn latin_is_english_and_han_is_mandarin() {
        assert_eq!(of("How about playing basketball after school?"), InputLanguage::Of(Language::ENGLISH));
        assert_eq!(of("放學我們一起去打籃球怎麼樣，今天天氣不錯"), InputLanguage::Of(Language::MANDARIN));
        assert_eq!(of("放学我们一起去打篮球怎么样"), InputLanguage::Of(Language::MANDARIN));
        assert_eq!(of("Ｈｅｌｌｏ"), InputLanguage::Of(Language::ENGLISH), "fullwidth Latin");
        assert_eq!(of("Café naïve"), InputLanguage::Of(Language::ENGLISH));
    }

    #[test]
    fn mixed_input_goes_by_words_against_characters() {
        // One word against two characters.
        assert_eq!(of("iPhone 15 很好"), InputLanguage::Of(Language::MANDARIN));
        assert_eq!(of("我用 iPhone 15 拍的照片"), InputLanguage::Of(Language::MANDARIN));
        // Five words against two characters.
        assert_eq!(of("The word 你好 means hello."), InputLanguage::Of(Language::ENGLISH));
        // Apostrophes and hyphens inside a word keep it one: three words against two characters.
        assert_eq!(of("don't well-known A-B 你好"), InputLanguage::Of(Language::ENGLISH));
        assert_eq!(of("don't - well 你好吗"), InputLanguage::Of(Language::MANDARIN));
        // A tie goes to the script that comes first.
        assert_eq!(of("OK 好"), InputLanguage::Of(Language::ENGLISH));
        assert_eq!(of("好 OK"), InputLanguage::Of(Language::MANDARIN));
    }

    #[test]
    fn kana_is_japanese_wherever_it_is() {
        assert_eq!(of("こんにちは"), InputLanguage::Japanese('こ'));
        assert_eq!(of("Hello world, this is a long English sentence カ"), InputLanguage::Japanese('カ'));
        assert_eq!(of("東京へ行く"), InputLanguage::Japanese('へ'), "kanji with kana");
        assert_eq!(of("ｶﾀｶﾅ"), InputLanguage::Japanese('ｶ'), "halfwidth katakana");
        // The katakana middle dot is punctuation, also used in Chinese names.
        assert_eq!(of("迈克尔・杰克逊"), InputLanguage::Of(Language::MANDARIN));
    }

    #[test]
    fn digits_punctuation_and_other_scripts_count_for_neither() {
        assert_eq!(of("12345, 67.8%!"), InputLanguage::Unknown);
        assert_eq!(of("Привет"), InputLanguage::Unknown);
        assert_eq!(of("안녕하세요"), InputLanguage::Unknown);
        assert_eq!(of("Привет, мир, hello"), InputLanguage::Of(Language::ENGLISH));
    }

    #[test]
    fn languages_from_tags() {
        assert_eq!(Language::from_tag("en-us"), Language::ENGLISH);
        assert_eq!(Language::from_tag("en_US"), Language::ENGLISH);
        assert_eq!(Language::from_tag("cmn"), Language::MANDARIN);
        assert_eq!(Language::from_tag("zh-CN"), Language::MANDARIN);
        assert_eq!(Language::from_tag("de").code(), "de");
        assert_eq!(Language::MANDARIN.to_string(), "Mandarin");
        assert_eq!(Language::from_tag("de").to_string(), "de");
    }

    #[test]
    fn families_are_found_by_file() {
        assert_eq!(family_of(Path::new("/x/en_US-joe-medium.onnx")).map(|f| f.name), Some("piper"));
        assert!(family_of(Path::new("/x/model.gguf")).is_none());
        let card = VoiceCard::new(Path::new("/nowhere/en_US-joe-medium.onnx"), Some(Language::ENGLISH)).unwrap();
        assert_eq!(card.names, ["en_US-joe-medium"]);
        assert_eq!(card.family, "piper");
    }
}
