//! `POST /v1/responses` over HTTP on the tiny random-weight model: the same engine and chat template
//! as chat's (the same prompt tokens and greedy text for the same conversation), in the Responses
//! API's shape, plain and streamed (typed events, numbered in order, that add up to the plain body);
//! `max_output_tokens` cut as `incomplete`; `text.format` and forced calls as grammars; a call's
//! result rendered as chat renders a tool message; and every refusal naming its field.

mod common;

use common::*;
use serde_json::{json, Value};
use wick::deploy::DeploymentRequest;
use wick::engine::scheduler::Limits;

/// A greedy request that runs to its limit (the tiny model's answers are noise).
fn ask(input: Value, max_output_tokens: u32) -> Value {
    json!({"model": "tiny", "input": input, "temperature": 0, "max_output_tokens": max_output_tokens, "ignore_eos": true})
}

async fn respond(s: &TestServer, body: &Value) -> (u16, Value) {
    let resp = s.post("/v1/responses").json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// A streamed request's events, each checked to be named (`event:`) by its type.
async fn respond_stream(s: &TestServer, body: &Value) -> Vec<Value> {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let resp = s.post("/v1/responses").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut name, mut data) = (None, None);
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n);
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(d);
            }
        }
        let event: Value = serde_json::from_str(data.expect("a data line")).unwrap();
        assert_eq!(Some(event["type"].as_str().unwrap()), name, "{block}");
        events.push(event);
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The text of every `output_text` of every message, as the clients' `output_text` joins it.
fn output_text(response: &Value) -> String {
    let mut text = String::new();
    for item in response["output"].as_array().unwrap().iter().filter(|i| i["type"] == "message") {
        for part in item["content"].as_array().unwrap() {
            text.push_str(part["text"].as_str().unwrap());
        }
    }
    text
}

#[tokio::test]
async fn plain_answer_is_chats_answer_in_the_responses_shape() {
    let s = TestServer::tiny().await;
    let mut req = ask(json!("hello world"), 6);
    req["metadata"] = json!({"run": "7"});
    let (status, body) = respond(&s, &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "response");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"), "{body}");
    assert_eq!(body["model"], "tiny");
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{body}");
    let message = &output[0];
    assert_eq!((message["type"].as_str(), message["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(message["id"].as_str().unwrap().starts_with("msg_"), "{message}");
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["annotations"], json!([]));
    let u = &body["usage"];
    assert_eq!(u["output_tokens"], 6);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), u["input_tokens"].as_u64().unwrap() + 6);
    assert!(u["input_tokens_details"]["cached_tokens"].is_u64() && u["output_tokens_details"]["reasoning_tokens"] == 0);
    // The request's settings come back, as OpenAI echoes them.
    assert_eq!((body["temperature"].as_f64(), body["top_p"].as_f64()), (Some(0.0), Some(1.0)));
    assert_eq!(body["max_output_tokens"], 6);
    assert_eq!(body["metadata"], json!({"run": "7"}));
    assert_eq!((body["tools"].clone(), body["tool_choice"].clone()), (json!([]), json!("auto")));
    assert_eq!(body["text"], json!({"format": {"type": "text"}}));
    assert_eq!((body["store"].as_bool(), body["parallel_tool_calls"].as_bool()), (Some(false), Some(true)));

    // The same conversation on chat: the same prompt, the same greedy answer.
    let chat = merged(greedy("hello world", 6), &json!({"logit_bias": {}, "ignore_eos": true}));
    let (_, chat) = s.chat(chat).await;
    assert_eq!(u["input_tokens"], chat["usage"]["prompt_tokens"]);
    assert_eq!(output_text(&body), chat["choices"][0]["message"]["content"].as_str().unwrap());

    // Accounted as every request is: the deployment's usage and the request metrics.
    let usage = s.state.deployments.get("tiny").unwrap().usage.snapshot(std::time::Duration::ZERO);
    assert_eq!((usage.requests, usage.completion_tokens), (2, 12));
    let metrics = s.client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    let line = "wick_http_requests_total{method=\"POST\",route=\"/v1/responses\",status=\"200\"} 1";
    assert!(metrics.lines().any(|l| l == line), "missing `{line}` in:\n{metrics}");
}

