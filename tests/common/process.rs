//! A `wick serve` process on a free loopback port, for tests that need the real binary: the official
//! clients, memory measured from outside, restarts.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct WickProcess {
    child: Child,
    pub url: String,
}

impl WickProcess {
    /// Starts `wick serve ARGS --port P --data-dir DATA_DIR` and waits until it listens.
    pub fn start(args: &[&str], data_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_wick"))
            .arg("serve")
            .args(args)
            .args(["--port", &port.to_string(), "--data-dir"])
            .arg(data_dir)
            .env_remove("WICK_API_KEY")
            .env_remove("WICK_ADMIN_KEY")
            .env_remove("WICK_MODEL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wick");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "wick did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Resident memory of the server process, in MiB (Linux).
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib / 1024.0
    }

    /// The server process's memory map (Linux): which files, libraries among them, it has mapped.
    pub fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).unwrap()
    }

    /// SIGTERM, then waits for a graceful exit (the server saves usage on the way out).
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "wick did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WickProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
