//! baker.py's `get_phoneme_from_char_and_pinyin`: the normalised text and its syllables walked side
//! by side into Baker's phones: "sil", then for each Chinese character its initial and its final
//! with the tone ("zh", "ong1"), "#0" between characters, and "sil" at the end.
//!
//! The walk takes one syllable per character in U+4E00..=U+9FA5 and skips every other character,
//! while pypinyin gives a syllable for each character it reads, which is not the same set (〇 and
//! the CJK extensions are read but skipped; a few characters have no reading). Where the two fall
//! out of step the Python fails (an assert, or an index past the end); so does a syllable Baker's
//! table lacks (呣 m2, 覅 fiao4). Here each of those is a `FrontEndError` naming the character.

use super::chars::{is_hans, is_zh};
use super::pinyin::PinyinData;
use super::FrontEndError;
use std::collections::HashMap;

/// Baker's syllable table (the `pinyin_dict` of baker_mapper.json, which is what the processor
/// uses: loading the mapper sets it over baker.py's identical PINYIN_DICT): syllable without tone
/// → (initial, final), "zhong" → ("zh", "ong"), "yu" → ("^", "v").
pub type Syllables = HashMap<String, (String, String)>;

/// The phones of `text` given its syllables (`pinyin`, as `PinyinData::pinyin` gives them).
pub fn phones(
    text: &str,
    mut pinyin: Vec<String>,
    table: &Syllables,
    data: &PinyinData,
) -> Result<Vec<String>, FrontEndError> {
    // "#4" is a prosody mark of Baker's transcripts; the normaliser has read every digit by now, so
    // it is never there.
    let chars: Vec<char> = text.replace("#4", "").chars().collect();
    let mut out = vec!["sil".to_string()];
    let (mut i, mut j) = (0, 0);
    // What made the Python fail at character `i`: the character that put the walk out of step
    // before it, else `at_i`.
    let blame = |i: usize, at_i: FrontEndError| out_of_step(&chars[..i], data).unwrap_or(at_i);
    while i < chars.len() {
        let c = chars[i];
        if is_zh(c) {
            let Some(syllable) = pinyin.get_mut(j) else {
                return Err(blame(i, FrontEndError::NoReading { ch: c }));
            };
            // 嗯 reads n2 (ń): Baker writes it en2.
            if drop_last(syllable, 1) == "n" {
                *syllable = format!("en{}", &syllable[1..]);
            }
            let syllable = syllable.as_str();
            let unknown = || FrontEndError::UnknownSyllable { ch: c, pinyin: syllable.to_string() };
            if let Some((initial, final_)) = table.get(drop_last(syllable, 1)) {
                let tone = last(syllable);
                out.extend([initial.clone(), format!("{final_}{tone}")]);
                if chars.get(i + 1).is_some_and(|&n| n != '#') {
                    out.push("#0".into());
                }
                i += 1;
            } else {
                // An erhua syllable ("nar3") that covers the character and the 儿 after it. pypinyin
                // gives one syllable per character, so this never ends well: anything else fails an
                // assert here, and a match leaves 儿's own syllable over (the final assert).
                if chars.get(i + 1) != Some(&'儿') || syllable.chars().rev().nth(1) != Some('r') {
                    return Err(blame(i, unknown()));
                }
                let Some((initial, final_)) = table.get(drop_last(syllable, 2)) else {
                    return Err(blame(i, unknown()));
                };
                out.extend([initial.clone(), format!("{final_}{}", last(syllable)), "er5".into()]);
                if chars.get(i + 2).is_some_and(|&n| n != '#') {
                    out.push("#0".into());
                }
                i += 2;
            }
            j += 1;
        } else if c == '#' {
            // A prosody mark "#1" to "#3" in Baker's transcripts; after normalisation no digit
            // follows, so this makes a symbol the mapper lacks (or skips a character).
            out.push(chars[i..chars.len().min(i + 2)].iter().collect());
            i += 2;
        } else {
            i += 1; // anything else: no sound
        }
    }
    if out.last().is_some_and(|p| p == "#0") {
        out.pop();
    }
    if out.last().is_some_and(|p| p != "sil") {
        out.push("sil".into());
    }
    if j != pinyin.len() {
        let last = chars.last().copied().unwrap_or(' ');
        return Err(blame(chars.len(), FrontEndError::OutOfStep { ch: last }));
    }
    Ok(out)
}