#[tokio::test]
async fn the_token_limit_makes_an_incomplete_response() {
    let s = TestServer::tiny().await;
    let (status, body) = respond(&s, &ask(json!("go on"), 5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(body["output"][0]["status"], "incomplete");
    assert_eq!(body["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn the_stream_is_typed_numbered_events_that_add_up_to_the_body() {
    let s = TestServer::tiny().await;
    let req = ask(json!("stream me"), 12);
    let (_, plain) = respond(&s, &req).await;
    let events = respond_stream(&s, &req).await;
    let numbers: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    let kinds = types(&events);
    let deltas = kinds.iter().filter(|k| **k == "response.output_text.delta").count();
    assert!(deltas >= 1, "{kinds:?}");
    let mut expected =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]);
    assert_eq!(kinds, expected);

    let created = &events[0]["response"];
    assert_eq!((created["status"].as_str(), created["output"].clone()), (Some("in_progress"), json!([])));
    assert!(created["usage"].is_null());
    let id = created["id"].as_str().unwrap();
    let item_id = events[2]["item"]["id"].as_str().unwrap();
    assert_eq!(events[2]["item"]["status"], "in_progress");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .inspect(|e| assert_eq!((e["item_id"].as_str(), e["output_index"].as_u64()), (Some(item_id), Some(0))))
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done = &events[events.len() - 4];
    assert_eq!(done["text"].as_str().unwrap(), text);
    assert_eq!(events[events.len() - 3]["part"]["text"].as_str().unwrap(), text);
    assert_eq!(events[events.len() - 2]["item"]["status"], "incomplete");
    let last = &events[events.len() - 1]["response"];
    assert_eq!((last["id"].as_str(), last["status"].as_str()), (Some(id), Some("incomplete")));
    assert_eq!(output_text(last), text);
    assert_eq!(text, output_text(&plain));
    for count in ["input_tokens", "output_tokens", "total_tokens"] {
        assert_eq!(last["usage"][count], plain["usage"][count]);
    }
}

#[tokio::test]
async fn instructions_and_messages_render_as_chats_messages() {
    let s = TestServer::tiny().await;
    let input = json!([
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say "}, {"type": "input_text", "text": "hi."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Salut.", "annotations": []}]},
        {"role": "user", "content": "Again."},
    ]);
    let (status, body) = respond(&s, &merged(ask(input, 4), &json!({"instructions": "Be brief."}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instructions"], "Be brief.");
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Salut."},
        {"role": "user", "content": "Again."},
    ]);
    let (_, chat) =
        s.chat(merged(greedy("x", 4), &json!({"messages": messages, "logit_bias": {}, "ignore_eos": true}))).await;
    assert_eq!(body["usage"]["input_tokens"], chat["usage"]["prompt_tokens"]);
    assert_eq!(output_text(&body), chat["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test]
async fn a_json_schema_format_gives_json_valid_for_it() {
    let s = TestServer::tiny().await;
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["answer", "count"],
        "additionalProperties": false,
    });
    let format = json!({"type": "json_schema", "name": "verdict", "schema": schema, "strict": true});
    let req = merged(ask(json!("is it so?"), 60), &json!({"text": {"format": format}}));
    let (status, body) = respond(&s, &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["text"]["format"], format);
    let text = output_text(&body);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert!(["yes", "no"].contains(&v["answer"].as_str().unwrap()), "{v}");
    assert!((0..=9).contains(&v["count"].as_i64().unwrap()), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let events = respond_stream(&s, &req).await;
    assert_eq!(output_text(&events.last().unwrap()["response"]), text);

    // Any object: once closed it ends the answer; until then the token limit may cut it.
    let format = json!({"text": {"format": {"type": "json_object"}}});
    let (status, body) = respond(&s, &merged(ask(json!("x"), 40), &format)).await;
    assert_eq!(status, 200, "{body}");
    let text = output_text(&body);
    match body["status"].as_str().unwrap() {
        "completed" => assert!(serde_json::from_str::<Value>(&text).unwrap().is_object(), "{text}"),
        _ => assert!(text.starts_with('{'), "{text}"),
    }
}

/// The tiny model (its 4,096-token variant: tools take room) with Wick's tool-capable ChatML template.
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

fn light_tool() -> Value {
    json!({"type": "function", "name": "set_light", "description": "Switch a light",
           "parameters": {"type": "object", "properties": {"room": {"enum": ["hall", "kitchen"]},
                          "level": {"type": "integer", "minimum": 0, "maximum": 9}},
                          "required": ["room", "level"], "additionalProperties": false}})
}

#[tokio::test]
async fn a_forced_call_is_a_function_call_item_plain_and_streamed() {
    let s = tool_server().await;
    for choice in [json!("required"), json!({"type": "function", "name": "set_light"})] {
        let req = merged(
            ask(json!("lights please"), 200),
            &json!({"tools": [light_tool()], "tool_choice": choice, "parallel_tool_calls": false}),
        );
        let (status, body) = respond(&s, &req).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "completed", "{body}");
        let output = body["output"].as_array().unwrap();
        assert_eq!(output.len(), 1, "{body}");
        let call = &output[0];
        assert_eq!((call["type"].as_str(), call["status"].as_str()), (Some("function_call"), Some("completed")));
        assert!(
            call["id"].as_str().unwrap().starts_with("fc_") && call["call_id"].as_str().unwrap().starts_with("call_")
        );
        assert_eq!(call["name"], "set_light");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(["hall", "kitchen"].contains(&args["room"].as_str().unwrap()), "{args}");
        assert!((0..=9).contains(&args["level"].as_i64().unwrap()), "{args}");
        assert_eq!(body["tools"][0]["strict"], true, "the Responses API's default");
        assert_eq!(body["tool_choice"], choice);

        let events = respond_stream(&s, &req).await;
        let kinds = types(&events);
        assert_eq!(
            kinds[2..],
            [
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ],
            "{events:?}"
        );
        assert_eq!(
            (events[2]["item"]["arguments"].as_str(), events[2]["item"]["name"].as_str()),
            (Some(""), Some("set_light"))
        );
        let arguments = events[4]["arguments"].as_str().unwrap();
        assert_eq!(events[3]["delta"].as_str(), Some(arguments));
        assert_eq!(serde_json::from_str::<Value>(arguments).unwrap(), args);
        assert_eq!(events[5]["item"]["arguments"].as_str(), Some(arguments));
        assert_eq!(events.last().unwrap()["response"]["output"][0]["arguments"].as_str(), Some(arguments));
    }
}

#[tokio::test]
async fn a_calls_result_renders_as_chats_tool_message() {
    let s = tool_server().await;
    let arguments = "{\"room\": \"hall\", \"level\": 3}";
    let input = json!([
        {"role": "user", "content": "lights please"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "set_light", "arguments": arguments, "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
    ]);
    let req = merged(ask(input, 4), &json!({"tools": [light_tool()], "tool_choice": "none"}));
    let (status, body) = respond(&s, &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"][0]["type"], "message");
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "set_light", "arguments": arguments}});
    let messages = json!([{"role": "user", "content": "lights please"},
                          {"role": "assistant", "content": null, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "done"}]);
    let mut tool = light_tool();
    let function = json!({"name": tool["name"].take(), "description": tool["description"].take(), "parameters": tool["parameters"].take(), "strict": true});
    let chat = merged(
        greedy("x", 4),
        &json!({"messages": messages, "tools": [{"type": "function", "function": function}], "tool_choice": "none", "logit_bias": {}, "ignore_eos": true}),
    );
    let (status, chat) = s.chat(chat).await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(body["usage"]["input_tokens"], chat["usage"]["prompt_tokens"]);
    let (_, without) = respond(&s, &merged(req, &json!({"input": "lights please"}))).await;
    let grown = body["usage"]["input_tokens"].as_u64().unwrap() - without["usage"]["input_tokens"].as_u64().unwrap();
    assert!(grown > 60, "the call and its result are in the prompt: {grown}");
}

