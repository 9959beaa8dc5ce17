//! Log-probabilities over HTTP. `/v1/completions`' `logprobs` against llama.cpp's on the same tiny
//! GGUF files (tests/fixtures/family_logits.json, llama-server's top 5 after each greedy step), the
//! same under any temperature; chat's `logprobs` and `top_logprobs` in OpenAI's shape, streamed
//! pieces adding up to the plain answer; and the ranges refused.

mod common;

use common::reference::Reference;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use wick::engine::scheduler::Limits;
use wick::loader::tokenizer::{gguf_metadata, TextTokenizer};

/// As tests/families.rs's tolerance for the same fixture (whose largest difference is 0.107):
/// the logits are the same forward's, read through the API.
const LOGPROB_TOLERANCE: f64 = 0.15;

/// A server with the tiny model of `family` (the fixture's weights) as `tiny-{family}`, and that
/// model's tokenizer, to name the fixture's token ids as the API names them.
async fn family_server(family: &str, dir: &std::path::Path) -> (TestServer, TextTokenizer) {
    let path = dir.join(format!("tiny-{family}.gguf"));
    write_tiny_family_gguf(&path, family, FAMILY_REFERENCE_SEED);
    let tokenizer = TextTokenizer::from_gguf(&gguf_metadata(&path).unwrap()).unwrap();
    let server = TestServer::start(vec![spec(&format!("tiny-{family}"), &path, Limits::default())], &[]).await;
    (server, tokenizer)
}

async fn complete(s: &TestServer, body: Value) -> Value {
    let (status, body) = s.complete(body).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn completion_logprobs_match_llama_cpp_and_ignore_temperature() {
    let reference: Reference = serde_json::from_str(include_str!("fixtures/family_logits.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for family in ["llama", "qwen2", "gemma3"] {
        let (s, tokenizer) = family_server(family, dir.path()).await;
        let name = |id: u32| String::from_utf8_lossy(tokenizer.token_bytes(id)).into_owned();
        // A fixture id is checked only where its name is its own: the API keys top tokens by name.
        let mut names = HashMap::<String, usize>::new();
        (0..tokenizer.vocab_size() as u32).for_each(|id| *names.entry(name(id)).or_default() += 1);
        let (mut compared, mut worst) = (0, 0f64);
        for run in &reference.families[family] {
            // Step by step, each with the reference's tokens so far as the prompt, as
            // tests/families.rs feeds them: a near tie taken the other way cannot move the context.
            for (i, step) in run.steps.iter().enumerate() {
                let prompt: Vec<u32> =
                    run.prompt.iter().copied().chain(run.steps[..i].iter().map(|s| s.token)).collect();
                let body = json!({
                    "model": format!("tiny-{family}"), "prompt": prompt, "max_tokens": 1, "temperature": 0,
                    "logprobs": 5, "ignore_eos": true,
                });
                let answer = complete(&s, body.clone()).await;
                let logprobs = &answer["choices"][0]["logprobs"];
                let top = logprobs["top_logprobs"][0].as_object().unwrap();
                // Five, less those whose names repeat (bytes of a UTF-8 character all read "\u{fffd}").
                assert!((1..=5).contains(&top.len()), "{family} step {i}: {top:?}");
                let (sampled, token) =
                    (logprobs["token_logprobs"][0].as_f64().unwrap(), logprobs["tokens"][0].as_str().unwrap());
                if names[token] == 1 {
                    assert_eq!(Some(sampled), top[token].as_f64(), "{family} step {i}: greedy takes the top token");
                }
                for &(id, want) in step.top.iter().filter(|(id, _)| names[&name(*id)] == 1) {
                    let Some(got) = top.get(&name(id)).and_then(Value::as_f64) else {
                        continue; // just outside our top 5, on a near tie
                    };
                    let diff = (got - want as f64).abs();
                    assert!(diff <= LOGPROB_TOLERANCE, "{family} step {i}, token {id}: {got} vs llama.cpp's {want}");
                    worst = worst.max(diff);
                    compared += 1;
                }
                if i == 0 {
                    // The distribution is the model's, before temperature: the same when sampling.
                    let mut hot = body;
                    hot["temperature"] = json!(1.9);
                    hot["seed"] = json!(5);
                    let hot = complete(&s, hot).await;
                    assert_eq!(
                        hot["choices"][0]["logprobs"]["top_logprobs"][0], logprobs["top_logprobs"][0],
                        "{family}"
                    );
                }
            }
        }
        println!("{family}: {compared} log-probabilities compared with llama.cpp's, largest difference {worst:.4}");
        assert!(compared >= 50, "{family}: only {compared} compared");
    }
}

#[tokio::test]
async fn chat_logprobs_have_openai_shape_and_streamed_pieces_add_up() {
    let s = TestServer::tiny().await;
    let body = json!({
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0,
        "logprobs": true, "top_logprobs": 3, "ignore_eos": true,
    });
    let (status, plain) = s.chat(body.clone()).await;
    assert_eq!(status, 200, "{plain}");
    let content = plain["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(content.len(), 8, "one entry per generated token");
    assert!(plain["choices"][0]["logprobs"]["refusal"].is_null());
    for entry in &content {
        let bytes: Vec<u8> = serde_json::from_value(entry["bytes"].clone()).unwrap();
        assert_eq!(entry["token"], String::from_utf8_lossy(&bytes).as_ref(), "{entry}");
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0, "{lps:?}");
        assert_eq!(top[0]["logprob"], entry["logprob"], "greedy takes the likeliest");
    }
    let text: String = content.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(text, plain["choices"][0]["message"]["content"].as_str().unwrap(), "the tokens spell the answer");

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let mut streamed = Vec::new();
    for data in s.chat_stream(stream).await.iter().filter(|d| *d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        let choice = &chunk["choices"][0];
        match choice["logprobs"]["content"].as_array() {
            Some(entries) => streamed.extend(entries.iter().cloned()),
            None => assert!(choice["logprobs"].is_null(), "{chunk}"),
        }
    }
    assert_eq!(streamed, content, "streamed pieces add up to the plain answer");

    let (_, plain) =
        s.chat(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})).await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "none unless asked for");
}

#[tokio::test]
async fn logprob_ranges_are_refused_by_name() {
    let s = TestServer::tiny().await;
    let chat = |extra: Value| {
        merged(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}), &extra)
    };
    for (extra, param) in [
        (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
        (json!({"logprobs": true, "top_logprobs": -1}), "top_logprobs"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (json!({"logprobs": 1}), "logprobs"),
    ] {
        let (status, err) = s.chat(chat(extra.clone())).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{extra}: {err}");
    }
    for extra in [json!({"logprobs": 6}), json!({"logprobs": -1}), json!({"logprobs": 2, "echo": true})] {
        let (status, err) = s.complete(merged(json!({"model": "tiny", "prompt": "hi", "max_tokens": 2}), &extra)).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some("logprobs")), "{extra}: {err}");
    }
}
