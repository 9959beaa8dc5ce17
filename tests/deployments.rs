//! The deployment lifecycle over HTTP, with idle timeouts of a second or two: one load for a burst of
//! cold requests, no unload while a stream runs, unload after the timeout, a failed load answered 503
//! and retried, scaling under load without a failed request, and memory given back.

mod common;

use common::process::WickProcess;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wick::deploy::{DeploymentRequest, IdleTimeoutValue, Phase};
use wick::engine::scheduler::Limits;

fn with_idle_timeout(name: &str, path: &std::path::Path, seconds: f64) -> wick::deploy::DeploymentSpec {
    spec_from(
        DeploymentRequest {
            model: path.to_str().unwrap().into(),
            name: Some(name.into()),
            idle_timeout_s: Some(IdleTimeoutValue::Seconds(seconds)),
            ..Default::default()
        },
        Limits::default(),
    )
}

/// A counter or histogram count from /metrics, e.g. `wick_load_duration_seconds_count{deployment="tiny"}`.
async fn metric(s: &TestServer, series: &str) -> f64 {
    let text = s.client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

async fn status(s: &TestServer, model: &str) -> String {
    let card: Value = s.get(&format!("/v1/models/{model}")).send().await.unwrap().json().await.unwrap();
    card["status"].as_str().unwrap().to_string()
}

async fn wait_for_status(s: &TestServer, model: &str, wanted: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while status(s, model).await != wanted {
        assert!(Instant::now() < deadline, "{model} did not reach {wanted} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn twenty_concurrent_requests_to_a_cold_deployment_cause_one_load_and_all_succeed() {
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &[]).await;
    assert_eq!(status(&s, "tiny").await, "Standby");
    let s = &s;
    let burst = (0..20).map(|i| async move { s.chat(greedy(&format!("cold {i}"), 4)).await });
    let results = futures::future::join_all(burst).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 4);
    }
    assert_eq!(metric(s, "wick_load_duration_seconds_count{deployment=\"tiny\"}").await, 1.0);
    assert_eq!(status(s, "tiny").await, "Running");
}

/// The real model, so that generation itself (not a slow reader) outlasts the timeout several times.
#[tokio::test]
async fn a_running_stream_holds_off_the_unload_which_comes_after_the_timeout() {
    const MODEL: &str = "smollm2-135m-instruct";
    if !real_model_pulled(MODEL) {
        return;
    }
    let path = wick::catalog::Catalog::builtin().get(MODEL).unwrap().local_path();
    let s = TestServer::start(vec![with_idle_timeout("real", &path, 1.0)], &[]).await;
    let req = json!({
        "model": "real", "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 400, "temperature": 0, "logit_bias": {"0": -100, "2": -100}, "stream": true,
    });
    let mut response = s.post("/v1/chat/completions").json(&req).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let deployment = s.state.deployments.get("real").unwrap();
    let started = Instant::now();
    let mut last_check = Instant::now();
    let mut generating_checks = 0;
    while response.chunk().await.unwrap().is_some() {
        if last_check.elapsed() > Duration::from_millis(200) {
            last_check = Instant::now();
            assert_eq!(status(&s, "real").await, "Running", "after {:?}", started.elapsed());
            // The engine is still decoding: this is live generation, not a buffered answer.
            generating_checks += usize::from(deployment.view().running > 0);
        }
    }
    let finished = Instant::now();
    let streamed = finished - started;
    assert!(streamed > Duration::from_secs(2), "the stream ran only {streamed:?}: too short to prove anything");
    assert!(generating_checks >= 5, "only {generating_checks} checks saw the engine decoding");
    wait_for_status(&s, "real", "Standby", Duration::from_secs(5)).await;
    assert!(finished.elapsed() >= Duration::from_millis(900), "unloaded {:?} after the stream", finished.elapsed());
    assert_eq!(metric(&s, "wick_unload_duration_seconds_count{deployment=\"real\"}").await, 1.0);
}

#[tokio::test]
async fn an_idle_deployment_unloads_then_loads_again_on_the_next_request() {
    let s = TestServer::start(vec![with_idle_timeout("tiny", &tiny_model(), 1.0)], &[]).await;
    let (code, first) = s.chat(greedy("hello", 5)).await;
    assert_eq!(code, 200);
    assert_eq!(status(&s, "tiny").await, "Running");
    let deployment = s.state.deployments.get("tiny").unwrap();
    let loaded = Instant::now();
    wait_for_status(&s, "tiny", "Standby", Duration::from_secs(5)).await;
    assert!(loaded.elapsed() >= Duration::from_millis(900));
    assert!(deployment.engine_stats().is_empty(), "no replica is left after the unload");
    let (code, again) = s.chat(greedy("hello", 5)).await;
    assert_eq!(code, 200);
    assert_eq!(first["choices"], again["choices"], "the reloaded model answers the same");
    assert_eq!(metric(&s, "wick_load_duration_seconds_count{deployment=\"tiny\"}").await, 2.0);
}

