//! The management API (/sdk/v1/instance...), management and scoped keys, /metrics, and deployments
//! that survive a restart.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wick::auth::{KeySpec, Keys, Role, Scope};
use wick::deploy::store::Store;
use wick::deploy::{Defaults, Deployments};
use wick::engine::scheduler::Limits;
use wick::metrics::Metrics;

const ADMIN: &str = "sk-admin-0123456789";
const USER: &str = "sk-user-0123456789";
const TEAM_ADMIN: &str = "sk-team-a-admin-0123456789";
const CHAT_ONLY: &str = "sk-chat-only-0123456789";

fn keys() -> Keys {
    Keys::new(vec![
        KeySpec::new(ADMIN, Role::Admin),
        KeySpec::new(USER, Role::Inference),
        KeySpec::new(TEAM_ADMIN, Role::Admin).scoped(Scope::only(["team-a/*"])),
        KeySpec::new(CHAT_ONLY, Role::Inference).scoped(Scope::only(["chat"])),
    ])
}

/// A server with a store in `data_dir` and the config deployment `chat` (the tiny model).
async fn server(data_dir: &Path) -> TestServer {
    let deployments = Deployments::open(
        vec![spec("chat", &tiny_model(), Limits::default())],
        Some(Store::open(data_dir).unwrap()),
        Defaults::default(),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    TestServer::serve(deployments, keys()).await
}

async fn call(s: &TestServer, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = s.client.request(method, format!("{}{path}", s.url));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(s, method, path, Some(ADMIN), body).await;
    assert_eq!(status, 200, "{path}: {v}");
    assert_eq!((v["code"].as_i64(), v["msg"].as_str()), (Some(0), Some("")), "{v}");
    v
}

fn create_body(meta_key: &str, name: &str) -> Value {
    json!({"model": tiny_model().to_str().unwrap(), "custom_meta_key": meta_key, "name": name})
}

async fn chat(s: &TestServer, key: &str, model: &str) -> (u16, Value) {
    let mut body = greedy("hello", 3);
    body["model"] = json!(model);
    call(s, Method::POST, "/v1/chat/completions", Some(key), Some(body)).await
}

#[tokio::test]
async fn create_get_use_scale_and_delete_a_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let mut body = create_body("k1", "team-a/chat");
    body["replicas"] = json!(1);
    body["idle_timeout_s"] = json!(30);
    body["remark"] = json!("first one");
    body["default_response_format"] = json!("wav");
    let created = admin(&s, Method::POST, "/sdk/v1/instance", Some(body)).await;
    let i = &created["instance"];
    let id = created["instanceID"].as_str().unwrap().to_string();
    assert_eq!(i["instanceID"], id.as_str());
    assert_eq!(i["status"], "Standby");
    assert_eq!((i["metaKey"].as_str(), i["name"].as_str()), (Some("k1"), Some("team-a/chat")));
    assert_eq!((i["remark"].as_str(), i["replicas"].as_u64()), (Some("first one"), Some(1)));
    assert_eq!(i["model"], tiny_model().to_str().unwrap());
    assert_eq!(i["hardware"]["device"], "cpu");
    assert_eq!(i["idleTimeoutS"], 30.0);
    assert_eq!(i["defaultResponseFormat"], "wav");
    assert!(i["createTime"]["seconds"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(i["usage"]["requests"], 0);
    assert_eq!(i["cost"]["total"], 0.0);

    let by_id = admin(&s, Method::GET, &format!("/sdk/v1/instance?request_id={id}"), None).await;
    let by_key = admin(&s, Method::GET, "/sdk/v1/instance?meta_key=k1", None).await;
    assert_eq!(by_id["instance"]["instanceID"], by_key["instance"]["instanceID"]);

    let (code, answer) = chat(&s, USER, "team-a/chat").await;
    assert_eq!(code, 200, "{answer}");
    let used = admin(&s, Method::GET, "/sdk/v1/instance?meta_key=k1", None).await;
    assert_eq!(used["instance"]["status"], "Running");
    assert_eq!(used["instance"]["usage"]["requests"], 1);
    assert_eq!(used["instance"]["usage"]["completionTokens"], 3);
    assert_eq!(used["instance"]["usage"]["promptTokens"], answer["usage"]["prompt_tokens"]);

    let scaled =
        admin(&s, Method::POST, "/sdk/v1/instance/scale", Some(json!({"meta_key": "k1", "replicas": 2}))).await;
    assert_eq!(scaled["instance"]["replicas"], 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = admin(&s, Method::GET, "/sdk/v1/instance?meta_key=k1", None).await;
        if v["instance"]["readyReplicas"] == 2 {
            assert_eq!(v["instance"]["hardware"]["replicaDevices"], json!(["cpu", "cpu"]));
            break;
        }
        assert!(Instant::now() < deadline, "never got 2 ready replicas: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = admin(&s, Method::GET, "/sdk/v1/instance/stats", None).await;
    assert_eq!(stats["stats"], json!({"Running": 1, "Standby": 1}), "statuses with none are left out");

    let deleted = admin(&s, Method::DELETE, "/sdk/v1/instance?meta_key=k1", None).await;
    assert_eq!(deleted["instanceID"], id.as_str());
    let (code, gone) = call(&s, Method::GET, &format!("/sdk/v1/instance?request_id={id}"), Some(ADMIN), None).await;
    assert_eq!((code, gone["code"].as_i64()), (404, Some(404)), "{gone}");
    assert!(gone["msg"].as_str().unwrap().contains(&id));
    let (code, body) = chat(&s, USER, "team-a/chat").await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("model_not_found")));
}

#[tokio::test]
async fn list_paginates_newest_first_and_filters_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    for i in 0..5 {
        admin(&s, Method::POST, "/sdk/v1/instance", Some(create_body(&format!("k{i}"), &format!("m{i}")))).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["instances"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
    };
    let page1 = admin(&s, Method::GET, "/sdk/v1/instance/list?page=1&per_page=2", None).await;
    assert_eq!(names(&page1), ["m4", "m3"]);
    assert_eq!(page1["pagination"], json!({"total": 6, "numPages": 3, "page": 1, "perPage": 2}));
    let page3 = admin(&s, Method::GET, "/sdk/v1/instance/list?page=3&per_page=2", None).await;
    assert_eq!(names(&page3), ["m0", "chat"]);
    let beyond = admin(&s, Method::GET, "/sdk/v1/instance/list?page=4&per_page=2", None).await;
    assert!(names(&beyond).is_empty());
    let ascending = admin(&s, Method::GET, "/sdk/v1/instance/list?ascending=true", None).await;
    assert_eq!(names(&ascending), ["chat", "m0", "m1", "m2", "m3", "m4"]);

    assert_eq!(chat(&s, USER, "m2").await.0, 200);
    let running = admin(&s, Method::GET, "/sdk/v1/instance/list?statuses=Running", None).await;
    assert_eq!(names(&running), ["m2"]);
    assert_eq!(running["pagination"]["total"], 1);
    let both = admin(&s, Method::GET, "/sdk/v1/instance/list?statuses=running,standby&per_page=10", None).await;
    assert_eq!(both["pagination"]["total"], 6);
    let standby = admin(&s, Method::GET, "/sdk/v1/instance/list?statuses=Standby&per_page=10", None).await;
    assert_eq!(names(&standby), ["m4", "m3", "m1", "m0", "chat"]);

    for bad in ["statuses=Sleeping", "page=0", "per_page=1000", "page=x", "ascending=maybe"] {
        let (code, v) = call(&s, Method::GET, &format!("/sdk/v1/instance/list?{bad}"), Some(ADMIN), None).await;
        assert_eq!((code, v["code"].as_i64()), (400, Some(400)), "{bad}: {v}");
        assert!(!v["msg"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn management_refuses_bad_calls_with_its_own_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let refused = |code: u16, v: &Value| {
        assert_eq!(v["code"].as_u64(), Some(code as u64), "{v}");
        assert!(!v["msg"].as_str().unwrap().is_empty(), "{v}");
    };
    // Keys: an inference key is refused with 403, a missing or unknown key with 401.
    for (key, want) in [(Some(USER), 403), (Some(CHAT_ONLY), 403), (None, 401), (Some("sk-nobody-0123456"), 401)] {
        for path in ["/sdk/v1/instance/stats", "/sdk/v1/instance/list", "/metrics"] {
            let r = s.client.get(format!("{}{path}", s.url));
            let r = match key {
                Some(k) => r.bearer_auth(k),
                None => r,
            };
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), want, "{path} with {key:?}");
            refused(want, &resp.json().await.unwrap());
        }
    }
    // A management key is not an inference key.
    let (code, v) = chat(&s, ADMIN, "chat").await;
    assert_eq!((code, v["error"]["code"].as_str()), (403, Some("permission_denied")), "{v}");

    let post = |body: Value| call(&s, Method::POST, "/sdk/v1/instance", Some(ADMIN), Some(body));
    let (code, v) = post(json!({"model": tiny_model().to_str().unwrap()})).await;
    assert_eq!(code, 400);
    assert!(v["msg"].as_str().unwrap().contains("custom_meta_key"), "{v}");
    let (code, v) = post(json!({"custom_meta_key": "x"})).await;
    assert_eq!(code, 400);
    assert!(v["msg"].as_str().unwrap().contains("model"), "{v}");
    let (code, v) = post(json!({"model": "no-such-model", "custom_meta_key": "x"})).await;
    assert_eq!(code, 400, "{v}");
    // A file of a family Wick does not implement is refused now, not at its first request.
    let gemma = dir.path().join("gemma.gguf");
    common::write_tiny_gguf_edited(&gemma, 7, 256, |md, _| {
        md.iter_mut()
            .filter(|(k, _)| k == "general.architecture")
            .for_each(|(_, v)| *v = candle_core::quantized::gguf_file::Value::String("gemma".into()))
    });
    let (code, v) = post(json!({"model": gemma.to_str().unwrap(), "custom_meta_key": "x"})).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("`gemma` is not implemented"), "{v}");
    let (code, _) = post(json!({"model": tiny_model().to_str().unwrap(), "custom_meta_key": "x", "replicas": 0})).await;
    assert_eq!(code, 400);
    let (code, v) = post(json!({"model": tiny_model().to_str().unwrap(), "custom_meta_key": "x", "idle": 3})).await;
    assert_eq!(code, 400, "unknown fields are refused: {v}");
    let resp = s
        .client
        .post(format!("{}/sdk/v1/instance", s.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    refused(400, &resp.json().await.unwrap());

    assert_eq!(post(create_body("dup", "one")).await.0, 200);
    let (code, v) = post(create_body("dup", "two")).await;
    assert_eq!(code, 409, "{v}");
    refused(409, &v);
    assert_eq!(post(create_body("other", "one")).await.0, 409, "names are unique too");
    assert_eq!(post(create_body("other", "chat")).await.0, 409, "config names too");

    let (code, v) = call(&s, Method::GET, "/sdk/v1/instance", Some(ADMIN), None).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = call(&s, Method::DELETE, "/sdk/v1/instance?meta_key=chat", Some(ADMIN), None).await;
    assert_eq!(code, 409, "a config deployment is removed from its config: {v}");
    let scale = |body: Value| call(&s, Method::POST, "/sdk/v1/instance/scale", Some(ADMIN), Some(body));
    assert_eq!(scale(json!({"meta_key": "missing", "replicas": 2})).await.0, 404);
    assert_eq!(scale(json!({"meta_key": "dup", "replicas": 65})).await.0, 400);
    assert_eq!(scale(json!({"meta_key": "dup"})).await.0, 400);
}

#[tokio::test]
async fn scoped_keys_see_only_their_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    admin(&s, Method::POST, "/sdk/v1/instance", Some(create_body("a1", "team-a/one"))).await;
    admin(&s, Method::POST, "/sdk/v1/instance", Some(create_body("b1", "team-b/one"))).await;

    let (code, v) = call(&s, Method::GET, "/sdk/v1/instance/list", Some(TEAM_ADMIN), None).await;
    assert_eq!(code, 200);
    assert_eq!(v["pagination"]["total"], 1);
    assert_eq!(v["instances"][0]["name"], "team-a/one");
    let (_, v) = call(&s, Method::GET, "/sdk/v1/instance/stats", Some(TEAM_ADMIN), None).await;
    assert_eq!(v["stats"], json!({"Standby": 1}));
    let (code, _) = call(&s, Method::GET, "/sdk/v1/instance?meta_key=b1", Some(TEAM_ADMIN), None).await;
    assert_eq!(code, 404, "out of scope looks like missing");
    let (code, _) = call(&s, Method::DELETE, "/sdk/v1/instance?meta_key=b1", Some(TEAM_ADMIN), None).await;
    assert_eq!(code, 404);
    let (code, v) =
        call(&s, Method::POST, "/sdk/v1/instance", Some(TEAM_ADMIN), Some(create_body("b2", "team-b/two"))).await;
    assert_eq!((code, v["code"].as_i64()), (403, Some(403)), "{v}");
    let (code, _) =
        call(&s, Method::POST, "/sdk/v1/instance", Some(TEAM_ADMIN), Some(create_body("a2", "team-a/two"))).await;
    assert_eq!(code, 200);

    // An inference key scoped to `chat`: other deployments do not exist for it.
    let (code, v) = call(&s, Method::GET, "/v1/models", Some(CHAT_ONLY), None).await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat"]);
    assert_eq!(chat(&s, CHAT_ONLY, "chat").await.0, 200);
    let (code, v) = chat(&s, CHAT_ONLY, "team-a/one").await;
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("model_not_found")), "{v}");
    assert_eq!(call(&s, Method::GET, "/v1/models/team-a/one", Some(CHAT_ONLY), None).await.0, 404);
    let (_, all) = call(&s, Method::GET, "/v1/models", Some(USER), None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    assert_eq!(all["data"][0]["status"], "Running");
}

#[tokio::test]
async fn deployments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (id, chat_id) = {
        let s = server(dir.path()).await;
        let mut body = create_body("keep", "kept");
        body["idle_timeout_s"] = json!("never");
        let v = admin(&s, Method::POST, "/sdk/v1/instance", Some(body)).await;
        admin(&s, Method::POST, "/sdk/v1/instance/scale", Some(json!({"meta_key": "keep", "replicas": 2}))).await;
        admin(&s, Method::POST, "/sdk/v1/instance", Some(create_body("gone", "gone"))).await;
        admin(&s, Method::DELETE, "/sdk/v1/instance?meta_key=gone", None).await;
        assert_eq!(chat(&s, USER, "kept").await.0, 200);
        s.state.deployments.save_usage().unwrap();
        let chat_id = s.state.deployments.get("chat").unwrap().id.clone();
        (v["instanceID"].as_str().unwrap().to_string(), chat_id)
    };
    let s = server(dir.path()).await;
    let v = admin(&s, Method::GET, "/sdk/v1/instance?meta_key=keep", None).await;
    let i = &v["instance"];
    assert_eq!(i["instanceID"], id.as_str());
    assert_eq!((i["name"].as_str(), i["replicas"].as_u64()), (Some("kept"), Some(2)));
    assert_eq!(i["idleTimeoutS"], Value::Null);
    assert_eq!(i["status"], "Standby", "it loads again on demand");
    assert_eq!(i["usage"]["requests"], 1);
    assert!(i["usage"]["replicaSeconds"].as_f64().unwrap() > 0.0);
    assert_eq!(call(&s, Method::GET, "/sdk/v1/instance?meta_key=gone", Some(ADMIN), None).await.0, 404);
    assert_eq!(s.state.deployments.get("chat").unwrap().id, chat_id, "a config deployment keeps its id");
    assert_eq!(chat(&s, USER, "kept").await.0, 200);
}

#[tokio::test]
async fn metrics_show_state_requests_latency_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let mut req = greedy("hello", 6);
    req["model"] = json!("chat");
    req["stream"] = json!(true);
    let resp =
        s.client.post(format!("{}/v1/chat/completions", s.url)).bearer_auth(USER).json(&req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    assert_eq!(chat(&s, USER, "nope").await.0, 404);
    let resp = s.client.get(format!("{}/metrics", s.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    for line in [
        "wick_deployment_state{deployment=\"chat\",state=\"Running\"} 1",
        "wick_deployment_state{deployment=\"chat\",state=\"Standby\"} 0",
        "wick_deployment_replicas{deployment=\"chat\"} 1",
        "wick_http_requests_total{method=\"POST\",route=\"/v1/chat/completions\",status=\"200\"} 1",
        "wick_http_requests_total{method=\"POST\",route=\"/v1/chat/completions\",status=\"404\"} 1",
        "wick_generated_tokens_total{deployment=\"chat\"} 6",
        "wick_time_to_first_token_seconds_count{deployment=\"chat\"} 1",
        "wick_load_duration_seconds_count{deployment=\"chat\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    // Gauges whose value races with the engine's last step: present is enough here.
    for series in
        ["wick_deployment_queue_depth{deployment=\"chat\"} ", "wick_deployment_running_sequences{deployment=\"chat\"} "]
    {
        assert!(text.lines().any(|l| l.starts_with(series)), "missing `{series}` in:\n{text}");
    }
    let inter_token = text
        .lines()
        .find_map(|l| l.strip_prefix("wick_inter_token_latency_seconds_count{deployment=\"chat\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(inter_token >= 4, "{inter_token} inter-token gaps for 6 tokens");
}

/// The real binary: SIGTERM saves usage on the way out, and a restart brings the API's deployments back.
#[test]
fn a_restarted_server_keeps_deployments_and_usage() {
    use common::process::WickProcess;
    let data = tempfile::tempdir().unwrap();
    let model = format!("chat={}", tiny_model().display());
    let args = ["--model", model.as_str(), "--admin-key", ADMIN, "--api-key", USER];
    let client = reqwest::blocking::Client::new();
    let get_instance = |url: &str| -> Value {
        let r = client.get(format!("{url}/sdk/v1/instance?meta_key=kept")).bearer_auth(ADMIN).send().unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["instance"].clone()
    };
    let server = WickProcess::start(&args, data.path());
    let created: Value = client
        .post(format!("{}/sdk/v1/instance", server.url))
        .bearer_auth(ADMIN)
        .json(&create_body("kept", "kept"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut req = greedy("hello", 4);
    req["model"] = json!("kept");
    let r = client.post(format!("{}/v1/chat/completions", server.url)).bearer_auth(USER).json(&req).send().unwrap();
    assert_eq!(r.status(), 200);
    server.stop();

    let server = WickProcess::start(&args, data.path());
    let i = get_instance(&server.url);
    assert_eq!(i["instanceID"], created["instanceID"]);
    assert_eq!(i["status"], "Standby");
    assert_eq!((i["usage"]["requests"].as_u64(), i["usage"]["completionTokens"].as_u64()), (Some(1), Some(4)));
    let r = client.post(format!("{}/v1/chat/completions", server.url)).bearer_auth(USER).json(&req).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_servers_replica_cap_bounds_create_and_scale() {
    let deployments = Deployments::open(
        vec![spec("chat", &tiny_model(), Limits::default())],
        None,
        Defaults { max_replicas: 2, ..Defaults::default() },
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let s = TestServer::serve(deployments, keys()).await;
    admin(&s, Method::POST, "/sdk/v1/instance/scale", Some(json!({"meta_key": "chat", "replicas": 2}))).await;
    let (status, v) =
        call(&s, Method::POST, "/sdk/v1/instance/scale", Some(ADMIN), Some(json!({"meta_key": "chat", "replicas": 3})))
            .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("between 1 and 2"), "{v}");
    let mut body = create_body("k-big", "big");
    body["replicas"] = json!(3);
    let (status, v) = call(&s, Method::POST, "/sdk/v1/instance", Some(ADMIN), Some(body)).await;
    assert_eq!(status, 400, "{v}");
}
