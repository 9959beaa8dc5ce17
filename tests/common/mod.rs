//! Test helpers: a tiny random-weight llama GGUF made on the fly (with a byte-level BPE tokenizer and
//! a ChatML template in its metadata), and a Wick server on a free loopback port.
#![allow(dead_code)]

pub mod decode;
pub mod hf;
pub mod process;
pub mod reference;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use wick::deploy::{Defaults, DeploymentRequest, DeploymentSpec, Deployments, Origin};
use wick::engine::scheduler::Limits;

pub const HIDDEN: usize = 64;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const CONTEXT: usize = 256;
/// Control tokens of the tiny vocabulary.
pub const ENDOFTEXT: u32 = 0;
pub const IM_START: u32 = 1;
pub const IM_END: u32 = 2;

/// Deterministic pseudo-random numbers in [-scale, scale).
pub fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// GPT-2's byte-to-character table (the inverse of the tokenizer's).
fn byte_chars() -> Vec<char> {
    let mut shifted = 0;
    (0..=255u8)
        .map(|b| {
            if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
                b as char
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap()
            }
        })
        .collect()
}

/// Writes a 2-layer llama GGUF with random weights to `path`.
pub fn write_tiny_gguf(path: &Path, seed: u64, context: usize) {
    write_tiny_gguf_edited(path, seed, context, |_, _| {})
}

/// The metadata and tensors of a GGUF file being written, for a test to change.
pub type GgufMetadata = Vec<(String, Value)>;
pub type GgufTensors = Vec<(String, QTensor)>;

