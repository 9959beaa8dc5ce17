//! The HTTP surface against a real server on loopback, serving a tiny random-weight model.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use wick::engine::scheduler::Limits;

fn assert_openai_error(body: &Value, kind: &str, param: Option<&str>, code: Option<&str>) {
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["param"].as_str(), param, "{body}");
    assert_eq!(e["code"].as_str(), code, "{body}");
}

#[tokio::test]
async fn completion_has_openai_shape_and_exact_usage() {
    let s = TestServer::tiny().await;
    let (status, body) = s.chat(greedy("hello world", 5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "tiny");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert_eq!(choice["finish_reason"], "length");
    let u = &body["usage"];
    assert_eq!(u["completion_tokens"], 5);
    // "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n", tokenized by the tiny vocabulary.
    let prompt = u["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 10, "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + 5);
}

#[tokio::test]
async fn stream_follows_openai_order_and_matches_the_plain_answer() {
    let s = TestServer::tiny().await;
    let (_, plain) = s.chat(greedy("stream me", 12)).await;
    let mut req = greedy("stream me", 12);
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let events = s.chat_stream(req).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    // The same counts; only the cached part may differ, since the plain request left its prompt in
    // the prefix cache.
    for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage_chunk["usage"][count], plain["usage"][count]);
    }
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert!(finish["usage"].is_null() && finish.as_object().unwrap().contains_key("usage"));
    let text: String = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            c["choices"][0]["delta"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, plain["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn stream_without_usage_has_no_usage_field() {
    let s = TestServer::tiny().await;
    let mut req = greedy("x", 3);
    req["stream"] = json!(true);
    let events = s.chat_stream(req).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn stop_string_is_never_emitted() {
    let s = TestServer::tiny().await;
    let (_, full) = s.chat(greedy("stop test", 40)).await;
    let text = full["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy answer, two characters long so that it may well span tokens.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 12, "greedy answer too short to test: {text:?}");
    let stop: String = chars[8..10].iter().collect();
    let expected: String = text[..text.find(&stop).unwrap()].to_string();
    let mut req = greedy("stop test", 40);
    req["stop"] = json!([stop, "never-appears"]);
    let (status, body) = s.chat(req.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    req["stream"] = json!(true);
    let streamed: String = s
        .chat_stream(req)
        .await
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, expected);
}

#[tokio::test]
async fn seeded_sampling_repeats_and_n_gives_distinct_choices() {
    let s = TestServer::tiny().await;
    let req = json!({
        "model": "tiny", "messages": [{"role": "user", "content": "sample"}],
        "temperature": 1.0, "seed": 42, "n": 2, "max_tokens": 16,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    });
    let (status, a) = s.chat(req.clone()).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = s.chat(req).await;
    let texts = |v: &Value| -> Vec<String> {
        v["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(a["choices"][1]["index"], 1);
    assert_eq!(texts(&a), texts(&b));
    assert_ne!(texts(&a)[0], texts(&a)[1]);
    assert_eq!(a["usage"]["completion_tokens"], 32);
}

#[tokio::test]
async fn greedy_output_is_the_same_alone_and_batched() {
    let s = TestServer::tiny().await;
    let prompts: Vec<String> = (0..8).map(|i| format!("request number {i} {}", "word ".repeat(i * 3))).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(s.chat(greedy(p, 24)).await.1["choices"][0]["message"]["content"].clone());
    }
    let together = futures::future::join_all(prompts.iter().map(|p| s.chat(greedy(p, 24)))).await;
    for (a, (status, t)) in alone.iter().zip(&together) {
        assert_eq!(*status, 200);
        assert_eq!(a, &t["choices"][0]["message"]["content"]);
    }
}

#[tokio::test]
async fn bad_requests_get_openai_errors_naming_the_param() {
    let s = TestServer::tiny().await;
    let post_raw = |body: &'static str, ct: &'static str| {
        s.post("/v1/chat/completions").header("content-type", ct).body(body).send()
    };
    let r = post_raw("{not json", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_openai_error(&r.json().await.unwrap(), "invalid_request_error", None, None);
    let r = post_raw(r#"{"model":"tiny","messages":[]}"#, "text/plain").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_openai_error(&r.json().await.unwrap(), "invalid_request_error", None, None);

    let cases = [
        (json!({"messages": [{"role": "user", "content": "hi"}]}), "model"),
        (json!({"model": "tiny"}), "messages"),
        (json!({"model": "tiny", "messages": []}), "messages"),
        (json!({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}), "temperature"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_p": -0.1}), "top_p"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 0}), "n"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}), "max_tokens"),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 3}),
            "presence_penalty",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}),
            "logit_bias",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 101}}),
            "logit_bias",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].type",
        ),
    ];
    for (body, param) in cases {
        let (status, err) = s.chat(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_openai_error(&err, "invalid_request_error", Some(param), None);
    }
}

/// Nothing a client sends is silently ignored: a field Wick does not know is refused in OpenAI's
/// words, one it knows and does not serve is refused by name, and the values that ask for nothing
/// Wick lacks are accepted. (tests/clients/test_openai_python.py checks every field the official
/// client knows.)
#[tokio::test]
async fn every_field_is_served_or_refused_by_name() {
    let s = TestServer::tiny().await;
    let with = |extra: Value| {
        merged(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}), &extra)
    };
    for (extra, param) in [
        (json!({"temprature": 0.5}), "temprature"),
        (json!({"stream_options": {"include_usage": true, "usage": 1}, "stream": true}), "stream_options.usage"),
    ] {
        let (status, err) = s.chat(with(extra)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["message"], format!("Unrecognized request argument supplied: {param}"));
        assert_openai_error(&err, "invalid_request_error", Some(param), None);
    }
    let (status, err) =
        s.chat(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi", "nmae": "x"}]})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[0].nmae")), "{err}");

    let refused = [
        // The tiny model's template shows no tools, so it cannot choose to call one (tests/tools.rs).
        (json!({"tools": [{"type": "function", "function": {"name": "f"}}]}), "tools"),
        (json!({"tool_choice": "none"}), "tool_choice"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}}),
            "response_format.json_schema.schema",
        ),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (json!({"store": true}), "store"),
        (json!({"service_tier": "priority"}), "service_tier"),
        (json!({"prediction": {"type": "content", "content": "x"}}), "prediction"),
        (json!({"web_search_options": {}}), "web_search_options"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (json!({"min_p": 1.5}), "min_p"),
        (json!({"repetition_penalty": 0}), "repetition_penalty"),
        (json!({"min_tokens": 5}), "min_tokens"),
    ];
    for (extra, param) in refused {
        let (status, err) = s.chat(with(extra.clone())).await;
        assert_eq!(status, 400, "{extra} -> {err}");
        assert_openai_error(&err, "invalid_request_error", Some(param), None);
        assert!(!err["error"]["message"].as_str().unwrap().starts_with("Unrecognized"), "{err}");
    }
    let message_field = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi", "name": "ann"}]});
    let (status, err) = s.chat(message_field).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[0].name")), "{err}");

    let harmless = json!({
        "response_format": {"type": "text"}, "modalities": ["text"], "store": false, "service_tier": "auto",
        "prompt_cache_key": "k", "user": "u", "safety_identifier": "s", "tools": null,
        "stream_options": null, "top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1,
    });
    let (status, body) = s.chat(with(harmless)).await;
    assert_eq!(status, 200, "{body}");
}

