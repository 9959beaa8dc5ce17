//! Checking a model against a reference's answers on the same random weights: llama.cpp's on GGUF
//! files (tests/fixtures/family_logits.json), transformers' on Hugging Face folders
//! (tests/fixtures/hf_logits.json). Both fixtures hold, per family, runs of greedy steps from a
//! prompt, each with the reference's token and its most likely tokens' log-probabilities.

use std::collections::HashMap;
use wick::arch::model::{StepInput, TextModel};

#[derive(serde::Deserialize)]
pub struct Reference {
    pub families: HashMap<String, Vec<ReferenceRun>>,
}

#[derive(serde::Deserialize)]
pub struct ReferenceRun {
    pub prompt: Vec<u32>,
    pub steps: Vec<ReferenceStep>,
}

#[derive(serde::Deserialize, Clone)]
pub struct ReferenceStep {
    pub token: u32,
    /// The reference's most likely tokens and their log-probabilities; empty where it withheld them
    /// (llama-server, for a token that ends inside a UTF-8 character).
    #[serde(default)]
    pub top: Vec<(u32, f32)>,
}

/// What a check found: the largest log-probability difference, how many greedy steps went the
/// other way on a near tie, and the smallest standard deviation of the model's logits over the
/// steps (what the difference is relative to: a tolerance means little on flat logits).
pub struct Agreement {
    pub worst: f32,
    pub ties: usize,
    pub spread: f32,
}

/// Runs `model` over each of `runs` step by step, feeding the reference's token after each, and
/// panics at the first log-probability further than `tolerance` from the reference's, or the first
/// greedy token that differs without a near tie (the two within `tolerance`, by the reference's
/// log-probabilities, or by ours at a step where the reference gave none).
pub fn check_runs(model: &dyn TextModel, runs: &[ReferenceRun], tolerance: f32, label: &str) -> Agreement {
    let mut agreement = Agreement { worst: 0.0, ties: 0, spread: f32::INFINITY };
    for run in runs {
        let (mut kv, _) = model.new_kv(256).unwrap();
        let blocks: Vec<u32> = (0..16).collect(); // 256 positions
        let mut tokens = run.prompt.clone();
        let mut start = 0;
        for (i, step) in run.steps.iter().enumerate() {
            let input = StepInput { blocks: &blocks, start, tokens: &tokens[start..] };
            let logits = model.forward(&mut kv, &[input]).unwrap().pop().unwrap();
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let log_sum = logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
            let mean = logits.iter().sum::<f32>() / logits.len() as f32;
            let variance = logits.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / logits.len() as f32;
            agreement.spread = agreement.spread.min(variance.sqrt());
            let at = || format!("{label}, prompt of {} tokens, step {i}", run.prompt.len());
            for &(id, want) in &step.top {
                let got = logits[id as usize] - log_sum;
                agreement.worst = agreement.worst.max((got - want).abs());
                assert!(
                    (got - want).abs() < tolerance,
                    "{}: token {id} has log-probability {got}, the reference {want}",
                    at()
                );
            }
            let greedy = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u32;
            if greedy != step.token {
                // The gap between the two tokens by the reference's numbers, or by ours where it
                // withheld them (llama-server, inside a UTF-8 character).
                let near = match step.top.is_empty() {
                    true => Some(logits[greedy as usize] - logits[step.token as usize]),
                    false => step.top.iter().find(|(id, _)| *id == greedy).map(|(_, lp)| step.top[0].1 - lp),
                };
                assert!(
                    near.is_some_and(|gap| gap < tolerance),
                    "{}: greedy {greedy}, the reference {} (gap {near:?})",
                    at(),
                    step.token
                );
                agreement.ties += 1;
            }
            start = tokens.len();
            // The reference's token, so that a first difference is reported where it is.
            tokens.push(step.token);
        }
    }
    agreement
}

/// One case of a tokenizer fixture made with llama.cpp (tests/fixtures/*_tokens.json).
#[derive(serde::Deserialize)]
pub struct TokenCase {
    pub text: String,
    pub ids: Vec<u32>,
    #[serde(default)]
    pub special: bool,
    /// A prompt: compared with `encode_prompt` (BOS added, special tokens parsed).
    #[serde(default)]
    pub bos: bool,
}