/// `write_tiny_gguf`, with `edit` changing the metadata and tensors before they are written (another
/// architecture, a setting, an extra tensor).
pub fn write_tiny_gguf_edited(
    path: &Path,
    seed: u64,
    context: usize,
    edit: impl FnOnce(&mut GgufMetadata, &mut GgufTensors),
) {
    let dev = Device::Cpu;
    let (inter, layers, heads, kv_heads) = (128usize, LAYERS, HEADS as u32, KV_HEADS as u32);
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    let mut types: Vec<i32> = vec![3, 3, 3];
    for c in byte_chars() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges = ["h e", "l l", "he ll", "Ġ w", "o r"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    let vocab = tokens.len();

    let mut n = 0u64;
    let mut matrix = |rows: usize, cols: usize| {
        n += 1;
        let t = Tensor::from_vec(values(seed * 1000 + n, rows * cols, 0.2), (rows, cols), &dev).unwrap();
        QTensor::quantize(&t, GgmlDType::Q4_1).unwrap()
    };
    let ones = |len: usize| {
        QTensor::quantize(&Tensor::ones(len, candle_core::DType::F32, &dev).unwrap(), GgmlDType::F32).unwrap()
    };
    let head_dim = HIDDEN / heads as usize;
    let mut named: Vec<(String, QTensor)> = vec![("token_embd.weight".into(), matrix(vocab, HIDDEN))];
    for i in 0..layers {
        named.push((format!("blk.{i}.attn_norm.weight"), ones(HIDDEN)));
        named.push((format!("blk.{i}.ffn_norm.weight"), ones(HIDDEN)));
        named.push((format!("blk.{i}.attn_q.weight"), matrix(HIDDEN, HIDDEN)));
        named.push((format!("blk.{i}.attn_k.weight"), matrix(kv_heads as usize * head_dim, HIDDEN)));
        named.push((format!("blk.{i}.attn_v.weight"), matrix(kv_heads as usize * head_dim, HIDDEN)));
        named.push((format!("blk.{i}.attn_output.weight"), matrix(HIDDEN, HIDDEN)));
        named.push((format!("blk.{i}.ffn_gate.weight"), matrix(inter, HIDDEN)));
        named.push((format!("blk.{i}.ffn_up.weight"), matrix(inter, HIDDEN)));
        named.push((format!("blk.{i}.ffn_down.weight"), matrix(HIDDEN, inter)));
    }
    named.push(("output_norm.weight".into(), ones(HIDDEN)));

    let s = |v: &str| Value::String(v.to_string());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", Value::U32(layers as u32)),
        ("llama.context_length", Value::U32(context as u32)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(inter as u32)),
        ("llama.attention.head_count", Value::U32(heads)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| s(t)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.iter().map(|&t| Value::I32(t)).collect())),
        ("tokenizer.ggml.merges", Value::Array(merges.iter().map(|m| s(m)).collect())),
        ("tokenizer.ggml.bos_token_id", Value::U32(IM_START)),
        ("tokenizer.ggml.eos_token_id", Value::U32(IM_END)),
        (
            "tokenizer.chat_template",
            s("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
        ),
    ];
    let mut metadata: GgufMetadata = metadata.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    edit(&mut metadata, &mut named);
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

/// The families `write_tiny_family_gguf` writes.
pub const TINY_FAMILIES: [&str; 9] =
    ["llama", "qwen2", "qwen3", "llama3", "llama-linear", "gemma3", "gemma2", "granite", "phi3"];

/// The tiny model as a file of `family` (one of `TINY_FAMILIES`), as llama.cpp's converter would
/// write it: its architecture's metadata keys and pre-tokenizer; for qwen2 random q, k and v biases
/// (large enough to move the logits); for qwen3 random per-head q and k norms, and heads of 32 on
/// the hidden size of 64 (a q of 128), as Qwen3 and Gemma 3 have heads wider than hidden/heads.
/// `llama3` and `llama-linear` are llama files with a scaled rope: per-pair factors in
/// `rope_freqs.weight` (chosen by hand to span 1 to 8, as Llama 3.1's do), and a linear factor of 4
/// in the metadata. `gemma3` has qwen3's heads and q/k norms, random norms after attention and the
/// FFN, a sliding window of 8 on layer 0 (shorter than every prompt) with the default local rope
/// base of 10,000 against 1,000,000 on layer 1, and soft-capped logits (a cap of
/// `GEMMA3_SOFTCAP`, about the logits' own spread); its GELU and embedding scale act on any weights.
/// `gemma2` is gemma3 without the q/k norms, its window on every other layer by the family's
/// default pattern, and its attention scores capped too. `granite` sets each of its four
/// multipliers away from 1 (`GRANITE_MULTIPLIERS`); `phi3` has q, k and v fused into `attn_qkv` and
/// gate and up into a double-height `ffn_up`, as llama.cpp's converter writes Phi-3.
pub fn write_tiny_family_gguf(path: &Path, family: &str, seed: u64) {
    assert!(TINY_FAMILIES.contains(&family), "no tiny {family} model");
    let architecture = if family.starts_with("llama") { "llama" } else { family };
    write_tiny_gguf_edited(path, seed, CONTEXT, |md, ts| {
        if family == "llama3" {
            let factors = Tensor::new(&[1.0f32, 1.0, 1.3, 2.0, 3.5, 8.0, 8.0, 8.0], &Device::Cpu).unwrap();
            ts.push(("rope_freqs.weight".into(), QTensor::quantize(&factors, GgmlDType::F32).unwrap()));
        }
        if family == "llama-linear" {
            md.push(("llama.rope.scaling.type".into(), Value::String("linear".into())));
            md.push(("llama.rope.scaling.factor".into(), Value::F32(4.0)));
        }
        for (key, value) in md.iter_mut() {
            if key == "general.architecture" {
                *value = Value::String(architecture.into());
            } else if key == "tokenizer.ggml.pre" && architecture != "llama" {
                *value = Value::String("qwen2".into());
            } else if let Some(rest) = key.strip_prefix("llama.") {
                *key = format!("{architecture}.{rest}");
            }
        }
        match family {
            "qwen2" => add_qkv_biases(ts, seed),
            "qwen3" => widen_heads(md, ts, architecture, seed, true),
            "gemma3" | "gemma2" => {
                add_gemma_settings(md, ts, architecture, seed);
                widen_heads(md, ts, architecture, seed, family == "gemma3");
            }
            "granite" => {
                let [embedding, residual, attention, logits] = GRANITE_MULTIPLIERS;
                for (key, value) in [
                    ("embedding_scale", embedding),
                    ("residual_scale", residual),
                    ("attention.scale", attention),
                    ("logit_scale", logits),
                ] {
                    md.push((format!("granite.{key}"), Value::F32(value)));
                }
            }
            "phi3" => {
                for i in 0..LAYERS {
                    fuse(
                        ts,
                        &["q", "k", "v"].map(|p| format!("blk.{i}.attn_{p}.weight")),
                        &format!("blk.{i}.attn_qkv.weight"),
                    );
                    fuse(
                        ts,
                        &["gate", "up"].map(|p| format!("blk.{i}.ffn_{p}.weight")),
                        &format!("blk.{i}.ffn_up.weight"),
                    );
                }
            }
            _ => {}
        }
    })
}

/// The seed of the tiny family models whose llama.cpp answers tests/fixtures/family_logits.json
/// holds (tests/families.rs, tests/logprobs.rs).
pub const FAMILY_REFERENCE_SEED: u64 = 11;

/// The tiny granite model's embedding, residual, attention and logit multipliers (the logits are
/// divided by the last), each far enough from 1 (or from `1/sqrt(head_dim)`) to move the logits.
pub const GRANITE_MULTIPLIERS: [f32; 4] = [2.0, 0.6, 0.4, 0.8];

/// Replaces the weights `parts` by one, `into`, with their rows stacked in order.
fn fuse(ts: &mut GgufTensors, parts: &[String], into: &str) {
    let dequantized: Vec<Tensor> = parts
        .iter()
        .map(|name| ts.iter().find(|(n, _)| n == name).expect("a part to fuse").1.dequantize(&Device::Cpu).unwrap())
        .collect();
    let dtype = ts.iter().find(|(n, _)| n == &parts[0]).unwrap().1.dtype();
    ts.retain(|(n, _)| !parts.contains(n));
    let stacked = Tensor::cat(&dequantized, 0).unwrap();
    ts.push((into.into(), QTensor::quantize(&stacked, dtype).unwrap()));
}

/// Qwen2's random q, k and v biases.
fn add_qkv_biases(ts: &mut GgufTensors, seed: u64) {
    let kv_dim = KV_HEADS * HIDDEN / HEADS;
    for i in 0..LAYERS {
        for (n, (part, len)) in [("q", HIDDEN), ("k", kv_dim), ("v", kv_dim)].into_iter().enumerate() {
            let bias = Tensor::from_vec(values(seed * 7919 + (3 * i + n) as u64, len, 0.5), len, &Device::Cpu);
            ts.push((format!("blk.{i}.attn_{part}.bias"), QTensor::quantize(&bias.unwrap(), GgmlDType::F32).unwrap()));
        }
    }
}

/// Gemma's sliding window, soft-caps, rope base, a wider final norm and the norms after attention
/// and the FFN.
fn add_gemma_settings(md: &mut GgufMetadata, ts: &mut GgufTensors, architecture: &str, seed: u64) {
    md.push((format!("{architecture}.attention.sliding_window"), Value::U32(8)));
    md.push((format!("{architecture}.final_logit_softcapping"), Value::F32(GEMMA3_SOFTCAP)));
    if architecture == "gemma3" {
        md.push(("gemma3.attention.sliding_window_pattern".into(), Value::U32(2)));
    } else {
        // Gemma 2's own pattern (every other layer) is the default; its scores are capped.
        md.push(("gemma2.attn_logit_softcapping".into(), Value::F32(GEMMA2_ATTN_SOFTCAP)));
    }
    for (key, value) in md.iter_mut() {
        if key == &format!("{architecture}.rope.freq_base") {
            *value = Value::F32(1_000_000.0);
        }
    }
    // A wider final norm spreads the logits (std over 1) for the cap to act on.
    let wide = Tensor::from_vec(vec![1.6f32; HIDDEN], HIDDEN, &Device::Cpu).unwrap();
    ts.retain(|(name, _)| name != "output_norm.weight");
    ts.push(("output_norm.weight".into(), QTensor::quantize(&wide, GgmlDType::F32).unwrap()));
    for i in 0..LAYERS {
        for (n, name) in ["post_attention_norm", "post_ffw_norm"].into_iter().enumerate() {
            let v: Vec<f32> =
                values(seed * 15_485_863 + (2 * i + n) as u64, HIDDEN, 0.5).into_iter().map(|x| x + 1.0).collect();
            let t = Tensor::from_vec(v, HIDDEN, &Device::Cpu).unwrap();
            ts.push((format!("blk.{i}.{name}.weight"), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
        }
    }
}

/// Heads of 32 on the hidden size of 64 (wider than hidden/heads), with random per-head q and k
/// norms where `qk_norm`.
fn widen_heads(md: &mut GgufMetadata, ts: &mut GgufTensors, architecture: &str, seed: u64, qk_norm: bool) {
    let head_dim = 32;
    md.push((format!("{architecture}.attention.key_length"), Value::U32(head_dim as u32)));
    md.push((format!("{architecture}.attention.value_length"), Value::U32(head_dim as u32)));
    let seeded = |n: u64, rows: usize, cols: usize, dtype: GgmlDType, offset: f32| {
        let v: Vec<f32> = values(seed * 104_729 + n, rows * cols, 0.2).into_iter().map(|x| x + offset).collect();
        let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&if rows == 1 { t.flatten_all().unwrap() } else { t }, dtype).unwrap()
    };
    let (q_dim, kv_dim) = (HEADS * head_dim, KV_HEADS * head_dim);
    ts.retain(|(name, _)| !["attn_q.", "attn_k.", "attn_v.", "attn_output."].iter().any(|p| name.contains(p)));
    for i in 0..LAYERS {
        let n = 10 * i as u64;
        ts.push((format!("blk.{i}.attn_q.weight"), seeded(n, q_dim, HIDDEN, GgmlDType::Q4_1, 0.0)));
        ts.push((format!("blk.{i}.attn_k.weight"), seeded(n + 1, kv_dim, HIDDEN, GgmlDType::Q4_1, 0.0)));
        ts.push((format!("blk.{i}.attn_v.weight"), seeded(n + 2, kv_dim, HIDDEN, GgmlDType::Q4_1, 0.0)));
        ts.push((format!("blk.{i}.attn_output.weight"), seeded(n + 3, HIDDEN, q_dim, GgmlDType::Q4_1, 0.0)));
        // Norm weights around 1, one of `head_dim` for all heads.
        if qk_norm {
            ts.push((format!("blk.{i}.attn_q_norm.weight"), seeded(n + 4, 1, head_dim, GgmlDType::F32, 1.0)));
            ts.push((format!("blk.{i}.attn_k_norm.weight"), seeded(n + 5, 1, head_dim, GgmlDType::F32, 1.0)));
        }
    }
}

/// The tiny gemma3 and gemma2 models' logit soft-cap.
pub const GEMMA3_SOFTCAP: f32 = 4.0;
/// The tiny gemma2 model's attention-score soft-cap.
pub const GEMMA2_ATTN_SOFTCAP: f32 = 1.0;

/// Writes a tiny model once per test process and returns its path.
fn written_once(cell: &'static OnceLock<PathBuf>, file: &str, seed: u64, context: usize) -> PathBuf {
    cell.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wick-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        write_tiny_gguf(&path, seed, context);
        path
    })
    .clone()
}

