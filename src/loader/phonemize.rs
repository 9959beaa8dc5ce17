//! Text to phonemes with espeak-ng, the way Piper does it: clause by clause in IPA, each clause's
//! punctuation kept (the voices were trained with it), split into sentences.
//!
//! libespeak-ng is opened at run time, so that Wick builds and serves chat without it: the copy
//! `wick pull` brings with a Piper voice (the catalog's `espeak-ng` entry, from a PyPI wheel, with its
//! data), else the system's (Debian's `libespeak-ng1`). A speech request without either gets a clear
//! error. espeak-ng keeps global state and is not thread-safe: every call goes through one lock.

use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// `espeak_AUDIO_OUTPUT::AUDIO_OUTPUT_SYNCHRONOUS`: no audio device, phonemes only.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
/// `espeakCHARS_AUTO`: UTF-8 input.
const CHARS_AUTO: c_int = 0;
/// Phoneme mode bit 1: IPA, no separators between phonemes.
const PHONEMES_IPA: c_int = 0x02;

struct Espeak {
    // Kept so the symbols below stay valid.
    _lib: libloading::Library,
    /// Which library this is: a path in the cache, or the system's soname.
    origin: String,
    set_voice: unsafe extern "C" fn(*const c_char) -> c_int,
    text_to_phonemes: unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char,
}

// SAFETY: the function pointers are only called under `ESPEAK`'s mutex.
unsafe impl Send for Espeak {}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, String>> = OnceLock::new();

fn espeak() -> Result<&'static Mutex<Espeak>> {
    ESPEAK
        .get_or_init(|| open().map(Mutex::new).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The catalog entry whose pulled copy of espeak-ng is preferred to the system's.
pub const CATALOG_ENTRY: &str = "espeak-ng";
/// The system library's soname.
const SYSTEM_LIBRARY: &str = "libespeak-ng.so.1";

fn open() -> Result<Espeak> {
    // The pulled copy's folder holds the library and `espeak-ng-data`, which espeak_Initialize is
    // given the folder of; the system's finds its own data.
    let (library, data_parent) = match crate::catalog::pulled_library(CATALOG_ENTRY) {
        Some(dir) => (
            dir.join(SYSTEM_LIBRARY).to_string_lossy().into_owned(),
            Some(CString::new(dir.to_string_lossy().as_bytes())?),
        ),
        None => (SYSTEM_LIBRARY.to_string(), None),
    };
    // SAFETY: loading libespeak-ng runs no code of ours; the symbols are declared as in speak_lib.h.
    unsafe {
        let lib = libloading::Library::new(&library).with_context(|| {
            format!("speech needs espeak-ng's library: `wick pull {CATALOG_ENTRY}` brings it (or Debian's `apt-get install espeak-ng`); opening {library} failed")
        })?;
        let init: libloading::Symbol<unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int> =
            lib.get(b"espeak_Initialize")?;
        let path = data_parent.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
        if init(AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0) < 0 {
            bail!("espeak-ng ({library}) did not initialise (is its espeak-ng-data there?)");
        }
        let set_voice = *lib.get(b"espeak_SetVoiceByName")?;
        let text_to_phonemes = *lib.get(b"espeak_TextToPhonemes")?;
        tracing::info!(library = %library, "espeak-ng opened");
        Ok(Espeak { _lib: lib, origin: library, set_voice, text_to_phonemes })
    }
}

/// Which espeak-ng library speech uses (opening it on first use): its path when it is the pulled
/// copy, the soname when it is the system's.
pub fn library() -> Result<String> {
    Ok(espeak()?.lock().unwrap_or_else(|e| e.into_inner()).origin.clone())
}

/// One sentence's phonemes: NFD code points, punctuation included.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub phonemes: Vec<char>,
}

