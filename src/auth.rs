//! Bearer API keys. Keys are kept only as SHA-256 digests and compared in constant time, so neither
//! timing nor a memory dump of this struct gives them away; they are never logged.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

impl ApiKeys {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> Self {
        Self {
            digests: keys
                .into_iter()
                .filter(|k| !k.as_ref().is_empty())
                .map(|k| Sha256::digest(k.as_ref().as_bytes()).into())
                .collect(),
        }
    }

    /// No keys: every request is let in (the server then binds only loopback unless told otherwise).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks every configured key, so the time taken does not depend on which one matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digests.iter().fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&digest)).into()
    }
}

/// Reads keys from a file: one per line; blank lines and lines starting with `#` are skipped.
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read key file {}: {e}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
}

pub async fn require_key(State(keys): State<Arc<ApiKeys>>, request: Request, next: Next) -> Response {
    if keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string());
    match presented {
        Some(key) if keys.accepts(&key) => next.run(request).await,
        Some(key) => ApiError::invalid_api_key(Some(&key)).into_response(),
        None => ApiError::invalid_api_key(None).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(["sk-one", "sk-two", ""]);
        assert!(keys.accepts("sk-one") && keys.accepts("sk-two"));
        assert!(!keys.accepts("sk-three") && !keys.accepts("") && !keys.accepts("sk-one "));
        assert!(!format!("{keys:?}").contains("sk-"));
        assert!(ApiKeys::new(Vec::<String>::new()).is_empty());
    }
}
