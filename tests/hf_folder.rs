//! A Hugging Face-layout folder (config.json, tokenizer.json, tokenizer_config.json,
//! model.safetensors) made by the test with random weights, served over HTTP.

mod common;

use candle_core::{Device, Tensor};
use common::TestServer;
use serde_json::json;
use std::collections::HashMap;
use wick::arch::linear::WeightFormat;
use wick::engine::scheduler::Limits;
use wick::loader::ModelSource;

fn write_folder(dir: &std::path::Path) {
    let (hidden, inter, layers, heads, kv_heads, vocab) = (64usize, 128usize, 2usize, 4usize, 2usize, 300usize);
    let dev = Device::Cpu;
    let mut seed = 0u64;
    let mut rand = |shape: (usize, usize)| {
        seed += 1;
        let n = shape.0 * shape.1;
        let v: Vec<f32> =
            (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.4).collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let head_dim = hidden / heads;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), rand((vocab, hidden)));
    t.insert("model.norm.weight".into(), Tensor::ones(hidden, candle_core::DType::F32, &dev).unwrap());
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        t.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(hidden, candle_core::DType::F32, &dev).unwrap());
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(hidden, candle_core::DType::F32, &dev).unwrap(),
        );
        t.insert(format!("{p}.self_attn.q_proj.weight"), rand((hidden, hidden)));
        t.insert(format!("{p}.self_attn.k_proj.weight"), rand((kv_heads * head_dim, hidden)));
        t.insert(format!("{p}.self_attn.v_proj.weight"), rand((kv_heads * head_dim, hidden)));
        t.insert(format!("{p}.self_attn.o_proj.weight"), rand((hidden, hidden)));
        t.insert(format!("{p}.mlp.gate_proj.weight"), rand((inter, hidden)));
        t.insert(format!("{p}.mlp.up_proj.weight"), rand((inter, hidden)));
        t.insert(format!("{p}.mlp.down_proj.weight"), rand((hidden, inter)));
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "max_position_embeddings": 512, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": true
        })
        .to_string(),
    )
    .unwrap();

    // A byte-level BPE tokenizer: the 256 byte symbols, a few merges, and ChatML's special tokens.
    let gguf = std::env::temp_dir().join(format!("wick-hf-vocab-{}.gguf", std::process::id()));
    common::write_tiny_gguf(&gguf, 3, 256);
    let md = wick::loader::tokenizer::gguf_metadata(&gguf).unwrap();
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
    let e = load_error_with_config(|c| c["architectures"] = json!(["GraniteForCausalLM"])).unwrap();
    assert!(e.contains("`granite` is not implemented"), "{e}");
    let e = load_error_with_config(|c| c["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0})).unwrap();
    assert!(e.contains("rope scaling `longrope`"), "{e}");
    let e = load_error_with_config(|c| c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0})).unwrap();
    assert!(e.contains("rope scaling `llama3`"), "{e}");
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
