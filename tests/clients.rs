//! The official OpenAI clients (Python and Node) against a `wick serve` process with the real default
//! model and an API key. tests/run.sh installs the clients; without them these tests fail, as they
//! would for a user.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2-135m-instruct";
const KEY: &str = "sk-client-test-0123456789";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Option<Server> {
    let entry = wick::catalog::Catalog::builtin().get(MODEL).unwrap();
    if !entry.is_pulled() {
        if std::env::var("WICK_REQUIRE_REAL_MODEL").is_ok_and(|v| v == "1") {
            panic!("{MODEL} is not pulled: run `wick pull {MODEL}`");
        }
        eprintln!("SKIPPED: {MODEL} is not pulled");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--port", &port.to_string(), "--api-key", KEY, "--no-pull"])
        .env_remove("WICK_API_KEY")
        .env_remove("WICK_MODEL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wick");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "wick did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Server { child, url })
}

fn run_client(program: &str, args: &[&str]) {
    let Some(server) = start_server() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let status = Command::new(program)
        .args(args)
        .current_dir(&dir)
        .env("WICK_BASE_URL", format!("{}/v1", server.url))
        .env("WICK_API_KEY", KEY)
        .env("WICK_MODEL", MODEL)
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
