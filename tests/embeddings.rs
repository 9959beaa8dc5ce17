//! `POST /v1/embeddings` against a `wick serve` process with the real all-MiniLM-L6-v2 (pulled by
//! `wick pull all-minilm-l6-v2`): vectors against sentence-transformers' on the same folder
//! (tests/fixtures/minilm_embeddings.json, made by make_embedding_fixture.py), the same alone and
//! batched, the request shapes and refusals of OpenAI's API, and usage per deployment.

mod common;

use common::process::WickProcess;
use serde_json::{json, Value};

const MODEL: &str = "all-minilm-l6-v2";
const KEY: &str = "sk-embed-test-0123456789";
const ADMIN: &str = "sk-embed-admin-0123456789";

struct Server {
    process: WickProcess,
    client: reqwest::blocking::Client,
}

impl Server {
    fn start(data: &std::path::Path) -> Option<Self> {
        if !common::real_model_pulled(MODEL) {
            return None;
        }
        let tiny = format!("tiny={}", common::tiny_model().display());
        let args = ["--model", MODEL, "--model", &tiny, "--api-key", KEY, "--admin-key", ADMIN, "--no-pull"];
        Some(Self { process: WickProcess::start(&args, data), client: reqwest::blocking::Client::new() })
    }

    fn embed(&self, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/embeddings", self.process.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// The vectors of a request that must succeed.
    fn vectors(&self, body: Value) -> Vec<Vec<f32>> {
        let (status, answer) = self.embed(body);
        vectors(status, &answer)
    }

    fn get(&self, path: &str, key: &str) -> Value {
        let r = self.client.get(format!("{}{path}", self.process.url)).bearer_auth(key).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().unwrap()
    }
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/minilm_embeddings.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The vectors of a 200 answer, in `index` order, checked for OpenAI's shape.
fn vectors(status: u16, body: &Value) -> Vec<Vec<f32>> {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list", "{body}");
    assert_eq!(body["model"], MODEL);
    let data = body["data"].as_array().unwrap();
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!((d["object"].as_str(), d["index"].as_u64()), (Some("embedding"), Some(i as u64)));
            floats(&d["embedding"])
        })
        .collect()
}

fn assert_refused(server: &Server, body: Value, param: &str, says: &str) -> Value {
    let (status, answer) = server.embed(body.clone());
    assert_eq!(status, 400, "{body} -> {answer}");
    let e = &answer["error"];
    assert_eq!(e["type"], "invalid_request_error", "{answer}");
    assert_eq!(e["param"], param, "{answer}");
    assert!(e["message"].as_str().unwrap().contains(says), "{answer} should say {says}");
    answer
}

