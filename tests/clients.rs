//! The official OpenAI clients (Python and Node) against a `wick serve` process with the real default
//! model and an API key. tests/run.sh installs the clients; without them these tests fail, as they
//! would for a user.

mod common;

use common::process::WickProcess;
use std::process::Command;

const MODEL: &str = "smollm2-135m-instruct";
const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
const KEY: &str = "sk-client-test-0123456789";

fn start_server(data_dir: &std::path::Path) -> Option<WickProcess> {
    // The server serves the default deployments, and --no-pull needs each of them pulled.
    if !common::real_model_pulled(MODEL) || !common::real_model_pulled(EMBEDDING_MODEL) {
        return None;
    }
    Some(WickProcess::start(&["--api-key", KEY, "--no-pull"], data_dir))
}

fn run_client(program: &str, args: &[&str]) {
    let data_dir = tempfile::tempdir().unwrap();
    let Some(server) = start_server(data_dir.path()) else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let status = Command::new(program)
        .args(args)
        .current_dir(&dir)
        .env("WICK_BASE_URL", format!("{}/v1", server.url))
        .env("WICK_API_KEY", KEY)
        .env("WICK_MODEL", MODEL)
        .env("WICK_EMBEDDING_MODEL", EMBEDDING_MODEL)
        .status()
        .unwrap_or_else(|e| panic!("run {program}: {e} (tests/run.sh installs the clients)"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

#[test]
fn official_python_client() {
    run_client("python3", &["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_openai_python.py"]);
}

#[test]
fn official_node_client() {
    run_client("node", &["--test", "openai.test.mjs"]);
}
