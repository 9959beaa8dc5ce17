//! The quantized matmuls alone: our kernel for each ggml type as `arch::linear` stores it (`cpu::q4_1`, `cpu::q8_0`,
//! `cpu::qblocks`, the variant `isa` chose) against candle's own `QMatMul` as this build compiles it,
//! at a decoder's shapes. `arch::linear` picks between them from these figures. Weight bytes read per
//! second tell how close a 1-row call is to the memory's speed.
//!
//!     cargo bench --bench qmatmul                 (WICK_CPU_VARIANT=avx2 or portable forces a variant)
//!
//! Shapes: Gemma 3 270M's gate|up (2 x 2048 x 640) and down (640 x 2048), SmolLM2's gate|up
//! (2 x 1536 x 576), and 131,072 x 640 (half of Gemma's output head: read from memory, not
//! cache); a type is timed only where its block fits the shape (the K-quants need inputs in
//! whole 256-weight super-blocks, which is why llama.cpp stores 640-wide matrices as Q5_0).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::time::Instant;
use wick::arch::linear::{Linear, RawWeight, WeightFormat};

/// A matmul: `[rows, k]` in, `[rows, n]` out.
type Matmul = Box<dyn Fn(&[f32], usize) -> Vec<f32>>;

/// Our kernel for `q` as the server stores it (`Linear`, `WeightFormat::Native`: Q4_0 and Q5_0 in
/// Q4_1's lanes form or as Q8_0, the K-quants in ggml's layout), and its bytes.
fn ours(q: QTensor) -> anyhow::Result<(Matmul, usize)> {
    let linear = Linear::fused(vec![RawWeight::Quantized(q)], WeightFormat::Native, DType::F32, &Device::Cpu)?;
    let bytes = linear.bytes();
    Ok((Box::new(move |x, rows| linear.forward_rows(x, rows).expect("a CPU matmul")), bytes))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `f` over enough runs to fill ~0.3 s, after a warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-6);
    let runs = ((0.3 / once) as usize).clamp(5, 2000);
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    println!("{}", wick::arch::cpu::isa::describe());
    println!("| type | n x k | rows | wick us | GB/s | candle us | candle / wick |");
    println!("|---|---|---|---|---|---|---|");
    let types = [
        GgmlDType::Q4_0,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];
    // The last: half of Gemma 3 270M's output head, 89 MB as Q8_0, far more than the caches hold.
    for (n, k) in [(4096, 640), (640, 2048), (3072, 576), (131072, 640)] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        for dtype in types {
            if !k.is_multiple_of(dtype.block_size()) {
                continue;
            }
            let (ours, bytes) = ours(QTensor::quantize(&w, dtype)?)?;
            let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?;
            for rows in [1, 4, 16] {
                let x: Vec<f32> = Tensor::randn(0f32, 1.0, (rows, k), &dev)?.flatten_all()?.to_vec1()?;
                let xt = Tensor::from_slice(&x, (rows, k), &dev)?;
                let wick = time(|| drop(ours(&x, rows)));
                let theirs = time(|| drop(candle.forward(&xt).unwrap()));
                println!(
                    "| {dtype:?} | {n} x {k} | {rows} | {:.1} | {:.1} | {:.1} | {:.2} |",
                    wick * 1e6,
                    bytes as f64 / wick / 1e9,
                    theirs * 1e6,
                    theirs / wick
                );
            }
        }
    }
    Ok(())
}
