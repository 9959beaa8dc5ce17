//! Tiny random-weight Hugging Face folders (config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json), one per family variant: what tests/hf_folder.rs serves, and what
//! tests/fixtures/make_hf_logits.py runs transformers on for the reference fixture.

use super::values;
use candle_core::{Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// The variants `write_tiny_hf_folder` writes: each family, and llama with each rope scaling Wick
/// implements (Llama 3's in the `rope_scaling` form most checkpoints carry, linear in transformers
/// 5's `rope_parameters` form).
pub const TINY_HF_FAMILIES: [&str; 9] =
    ["llama", "qwen2", "qwen3", "llama3", "llama-linear", "gemma3", "gemma2", "granite", "phi3"];

/// The tiny granite folder's `embedding_multiplier`, `residual_multiplier`, `attention_multiplier`
/// and `logits_scaling`.
pub const HF_GRANITE_MULTIPLIERS: [f32; 4] = [2.0, 0.6, 0.4, 1.25];

/// The vocabulary of the model (the tokenizer's 264 tokens, and ids above them that only the model
/// knows, as real checkpoints pad theirs).
pub const HF_VOCAB: usize = 300;

/// The tiny gemma3 and gemma2 folders' logit soft-cap.
pub const HF_GEMMA3_SOFTCAP: f32 = 4.0;
/// The tiny gemma2 folder's attention-score soft-cap.
pub const HF_GEMMA2_ATTN_SOFTCAP: f32 = 1.0;

/// Writes the tiny model of `family` (one of `TINY_HF_FAMILIES`) into `dir`. Every difference takes
/// effect: norm weights away from 1, llama's head untied (the others tie it), qwen2's q/k/v biases
/// large enough to move the logits, qwen3's per-head q/k norms on heads of 32 (wider than
/// hidden/heads, as Qwen3's), and scalings whose original context (32) lies below the tested
/// positions. The embedding's scale keeps the logits spread (std above 1). gemma3 has qwen3's heads
/// and q/k norms, Gemma's (1 + w) norms (weights around 0) with the two after attention and the FFN,
/// a `query_pre_attn_scalar` other than the head size, a sliding window of 8 on layer 0 with its
/// own rope base, and a logit soft-cap about the logits' spread, in the config form the hub's Gemma 3
/// checkpoints carry. gemma2 is gemma3 without q/k norms or a local rope base, its window on every
/// other layer as its older configs imply (no `layer_types`), and its attention scores capped.
/// granite sets its four multipliers away from 1 (`HF_GRANITE_MULTIPLIERS`); phi3 has q, k and v in
/// one `qkv_proj` and gate and up in one `gate_up_proj`, and a sliding window of 8 on every layer.
pub fn write_tiny_hf_folder(dir: &Path, family: &str, seed: u64) {
    assert!(TINY_HF_FAMILIES.contains(&family), "no tiny {family} folder");
    let (hidden, inter, layers, heads, kv_heads) = (64usize, 128usize, 2usize, 4usize, 2usize);
    let gemma = family == "gemma3" || family == "gemma2";
    let head_dim = if family == "qwen3" || gemma { 32 } else { hidden / heads };
    // Gemma's norms scale by (1 + w).
    let norm_offset = if gemma { 0.0 } else { 1.0 };
    let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
    let dev = Device::Cpu;
    let mut n = 0u64;
    let mut random = |shape: &[usize], scale: f32, offset: f32| {
        n += 1;
        let len = shape.iter().product();
        let v: Vec<f32> = values(seed * 1000 + n, len, scale).into_iter().map(|x| x + offset).collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let tied = family != "llama";
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), random(&[HF_VOCAB, hidden], 0.6, 0.0));
    t.insert("model.norm.weight".into(), random(&[hidden], 0.3, norm_offset));
    if !tied {
        t.insert("lm_head.weight".into(), random(&[HF_VOCAB, hidden], 0.6, 0.0));
    }
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        t.insert(format!("{p}.input_layernorm.weight"), random(&[hidden], 0.3, norm_offset));
        t.insert(format!("{p}.post_attention_layernorm.weight"), random(&[hidden], 0.3, norm_offset));
        if gemma {
            t.insert(format!("{p}.pre_feedforward_layernorm.weight"), random(&[hidden], 0.3, 0.0));
            t.insert(format!("{p}.post_feedforward_layernorm.weight"), random(&[hidden], 0.3, 0.0));
        }
        // Drawn in the same order for every family, fused or not.
        if family == "phi3" {
            t.insert(format!("{p}.self_attn.qkv_proj.weight"), random(&[q_dim + 2 * kv_dim, hidden], 0.2, 0.0));
        } else {
            t.insert(format!("{p}.self_attn.q_proj.weight"), random(&[q_dim, hidden], 0.2, 0.0));
            t.insert(format!("{p}.self_attn.k_proj.weight"), random(&[kv_dim, hidden], 0.2, 0.0));
            t.insert(format!("{p}.self_attn.v_proj.weight"), random(&[kv_dim, hidden], 0.2, 0.0));
        }
        t.insert(format!("{p}.self_attn.o_proj.weight"), random(&[hidden, q_dim], 0.2, 0.0));
        if family == "phi3" {
            t.insert(format!("{p}.mlp.gate_up_proj.weight"), random(&[2 * inter, hidden], 0.2, 0.0));
        } else {
            t.insert(format!("{p}.mlp.gate_proj.weight"), random(&[inter, hidden], 0.2, 0.0));
            t.insert(format!("{p}.mlp.up_proj.weight"), random(&[inter, hidden], 0.2, 0.0));
        }
        t.insert(format!("{p}.mlp.down_proj.weight"), random(&[hidden, inter], 0.2, 0.0));
        if family == "qwen2" {
            for (part, len) in [("q", q_dim), ("k", kv_dim), ("v", kv_dim)] {
                t.insert(format!("{p}.self_attn.{part}_proj.bias"), random(&[len], 0.5, 0.0));
            }
        }
        if family == "qwen3" || family == "gemma3" {
            t.insert(format!("{p}.self_attn.q_norm.weight"), random(&[head_dim], 0.3, norm_offset));
            t.insert(format!("{p}.self_attn.k_norm.weight"), random(&[head_dim], 0.3, norm_offset));
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();

    let (architecture, model_type) = match family {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        "gemma3" => ("Gemma3ForCausalLM", "gemma3_text"),
        "gemma2" => ("Gemma2ForCausalLM", "gemma2"),
        "granite" => ("GraniteForCausalLM", "granite"),
        "phi3" => ("Phi3ForCausalLM", "phi3"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut config = json!({
        "architectures": [architecture], "model_type": model_type, "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": HF_VOCAB,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32",
    });
    match family {
        "qwen2" | "qwen3" => config["use_sliding_window"] = json!(false),
        "llama3" => {
            config["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
        }
        "gemma2" | "gemma3" => {
            let object = config.as_object_mut().unwrap();
            object.remove("hidden_act");
            let shared = [
                ("hidden_activation", json!("gelu_pytorch_tanh")),
                ("sliding_window", json!(8)),
                ("query_pre_attn_scalar", json!(24)),
                ("final_logit_softcapping", json!(HF_GEMMA3_SOFTCAP)),
            ];
            let own = match family {
                "gemma2" => {
                    vec![("rope_theta", json!(10_000.0)), ("attn_logit_softcapping", json!(HF_GEMMA2_ATTN_SOFTCAP))]
                }
                _ => vec![
                    ("rope_theta", json!(1_000_000.0)),
                    ("rope_local_base_freq", json!(10_000.0)),
                    ("rope_scaling", json!(null)),
                    ("layer_types", json!(["sliding_attention", "full_attention"])),
                    ("attn_logit_softcapping", json!(null)),
                ],
            };
            for (key, value) in shared.into_iter().chain(own) {
                object.insert(key.into(), value);
            }
        }
        "granite" => {
            let [embedding, residual, attention, logits] = HF_GRANITE_MULTIPLIERS;
            config["embedding_multiplier"] = json!(embedding);
            config["residual_multiplier"] = json!(residual);
            config["attention_multiplier"] = json!(attention);
            config["logits_scaling"] = json!(logits);
        }
        "phi3" => {
            config["sliding_window"] = json!(8);
            // Phi-3's default pad id (32000) lies outside the tiny vocabulary.
            config["pad_token_id"] = json!(null);
        }
        "llama-linear" => {
            let object = config.as_object_mut().unwrap();
            object.remove("rope_theta");
            object
                .insert("rope_parameters".into(), json!({"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0}));
        }
        _ => {}
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_tokenizer(dir);
}

/// A byte-level BPE tokenizer (the tiny GGUF's: 256 byte symbols, a few merges, ChatML's special
/// tokens) and a ChatML template.
fn write_tokenizer(dir: &Path) {
    let gguf = dir.join("vocab.gguf.tmp");
    super::write_tiny_gguf(&gguf, 3, 256);
    let md = wick::loader::tokenizer::gguf_metadata(&gguf).unwrap();
    std::fs::remove_file(&gguf).unwrap();
    let tokens: Vec<String> =
        md["tokenizer.ggml.tokens"].to_vec().unwrap().iter().map(|v| v.to_string().unwrap().clone()).collect();
    let vocab_map: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<serde_json::Value> = (0..3)
        .map(|i| json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab_map, "merges": ["h e", "l l", "he ll", "Ġ w", "o r"]}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
            "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        })
        .to_string(),
    )
    .unwrap();
}
