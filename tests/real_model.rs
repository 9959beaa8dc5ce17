//! Tests with the real default model (SmolLM2-135M-Instruct Q4_1), pulled by `wick pull` (the test
//! command does it first). Without the model these tests fail when WICK_REQUIRE_REAL_MODEL=1 (as in
//! CI) and are skipped with a notice otherwise.

mod common;

use common::reference::TokenCase;
use common::TestServer;
use serde_json::{json, Value};
use wick::catalog::Catalog;
use wick::engine::scheduler::Limits;

const MODEL: &str = "smollm2-135m-instruct";

fn model_path() -> Option<std::path::PathBuf> {
    common::real_model_pulled(MODEL).then(|| Catalog::builtin().get(MODEL).unwrap().local_path())
}

async fn server() -> Option<TestServer> {
    let path = model_path()?;
    Some(TestServer::start(vec![common::spec(MODEL, &path, Limits::default())], &[]).await)
}

fn ask(content: &str, max_tokens: u32) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens})
}

#[tokio::test]
async fn answers_paris() {
    let Some(s) = server().await else { return };
    let (status, body) = s.chat(ask("What is the capital of France? Answer in one word.", 32)).await;
    assert_eq!(status, 200, "{body}");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn greedy_completion_is_token_identical_alone_and_batched_with_seven_others() {
    let Some(s) = server().await else { return };
    let prompts = [
        "What is the capital of France? Answer in one word.",
        "Write a haiku about the sea.",
        "List three prime numbers.",
        "Explain photosynthesis in two sentences.",
        "Translate 'good morning' into Spanish.",
        "What is 12 times 12?",
        "Name a famous painter and one of their works.",
        "Give me a tip for learning to code.",
    ];
    let alone = s.chat(ask(prompts[0], 64)).await.1;
    let together = futures::future::join_all(prompts.iter().map(|p| s.chat(ask(p, 64)))).await;
    assert_eq!(together[0].0, 200);
    assert_eq!(alone["choices"][0]["message"]["content"], together[0].1["choices"][0]["message"]["content"]);
    for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(alone["usage"][count], together[0].1["usage"][count]);
    }
    // The second time, the prompt's full blocks came from the prefix cache and changed nothing.
    let cached = together[0].1["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let prompt = alone["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(cached, (prompt - 1) / 16 * 16, "{}", together[0].1);
    // Every other request too, each alone against its batched answer.
    for (p, (_, batched)) in prompts.iter().zip(&together).skip(1) {
        let single = s.chat(ask(p, 64)).await.1;
        assert_eq!(single["choices"][0]["message"]["content"], batched["choices"][0]["message"]["content"], "{p}");
    }
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let Some(path) = model_path() else { return };
    let md = wick::loader::tokenizer::gguf_metadata(&path).unwrap();
    let tok = wick::loader::tokenizer::TextTokenizer::from_gguf(&md).unwrap();
    let fixture: Vec<TokenCase> =
        serde_json::from_str(include_str!("fixtures/smollm2_tokens.json")).expect("fixture parses");
    assert!(fixture.len() >= 20);
    let mut failures = Vec::new();
    for f in &fixture {
        let ids = tok.encode(&f.text, f.special).unwrap();
        if ids != f.ids {
            failures.push(format!("{:?}: llama.cpp {:?}, wick {:?}", f.text, f.ids, ids));
        }
        if !f.special {
            assert_eq!(tok.decode(&ids), f.text, "round trip");
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), fixture.len(), failures.join("\n"));
}
