//! `wick probe`: runs a model directly on token ids, without the server, and writes what a
//! correctness check and a speed floor need as JSON: the logits after the prompt, the greedy
//! continuation, the median time of a batch-1 decode step and the weight bytes such a step reads.
//! benches/gpu/ compares it against a PyTorch reference on the same weights.

use crate::arch::linear::WeightFormat;
use crate::arch::model::StepInput;
use crate::deploy::spec::DevicePlan;
use crate::kv::{BlockId, BlockManager};
use crate::loader::ModelSource;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// A model as `wick serve --model` takes it (a catalog name, a GGUF file, a Hugging Face folder).
    #[arg(long)]
    pub model: String,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Greedy tokens to generate after the prompt.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Further batch-1 decode steps to time.
    #[arg(long, default_value_t = 64)]
    pub decode_steps: usize,
    #[arg(long, value_enum, default_value_t = WeightFormat::Native)]
    pub weights: WeightFormat,
    /// Where to write the JSON (stdout when absent).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let device = DevicePlan::parse(&args.device)?.candle_device(0)?;
    let loaded = ModelSource::parse(&args.model)?.load(args.weights, &device)?;
    let model = &loaded.model;
    let positions = args.tokens.len() + args.steps + args.decode_steps;
    if positions > model.context_length() {
        bail!("{positions} positions exceed the model's context of {}", model.context_length());
    }
    let (mut kv, pool) = model.new_kv(positions)?;
    let needed = BlockManager::blocks_for(positions);
    if needed > pool {
        bail!("the KV pool holds {pool} blocks, the probe needs {needed}");
    }
    let blocks: Vec<BlockId> = (0..needed as BlockId).collect();
    let mut step = |start: usize, tokens: &[u32]| -> Result<Vec<f32>> {
        let mut logits = model.forward(&mut kv, &[StepInput { blocks: &blocks, start, tokens }])?;
        logits.pop().context("a step answers one row per input")
    };

    let prompt_logits = step(0, &args.tokens)?;
    let mut tokens = args.tokens.clone();
    let mut logits = prompt_logits.clone();
    let mut greedy = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let next = argmax(&logits);
        greedy.push(next);
        tokens.push(next);
        logits = step(tokens.len() - 1, &tokens[tokens.len() - 1..])?;
    }
    // Reading the logits back waits for the device, so each time is the whole step.
    let mut times = Vec::with_capacity(args.decode_steps);
    for _ in 0..args.decode_steps {
        let next = argmax(&logits);
        tokens.push(next);
        let t = Instant::now();
        logits = step(tokens.len() - 1, &tokens[tokens.len() - 1..])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "model": args.model,
        "device": args.device,
        "dtype": format!("{:?}", model.dtype()).to_lowercase(),
        "prompt": args.tokens,
        "logits": prompt_logits,
        "greedy": greedy,
        "decode_ms_batch1": times.get(times.len() / 2),
        "weights_bytes": model.step_weight_bytes(),
    });
    match &args.json {
        Some(path) => std::fs::write(path, out.to_string()).with_context(|| format!("write {}", path.display()))?,
        None => println!("{out}"),
    }
    Ok(())
}

fn argmax(logits: &[f32]) -> u32 {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}