/// `ignore_eos` and `min_tokens` (what benchmark harnesses send) hold the end tokens back: here
/// `logit_bias` makes an end token the likeliest at every step.
#[tokio::test]
async fn ignore_eos_and_min_tokens_hold_the_end_back() {
    let s = TestServer::tiny().await;
    let run = |extra: Value| {
        let base = json!({
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0,
            "logit_bias": {ENDOFTEXT.to_string(): 100, IM_END.to_string(): 100},
        });
        let body = merged(base, &extra);
        let s = &s;
        async move {
            let (status, body) = s.chat(body).await;
            assert_eq!(status, 200, "{body}");
            (body["usage"]["completion_tokens"].as_u64().unwrap(), body["choices"][0]["finish_reason"].clone())
        }
    };
    assert_eq!(run(json!({})).await, (1, json!("stop")), "the end token comes first");
    assert_eq!(run(json!({"ignore_eos": true})).await, (6, json!("length")));
    assert_eq!(run(json!({"min_tokens": 3})).await, (4, json!("stop")), "three tokens, then the end");
    assert_eq!(run(json!({"ignore_eos": false, "min_tokens": 0})).await, (1, json!("stop")));
}

#[tokio::test]
async fn unknown_model_is_404_and_long_prompts_exceed_the_context() {
    let s = TestServer::tiny().await;
    let (status, body) = s.chat(json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "invalid_request_error", Some("model"), Some("model_not_found"));

    let (status, body) = s.chat(greedy("hi", 10_000)).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", Some("messages"), Some("context_length_exceeded"));
    let (status, body) = s.chat(greedy(&"long ".repeat(400), 1)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");

    // Without max_tokens, generation may run to the end of the context and stops there.
    let mut req = greedy(&"x".repeat(200), 1);
    req.as_object_mut().unwrap().remove("max_tokens");
    let (status, body) = s.chat(req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["total_tokens"], CONTEXT);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_openai_shape() {
    let s = TestServer::tiny().await;
    let r = s.get("/v1/nothing").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_openai_error(&r.json().await.unwrap(), "invalid_request_error", None, Some("not_found"));
    let r = s.get("/v1/chat/completions").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_openai_error(&r.json().await.unwrap(), "invalid_request_error", None, Some("method_not_allowed"));
}

#[tokio::test]
async fn api_keys_guard_v1_but_not_health() {
    let s =
        TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &["sk-test-key-1", "sk-test-key-2"])
            .await;
    let url = |p: &str| format!("{}{p}", s.url);
    let r = s.client.get(url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_openai_error(&r.json().await.unwrap(), "invalid_request_error", None, Some("invalid_api_key"));
    let r = s.client.get(url("/v1/models")).bearer_auth("sk-wrong-key-123").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(!body["error"]["message"].as_str().unwrap().contains("wrong-key"), "the key is echoed: {body}");
    let r = s.client.get(url("/v1/models")).bearer_auth("sk-test-key-2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.client.get(url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn models_list_and_names_with_slashes() {
    let s = TestServer::start(
        vec![
            spec("u-8105f7322477/test", &tiny_model(), Limits::default()),
            spec("tiny", &tiny_model(), Limits::default()),
        ],
        &[],
    )
    .await;
    let list: Value = s.get("/v1/models").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "u-8105f7322477/test");
    assert_eq!(list["data"][0]["object"], "model");
    assert!(list["data"][0]["root"].as_str().unwrap().ends_with("tiny-llama.gguf"));
    let one: Value = s.get("/v1/models/u-8105f7322477/test").send().await.unwrap().json().await.unwrap();
    assert_eq!(one["id"], "u-8105f7322477/test");
    let r = s.get("/v1/models/u-8105f7322477/other").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let mut req = greedy("hi", 2);
    req["model"] = json!("u-8105f7322477/test");
    let (status, body) = s.chat(req).await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], "u-8105f7322477/test");
}

