//! A Hugging Face-layout folder (config.json, tokenizer.json, tokenizer_config.json,
//! model.safetensors) made by the test with random weights (tests/common/hf.rs): served over HTTP,
//! refused where Wick lacks what it needs, and checked against transformers on the same weights.

mod common;

use candle_core::{Device, Tensor};
use common::hf::{write_tiny_hf_folder, TINY_HF_FAMILIES};
use common::reference::{check_runs, Agreement, Reference};
use common::TestServer;
use serde_json::json;
use std::collections::HashMap;
use wick::arch::linear::WeightFormat;
use wick::engine::scheduler::Limits;
use wick::loader::ModelSource;

/// The tiny llama folder (tests/common/hf.rs), as most tests here use it.
fn write_folder(dir: &std::path::Path) {
    write_tiny_hf_folder(dir, "llama", 1);
}

#[tokio::test]
async fn hugging_face_folder_serves_chat() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path());
    let source = ModelSource::parse(dir.path().to_str().unwrap()).unwrap();
    assert!(matches!(source, ModelSource::HfFolder(_)));
    for weights in [WeightFormat::Native, WeightFormat::Q8_0] {
        let mut spec = common::spec("hf", dir.path(), Limits::default());
        spec.weights = weights;
        let s = TestServer::start(vec![spec], &[]).await;
        let req = json!({
            "model": "hf", "messages": [{"role": "user", "content": "hello world"}],
            "temperature": 0, "max_tokens": 6, "logit_bias": {"0": -100, "1": -100, "2": -100},
        });
        let (status, a) = s.chat(req.clone()).await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["choices"][0]["finish_reason"], "length");
        assert_eq!(a["usage"]["completion_tokens"], 6);
        // <|im_start|> u s e r \n hell o Ġw or l d <|im_end|> \n <|im_start|> a s s i s t a n t \n:
        // the special tokens are single tokens, and the merges apply.
        assert_eq!(a["usage"]["prompt_tokens"], 1 + 4 + 1 + 6 + 1 + 1 + 1 + 9 + 1);
        let (_, b) = s.chat(req).await;
        assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    }
}

/// The load error of the test folder with `edit` applied to its config.json, or None if it loads.
fn load_error_with_config(edit: impl FnOnce(&mut serde_json::Value)) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    let source = ModelSource::parse(dir.path().to_str().unwrap()).unwrap();
    source.load(WeightFormat::Native, &Device::Cpu).err().map(|e| format!("{e:#}"))
}

#[test]
fn a_folder_of_an_unimplemented_family_or_setting_is_refused_by_name() {
    assert_eq!(load_error_with_config(|_| {}), None);
    // Qwen2 and Qwen3 are implemented with their biases and q/k norms: a checkpoint without them is
    // incomplete.
    let e = load_error_with_config(|c| c["model_type"] = json!("qwen2")).unwrap();
    assert!(e.contains("`model.layers.0.self_attn.q_proj.bias`"), "{e}");
    let e = load_error_with_config(|c| c["model_type"] = json!("qwen3")).unwrap();
    assert!(e.contains("`model.layers.0.self_attn.q_norm.weight`"), "{e}");
    let e = load_error_with_config(|c| c["model_type"] = json!("qwen3_moe")).unwrap();
    assert!(e.contains("`qwen3_moe` is not implemented") && e.contains("mixture of experts"), "{e}");
    // Without a model_type, the architecture names the family.
    let granite_moe = |c: &mut serde_json::Value| {
        c.as_object_mut().unwrap().remove("model_type");
        c["architectures"] = json!(["GraniteMoeForCausalLM"]);
    };
    let e = load_error_with_config(granite_moe).unwrap();
    assert!(e.contains("`granitemoe` is not implemented"), "{e}");
    let e = load_error_with_config(|c| c["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0})).unwrap();
    assert!(e.contains("rope scaling `longrope`"), "{e}");
    // Llama 3's scaling is implemented (`llama3` in the reference check), and needs all its numbers.
    let e = load_error_with_config(|c| c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0})).unwrap();
    assert!(e.contains("rope scaling `llama3` has no number `low_freq_factor`"), "{e}");
    // transformers 5's form is read as well, and refused alike.
    let e = load_error_with_config(|c| {
        c["rope_parameters"] = json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4})
    })
    .unwrap();
    assert!(e.contains("rope scaling `yarn`"), "{e}");
    let e = load_error_with_config(|c| c["partial_rotary_factor"] = json!(0.5)).unwrap();
    assert!(e.contains("rotary embedding on part of each head (config.json partial_rotary_factor = 0.5)"), "{e}");
    assert_eq!(load_error_with_config(|c| c["rope_scaling"] = json!(null)), None);
    let e = load_error_with_config(|c| c["sliding_window"] = json!(128)).unwrap();
    assert!(e.contains("sliding attention window of 128"), "{e}");
    let e = load_error_with_config(|c| c["hidden_act"] = json!("gelu_pytorch_tanh")).unwrap();
    assert!(e.contains("`gelu_pytorch_tanh`"), "{e}");
}

