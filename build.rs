//! Build-time switches and kernels.
//!
//! `wick_vnni`: the target has every instruction the AVX-512 VNNI Q4_1 kernel uses
//! (src/arch/cpu/q4_1.rs), so one cfg names them all.
//!
//! Under `--features cuda` only: every `kernels/*.cu` is compiled by nvcc to `$OUT_DIR/<stem>.ptx`,
//! which src/cuda/mod.rs embeds with `include_str!` and loads through candle's CUDA device at run
//! time. PTX rather than cubin so that one binary runs on the compute capability it was built for
//! and every newer one (the driver JIT-compiles it once per process). Without the feature nothing here
//! looks for nvcc, so CPU-only builds need no CUDA.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wick_vnni)");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let have: Vec<&str> = features.split(',').collect();
    let vnni = ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "f16c"].iter().all(|f| have.contains(f));
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") && vnni {
        println!("cargo::rustc-cfg=wick_vnni");
    }

    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
}

/// Flags for every kernel: the same language level and optimisation as candle-kernels.
const NVCC_FLAGS: &[&str] = &["-O3", "-std=c++17", "--expt-relaxed-constexpr"];

/// Compiles `kernels/*.cu` to PTX in `$OUT_DIR`; nvcc's warnings become cargo warnings.
///
/// Only in this mode the script names what it depends on (until then cargo re-runs it on any change
/// in the package): the kernels, this file, the CUDA environment, and RUSTFLAGS, which the
/// `wick_vnni` probe reads through the target features.
fn compile_kernels() {
    for path in ["build.rs", "kernels"] {
        println!("cargo::rerun-if-changed={path}");
    }
    for var in ["CUDA_COMPUTE_CAP", "NVCC", "CUDA_HOME", "RUSTFLAGS"] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = Path::new("kernels");
    // CUDA_COMPUTE_CAP (as candle-kernels reads it): 90 = Hopper (H100, H200), the GPUs this runs
    // on. The build machine may have no GPU to ask.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".to_string());
    let cap = cap.trim().trim_start_matches("sm_").trim_end_matches('a').to_string();
    assert!(!cap.is_empty() && cap.chars().all(|c| c.is_ascii_digit()), "CUDA_COMPUTE_CAP must be a number like 90");
    let nvcc = nvcc_path();

    let mut sources: Vec<PathBuf> = std::fs::read_dir(kernels)
        .expect("read kernels/")
        .map(|e| e.expect("read kernels/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();

    for source in &sources {
        let output = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch=compute_{cap}")])
            .args(NVCC_FLAGS)
            .arg("-I")
            .arg(kernels)
            .arg("-o")
            .arg(ptx_path(&out_dir, source))
            .arg(source)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "--features cuda: could not run nvcc ({}): {e}. Put nvcc on PATH, or set NVCC or CUDA_HOME \
                     (on a machine without CUDA: eval \"$(../shared/cuda/toolchain.sh)\").",
                    nvcc.display()
                )
            });
        let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            panic!("nvcc failed on {}:\n{log}", source.display());
        }
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo::warning=nvcc {}: {line}", source.display());
        }
    }
}

fn ptx_path(out_dir: &Path, source: &Path) -> PathBuf {
    out_dir.join(source.with_extension("ptx").file_name().expect("a .cu file name"))
}

/// `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` from PATH.
fn nvcc_path() -> PathBuf {
    if let Some(nvcc) = std::env::var_os("NVCC") {
        return nvcc.into();
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let nvcc = Path::new(&home).join("bin").join("nvcc");
        if nvcc.exists() {
            return nvcc;
        }
    }
    "nvcc".into()
}