#[tokio::test]
async fn a_model_that_cannot_load_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"this is not a gguf file").unwrap();
    let s = TestServer::start(vec![spec("broken", &bad, Limits::default())], &[]).await;
    let (status, body) = s.chat(json!({"model": "broken", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 503, "{body}");
    assert_openai_error(&body, "server_error", None, Some("model_unavailable"));
    assert!(body["error"]["message"].as_str().unwrap().contains("GGUF"), "{body}");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_loses_nothing() {
    let limits = Limits { max_batch_size: 1, max_queue: 1, ..Limits::default() };
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), limits)], &[]).await;
    // Load the model first so that the burst meets the queue, not the loader.
    assert_eq!(s.chat(greedy("warm", 1)).await.0, 200);
    let s = &s;
    let burst = (0..6).map(|i| async move {
        let resp = s.post("/v1/chat/completions").json(&greedy(&format!("burst {i}"), 60)).send().await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (status, retry, resp.json::<Value>().await.unwrap())
    });
    let results = futures::future::join_all(burst).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(!limited.is_empty(), "{results:?}");
    assert_eq!(ok + limited.len(), 6);
    for (_, retry, body) in limited {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_openai_error(body, "rate_limit_error", None, Some("rate_limit_exceeded"));
    }
    for r in results.iter().filter(|r| r.0 == 200) {
        assert_eq!(r.2["usage"]["completion_tokens"], 60);
    }
}