#[tokio::test]
async fn what_cannot_be_served_is_refused_by_name() {
    let s = TestServer::tiny().await;
    let base = ask(json!("x"), 4);
    let refused = |extra: Value, param: &'static str| {
        let (s, body) = (&s, merged(base.clone(), &extra));
        async move {
            let (status, body) = respond(s, &body).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            assert_eq!(body["error"]["param"], param, "{body}");
            body["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let message = refused(json!({"no_such_field": 1}), "no_such_field").await;
    assert_eq!(message, "Unrecognized request argument supplied: no_such_field");
    let message = refused(json!({"input": [{"role": "user", "content": "x", "nme": 1}]}), "input[0].nme").await;
    assert_eq!(message, "Unrecognized request argument supplied: input[0].nme");
    let message = refused(json!({"store": true}), "store").await;
    assert!(message.contains("stores no responses"), "{message}");
    refused(json!({"previous_response_id": "resp_1"}), "previous_response_id").await;
    refused(json!({"conversation": "conv_1"}), "conversation").await;
    refused(json!({"background": true}), "background").await;
    refused(json!({"include": ["message.output_text.logprobs"]}), "include").await;
    refused(json!({"reasoning": {"effort": "high"}}), "reasoning").await;
    refused(json!({"truncation": "auto"}), "truncation").await;
    refused(json!({"text": {"verbosity": "low"}}), "text.verbosity").await;
    refused(json!({"text": {"format": {"type": "json_schema", "name": "a"}}}), "text.format.schema").await;
    refused(json!({"text": {"format": {"type": "json_schema", "schema": {}}}}), "text.format.name").await;
    refused(json!({"text": {"format": {"type": "text", "name": "a"}}}), "text.format.name").await;
    let unenforceable =
        json!({"type": "json_schema", "name": "a", "schema": {"type": "object", "properties": {"a": {"not": {}}}}});
    let message = refused(json!({"text": {"format": unenforceable}}), "text.format.schema").await;
    assert!(message.contains("not"), "{message}");
    let image = json!([{"role": "user", "content": [{"type": "input_text", "text": "x"}, {"type": "input_image", "image_url": "https://x"}]}]);
    refused(json!({"input": image}), "input[0].content[1].type").await;
    refused(json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "input[0].type").await;
    refused(json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}), "input[0].call_id")
        .await;
    refused(json!({"input": {"probe": 1}}), "input").await;
    refused(json!({"tools": [{"type": "web_search"}]}), "tools[0].type").await;
    refused(
        json!({"tools": [merged(light_tool(), &json!({"name": "a b"}))], "tool_choice": "required"}),
        "tools[0].name",
    )
    .await;
    refused(json!({"tools": [light_tool()], "tool_choice": {"type": "function", "name": "nope"}}), "tool_choice.name")
        .await;
    refused(json!({"tools": [light_tool()], "tool_choice": {"type": "file_search"}}), "tool_choice.type").await;
    refused(json!({"tool_choice": "required"}), "tool_choice").await;
    let both = json!({"tools": [light_tool()], "tool_choice": "required", "text": {"format": {"type": "json_object"}}});
    refused(both, "text.format").await;
    refused(json!({"temperature": 5}), "temperature").await;
    refused(json!({"max_output_tokens": 0}), "max_output_tokens").await;
    refused(json!({"stream_options": {"include_obfuscation": false}}), "stream_options").await;
    refused(json!({"metadata": {"k": 1}}), "metadata.k").await;
    let (status, body) = respond(&s, &json!({"model": "tiny"})).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("input")), "{body}");
    let (status, body) = respond(&s, &merged(base.clone(), &json!({"input": "x".repeat(300)}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{body}");
    assert_eq!(body["error"]["param"], "input");

    // What asks for nothing Wick lacks is accepted.
    let harmless = json!({"store": false, "background": false, "include": [], "truncation": "disabled",
                          "reasoning": {"effort": null}, "service_tier": "auto", "max_tool_calls": 3,
                          "tool_choice": "auto", "parallel_tool_calls": false, "user": "u", "prompt_cache_key": "k"});
    let (status, body) = respond(&s, &merged(base.clone(), &harmless)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["user"].as_str(), body["max_tool_calls"].as_u64()), (Some("u"), Some(3)));
}