#[tokio::test]
async fn a_failed_load_answers_503_to_every_waiter_and_the_next_request_retries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, b"not a gguf file").unwrap();
    let s = TestServer::start(vec![spec("broken", &path, Limits::default())], &[]).await;
    let s = &s;
    let mut req = greedy("hello", 3);
    req["model"] = json!("broken");
    let req = &req;
    let results = futures::future::join_all((0..5).map(|_| async move {
        let r = s.post("/v1/chat/completions").json(req).send().await.unwrap();
        (r.status().as_u16(), r.headers().contains_key("retry-after"), r.json::<Value>().await.unwrap())
    }))
    .await;
    for (code, retry_after, body) in &results {
        assert_eq!(*code, 503, "{body}");
        assert!(retry_after);
        assert_eq!(body["error"]["code"], "model_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains("broken"), "{body}");
    }
    let d = s.state.deployments.get("broken").unwrap();
    assert_eq!(d.phase(), Phase::Standby);
    assert!(d.view().last_error.is_some());
    // The file is fixed: the next request loads it.
    write_tiny_gguf(&path, 1, CONTEXT);
    let (code, body) = s.chat(req.clone()).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn scaling_one_to_three_to_one_under_steady_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &[]).await;
    assert_eq!(s.chat(greedy("warm", 1)).await.0, 200);
    let deployment = s.state.deployments.get("tiny").unwrap();
    let (stop, completed) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (s, stop, completed) = (&s, &stop, &completed);
    let clients = (0..4).map(|c| async move {
        let mut answers = Vec::new();
        let mut i = 0;
        while !stop.load(SeqCst) {
            let mut req = greedy(&format!("client {c} request {i}"), 8);
            req["stream"] = json!(i % 2 == 0);
            let r = s.post("/v1/chat/completions").json(&req).send().await.unwrap();
            let code = r.status().as_u16();
            let body = r.text().await.unwrap();
            answers.push((code, body.contains("\"error\"")));
            completed.fetch_add(1, SeqCst);
            i += 1;
        }
        answers
    });
    let scaler = async {
        // Each phase lasts a number of answered requests, not a time, so a slow machine tests the same.
        let answered = |more: usize| async move {
            let target = completed.load(SeqCst) + more;
            while completed.load(SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let ready = |n: usize| {
            let deployment = deployment.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while deployment.view().ready_replicas != n {
                    assert!(Instant::now() < deadline, "never reached {n} ready replicas");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        answered(10).await;
        s.state.deployments.scale(&deployment, 3).unwrap();
        ready(3).await;
        answered(30).await;
        // Every replica must take a share. A fresh replica's first step can be slow on a loaded
        // machine, and then the least-loaded choice rightly sends the next requests elsewhere, so
        // the load goes on until each has finished a step (or the deadline says it never will).
        let steps = || deployment.engine_stats().iter().map(|e| e.steps.load(SeqCst)).collect::<Vec<_>>();
        let deadline = Instant::now() + Duration::from_secs(30);
        while steps().contains(&0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let busy = steps();
        s.state.deployments.scale(&deployment, 1).unwrap();
        ready(1).await;
        answered(10).await;
        stop.store(true, SeqCst);
        busy
    };
    let (answers, busy) = tokio::join!(futures::future::join_all(clients), scaler);
    let answers: Vec<(u16, bool)> = answers.into_iter().flatten().collect();
    assert!(answers.iter().all(|&(code, error)| code == 200 && !error), "{answers:?}");
    assert!(busy.len() == 3 && !busy.contains(&0), "requests spread over the three replicas: steps {busy:?}");
    assert_eq!(deployment.view().desired_replicas, 1);
}

#[tokio::test]
async fn requests_one_at_a_time_take_turns_over_equally_idle_replicas() {
    use std::sync::atomic::Ordering::SeqCst;
    let s = TestServer::start(vec![spec("tiny", &tiny_model(), Limits::default())], &[]).await;
    assert_eq!(s.chat(greedy("warm", 1)).await.0, 200);
    let deployment = s.state.deployments.get("tiny").unwrap();
    s.state.deployments.scale(&deployment, 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment.view().ready_replicas != 3 {
        assert!(Instant::now() < deadline, "never reached 3 ready replicas");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<usize> = deployment.engine_stats().iter().map(|e| e.steps.load(SeqCst)).collect();
    // Each request ends before the next starts, so every choice is among replicas with nothing in
    // flight: a tie that must not always go to the same one.
    for i in 0..6 {
        assert_eq!(s.chat(greedy(&format!("one at a time {i}"), 2)).await.0, 200);
    }
    let after: Vec<usize> = deployment.engine_stats().iter().map(|e| e.steps.load(SeqCst)).collect();
    let served = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    assert_eq!(served, 3, "steps per replica before {before:?}, after {after:?}");
}

#[test]
fn an_unload_gives_the_memory_back() {
    const MODEL: &str = "smollm2-135m-instruct";
    if !real_model_pulled(MODEL) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = WickProcess::start(&["--model", MODEL, "--idle-timeout", "2s", "--no-pull"], data.path());
    let client = reqwest::blocking::Client::new();
    let model_status = || -> String {
        let card: Value = client.get(format!("{}/v1/models/{MODEL}", server.url)).send().unwrap().json().unwrap();
        card["status"].as_str().unwrap().to_string()
    };
    let before = server.rss_mib();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8});
    let r = client.post(format!("{}/v1/chat/completions", server.url)).json(&body).send().unwrap();
    assert_eq!(r.status(), 200);
    let loaded = server.rss_mib();
    let deadline = Instant::now() + Duration::from_secs(20);
    while model_status() != "Standby" {
        assert!(Instant::now() < deadline, "the model did not unload");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = server.rss_mib();
    eprintln!("RSS: {before:.0} MiB before the load, {loaded:.0} MiB loaded, {after:.0} MiB after the unload");
    let held = loaded - before;
    assert!(held > 50.0, "loading took only {held:.0} MiB");
    assert!(after - before < held * 0.25, "the unload kept {:.0} of {held:.0} MiB", after - before);
}
