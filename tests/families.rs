//! What a GGUF file's family and settings decide at load (src/arch/family.rs, src/loader/gguf.rs):
//! whatever Wick does not implement is a load error that names it, and a request to such a
//! deployment answers 503 with that cause. Never a llama-like approximation that answers wrongly.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::reference::{check_runs, Agreement, Reference};
use common::{spec, write_tiny_gguf_edited, GgufMetadata, GgufTensors, TestServer};
use serde_json::json;
use wick::arch::linear::WeightFormat;
use wick::deploy::{Defaults, DeploymentRequest, DeploymentSpec, Origin};
use wick::engine::scheduler::Limits;
use wick::loader::ModelSource;

/// The load error of the tiny model changed by `edit`, or None if it loads.
fn load_error(edit: impl FnOnce(&mut GgufMetadata, &mut GgufTensors)) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.gguf");
    write_tiny_gguf_edited(&path, 7, 256, edit);
    let source = ModelSource::parse(path.to_str().unwrap()).unwrap();
    source.load(WeightFormat::Native, &Device::Cpu).err().map(|e| format!("{e:#}"))
}

/// Renames the architecture, and its metadata keys with it.
fn architecture(to: &str) -> impl FnOnce(&mut GgufMetadata, &mut GgufTensors) + '_ {
    move |md, _| {
        for (key, value) in md.iter_mut() {
            if key == "general.architecture" {
                *value = Value::String(to.into());
            } else if let Some(rest) = key.strip_prefix("llama.") {
                *key = format!("{to}.{rest}");
            }
        }
    }
}

fn set(key: &str, value: Value) -> impl FnOnce(&mut GgufMetadata, &mut GgufTensors) + '_ {
    move |md, _| md.push((key.into(), value))
}

