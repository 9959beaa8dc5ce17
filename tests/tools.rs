//! Tool calling over HTTP on the tiny random-weight model. Its answers are noise, so a call comes
//! back only where a grammar makes one: `tool_choice` `required` or a named function, or `auto` with a
//! strict function once the answer opens as a call. Each such call must be valid for its function's
//! schema, come back in OpenAI's shape, and stream as the same call. The formats' parsing (Hermes,
//! Llama 3, Mistral; whole and in pieces) is unit-tested in `tool_calls`.

mod common;

use common::*;
use serde_json::{json, Value};
use wick::deploy::DeploymentRequest;
use wick::engine::scheduler::Limits;

/// A tool whose every call is short: an enum and a bounded integer.
fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "set_light", "description": "Switch a light",
         "parameters": {"type": "object", "properties": {"room": {"enum": ["hall", "kitchen"]},
                        "level": {"type": "integer", "minimum": 0, "maximum": 9}},
                        "required": ["room", "level"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}}
    ])
}

fn ask(extra: Value) -> Value {
    // A call is about 90 tokens of this byte-level vocabulary.
    merged(greedy("lights please", 200), &merged(json!({"tools": tools()}), &extra))
}

/// Checks one call against `tools()`; returns (name, arguments).
fn check_call(call: &Value) -> (String, Value) {
    assert_eq!(call["type"], "function", "{call}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    match name.as_str() {
        "set_light" => {
            assert!(["hall", "kitchen"].contains(&args["room"].as_str().unwrap()), "{args}");
            assert!((0..=9).contains(&args["level"].as_i64().unwrap()), "{args}");
            assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
        }
        "noop" => assert_eq!(args, json!({})),
        other => panic!("no tool {other}"),
    }
    (name, args)
}

/// The tiny model (its 4,096-token variant: tools take room) served with Wick's tool-capable
/// ChatML template (the default model's).
async fn tool_server() -> TestServer {
    let template = wick::catalog::Catalog::builtin().default_chat().chat_template.clone().unwrap();
    let request = DeploymentRequest {
        model: tiny_long_model().to_str().unwrap().into(),
        name: Some("tiny".into()),
        chat_template: Some(template),
        ..Default::default()
    };
    TestServer::start(vec![spec_from(request, Limits::default())], &[]).await
}

#[tokio::test]
async fn required_and_named_calls_follow_the_schema_and_stream_the_same() {
    let s = tool_server().await;
    for choice in [json!("required"), json!({"type": "function", "function": {"name": "set_light"}})] {
        let req = ask(json!({"tool_choice": choice, "parallel_tool_calls": false}));
        let (status, body) = s.chat(req.clone()).await;
        assert_eq!(status, 200, "{body}");
        let c = &body["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{body}");
        assert!(c["message"]["content"].is_null(), "{body}");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{body}");
        let (name, args) = check_call(&calls[0]);
        if choice.is_object() {
            assert_eq!(name, "set_light");
        }

        // Streamed: the id, type and name first, then the arguments; the same call.
        let mut streamed = req;
        streamed["stream"] = json!(true);
        let events = s.chat_stream(streamed).await;
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        let deltas: Vec<&Value> =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).map(|t| &t[0]).collect();
        assert_eq!(deltas.len(), 2, "{events:?}");
        assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_") && deltas[0]["type"] == "function");
        assert_eq!(deltas[0]["function"]["name"], name.as_str());
        assert!(deltas[1].get("id").is_none() && deltas[1]["function"].get("name").is_none());
        let streamed_args: Value = serde_json::from_str(deltas[1]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(streamed_args, args);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    }
}

#[tokio::test]
async fn a_strict_function_under_auto_is_a_valid_call_once_the_answer_opens_as_one() {
    let s = tool_server().await;
    let model = wick::loader::ModelSource::parse(tiny_long_model().to_str().unwrap()).unwrap();
    let tok = model.load(wick::arch::linear::WeightFormat::Native, &candle_core::Device::Cpu).unwrap().tokenizer;
    let open = tok.encode("<", false).unwrap()[0];
    let mut strict = tools();
    strict[0]["function"]["strict"] = json!(true);
    // The first token is pushed to '<', which only a call may open with.
    let mut req = ask(json!({"tool_choice": "auto", "tools": strict, "parallel_tool_calls": false}));
    req["logit_bias"][open.to_string()] = json!(100);
    let (status, body) = s.chat(req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    for call in body["choices"][0]["message"]["tool_calls"].as_array().unwrap() {
        check_call(call);
    }
}

#[tokio::test]
async fn tool_history_reaches_the_template() {
    let s = tool_server().await;
    let question = json!({"role": "user", "content": "lights please"});
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "set_light", "arguments": "{\"room\": \"hall\", \"level\": 3}"}});
    let history = json!([question, {"role": "assistant", "content": null, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "done"}]);
    let (status, with) = s.chat(merged(ask(json!({"tool_choice": "none"})), &json!({"messages": history}))).await;
    assert_eq!(status, 200, "{with}");
    let (_, without) = s.chat(ask(json!({"tool_choice": "none"}))).await;
    // The call and its result are in the prompt (a tiny vocabulary spells them out byte by byte).
    let grown = with["usage"]["prompt_tokens"].as_u64().unwrap() - without["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(grown > 60, "{grown}");
}

#[tokio::test]
async fn bad_tool_requests_are_refused_by_name() {
    let s = tool_server().await;
    let refused = |req: Value, param: &'static str| {
        let s = &s;
        async move {
            let (status, body) = s.chat(req).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["param"], param, "{body}");
        }
    };
    refused(ask(json!({"tool_choice": "sometimes"})), "tool_choice").await;
    refused(
        ask(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}})),
        "tool_choice.function.name",
    )
    .await;
    refused(merged(greedy("x", 5), &json!({"tool_choice": "required"})), "tool_choice").await;
    refused(merged(greedy("x", 5), &json!({"parallel_tool_calls": true})), "parallel_tool_calls").await;
    refused(ask(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})), "tools[0].type").await;
    refused(ask(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})), "tools[0].function.name").await;
    refused(
        ask(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}], "tool_choice": "required"})),
        "tools",
    )
    .await;
    let message = |m: Value| merged(greedy("x", 5), &json!({"messages": [m]}));
    refused(message(json!({"role": "user", "content": "x", "tool_calls": []})), "messages[0].tool_calls").await;
    refused(message(json!({"role": "tool", "content": "x"})), "messages[0].tool_call_id").await;
    let bad_arguments = json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}});
    refused(
        message(json!({"role": "assistant", "content": null, "tool_calls": [bad_arguments]})),
        "messages[0].tool_calls[0].function.arguments",
    )
    .await;
    let with_format = json!({"tool_choice": "auto", "response_format": {"type": "json_object"}});
    refused(ask(with_format), "response_format").await;

    // The tiny model's own template shows no tools: `auto` cannot work, a forced call still can.
    let plain = TestServer::start(vec![spec("tiny", &tiny_long_model(), Limits::default())], &[]).await;
    let (status, body) = plain.chat(ask(json!({"tool_choice": "auto"}))).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("tools")), "{body}");
    let (status, body) = plain.chat(ask(json!({"tool_choice": "required", "parallel_tool_calls": false}))).await;
    assert_eq!(status, 200, "{body}");
    check_call(&body["choices"][0]["message"]["tool_calls"][0]);
}
