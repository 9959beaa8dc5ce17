//! Which variant of our CPU kernels this process runs, chosen once at start-up.
//!
//! Wick is built for a baseline every x86-64 server has (x86-64-v2, .cargo/config.toml), so the
//! same binary runs on any of them. The hot kernels (`q4_1`, `q8_0`, `conv1d`, `vector`) are
//! compiled three times over, and this module picks one set for the CPU at hand:
//! - `avx512`: AVX-512 F/BW/VL with VNNI (`vpdpbusd`) and F16C, the Xeons and Zen 4/5 EPYCs;
//! - `avx2`: AVX2 with FMA and F16C (Haswell, every Zen), what most clouds, desktops and laptops have;
//! - `portable`: plain Rust the compiler vectorises for the baseline (and for NEON on aarch64).
//!
//! `WICK_CPU_VARIANT=avx2` (or `portable`) forces a lower variant, so that every path can be tested
//! and measured on a machine that has more; forcing one the CPU lacks is a start-up error.

use anyhow::{bail, Result};
use std::sync::OnceLock;

/// The environment variable that forces a variant.
pub const FORCE_VAR: &str = "WICK_CPU_VARIANT";

/// Kernel variants, lowest first: each one's instructions are a subset of the next one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Portable,
    Avx2,
    Avx512,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Portable, Variant::Avx2, Variant::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Portable => "portable",
            Variant::Avx2 => "avx2",
            Variant::Avx512 => "avx512",
        }
    }

    /// The instruction sets the variant's kernels use, as `is_x86_feature_detected!` names them.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Variant::Portable => &[],
            Variant::Avx2 => &["avx2", "fma", "f16c"],
            Variant::Avx512 => &["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni"],
        }
    }

    /// Whether this CPU can run the variant.
    pub fn runs_here(self) -> bool {
        match self {
            Variant::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => {
                Variant::Avx2.runs_here()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every variant this CPU can run, lowest first: what the kernel tests go through.
    pub fn all_here() -> Vec<Variant> {
        Variant::ALL.into_iter().filter(|v| v.runs_here()).collect()
    }

    /// The best variant this CPU runs.
    pub fn best_here() -> Variant {
        Variant::ALL.into_iter().rev().find(|v| v.runs_here()).unwrap_or(Variant::Portable)
    }

    fn parse(name: &str) -> Result<Variant> {
        match Variant::ALL.into_iter().find(|v| v.name() == name.trim()) {
            Some(v) => Ok(v),
            None => bail!("{FORCE_VAR}={name:?} is not a kernel variant (portable, avx2, avx512)"),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The variant `forced` (the value of `WICK_CPU_VARIANT`, if set) asks for on a CPU that runs
/// `runs`: the best one when nothing is forced, an error when the CPU lacks the forced one.
fn choose(forced: Option<&str>, runs: impl Fn(Variant) -> bool) -> Result<Variant> {
    let best = Variant::ALL.into_iter().rev().find(|&v| runs(v)).unwrap_or(Variant::Portable);
    match forced.filter(|f| !f.trim().is_empty()) {
        None => Ok(best),
        Some(name) => {
            let v = Variant::parse(name)?;
            if !runs(v) {
                bail!(
                    "{FORCE_VAR}={} needs {}, which this CPU lacks (it runs up to {best})",
                    v.name(),
                    v.features().join(", ")
                );
            }
            Ok(v)
        }
    }
}

static CHOSEN: OnceLock<Result<Variant, String>> = OnceLock::new();

/// Chooses the variant (once per process) and reports an impossible `WICK_CPU_VARIANT` as an error.
/// `main` calls it first thing, so that a bad value stops the server before it serves.
pub fn init() -> Result<Variant> {
    CHOSEN
        .get_or_init(|| {
            let forced = std::env::var(FORCE_VAR).ok();
            choose(forced.as_deref(), Variant::runs_here).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The variant every kernel of this process runs.
///
/// # Panics
/// When `WICK_CPU_VARIANT` names one this CPU cannot run; the binary checks that at start-up with
/// `init`, so only library users and tests that skip `init` can meet it.
#[inline]
pub fn variant() -> Variant {
    // The kernels ask on every call: after the first, one atomic load.
    match CHOSEN.get() {
        Some(Ok(v)) => *v,
        _ => init().unwrap_or_else(|e| panic!("{e}")),
    }
}

/// One line for logs and `wick --version`: the chosen variant and what the CPU has.
pub fn describe() -> String {
    let best = Variant::best_here();
    match init() {
        Ok(v) if v == best => format!("cpu kernels: {v} (the best this CPU runs)"),
        Ok(v) => format!("cpu kernels: {v} (forced by {FORCE_VAR}; this CPU runs up to {best})"),
        Err(e) => format!("cpu kernels: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_gets_its_best_variant_unless_a_lower_one_is_forced() {
        let avx2_cpu = |v: Variant| v <= Variant::Avx2;
        assert_eq!(choose(None, avx2_cpu).unwrap(), Variant::Avx2);
        assert_eq!(choose(Some(""), avx2_cpu).unwrap(), Variant::Avx2);
        assert_eq!(choose(Some("portable"), avx2_cpu).unwrap(), Variant::Portable);
        let err = choose(Some("avx512"), avx2_cpu).unwrap_err().to_string();
        assert!(err.contains("avx512vnni") && err.contains("up to avx2"), "{err}");
        let err = choose(Some("sse9"), avx2_cpu).unwrap_err().to_string();
        assert!(err.contains("not a kernel variant"), "{err}");
        assert_eq!(choose(None, |v| v == Variant::Portable).unwrap(), Variant::Portable);
    }

    #[test]
    fn the_variants_this_cpu_runs_include_the_chosen_one() {
        let here = Variant::all_here();
        assert_eq!(here[0], Variant::Portable);
        assert!(here.contains(&variant()), "{here:?} lacks {}", variant());
    }
}