#[tokio::test]
async fn a_client_that_disconnects_loses_its_sequence() {
    let s = TestServer::start(vec![spec("tiny", &tiny_long_model(), Limits::default())], &[]).await;
    assert_eq!(s.chat(greedy("warm", 1)).await.0, 200);
    let engine = s.state.deployments.get("tiny").unwrap().engine_stats().pop().unwrap();
    let running = || engine.running.load(std::sync::atomic::Ordering::SeqCst);
    let steps = || engine.steps.load(std::sync::atomic::Ordering::SeqCst);
    let until_running = || async {
        while running() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    for stream in [true, false] {
        // 4000 tokens: far more than the few steps it may take to notice the client left.
        let mut req = greedy("go on forever", 4000);
        req["stream"] = json!(stream);
        let request = s.post("/v1/chat/completions").json(&req).send();
        if stream {
            let response = request.await.unwrap();
            until_running().await;
            drop(response);
        } else {
            tokio::select! {
                _ = request => panic!("the request finished before it could be abandoned"),
                _ = until_running() => {}
            }
        }
        let steps_then = steps();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while running() != 0 {
            assert!(std::time::Instant::now() < deadline, "sequence still running after its client left");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let taken = steps() - steps_then;
        assert!(taken < 200, "took {taken} steps to notice (stream={stream})");
        // The blocks it held are free, and the gauge autoscalers read says so at once, with no
        // request after it to update it.
        let metrics = s.client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
        let used = metrics.lines().find(|l| l.starts_with("wick_deployment_kv_blocks_used{")).unwrap();
        assert!(used.ends_with(" 0"), "{used} (stream={stream})");
    }
}

#[tokio::test]
async fn health_is_public() {
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &["sk-x-123456789"]).await;
    let r = s.client.get(format!("{}/health", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
}

/// Streams are many small writes on kept-alive connections: with Nagle's algorithm on, each waits
/// for the client's delayed ACK (~40 ms). The server's listener turns it off on every connection.
#[tokio::test]
async fn accepted_connections_have_nagle_off() {
    use axum::serve::Listener;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listener = wick::no_delay(listener);
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (socket, _) = listener.accept().await;
    assert!(socket.nodelay().unwrap());
}

#[tokio::test]
async fn the_servers_completion_cap_refuses_more_and_bounds_an_open_request() {
    let limits = Limits { max_completion_tokens: Some(5), ..Limits::default() };
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), limits)], &[]).await;
    let (status, body) = s.chat(greedy("Hi", 6)).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, "invalid_request_error", Some("max_tokens"), None);
    let mut open = greedy("Hi", 1);
    open.as_object_mut().unwrap().remove("max_tokens");
    open["ignore_eos"] = json!(true);
    let (status, body) = s.chat(open).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}