/// Phonemises `text` with the espeak voice `voice` ("en-us"), one entry per sentence.
pub fn phonemize(text: &str, voice: &str) -> Result<Vec<Sentence>> {
    let espeak = espeak()?;
    let espeak = espeak.lock().unwrap_or_else(|e| e.into_inner());
    let voice_c = CString::new(voice)?;
    // SAFETY: a NUL-terminated string; espeak copies what it needs.
    if unsafe { (espeak.set_voice)(voice_c.as_ptr()) } != 0 {
        bail!("espeak-ng has no voice `{voice}`");
    }
    // espeak stops at the first NUL: none can be in the text (JSON strings may carry one).
    let c_text = CString::new(text.replace('\0', " "))?;
    let base = c_text.as_ptr() as usize;
    let bytes = c_text.as_bytes();
    let mut cursor = c_text.as_ptr() as *const c_void;
    let mut sentences = Vec::new();
    let mut current = Sentence { phonemes: Vec::new() };
    while !cursor.is_null() {
        let start = cursor as usize - base;
        // SAFETY: `cursor` points into `c_text`, which outlives the call; espeak moves it to the next
        // clause or sets it to null at the end, and returns a string it owns until the next call.
        let clause = unsafe {
            let p = (espeak.text_to_phonemes)(&mut cursor, CHARS_AUTO, PHONEMES_IPA);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let end = if cursor.is_null() { bytes.len() } else { (cursor as usize - base).min(bytes.len()) };
        // Stock espeak-ng does not report a clause's terminator (Piper's fork does): the last
        // punctuation mark of the text the clause consumed is it. (espeak reads one character past
        // the clause, so the consumed text is not exactly the clause's.)
        let consumed = String::from_utf8_lossy(&bytes[start.min(end)..end]);
        let terminator = consumed.chars().rev().find(|c| ".?!,:;".contains(*c));
        let mut ipa = strip_language_flags(&clause);
        if let Some(t) = terminator {
            ipa.push(t);
            if ",:;".contains(t) {
                ipa.push(' ');
            }
        }
        current.phonemes.extend(nfd(&ipa));
        if terminator.is_some_and(|t| ".?!".contains(t)) {
            sentences.push(std::mem::replace(&mut current, Sentence { phonemes: Vec::new() }));
        }
    }
    if !current.phonemes.is_empty() {
        sentences.push(current);
    }
    sentences.retain(|s| s.phonemes.iter().any(|c| !c.is_whitespace()));
    Ok(sentences)
}

/// espeak marks a switch of language as `(fr)...(en)`; Piper drops the marks.
fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut in_flag = false;
    for c in ipa.chars() {
        match c {
            '(' => in_flag = true,
            ')' if in_flag => in_flag = false,
            _ if !in_flag => out.push(c),
            _ => {}
        }
    }
    out
}

fn nfd(s: &str) -> Vec<char> {
    use unicode_normalization::UnicodeNormalization;
    s.nfd().collect()
}

/// The first letter of `text` that a voice of `espeak_voice` cannot pronounce, if any: an English
/// voice reads Chinese as "Chinese letter, Chinese letter...", which is babble, not speech.
pub fn unspeakable_letter(text: &str, espeak_voice: &str) -> Option<char> {
    let latin_languages = [
        "en", "fr", "de", "es", "it", "nl", "pt", "ca", "da", "sv", "no", "nb", "fi", "pl", "cs", "sk", "ro", "hu",
        "tr", "vi", "id", "ms", "sw", "is", "lb", "lv", "lt", "sl", "hr", "cy", "ga", "eu",
    ];
    let language = espeak_voice.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    if !latin_languages.contains(&language.as_str()) {
        return None; // no rule for other scripts yet: let espeak-ng decide
    }
    let latin = |c: char| matches!(c as u32, 0x0041..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xFF21..=0xFF5A);
    text.chars().find(|&c| c.is_alphabetic() && !latin(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_flags_are_dropped() {
        assert_eq!(strip_language_flags("(fr)bɔ̃ʒuʁ(en) wˈɜːld"), "bɔ̃ʒuʁ wˈɜːld");
    }

    #[test]
    fn only_latin_letters_for_an_english_voice() {
        assert_eq!(unspeakable_letter("Hello, world! 42 € 🙂 café naïve", "en-us"), None);
        assert_eq!(unspeakable_letter("Hello 你好", "en-us"), Some('你'));
        assert_eq!(unspeakable_letter("Привет", "en-us"), Some('П'));
        assert_eq!(unspeakable_letter("Привет", "ru"), None);
    }

    /// Needs libespeak-ng (tests/run.sh pulls it); the ids were checked against piper-tts 1.8.0.
    #[test]
    fn sentences_keep_their_punctuation_like_piper() {
        let sentences = phonemize("Hello world. How are you, friend?", "en-us").unwrap();
        assert_eq!(sentences.len(), 2);
        let first: String = sentences[0].phonemes.iter().collect();
        use unicode_normalization::UnicodeNormalization;
        assert_eq!(first, "həlˈoʊ wˈɜːld.".nfd().collect::<String>());
        let second: String = sentences[1].phonemes.iter().collect();
        assert!(second.contains(", ") && second.ends_with('?'), "{second}");
    }
}
