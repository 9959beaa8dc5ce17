//! Tests with the real default model (SmolLM2-135M-Instruct Q4_1), pulled by `wick pull` (the test
//! command does it first). Without the model these tests fail when WICK_REQUIRE_REAL_MODEL=1 (as in
//! CI) and are skipped with a notice otherwise.

mod common;

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

#[derive(serde::Deserialize)]
struct Fixture {
    text: String,
    ids: Vec<u32>,
    #[serde(default)]
    special: bool,
    /// A prompt: compared with `encode_prompt` (BOS added, special tokens parsed).
    #[serde(default)]
    bos: bool,
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let Some(path) = model_path() else { return };
    let md = wick::loader::tokenizer::gguf_metadata(&path).unwrap();
    let tok = wick::loader::tokenizer::TextTokenizer::from_gguf(&md).unwrap();
    let fixture: Vec<Fixture> =
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

/// Gemma 3 270M's SentencePiece vocabulary against llama.cpp (tests/fixtures/make_gemma3_tokens.py).
/// tests/run.sh does not pull that model, so without it this test is skipped with a notice even when
/// WICK_REQUIRE_REAL_MODEL=1.
#[test]
fn sentencepiece_tokenizer_matches_llama_cpp() {
    const GEMMA: &str = "gemma-3-270m";
    let entry = Catalog::builtin().get(GEMMA).unwrap();
    if wick::pull::missing(entry) {
        eprintln!("SKIPPED: {GEMMA} is not pulled (run `wick pull {GEMMA}`)");
        return;
    }
    let t = std::time::Instant::now();
    let md = wick::loader::tokenizer::gguf_metadata(&entry.local_path()).unwrap();
    let read = t.elapsed();
    let t = std::time::Instant::now();
    let tok = wick::loader::tokenizer::TextTokenizer::from_gguf(&md).unwrap();
    eprintln!("{GEMMA}: metadata read in {read:?}, tokenizer built in {:?}", t.elapsed());
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.add_bos, Some(2));
    assert_eq!((tok.bos_token.as_deref(), tok.eos_token.as_deref()), (Some("<bos>"), Some("<eos>")));
    // <eos>, <end_of_turn>, and </s> (llama.cpp makes it a control token and ends generation on it).
    let eog: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&i| tok.is_end_of_generation(i)).collect();
    assert_eq!(eog, [1, 106, 212]);

    let fixture: Vec<Fixture> =
        serde_json::from_str(include_str!("fixtures/gemma3_tokens.json")).expect("fixture parses");
    assert!(fixture.len() >= 40);
    let mut failures = Vec::new();
    for f in &fixture {
        let ids = if f.bos { tok.encode_prompt(&f.text) } else { tok.encode(&f.text, f.special) }.unwrap();
        if ids != f.ids {
            failures.push(format!("{:?}: llama.cpp {:?}, wick {:?}", f.text, f.ids, ids));
        }
        if !f.special && !f.bos {
            assert_eq!(tok.decode(&ids), f.text, "round trip");
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), fixture.len(), failures.join("\n"));

    let long = &fixture.iter().max_by_key(|f| f.text.len()).unwrap().text;
    let prompt = long.repeat(4096 / long.len() + 1);
    let t = std::time::Instant::now();
    let n = tok.encode_prompt(&prompt).unwrap().len();
    eprintln!("{GEMMA}: a {}-byte prompt encoded to {n} ids in {:?}", prompt.len(), t.elapsed());
}
