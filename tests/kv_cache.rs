//! The paged KV cache as clients meet it: a prompt prefix computed once is reported as cached and
//! changes no answer, and a pool too small for the load preempts and recomputes instead of failing.

mod common;

use common::{greedy, spec, tiny_model, TestServer};
use serde_json::Value;
use std::sync::atomic::Ordering;
use wick::engine::scheduler::Limits;
use wick::kv::BLOCK_SIZE;

fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

async fn server(max_kv_tokens: usize) -> TestServer {
    let limits = Limits { max_kv_tokens, ..Limits::default() };
    TestServer::start(vec![spec("tiny", &tiny_model(), limits)], &[]).await
}

#[tokio::test]
async fn a_shared_prompt_prefix_is_reported_cached_and_changes_no_answer() {
    let system = "You are a careful assistant. ".repeat(4);
    let ask = |question: &str| {
        let mut body = greedy(question, 16);
        body["messages"] = serde_json::json!([
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]);
        body
    };
    let fresh = server(65_536).await;
    let (_, want) = fresh.chat(ask("What is a block?")).await;

    let s = server(65_536).await;
    let (status, first) = s.chat(ask("Tell me about caches.")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "nothing cached yet");
    let (status, second) = s.chat(ask("What is a block?")).await;
    assert_eq!(status, 200);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() as usize;
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(cached >= 4 * BLOCK_SIZE, "the shared system prompt ({prompt} prompt tokens) was not found: {cached}");
    assert_eq!(cached % BLOCK_SIZE, 0, "whole blocks are shared");
    assert!(cached < prompt);
    assert_eq!(content(&second), content(&want), "the cached prefix changed the answer");

    // The same request again: everything but the block holding its last token is cached.
    let (_, again) = s.chat(ask("What is a block?")).await;
    assert_eq!(again["usage"]["prompt_tokens_details"]["cached_tokens"], (prompt - 1) / BLOCK_SIZE * BLOCK_SIZE);
    assert_eq!(content(&again), content(&want));
    let total = cached + (prompt - 1) / BLOCK_SIZE * BLOCK_SIZE;
    assert_eq!(metric(&s, "wick_deployment_prefix_cached_tokens").await, total as f64);
}

#[tokio::test]
async fn a_pool_too_small_for_the_load_preempts_and_every_answer_is_unchanged() {
    let prompts: Vec<String> = (0..6).map(|i| format!("question {i}: {}", "why ".repeat(i))).collect();
    let roomy = server(65_536).await;
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(content(&roomy.chat(greedy(p, 48)).await.1));
    }

    // Each request needs ~4 blocks (its prompt plus 48 tokens); 8 blocks hold two of them at a time,
    // but all six are admitted while their prompts are short, so the pool runs out mid-generation.
    let tight = server(8 * BLOCK_SIZE).await;
    let answers = futures::future::join_all(prompts.iter().map(|p| tight.chat(greedy(p, 48)))).await;
    for (i, ((status, body), want)) in answers.iter().zip(&alone).enumerate() {
        assert_eq!(*status, 200, "request {i}: {body}");
        assert_eq!(&content(body), want, "request {i} changed after preemption");
        assert_eq!(body["usage"]["completion_tokens"], 48);
    }
    let deployment = tight.state.deployments.get("tiny").unwrap();
    let preemptions: usize = deployment.engine_stats().iter().map(|s| s.preemptions.load(Ordering::Relaxed)).sum();
    assert!(preemptions > 0, "the pool never ran out: the test tests nothing");
    assert_eq!(metric(&tight, "wick_deployment_preemptions").await, preemptions as f64);
    assert_eq!(metric(&tight, "wick_deployment_kv_blocks").await, 8.0);
    // The worker retires the last sequences just after their answers went out: give it a moment.
    let mut used = f64::NAN;
    for _ in 0..100 {
        used = metric(&tight, "wick_deployment_kv_blocks_used").await;
        if used == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(used, 0.0, "every block came back");
}

/// The value of a per-deployment gauge of the tiny deployment in /metrics.
async fn metric(s: &TestServer, name: &str) -> f64 {
    let text = s.get("/metrics").send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{deployment=\"tiny\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
    line[prefix.len()..].parse().unwrap()
}

#[tokio::test]
async fn a_request_larger_than_the_whole_pool_is_a_bad_request_and_the_replica_goes_on() {
    // Two blocks in all; three choices of a one-block prompt need three.
    let s = server(2 * BLOCK_SIZE).await;
    let mut body = greedy("Hi", 4);
    body["n"] = 3.into();
    let (status, answer) = s.chat(body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("KV cache positions"), "{message}");
    let (status, answer) = s.chat(greedy("Hi", 4)).await;
    assert_eq!(status, 200, "{answer}");
}