/// The first character before the failure that puts syllables and characters out of step: one
/// pypinyin reads but the walk skips, one in range without a reading, or a '#' (which skips the
/// character after it).
fn out_of_step(chars: &[char], data: &PinyinData) -> Option<FrontEndError> {
    chars.iter().find_map(|&ch| {
        if ch == '#' {
            Some(FrontEndError::Mark { ch })
        } else if is_hans(ch) && !is_zh(ch) {
            Some(FrontEndError::OutsideRange { ch })
        } else if is_zh(ch) && data.reading(ch).is_none() {
            Some(FrontEndError::NoReading { ch })
        } else {
            None
        }
    })
}

/// Python's `s[:-n]` (characters, not bytes).
fn drop_last(s: &str, n: usize) -> &str {
    let end = s.char_indices().rev().nth(n - 1).map_or(0, |(at, _)| at);
    &s[..end]
}

/// Python's `s[-1]` on a non-empty syllable.
fn last(s: &str) -> char {
    s.chars().next_back().unwrap_or(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Syllables {
        [("ni", "n", "i"), ("hao", "h", "ao"), ("na", "n", "a"), ("er", "^", "er"), ("en", "^", "en")]
            .into_iter()
            .map(|(s, i, f)| (s.to_string(), (i.to_string(), f.to_string())))
            .collect()
    }

    fn data() -> PinyinData {
        PinyinData::from_json(
            r#"{"20320": "nǐ", "22909": "hǎo", "21999": "ń", "21571": "ḿ", "21738": "nǎ", "20799": "ér"}"#,
            "{}",
        )
        .unwrap()
    }

    fn run(text: &str, pinyin: &[&str]) -> Result<String, FrontEndError> {
        phones(text, pinyin.iter().map(|s| s.to_string()).collect(), &table(), &data()).map(|p| p.join(" "))
    }

    #[test]
    fn characters_with_breaks_between() {
        assert_eq!(run("你好", &["ni3", "hao3"]).unwrap(), "sil n i3 #0 h ao3 sil");
        // Anything not Chinese is skipped, but a #0 is still put before it.
        assert_eq!(run("你，好。", &["ni3", "hao3"]).unwrap(), "sil n i3 #0 h ao3 sil");
        assert_eq!(run("abc", &[]).unwrap(), "sil");
        assert_eq!(run("", &[]).unwrap(), "sil");
        // 嗯's n2 is written en2.
        assert_eq!(run("嗯", &["n2"]).unwrap(), "sil ^ en2 sil");
        // An erhua syllable takes the character and its 儿 (pypinyin never gives one).
        assert_eq!(run("哪儿", &["nar3"]).unwrap(), "sil n a3 er5 sil");
    }

    #[test]
    fn where_the_python_fails() {
        // A syllable Baker lacks, with no 儿 after it.
        assert_eq!(run("呣", &["m2"]), Err(FrontEndError::UnknownSyllable { ch: '呣', pinyin: "m2".into() }));
        assert_eq!(run("呣你", &["m2", "ni3"]), Err(FrontEndError::UnknownSyllable { ch: '呣', pinyin: "m2".into() }));
        // Read by pypinyin, skipped by the walk: a syllable is left over.
        assert_eq!(run("〇你", &["ling2", "ni3"]), Err(FrontEndError::OutsideRange { ch: '〇' }));
        // In range, no reading: the walk runs out of syllables.
        assert_eq!(run("你兙好", &["ni3", "hao3"]), Err(FrontEndError::NoReading { ch: '兙' }));
        // '#' takes the next character with it.
        assert_eq!(run("你#好", &["ni3", "hao3"]), Err(FrontEndError::Mark { ch: '#' }));
        // An erhua match leaves 儿's own syllable over.
        assert_eq!(run("哪儿", &["nar3", "er2"]), Err(FrontEndError::OutOfStep { ch: '儿' }));
    }

    #[test]
    fn python_slices() {
        assert_eq!(drop_last("nar3", 1), "nar");
        assert_eq!(drop_last("nar3", 2), "na");
        assert_eq!(drop_last("ê1", 1), "ê");
        assert_eq!(drop_last("", 1), "");
        assert_eq!(drop_last("a", 2), "");
    }
}