/// The tiny model with a 256-token context.
pub fn tiny_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    written_once(&PATH, "tiny-llama.gguf", 1, CONTEXT)
}

/// The tiny model with a 4096-token context: for generations long enough to interrupt.
pub fn tiny_long_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    written_once(&PATH, "tiny-llama-long.gguf", 2, 4096)
}

/// The tiny model without a chat template, as base models ship: it takes raw prompts only.
pub fn tiny_base_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wick-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny-base.gguf");
        write_tiny_gguf_edited(&path, 1, CONTEXT, |md, _| md.retain(|(key, _)| key != "tokenizer.chat_template"));
        path
    })
    .clone()
}

/// `base` with the fields of `extra` added or replaced (both JSON objects): a request with a few
/// fields changed.
pub fn merged(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    base
}

/// The model at `path` served as `name`, with the server's default settings and `limits`.
pub fn spec(name: &str, path: &Path, limits: Limits) -> DeploymentSpec {
    let request =
        DeploymentRequest { model: path.to_str().unwrap().into(), name: Some(name.into()), ..Default::default() };
    spec_from(request, limits)
}

pub fn spec_from(request: DeploymentRequest, limits: Limits) -> DeploymentSpec {
    DeploymentSpec::resolve(request, &Defaults { limits, ..Default::default() }, Origin::Config).unwrap()
}