#[test]
fn vectors_match_sentence_transformers_alone_and_batched() {
    let data = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(data.path()) else { return };
    let fixture = fixture();
    let inputs = fixture["inputs"].as_array().unwrap();
    let texts: Vec<&str> = inputs.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let dims = fixture["dimensions"].as_u64().unwrap() as usize;

    // All inputs in one request: one padded batch.
    let (status, body) = server.embed(json!({"model": MODEL, "input": texts}));
    let batched = vectors(status, &body);
    let tokens: u64 = inputs.iter().map(|i| i["tokens"].as_u64().unwrap()).sum();
    assert_eq!(body["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let mut worst = f64::INFINITY;
    for ((input, text), got) in inputs.iter().zip(&texts).zip(&batched) {
        assert_eq!(got.len(), dims);
        let c = cosine(got, &floats(&input["embedding"]));
        worst = worst.min(c);
        eprintln!("1 - cosine = {:.2e} ({} tokens) {:.40}", 1.0 - c, input["tokens"], text);
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
        let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalized: {norm}");
    }
    eprintln!("lowest cosine against sentence-transformers: {worst:.12}");

    // Each alone, as a plain string: the same vector as in the batch.
    for (text, together) in texts.iter().zip(&batched) {
        let alone = &server.vectors(json!({"model": MODEL, "input": text}))[0];
        let diff = max_abs_diff(alone, together);
        eprintln!("alone vs batched: max |diff| {diff:.2e} for {text:.40}");
        assert!(diff < 1e-6, "{diff} between alone and batched for {text:?}");
    }

    // Concurrent requests (batched together by the engine when they meet) give the same vectors.
    std::thread::scope(|s| {
        let server = &server;
        let handles: Vec<_> = texts
            .iter()
            .map(|text| s.spawn(move || server.vectors(json!({"model": MODEL, "input": [text]}))))
            .collect();
        for (h, together) in handles.into_iter().zip(&batched) {
            let got = h.join().unwrap();
            assert!(max_abs_diff(&got[0], together) < 1e-6);
        }
    });

    // Token ids are the model's input as given: the text's own ids give the text's vector.
    let ids = &fixture["first_input_ids"];
    let (status, body) = server.embed(json!({"model": MODEL, "input": ids}));
    let by_ids = vectors(status, &body);
    assert!(max_abs_diff(&by_ids[0], &batched[0]) < 1e-6);
    assert_eq!(body["usage"]["prompt_tokens"], ids.as_array().unwrap().len());
    let (status, body) = server.embed(json!({"model": MODEL, "input": [ids, ids]}));
    assert_eq!(vectors(status, &body).len(), 2);

    // base64: the same floats, little-endian f32.
    let (status, body) =
        server.embed(json!({"model": MODEL, "input": texts[0], "encoding_format": "base64", "dimensions": dims}));
    assert_eq!(status, 200, "{body}");
    let text = body["data"][0]["embedding"].as_str().expect("a base64 string");
    let bytes = base64_decode(text);
    let decoded: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    // (The float form went through decimal text and back: equal to the last bit, but for a rare
    // double rounding in the client's parse.)
    assert!(max_abs_diff(&decoded, &batched[0]) < 1e-7);
}

/// Standard base64 (what the server sends), decoded without another dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn refusals_follow_openai_and_usage_is_per_deployment() {
    let data = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(data.path()) else { return };
    let fixture = fixture();
    let limit = fixture["max_tokens"].as_u64().unwrap();

    // Over the 256-token limit: refused, not cut; the same with token ids.
    let over = fixture["over_limit"].as_str().unwrap();
    let answer = assert_refused(
        &server,
        json!({"model": MODEL, "input": over}),
        "input",
        &format!("maximum input is {limit} tokens"),
    );
    assert_eq!(answer["error"]["code"], "context_length_exceeded");
    assert!(answer["error"]["message"].as_str().unwrap().contains(&format!("{} tokens long", limit + 1)));
    let long_ids: Vec<u32> = vec![101; limit as usize + 1];
    assert_refused(&server, json!({"model": MODEL, "input": ["ok", long_ids]}), "input", "");
    assert_refused(&server, json!({"model": MODEL, "input": [[101, 102], long_ids]}), "input", "Input 1 is 257 tokens");

    // The number of inputs is capped at OpenAI's 2048.
    let many = vec!["a"; 2049];
    assert_refused(&server, json!({"model": MODEL, "input": many}), "input", "2049 inputs; the maximum is 2048");
    // ... in a body over axum's default 2 MB limit, which this route lifts (to 16 MiB).
    let many = vec!["word ".repeat(220); 2049];
    assert_refused(&server, json!({"model": MODEL, "input": many}), "input", "2049 inputs; the maximum is 2048");
    // Empty input, as OpenAI refuses it.
    assert_refused(&server, json!({"model": MODEL, "input": ""}), "input", "empty string");
    assert_refused(&server, json!({"model": MODEL, "input": []}), "input", "empty array");
    assert_refused(&server, json!({"model": MODEL, "input": [[]]}), "input", "empty array of tokens");
    assert_refused(&server, json!({"model": MODEL, "input": [1, 99999]}), "input", "outside the model's vocabulary");
    assert_refused(&server, json!({"model": MODEL, "input": [-1]}), "input", "outside the model's vocabulary");
    // `dimensions` only as the model's own size; other formats and unknown fields are refused.
    assert_refused(&server, json!({"model": MODEL, "input": "a", "dimensions": 128}), "dimensions", "384 dimensions");
    assert_refused(&server, json!({"model": MODEL, "input": "a", "dimensions": 0}), "dimensions", "at least 1");
    assert_refused(
        &server,
        json!({"model": MODEL, "input": "a", "encoding_format": "int8"}),
        "encoding_format",
        "int8",
    );
    let (status, _) = server.embed(json!({"model": MODEL, "input": "a", "frobnicate": true}));
    assert_eq!(status, 400);
    assert_refused(&server, json!({"model": "tiny", "input": "a"}), "model", "not an embedding model");
    let (status, body) = server.embed(json!({"model": "nope", "input": "a"}));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")));

    // `user` is accepted; usage is counted on the deployment, which the listings show.
    let (status, body) = server.embed(json!({"model": MODEL, "input": ["hello", "hello world"], "user": "u-1"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3 + 4);
    let models = server.get("/v1/models", KEY);
    let card = models["data"].as_array().unwrap().iter().find(|m| m["id"] == MODEL).unwrap().clone();
    assert_eq!(card["status"], "Running", "{card}");
    let instance = &server.get(&format!("/sdk/v1/instance?meta_key={MODEL}"), ADMIN)["instance"];
    assert_eq!(instance["status"], "Running", "{instance}");
    assert_eq!(instance["usage"]["requests"], 1, "refused requests are not counted: {instance}");
    assert_eq!(instance["usage"]["promptTokens"], 7, "{instance}");
}
