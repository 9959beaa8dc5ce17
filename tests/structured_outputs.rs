//! Structured outputs (`response_format` json_object and json_schema) over HTTP on the tiny
//! random-weight model. Unconstrained, its answers are noise; constrained, every answer must be JSON
//! valid for the schema, the same alone or batched, and the same streamed or not. A schema the
//! grammar engine cannot enforce is a 400 that names what it cannot.

mod common;

use common::*;
use serde_json::{json, Value};

/// A schema whose every answer is short: an enum and a bounded integer.
fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no", "maybe"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 99},
            "note": {"type": "string", "maxLength": 6}
        },
        "required": ["answer", "count", "note"],
        "additionalProperties": false
    })
}

fn with_schema(base: Value, schema: Value) -> Value {
    merged(
        base,
        &json!({"response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "strict": true, "schema": schema}}}),
    )
}

/// The answer's content as JSON valid for `verdict_schema`, checked by hand.
fn check_verdict(content: &str) -> Value {
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content:?}"));
    let o = v.as_object().unwrap_or_else(|| panic!("not an object: {content}"));
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["answer", "count", "note"], "{content}");
    assert!(["yes", "no", "maybe"].contains(&o["answer"].as_str().unwrap()), "{content}");
    assert!((0..=99).contains(&o["count"].as_i64().unwrap()), "{content}");
    assert!(o["note"].as_str().unwrap().chars().count() <= 6, "{content}");
    v
}

#[tokio::test]
async fn json_schema_answers_are_valid_alone_batched_and_streamed() {
    let s = TestServer::tiny().await;
    let req = |content: &str| with_schema(greedy(content, 60), verdict_schema());
    let (status, alone) = s.chat(req("is it so?")).await;
    assert_eq!(status, 200, "{alone}");
    assert_eq!(alone["choices"][0]["finish_reason"], "stop", "{alone}");
    let content = alone["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    check_verdict(&content);

    // The same request among seven others, each with its own grammar state.
    let others = ["a", "bb", "is it?", "no way", "hello world", "x y z", "why"];
    let mut batch = vec![s.chat(req("is it so?"))];
    batch.extend(others.iter().map(|c| s.chat(req(c))));
    let answers = futures::future::join_all(batch).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        check_verdict(body["choices"][0]["message"]["content"].as_str().unwrap());
    }
    assert_eq!(answers[0].1["choices"][0]["message"]["content"], content.as_str());

    let mut streamed = req("is it so?");
    streamed["stream"] = json!(true);
    let events = s.chat_stream(streamed).await;
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, content);

    // A grammar that is complete ends the answer, even where the end-of-generation tokens are banned.
    let (status, body) = s.chat(merged(req("is it so?"), &json!({"ignore_eos": true}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], content.as_str());
}

#[tokio::test]
async fn every_choice_and_every_sampled_answer_follows_the_schema() {
    let s = TestServer::tiny().await;
    let mut req = with_schema(greedy("sample", 60), verdict_schema());
    req["temperature"] = json!(1.5);
    req["n"] = json!(4);
    req["seed"] = json!(7);
    let (status, body) = s.chat(req).await;
    assert_eq!(status, 200, "{body}");
    for choice in body["choices"].as_array().unwrap() {
        check_verdict(choice["message"]["content"].as_str().unwrap());
    }
}

#[tokio::test]
async fn json_object_gives_an_object() {
    let s = TestServer::tiny().await;
    // Tokens 0-2 are the tiny model's control tokens; the object may end the answer only once closed.
    let req = merged(greedy("json please", 40), &json!({"response_format": {"type": "json_object"}}));
    let (status, body) = s.chat(req).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    if body["choices"][0]["finish_reason"] == "stop" {
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content:?}"));
        assert!(v.is_object(), "{content}");
    } else {
        // Cut by max_tokens: what there is is the start of an object.
        assert!(content.starts_with('{'), "{content:?}");
    }
    // Text asks for nothing.
    let req = merged(greedy("text please", 5), &json!({"response_format": {"type": "text"}}));
    assert_eq!(s.chat(req).await.0, 200);
}

#[tokio::test]
async fn what_cannot_be_enforced_is_a_400_naming_it() {
    let s = TestServer::tiny().await;
    let refused = |schema: Value, what: &'static str| {
        let req = with_schema(greedy("x", 5), schema);
        let s = &s;
        async move {
            let (status, body) = s.chat(req).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["param"], "response_format.json_schema.schema", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(what), "{what}: {message}");
        }
    };
    refused(json!({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}), "\"not\"").await;
    refused(json!({"type": "array", "uniqueItems": true}), "uniqueItems").await;
    refused(json!({"type": "integer", "minimum": 5, "maximum": 3}), "minimum").await;
    refused(json!({"$ref": "#/$defs/missing"}), "/$defs/missing").await;
    refused(json!("a string is no schema"), "must be a JSON Schema object").await;

    let bad = |format: Value, param: &'static str| {
        let req = merged(greedy("x", 5), &json!({"response_format": format}));
        let s = &s;
        async move {
            let (status, body) = s.chat(req).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["param"], param, "{body}");
        }
    };
    bad(json!({"type": "json_schema"}), "response_format.json_schema").await;
    bad(
        json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
        "response_format.json_schema.name",
    )
    .await;
    bad(json!({"type": "json_schema", "json_schema": {"name": "a"}}), "response_format.json_schema.schema").await;
    bad(
        json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "extra": 1}}),
        "response_format.json_schema.extra",
    )
    .await;
    bad(json!({"type": "xml"}), "response_format.type").await;
    bad(json!({"type": "text", "json_schema": {"name": "a", "schema": {}}}), "response_format.json_schema").await;
}
