//! Import directions, checked on the source: a lower layer never imports a higher one. `auth` (keys)
//! and `metrics` (counters) are leaves that the HTTP layer and the deployments use; only `api/` (and
//! `lib.rs`, which assembles the router) speaks HTTP, and only `api/` knows OpenAI's error shape: the
//! layers below report typed errors that `api::error` maps.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|p| (p.strip_prefix(&src).unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The lines of `text` that use `what` in code (not in comments).
fn uses<'a>(text: &'a str, what: &str) -> Vec<&'a str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//") && l.contains(what)).collect()
}

#[test]
fn auth_and_metrics_import_nothing_of_wick() {
    for (name, text) in sources() {
        if name == "auth.rs" || name == "metrics.rs" {
            assert_eq!(uses(&text, "crate::"), Vec::<&str>::new(), "{name}");
        }
    }
}

#[test]
fn only_the_api_layer_imports_it_or_speaks_http() {
    let mut checked = 0;
    for (name, text) in sources() {
        if name.starts_with("api/") || name == "lib.rs" {
            continue;
        }
        checked += 1;
        assert_eq!(uses(&text, "crate::api"), Vec::<&str>::new(), "{name} imports the API layer");
        assert_eq!(uses(&text, "axum"), Vec::<&str>::new(), "{name} speaks HTTP");
        assert_eq!(uses(&text, "ApiError"), Vec::<&str>::new(), "{name} answers in OpenAI's error shape");
    }
    assert!(checked > 30, "{checked}");
}
