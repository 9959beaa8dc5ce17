//! Micro-benchmark of the batched forward: time per decode step at several batch sizes, for each
//! weight format. Tells which matmul kernel to use on this machine (BENCHMARKS.md).
//!
//!   cargo bench --bench forward -- [path/to/model.gguf] [formats: q8-0,native,f32] [batches: 1,4,16]
//!       [prompt tokens: 128]
//!
//! The prompt length sets both the prefill timed and the context of the decode steps.

use std::time::Instant;
use wick::arch::linear::WeightFormat;
use wick::arch::model::StepInput;
use wick::loader::ModelSource;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let model = args.first().cloned().unwrap_or_else(|| "smollm2-135m-instruct".into());
    let formats = args.get(1).cloned().unwrap_or_else(|| "q8-0,native,f32".into());
    let batches: Vec<usize> =
        args.get(2).cloned().unwrap_or_else(|| "1,4,16".into()).split(',').map(|b| b.parse().unwrap()).collect();
    let source = ModelSource::parse(&model)?;
    let prompt_len: usize = args.get(3).map(|p| p.parse()).transpose()?.unwrap_or(128);
    println!("model {model}; context {prompt_len} tokens per sequence; median of 20 decode steps");
    println!("{}", wick::arch::cpu::isa::describe());
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>14}",
        "weights",
        "batch",
        "ms/step",
        "tok/s",
        format!("prefill{prompt_len} ms")
    );
    for f in formats.split(',') {
        let format = <WeightFormat as clap::ValueEnum>::from_str(f, true).map_err(anyhow::Error::msg)?;
        let loaded = source.load(format, &candle_core::Device::Cpu)?;
        let model = &loaded.model;
        for &batch in &batches {
            // Each sequence gets blocks of its own for the prompt and the steps, as the block manager would.
            let per_seq = (prompt_len + 64).div_ceil(wick::kv::BLOCK_SIZE);
            let tables: Vec<Vec<u32>> =
                (0..batch).map(|i| ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect()).collect();
            let mut kv = wick::kv::KvStore::Cpu(model.new_cpu_kv());
            let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| 100 + i % 20000).collect();
            let mut prefill = Vec::new();
            for blocks in &tables {
                let t0 = Instant::now();
                model.forward(&mut kv, &[StepInput { blocks, start: 0, tokens: &prompt }])?;
                prefill.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            prefill.sort_by(|a, b| a.total_cmp(b));
            let steps: usize = std::env::var("WICK_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(23);
            let mut times = Vec::new();
            for step in 0..steps {
                let tokens: Vec<[u32; 1]> = (0..batch).map(|i| [(500 + i + step) as u32]).collect();
                let inputs: Vec<_> = tables
                    .iter()
                    .zip(&tokens)
                    .map(|(blocks, t)| StepInput { blocks, start: prompt.len() + step, tokens: t })
                    .collect();
                let t0 = Instant::now();
                model.forward(&mut kv, &inputs)?;
                if step >= 3 {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let ms = times[times.len() / 2];
            println!(
                "{:<8} {:>6} {:>12.2} {:>12.1} {:>14.0}",
                f,
                batch,
                ms,
                batch as f64 * 1e3 / ms,
                prefill[prefill.len() / 2]
            );
        }
    }
    Ok(())
}
