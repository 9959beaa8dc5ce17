//! Build-time switches. `wick_vnni`: the target has every instruction the AVX-512 VNNI Q4_1 kernel
//! uses (src/arch/cpu/q4_1.rs), so one cfg names them all. (CUDA kernels in kernels/ will be built
//! here under `--features cuda`.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wick_vnni)");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let have: Vec<&str> = features.split(',').collect();
    let vnni = ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "f16c"].iter().all(|f| have.contains(f));
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") && vnni {
        println!("cargo::rustc-cfg=wick_vnni");
    }
}
