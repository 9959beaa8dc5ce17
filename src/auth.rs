//! Bearer keys. Keys are kept only as SHA-256 digests and compared in constant time, so neither
//! timing nor a memory dump of this struct gives them away; they are never logged.
//!
//! Two kinds of key: inference keys for the OpenAI API (/v1), management keys for the management API
//! (/sdk/v1) and /metrics. Either may be scoped to some deployments: an inference key used for a
//! deployment outside its scope is answered as if the deployment did not exist; a management key sees
//! and manages only the deployments in its scope.
//!
//! This module knows keys, not HTTP: the layers that read the `Authorization` header and answer a
//! refusal in each API's error shape are `api::auth`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Inference,
    Admin,
}

/// Which deployments a key may use, by name: exact names, or prefixes ending in `*` (`team-a/*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Empty: every deployment.
    patterns: Vec<String>,
}

impl Scope {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(patterns: I) -> Self {
        Self { patterns: patterns.into_iter().map(Into::into).collect() }
    }

    pub fn allows(&self, deployment: &str) -> bool {
        self.patterns.is_empty()
            || self.patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => deployment.starts_with(prefix),
                None => p == deployment,
            })
    }
}

/// One configured key: `KEY` or, in a key file, `KEY NAME NAME...` for a scoped one.
#[derive(Clone)]
pub struct KeySpec {
    pub secret: String,
    pub role: Role,
    pub scope: Scope,
}

impl KeySpec {
    pub fn new(secret: impl Into<String>, role: Role) -> Self {
        Self { secret: secret.into(), role, scope: Scope::all() }
    }

    pub fn scoped(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySpec({:?}, {:?})", self.role, self.scope)
    }
}

struct Entry {
    digest: [u8; 32],
    role: Role,
    scope: Scope,
}

#[derive(Default)]
pub struct Keys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} configured)", self.entries.len())
    }
}

/// Who is calling, as the auth layer established it. Handlers read it to apply scopes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
}

impl Keys {
    pub fn new(keys: Vec<KeySpec>) -> Self {
        Self {
            entries: keys
                .into_iter()
                .filter(|k| !k.secret.is_empty())
                .map(|k| Entry { digest: Sha256::digest(k.secret.as_bytes()).into(), role: k.role, scope: k.scope })
                .collect(),
        }
    }

    /// Unscoped inference keys only (the common case, and the tests').
    pub fn inference<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> Self {
        Self::new(keys.into_iter().map(|k| KeySpec::new(k.as_ref(), Role::Inference)).collect())
    }

    /// No keys at all: every request is let in (the server then binds only loopback unless told otherwise).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn has(&self, role: Role) -> bool {
        self.entries.iter().any(|e| e.role == role)
    }

    /// The entry the presented key matches. Every entry is compared, so the time taken does not
    /// depend on which one matched.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        found
    }

    /// What a request presenting `presented` may do under `role`.
    pub fn check(&self, presented: Option<&str>, role: Role) -> Result<Caller, Refusal> {
        // Inference is open when no inference key is configured (then the server binds only
        // loopback unless told otherwise); management is open only when no key at all is, so that
        // configuring inference keys alone never leaves management open.
        match role {
            Role::Inference if !self.has(Role::Inference) => return Ok(Caller { scope: Scope::all() }),
            Role::Admin if self.is_empty() => return Ok(Caller { scope: Scope::all() }),
            Role::Admin if !self.has(Role::Admin) => return Err(Refusal::ManagementDisabled),
            _ => {}
        }
        let Some(key) = presented else { return Err(Refusal::Missing) };
        match self.find(key) {
            Some(e) if e.role == role => Ok(Caller { scope: e.scope.clone() }),
            Some(_) => Err(Refusal::WrongRole),
            None => Err(Refusal::Invalid(key.to_string())),
        }
    }
}

/// Why a key was not accepted.
pub enum Refusal {
    Missing,
    Invalid(String),
    /// A valid key of the other kind.
    WrongRole,
    /// Keys are configured but no management key: the management API is closed.
    ManagementDisabled,
}

/// Reads keys from a file: one per line, optionally followed by the deployments it is scoped to
/// (`sk-team-a chat-a team-a/*`); blank lines and lines starting with `#` are skipped.
pub fn read_key_file(path: &std::path::Path, role: Role) -> anyhow::Result<Vec<KeySpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read key file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let secret = words.next().unwrap_or_default();
            KeySpec::new(secret, role).scoped(Scope::only(words))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_role_and_never_show() {
        let keys = Keys::new(vec![
            KeySpec::new("sk-one", Role::Inference),
            KeySpec::new("sk-admin", Role::Admin),
            KeySpec::new("", Role::Inference),
        ]);
        assert!(keys.check(Some("sk-one"), Role::Inference).is_ok());
        assert!(keys.check(Some("sk-admin"), Role::Admin).is_ok());
        assert!(matches!(keys.check(Some("sk-one"), Role::Admin), Err(Refusal::WrongRole)));
        assert!(matches!(keys.check(Some("sk-one "), Role::Inference), Err(Refusal::Invalid(_))));
        assert!(matches!(keys.check(Some(""), Role::Inference), Err(Refusal::Invalid(_))));
        assert!(matches!(keys.check(None, Role::Inference), Err(Refusal::Missing)));
        assert!(!format!("{keys:?}").contains("sk-"));
        assert!(Keys::inference(Vec::<String>::new()).is_empty());
    }

    #[test]
    fn management_is_closed_when_only_inference_keys_exist() {
        let keys = Keys::inference(["sk-one"]);
        assert!(matches!(keys.check(Some("sk-one"), Role::Admin), Err(Refusal::ManagementDisabled)));
        assert!(Keys::default().check(None, Role::Admin).is_ok(), "no keys at all: a loopback dev server");
        let admin_only = Keys::new(vec![KeySpec::new("sk-admin", Role::Admin)]);
        assert!(admin_only.check(None, Role::Inference).is_ok(), "no inference key: inference is open");
        assert!(matches!(admin_only.check(None, Role::Admin), Err(Refusal::Missing)));
    }

    #[test]
    fn scopes_match_names_and_prefixes() {
        let s = Scope::only(["chat-a", "team-b/*"]);
        assert!(s.allows("chat-a") && s.allows("team-b/x") && !s.allows("chat-ab") && !s.allows("team-c/x"));
        assert!(Scope::all().allows("anything"));
    }

    #[test]
    fn key_files_carry_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team keys\nsk-file-1\n\n  sk-file-2  chat-a team-b/* \n").unwrap();
        let keys = read_key_file(&file, Role::Inference).unwrap();
        assert_eq!(keys.iter().map(|k| k.secret.as_str()).collect::<Vec<_>>(), ["sk-file-1", "sk-file-2"]);
        assert_eq!(keys[0].scope, Scope::all());
        assert_eq!(keys[1].scope, Scope::only(["chat-a", "team-b/*"]));
    }
}
