//! pypinyin 0.55.0 as the processor calls it: `Pinyin(MyConverter()).pinyin(text, style=TONE3,
//! errors="ignore")`, heteronym off. The text is cut into runs of han and non-han characters (its
//! `simple_seg`), non-han runs give nothing (`errors="ignore"`), han runs are cut into words by
//! forward maximum matching over the phrase dictionary (its `mmseg`, strict mode), and each word
//! is read from the phrase dictionary, else character by character (first reading; a character
//! without one gives nothing). Readings are put in TONE3 style (`tone::tone3`).

use super::chars::is_hans;
use super::dictionaries::{self, Phrase};
use super::tone::tone3;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;

/// pypinyin's dictionaries, as far as the front end reads them: the first reading of each
/// character, and the phrases with the first reading of each of their characters.
pub struct PinyinData {
    /// pinyin_dict.json: code point → "reading,reading,...", of which only the first is used.
    chars: HashMap<char, Box<str>>,
    /// phrases_dict.json, sorted by phrase (code point order): a sorted list answers both "is this
    /// a phrase" and "does any phrase start with this" (mmseg's prefix set) by binary search,
    /// without the prefix set's few hundred thousand strings.
    phrases: Vec<Phrase>,
}

impl PinyinData {
    /// Reads pypinyin's pinyin_dict.json and phrases_dict.json (from its 0.55.0 wheel).
    pub fn load(pinyin_dict: &Path, phrases_dict: &Path) -> anyhow::Result<Self> {
        let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()));
        Self::from_json(&read(pinyin_dict)?, &read(phrases_dict)?).context("pypinyin's dictionaries")
    }

    /// The dictionaries from their JSON text.
    pub fn from_json(pinyin_dict: &str, phrases_dict: &str) -> anyhow::Result<Self> {
        let chars = dictionaries::chars(pinyin_dict).context("pinyin_dict.json")?;
        let phrases = dictionaries::phrases(phrases_dict).context("phrases_dict.json")?;
        Ok(Self { chars, phrases })
    }

    /// The first reading pypinyin has for a character, if any.
    pub fn reading(&self, c: char) -> Option<&str> {
        self.chars.get(&c).map(|r| &**r)
    }

    fn phrase(&self, word: &str) -> Option<&[Box<str>]> {
        let i = self.phrases.binary_search_by(|(k, _)| (**k).cmp(word)).ok()?;
        Some(&self.phrases[i].1)
    }

    /// Whether some phrase starts with `word` (mmseg's `word in prefix_set`). The first phrase not
    /// less than `word` starts with it if any does.
    fn is_prefix(&self, word: &str) -> bool {
        let i = self.phrases.partition_point(|(k, _)| **k < *word);
        self.phrases.get(i).is_some_and(|(k, _)| k.starts_with(word))
    }

    /// The TONE3 syllables pypinyin gives for `text`, one per character it reads.
    pub fn pinyin(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for run in simple_seg(text) {
            if !run.chars().next().is_some_and(is_hans) {
                continue; // errors="ignore"
            }
            for word in self.cut(run) {
                match self.phrase(word) {
                    Some(readings) => out.extend(readings.iter().map(|r| tone3(r))),
                    None => out.extend(word.chars().filter_map(|c| self.reading(c)).map(tone3)),
                }
            }
        }
        out
    }

    /// pypinyin's `mmseg.Seg(no_non_phrases=True).cut`: forward maximum matching, ported as it is.
    /// From the start of what remains, it grows a word while some phrase starts with it, keeping
    /// the longest that is a phrase. When the word stops being a prefix, it gives the longest
    /// phrase (else one character) and starts again after it. But when the whole rest of the run is
    /// a prefix, it gives the longest phrase and goes on, or, if there is none, gives *every
    /// remaining character alone* and stops: "下不了" at the end of a run is 下/不/了 (了 read le),
    /// while in "下不了决心" it is 下/不了/决心 (了 read liǎo).
    fn cut<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut words = Vec::new();
        let mut remain = text;
        while !remain.is_empty() {
            let mut longest_phrase = None;
            let mut whole_rest_is_prefix = true;
            for (at, c) in remain.char_indices() {
                let word = &remain[..at + c.len_utf8()];
                if !self.is_prefix(word) {
                    whole_rest_is_prefix = false;
                    break;
                }
                if self.phrase(word).is_some() {
                    longest_phrase = Some(word.len());
                }
            }
            match (longest_phrase, whole_rest_is_prefix) {
                (Some(len), _) => {
                    words.push(&remain[..len]);
                    remain = &remain[len..];
                }
                (None, false) => {
                    let len = remain.chars().next().map_or(0, char::len_utf8);
                    words.push(&remain[..len]);
                    remain = &remain[len..];
                }
                (None, true) => {
                    words.extend(remain.char_indices().map(|(at, c)| &remain[at..at + c.len_utf8()]));
                    remain = "";
                }
            }
        }
        words
    }
}