fn extra_tensor(name: &str, len: usize) -> impl FnOnce(&mut GgufMetadata, &mut GgufTensors) + '_ {
    move |_, ts| {
        let t = Tensor::ones(len, candle_core::DType::F32, &Device::Cpu).unwrap();
        ts.push((name.into(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
}

#[test]
fn the_unedited_model_and_a_mistral_named_file_load() {
    assert_eq!(load_error(|_, _| {}), None);
    assert_eq!(load_error(architecture("mistral")), None);
}

#[test]
fn granite_without_its_logit_scale_and_phi3_with_longrope_are_refused() {
    // llama.cpp requires Granite's logit scale (its other multipliers are optional).
    let e = load_error(architecture("granite")).expect("granite without its logit scale must not load");
    assert!(e.contains("granite.logit_scale"), "{e}");
    let phi3_longrope = |md: &mut GgufMetadata, ts: &mut GgufTensors| {
        architecture("phi3")(md, ts);
        extra_tensor("rope_factors_long.weight", 8)(md, ts);
    };
    let e = load_error(phi3_longrope).expect("longrope must not load");
    assert!(e.contains("rope scaling `longrope`") && e.contains("rope_factors_long.weight"), "{e}");
    let e = load_error(set("llama.rope.dimension_count", Value::U32(8))).expect("partial rotary must not load");
    assert!(e.contains("rotary embedding on 8 of each head's 16 values"), "{e}");
}

#[test]
fn an_unknown_architecture_is_refused_by_name() {
    let e = load_error(architecture("rwkv7")).expect("an unknown architecture must not load");
    assert!(e.contains("`rwkv7` is unknown") && e.contains("implemented: llama"), "{e}");
}

#[test]
fn rope_scalings_wick_lacks_and_sliding_windows_are_refused_by_name() {
    let e = load_error(set("llama.rope.scaling.type", Value::String("yarn".into()))).unwrap();
    assert!(e.contains("rope scaling `yarn`"), "{e}");
    let e = load_error(set("llama.rope.scaling.attn_factor", Value::F32(2.0))).unwrap();
    assert!(e.contains("rope attention factor of 2"), "{e}");
    // A factor without a type is linear, as llama.cpp reads it (checked against it in
    // `each_family_matches_llama_cpp_on_the_same_random_weights`, `llama-linear`); `none` is none.
    assert_eq!(load_error(set("llama.rope.scaling.factor", Value::F32(8.0))), None);
    assert_eq!(load_error(set("llama.rope.scaling.type", Value::String("none".into()))), None);
    let e = load_error(set("llama.attention.sliding_window", Value::U32(64))).unwrap();
    assert!(e.contains("sliding attention window") && e.contains("64"), "{e}");
}

#[test]
fn soft_capped_attention_is_refused_in_a_family_without_it() {
    let e = load_error(architecture("gemma")).expect("gemma must not load");
    assert!(e.contains("`gemma` is not implemented") && e.contains("(1 + w) norms"), "{e}");
    // Gemma 2 caps its scores; in a file of another family the setting is refused.
    let gemma3 = |md: &mut GgufMetadata, ts: &mut GgufTensors| {
        architecture("gemma3")(md, ts);
        md.push(("gemma3.attn_logit_softcapping".into(), Value::F32(50.0)));
    };
    let e = load_error(gemma3).expect("soft-capped attention must not load");
    assert!(e.contains("soft-capped attention scores") && e.contains("attn_logit_softcapping"), "{e}");
}

#[test]
fn a_tensor_the_forward_would_not_use_is_refused() {
    // Llama 3.1's rope frequency factors are read (`llama3` in the reference check), one per
    // rotary pair: the tiny model's heads of 16 have 8.
    assert_eq!(load_error(extra_tensor("rope_freqs.weight", 8)), None);
    let e = load_error(extra_tensor("rope_freqs.weight", 5)).unwrap();
    assert!(e.contains("`rope_freqs.weight` holds 5 factors") && e.contains("8 rotary pairs"), "{e}");
    // A bias, as Qwen2 files carry.
    let e = load_error(extra_tensor("blk.0.attn_q.bias", common::HIDDEN)).unwrap();
    assert!(e.contains("`blk.0.attn_q.bias`") && e.contains("answer wrongly"), "{e}");
}

#[tokio::test]
async fn a_deployment_refused_at_load_answers_503_with_the_cause() {
    // An unused tensor is found only when the weights load; the family was checked at creation.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("biased.gguf");
    write_tiny_gguf_edited(&path, 7, 256, extra_tensor("blk.0.attn_q.bias", common::HIDDEN));
    let s = TestServer::start(vec![spec("biased", &path, Limits::default())], &[]).await;
    let (status, body) = s.chat(json!({"model": "biased", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`blk.0.attn_q.bias`"), "{body}");
}

#[test]
fn a_deployment_of_an_unimplemented_family_is_refused_when_it_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma.gguf");
    write_tiny_gguf_edited(&path, 7, 256, architecture("gemma"));
    let request =
        DeploymentRequest { model: path.to_str().unwrap().into(), name: Some("g".into()), ..Default::default() };
    let Err(e) = DeploymentSpec::resolve(request, &Defaults::default(), Origin::Config) else {
        panic!("a gemma file was accepted");
    };
    assert!(format!("{e:#}").contains("`gemma` is not implemented"), "{e:#}");
}

#[test]
fn a_tensor_type_wick_cannot_read_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iq.gguf");
    common::write_tiny_gguf(&path, 7, 256);
    // The tensor info of `output_norm.weight` (GGUF v3): its name, 1 dimension, the length, then the
    // type, F32 (0) here: made IQ2_XXS (16).
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("the tensor info") + name.len();
    let type_at = at + 4 + 8;
    assert_eq!(&bytes[at..at + 4], &1u32.to_le_bytes(), "one dimension");
    assert_eq!(&bytes[type_at..type_at + 4], &0u32.to_le_bytes(), "F32");
    bytes[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let source = ModelSource::parse(path.to_str().unwrap()).unwrap();
    let Err(e) = source.load(WeightFormat::Native, &Device::Cpu) else { panic!("an IQ2_XXS tensor loaded") };
    let e = format!("{e:#}");
    assert!(e.contains("ggml type 16 (IQ2_XXS)") && e.contains("supported: F32"), "{e}");
}

/// How far a log-probability may be from llama.cpp's. Both quantize a Q4_1 matmul's activations to 8
/// bits per 32-value block, but round and sum differently, and llama.cpp keeps its KV cache in f16.
/// Measured over 32 greedy steps of 3 prompts (2026-12-07; the test prints each family's largest and
/// its logits' smallest std, 0.81 to 1.21): largest 0.107 (llama3, whose factors up to 8 reach
/// positions past 60), the others 0.030 to 0.070. Over the first 6 steps, all that the fixture held
/// before, the largest was 0.063 and the tolerance 0.1. The tiny models' distributions are flat, so a
/// greedy step whose two best tokens are closer than this may go either way; the test follows
/// llama.cpp's token after it.
/// Broken on purpose, each failing at this tolerance over 32 steps (2026-12-07): Qwen3 without its k
/// norm 0.18 off; Gemma 3 without its sliding window 0.44 (from the step whose position passes the
/// window of 8), its local rope base 0.18, SiLU for its GELU 0.18; Gemma 2 without its attention
/// soft-cap 0.18, without its window (every other layer, the family's default pattern) 0.18; Granite
/// without its embedding multiplier 0.24, its residual multiplier 0.16. Measured over 6 steps when
/// each was written, and larger than this: Qwen2 read with llama's rope layout 2.2, Qwen2 without its
/// biases another token at the first step, the linear factor ignored 0.43 (llama-linear); Gemma 3
/// without its embedding scale 3.1, its norms after attention and the FFN 0.30, its logit soft-cap
/// 1.13; Granite with `1/sqrt(head_dim)` for its attention multiplier 0.47, without its logit scale
/// 0.45; Phi-3's rope read as llama's interleaved pairs 0.58, its gate and up swapped 1.0. A llama
/// file's `rope_freqs.weight` left unread is refused as an unused tensor.
const LOGPROB_TOLERANCE: f32 = 0.15;

#[test]
fn each_family_matches_llama_cpp_on_the_same_random_weights() {
    let reference: Reference = serde_json::from_str(include_str!("fixtures/family_logits.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for family in common::TINY_FAMILIES {
        let path = dir.path().join(format!("tiny-{family}.gguf"));
        common::write_tiny_family_gguf(&path, family, common::FAMILY_REFERENCE_SEED);
        let loaded =
            ModelSource::parse(path.to_str().unwrap()).unwrap().load(WeightFormat::Native, &Device::Cpu).unwrap();
        let Agreement { worst, ties, spread } =
            check_runs(loaded.model.as_ref(), &reference.families[family], LOGPROB_TOLERANCE, family);
        println!("{family}: largest log-probability difference from llama.cpp {worst:.5}, near ties taken the other way {ties}, logits' std at least {spread:.2}");
    }
}

/// Writes the tiny model of every family to `$WICK_FIXTURE_DIR`, for
/// tests/fixtures/make_family_logits.py to run llama.cpp on (not a test: ignored, run by that script).
#[test]
#[ignore]
fn write_reference_models() {
    let dir = std::path::PathBuf::from(std::env::var("WICK_FIXTURE_DIR").expect("WICK_FIXTURE_DIR"));
    for family in common::TINY_FAMILIES {
        common::write_tiny_family_gguf(&dir.join(format!("tiny-{family}.gguf")), family, common::FAMILY_REFERENCE_SEED);
    }
}