pub struct TestServer {
    pub url: String,
    pub state: wick::AppState,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

impl TestServer {
    /// A server with inference keys `keys` (the first is sent with every request).
    pub async fn start(specs: Vec<DeploymentSpec>, keys: &[&str]) -> Self {
        let deployments = Deployments::new(specs).unwrap();
        let mut server = Self::serve(deployments, wick::auth::Keys::inference(keys)).await;
        server.key = keys.first().map(|k| k.to_string());
        server
    }

    /// A server over given deployments and keys; it sends no key unless `key` is set.
    pub async fn serve(deployments: Deployments, keys: wick::auth::Keys) -> Self {
        let state = wick::AppState { deployments: Arc::new(deployments), keys: Arc::new(keys) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = wick::app(state.clone());
        tokio::spawn(async move { axum::serve(wick::no_delay(listener), app).await.unwrap() });
        Self { url, state, client: reqwest::Client::new(), key: None }
    }

    /// The tiny model served as `tiny`, no keys.
    pub async fn tiny() -> Self {
        Self::start(vec![spec("tiny", &tiny_model(), Limits::default())], &[]).await
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.post(format!("{}{path}", self.url));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.get(format!("{}{path}", self.url));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// POSTs a chat request and returns (status, JSON body).
    pub async fn chat(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self.post("/v1/chat/completions").json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs a streaming chat request and returns every `data:` payload in order.
    pub async fn chat_stream(&self, body: serde_json::Value) -> Vec<String> {
        self.stream("/v1/chat/completions", body).await
    }

    /// POSTs a completions request and returns (status, JSON body).
    pub async fn complete(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self.post("/v1/completions").json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs a streaming request to `path` and returns every `data:` payload in order.
    pub async fn stream(&self, path: &str, body: serde_json::Value) -> Vec<String> {
        let resp = self.post(path).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let text = resp.text().await.unwrap();
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

/// A greedy request that never ends early on the tiny model's control tokens.
pub fn greedy(content: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    })
}

/// A greedy completions request for `prompt` (a string, strings or token ids) that never ends early
/// on the tiny model's control tokens.
pub fn greedy_prompt(prompt: serde_json::Value, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "model": "tiny",
        "prompt": prompt,
        "temperature": 0,
        "max_tokens": max_tokens,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    })
}

/// Whether a catalog model is pulled. Missing, the test fails when WICK_REQUIRE_REAL_MODEL=1 (as in
/// CI) and is skipped with a notice otherwise.
pub fn real_model_pulled(name: &str) -> bool {
    let entry = wick::catalog::Catalog::builtin().get(name).unwrap();
    if !wick::pull::missing(entry) {
        return true;
    }
    if std::env::var("WICK_REQUIRE_REAL_MODEL").is_ok_and(|v| v == "1") {
        panic!("{name} is not pulled: run `wick pull {name}`");
    }
    eprintln!("SKIPPED: {name} is not pulled (run `wick pull {name}`)");
    false
}

/// `POST /v1/audio/speech`: (status, content type, body).
pub async fn speak(s: &TestServer, body: serde_json::Value) -> (u16, String, Vec<u8>) {
    let r = s.post("/v1/audio/speech").json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, r.bytes().await.unwrap().to_vec())
}

/// The root mean square of samples (0 for none).
pub fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Requests a deployment has answered, from its usage.
pub fn requests(s: &TestServer, deployment: &str) -> u64 {
    s.state.deployments.get(deployment).unwrap().view().usage.requests
}