/// pypinyin's `simple_seg`: the text cut where it goes from han (`RE_HANS`) to non-han and back.
fn simple_seg(text: &str) -> Vec<&str> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut han = None;
    for (at, c) in text.char_indices() {
        let is_han = is_hans(c);
        if han.is_some_and(|h| h != is_han) {
            runs.push(&text[start..at]);
            start = at;
        }
        han = Some(is_han);
    }
    runs.push(&text[start..]);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small dictionary: 下不了决心 has the phrases 不了, 决心 and 下不了台 (a prefix of nothing
    /// shorter that is a phrase).
    fn data() -> PinyinData {
        let chars = r#"{"19979": "xià", "19981": "bù,fǒu", "20102": "le,liǎo", "20915": "jué", "24515": "xīn",
            "21488": "tái", "30740": "yán", "31350": "jiū", "29983": "shēng", "21629": "mìng", "22909": "hǎo",
            "34892": "xíng,háng", "38134": "yín"}"#;
        let phrases = r#"{"不了": [["bù"], ["liǎo"]], "决心": [["jué"], ["xīn"]], "下不了台": [["xià"], ["bù"],
            ["liǎo"], ["tái"]], "研究": [["yán"], ["jiū"]], "研究生": [["yán"], ["jiū"], ["shēng"]],
            "生命": [["shēng"], ["mìng"]], "银行": [["yín", "yǐn"], ["háng"]]}"#;
        PinyinData::from_json(chars, phrases).unwrap()
    }

    #[test]
    fn simple_seg_splits_han_from_the_rest() {
        assert_eq!(simple_seg("iPhone 十五 很好"), ["iPhone ", "十五", " ", "很好"]);
        assert_eq!(simple_seg("你好，〇𠀀!"), ["你好", "，", "〇𠀀", "!"]);
        assert_eq!(simple_seg(""), [""]);
    }

    #[test]
    fn mmseg_takes_the_longest_phrase() {
        let d = data();
        assert_eq!(d.cut("研究生命"), ["研究生", "命"]); // greedy, not 研究/生命
        assert_eq!(d.cut("下不了决心"), ["下", "不了", "决心"]);
        assert_eq!(d.cut("好银行"), ["好", "银行"]);
    }

    #[test]
    fn mmseg_splits_a_prefix_tail_into_characters() {
        let d = data();
        // 下不了 is a prefix of 下不了台 to its end and no phrase: all single, 不了 not found.
        assert_eq!(d.cut("下不了"), ["下", "不", "了"]);
        assert_eq!(d.pinyin("下不了"), ["xia4", "bu4", "le5"]);
        assert_eq!(d.pinyin("下不了决心"), ["xia4", "bu4", "liao3", "jue2", "xin1"]);
        // With a phrase inside the tail, the phrase is taken and the rest cut again.
        assert_eq!(d.cut("研究生"), ["研究生"]);
    }

    #[test]
    fn readings_phrase_first_then_characters() {
        let d = data();
        assert_eq!(d.pinyin("银行"), ["yin2", "hang2"]); // the phrase's first reading of 银
        assert_eq!(d.pinyin("行"), ["xing2"]); // the character's first reading
                                               // Non-han text gives nothing; a han character without a reading gives nothing either.
        assert_eq!(d.pinyin("a好 b〇好"), ["hao3", "hao3"]);
    }
}
