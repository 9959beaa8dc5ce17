//! The README's management API walkthrough, run as written (on a free port, with a fresh store):
//! every call must answer `code: 0`, and the chat request a completion.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn readme_management_examples_work() {
    const MODEL: &str = "smollm2-135m-instruct";
    // The walkthrough's `wick serve` serves every default deployment; --no-pull needs each pulled.
    if !common::real_model_pulled(MODEL) || !common::real_model_pulled("all-minilm-l6-v2") {
        return;
    }
    let readme = include_str!("../README.md");
    let block = readme
        .split("### Management API")
        .nth(1)
        .and_then(|s| s.split("```bash\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has a bash block under ### Management API");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let wick = env!("CARGO_BIN_EXE_wick");
    let script = block
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("wick serve", &format!("{wick} serve --port {port} --no-pull"));
    let data = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .args(["-c", &format!("{script}\nkill %1; wait")])
        .env("WICK_DATA_DIR", data.path())
        .env("WICK_LOG", "warn")
        .env_remove("WICK_API_KEY")
        .env_remove("WICK_ADMIN_KEY")
        .env_remove("WICK_MODEL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&stdout).into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.len(), 7, "one answer per curl call:\n{stdout}");
    for a in &answers {
        let ok = a["code"] == 0 || a["object"] == "chat.completion";
        assert!(ok, "{a}");
    }
    assert_eq!(answers[1]["model"], "team/chat");
    assert_eq!(answers[3]["stats"]["Running"], 1);
    assert_eq!(answers[5]["instance"]["replicas"], 2);
}