#[test]
fn a_checkpoint_tensor_the_forward_would_not_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path());
    let bias = Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap();
    let extra: HashMap<String, Tensor> = [("model.layers.0.self_attn.q_proj.bias".to_string(), bias)].into();
    candle_core::safetensors::save(&extra, dir.path().join("model-extra.safetensors")).unwrap();
    let source = ModelSource::parse(dir.path().to_str().unwrap()).unwrap();
    let Err(e) = source.load(WeightFormat::Native, &Device::Cpu) else { panic!("a checkpoint with a bias loaded") };
    let e = format!("{e:#}");
    assert!(e.contains("`model.layers.0.self_attn.q_proj.bias`"), "{e}");
}

/// How far a log-probability may be from transformers'. Both compute in f32 from the same f32
/// weights (Wick's `F32` format), so only summation order and the rope tables' rounding differ.
/// Measured (2026-12-06, transformers 5.25.0): largest 5e-6 to 8e-6 per family over 32 greedy steps
/// of three prompts (the test prints each). Broken on purpose, each fails at its first step: HF's
/// rope read as interleaved pairs (llama 0.39 off), Llama 3's blended pairs divided by the full
/// factor (llama3 0.017 off), linear scaling dropped (llama-linear 3.7 off), and `rope_parameters`'
/// base ignored (llama-linear 0.013 off); Gemma 3's norms without their 1 added (2.8 off) and its
/// `query_pre_attn_scalar` ignored (0.018 off). Granite (2026-12-07, largest 7e-6): its
/// `attention_multiplier` replaced by `1/sqrt(head_dim)` 0.0043 off, without its
/// `residual_multiplier` 0.88, `logits_scaling` 0.011, `embedding_multiplier` 1.97. Phi-3 (8e-6):
/// its window (every layer) on half the layers only is 0.064 off at the first step past the window.
/// The shared decoder's other differences are broken one by one in tests/families.rs against llama.cpp.
const HF_LOGPROB_TOLERANCE: f32 = 1e-3;

#[test]
fn each_family_folder_matches_transformers_on_the_same_random_weights() {
    let reference: Reference = serde_json::from_str(include_str!("fixtures/hf_logits.json")).unwrap();
    for family in TINY_HF_FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_hf_folder(dir.path(), family, HF_REFERENCE_SEED);
        let loaded =
            ModelSource::parse(dir.path().to_str().unwrap()).unwrap().load(WeightFormat::F32, &Device::Cpu).unwrap();
        let Agreement { worst, ties, spread } =
            check_runs(loaded.model.as_ref(), &reference.families[family], HF_LOGPROB_TOLERANCE, family);
        println!("{family}: largest log-probability difference from transformers {worst:.6}, near ties taken the other way {ties}, logits' std at least {spread:.2}");
        assert_eq!(ties, 0, "{family}: a greedy token differs from transformers'");
    }
}

/// Writes the tiny folder of every family under `$WICK_FIXTURE_DIR`, for
/// tests/fixtures/make_hf_logits.py to run transformers on (not a test: ignored, run by that script).
#[test]
#[ignore]
fn write_reference_folders() {
    let root = std::path::PathBuf::from(std::env::var("WICK_FIXTURE_DIR").expect("WICK_FIXTURE_DIR"));
    for family in TINY_HF_FAMILIES {
        let dir = root.join(family);
        std::fs::create_dir_all(&dir).unwrap();
        write_tiny_hf_folder(&dir, family, HF_REFERENCE_SEED);
    }
}

/// The seed of the reference folders; the fixture holds transformers' answers for these weights.
const HF_REFERENCE_SEED: u64 = 17;
