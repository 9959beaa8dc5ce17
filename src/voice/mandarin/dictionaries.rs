//! Reading pypinyin's pinyin_dict.json and phrases_dict.json straight into what the front end keeps
//! (the first reading of each character), without building the whole JSON first: this runs once
//! per replica load, on 3.3 MB of JSON.

use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// One phrase and the first reading of each of its characters.
pub type Phrase = (Box<str>, Box<[Box<str>]>);

/// pinyin_dict.json (`{"20013": "zhōng,zhòng", ...}`): each character's first reading.
pub fn chars(json: &str) -> serde_json::Result<HashMap<char, Box<str>>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let chars = de.deserialize_map(CharsVisitor)?;
    de.end()?;
    Ok(chars)
}

/// phrases_dict.json (`{"一丁点儿": [["yī"], ["dīng"], ["diǎn"], ["er"]], ...}`), sorted by
/// phrase. A phrase listed twice keeps its last entry, as Python's json keeps it.
pub fn phrases(json: &str) -> serde_json::Result<Vec<Phrase>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut phrases = de.deserialize_map(PhrasesVisitor)?;
    de.end()?;
    phrases.reverse();
    phrases.sort_by(|a, b| a.0.cmp(&b.0)); // stable: of equal phrases, the last listed comes first
    phrases.dedup_by(|later, first| later.0 == first.0);
    Ok(phrases)
}

struct CharsVisitor;

impl<'de> Visitor<'de> for CharsVisitor {
    type Value = HashMap<char, Box<str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of code points to readings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut chars = HashMap::with_capacity(map.size_hint().unwrap_or(1 << 16));
        while let Some(Str(code)) = map.next_key()? {
            let ch = code.parse().ok().and_then(char::from_u32);
            let ch = ch.ok_or_else(|| A::Error::custom(format!("not a code point: {code:?}")))?;
            let Str(readings) = map.next_value()?;
            chars.insert(ch, readings.split(',').next().unwrap_or_default().into());
        }
        Ok(chars)
    }
}

struct PhrasesVisitor;

impl<'de> Visitor<'de> for PhrasesVisitor {
    type Value = Vec<Phrase>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of phrases to their readings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut phrases = Vec::with_capacity(map.size_hint().unwrap_or(1 << 16));
        let mut readings = Vec::new(); // reused: each phrase's list is boxed at its exact length
        while let Some(Str(phrase)) = map.next_key()? {
            map.next_value_seed(Readings(&mut readings))?;
            phrases.push((phrase.into(), readings.drain(..).collect()));
        }
        Ok(phrases)
    }
}

/// A phrase's readings, one list per character, of which the first is kept (into the given Vec).
/// A character with an empty list would make pypinyin fail; loading refuses it.
struct Readings<'a>(&'a mut Vec<Box<str>>);

impl<'de> DeserializeSeed<'de> for Readings<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Readings<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of each character's readings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(First(first)) = seq.next_element()? {
            self.0.push(first);
        }
        Ok(())
    }
}

/// The first of a character's readings.
struct First(Box<str>);

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor;
        impl<'de> Visitor<'de> for FirstVisitor {
            type Value = First;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a character's readings (a non-empty list of strings)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First, A::Error> {
                let Str(first) = seq.next_element()?.ok_or_else(|| A::Error::custom("a character with no reading"))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first.into()))
            }
        }
        deserializer.deserialize_seq(FirstVisitor)
    }
}

/// A JSON string, borrowed from the text where it has no escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_readings_kept() {
        let chars = chars(r#"{"20013": "zhōng,zhòng", "19968": "y\u012b"}"#).unwrap();
        assert_eq!(chars.len(), 2);
        assert_eq!(&*chars[&'中'], "zhōng");
        assert_eq!(&*chars[&'一'], "yī"); // an escaped string is read too
        let phrases = phrases(r#"{"银行": [["yín", "yǐn"], ["háng"]], "一丁": [["yī"], ["dīng"]]}"#).unwrap();
        let listed: Vec<(&str, Vec<&str>)> =
            phrases.iter().map(|(k, v)| (&**k, v.iter().map(|r| &**r).collect())).collect();
        assert_eq!(listed, [("一丁", vec!["yī", "dīng"]), ("银行", vec!["yín", "háng"])]);
    }

    #[test]
    fn a_phrase_listed_twice_keeps_its_last_entry() {
        let phrases =
            phrases(r#"{"银行": [["yín"], ["xíng"]], "一丁": [["yī"], ["dīng"]], "银行": [["yín"], ["háng"]]}"#);
        let phrases = phrases.unwrap();
        assert_eq!(phrases.len(), 2);
        assert_eq!(&*phrases[1].1[1], "háng");
    }

    #[test]
    fn malformed_data_is_refused() {
        assert!(phrases(r#"{"好": [[]]}"#).is_err());
        assert!(chars(r#"{"x": "a"}"#).is_err());
        assert!(chars(r#"{"55296": "a"}"#).is_err()); // a surrogate, not a character
        assert!(chars(r#"{"20013": "zhōng"} x"#).is_err());
    }
}
