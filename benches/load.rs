//! Load generator: streaming chat completions (or, with `--endpoint completions`, text completions of
//! a base model) over HTTP at several concurrency levels, against Wick
//! and (optionally) llama.cpp's llama-server in the same run. Reports aggregate output tokens/s, time
//! to first token, per-stream decode rate and each server's peak RSS, and the Wick/llama ratios.
//!
//!   cargo bench --bench load -- --target wick=http://127.0.0.1:8080,smollm2-135m-instruct,PID \
//!       [--target llama=http://127.0.0.1:8181,smollm2,PID] [--concurrency 1,4,16] [--max-tokens 128] \
//!       [--long-prompt 1400] [--endpoint chat|completions] [--extra NAME=JSON]
//!
//! benches/compare.sh starts both servers and runs this. Every request asks for exactly `max-tokens`
//! tokens (end-of-generation tokens are banned with logit_bias) so both servers do the same work.

use futures::StreamExt;
use std::time::{Duration, Instant};

struct Target {
    name: String,
    url: String,
    model: String,
    pid: Option<u32>,
    /// Fields added to each request body (`--extra NAME=JSON`): a `response_format`, say, so that two
    /// targets on one server compare constrained decoding with plain.
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default, Clone)]
struct Sample {
    ttft: Duration,
    decode_rate: f64,
    tokens: usize,
    prompt_tokens: usize,
}

struct Level {
    concurrency: usize,
    aggregate: f64,
    ttft_p50: f64,
    decode_p50: f64,
    failures: usize,
}

const PROMPTS: &[&str] = &[
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works.",
    "Describe a walk through a forest in autumn.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for a vegetable soup.",
    "Tell me about the history of the bicycle.",
    "Why is the sky blue? Explain in detail.",
    "Write a letter to a friend about a trip to the mountains.",
];

/// Which OpenAI endpoint the requests go to.
#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    /// `/v1/chat/completions`, the prompt as one user message.
    Chat,
    /// `/v1/completions`, the prompt as it is (a base model without a chat template).
    Completions,
}

static ENDPOINT: std::sync::OnceLock<Endpoint> = std::sync::OnceLock::new();

async fn one_request(
    client: &reqwest::Client,
    t: &Target,
    prompt: &str,
    max_tokens: usize,
    ban: &serde_json::Value,
) -> anyhow::Result<Sample> {
    let endpoint = *ENDPOINT.get().unwrap_or(&Endpoint::Chat);
    let mut body = serde_json::json!({
        "model": t.model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
        "logit_bias": ban,
    });
    body.as_object_mut().expect("an object").extend(t.extra.clone());
    let path = match endpoint {
        Endpoint::Chat => {
            body["messages"] = serde_json::json!([{"role": "user", "content": prompt}]);
            "/v1/chat/completions"
        }
        Endpoint::Completions => {
            body["prompt"] = serde_json::json!(prompt);
            "/v1/completions"
        }
    };
    let start = Instant::now();
    let resp = client.post(format!("{}{path}", t.url)).json(&body).send().await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let (mut first, mut last) = (None, start);
    let (mut tokens, mut prompt_tokens) = (0, 0);
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data)?;
            let choice = &v["choices"][0];
            let content = if endpoint == Endpoint::Chat { &choice["delta"]["content"] } else { &choice["text"] };
            if content.as_str().is_some_and(|c| !c.is_empty()) {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            }
            if let Some(n) = v["usage"]["prompt_tokens"].as_u64() {
                prompt_tokens = n as usize;
            }
        }
    }
    let first = first.ok_or_else(|| anyhow::anyhow!("no content"))?;
    let decode_secs = (last - first).as_secs_f64();
    Ok(Sample {
        ttft: first - start,
        decode_rate: if decode_secs > 0.0 { (tokens.saturating_sub(1)) as f64 / decode_secs } else { 0.0 },
        tokens,
        prompt_tokens,
    })
}

/// A prompt of about `repeats` times the PROMPTS passage, opened by `nonce` so that no two requests
/// share a first token: both servers cache prompt prefixes (llama-server a slot's last prompt, Wick
/// whole KV blocks) and would otherwise skip the prefill that this measures.
fn long_prompt(nonce: usize, repeats: usize) -> String {
    let passage = PROMPTS.join(" ");
    format!("{nonce} Summarise the following in one line. {}", vec![passage; repeats].join(" "))
}

/// Time to first token of a long prompt, one request at a time: the prefill alone. The number of
/// repeats is calibrated from the first target's token count so that the prompt is about `tokens`.
fn long_prompt_ttft(
    rt: &tokio::runtime::Runtime,
    targets: &[Target],
    tokens: usize,
    rounds: usize,
    ban: &serde_json::Value,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let count = |repeats| -> anyhow::Result<usize> {
        Ok(rt.block_on(one_request(&client, &targets[0], &long_prompt(0, repeats), 1, ban))?.prompt_tokens)
    };
    let (one, four) = (count(1)?, count(4)?);
    let per_repeat = (four - one) as f64 / 3.0;
    let repeats = ((tokens as f64 - (one as f64 - per_repeat)) / per_repeat).round().max(1.0) as usize;
    println!("\n{rounds} prompts of about {tokens} tokens, one at a time, 1 output token");
    println!("| server | prompt tokens | TTFT p50 ms | min | max | prefill tok/s |");
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for t in targets {
        let mut ttft = Vec::new();
        let mut prompt_tokens = 0;
        for r in 0..rounds {
            let s = rt.block_on(one_request(&client, t, &long_prompt(r + 1, repeats), 1, ban))?;
            ttft.push(s.ttft.as_secs_f64() * 1e3);
            prompt_tokens = s.prompt_tokens;
        }
        ttft.sort_by(|a, b| a.total_cmp(b));
        let p50 = ttft[ttft.len() / 2];
        println!(
            "| {} | {prompt_tokens} | {p50:.0} | {:.0} | {:.0} | {:.0} |",
            t.name,
            ttft[0],
            ttft[ttft.len() - 1],
            prompt_tokens as f64 / (p50 / 1e3)
        );
        medians.push(p50);
    }
    if medians.len() >= 2 {
        println!("{}/{} TTFT: {:.2}x", targets[0].name, targets[1].name, medians[0] / medians[1]);
    }
    Ok(())
}

async fn run_level(t: &Target, concurrency: usize, max_tokens: usize, rounds: usize, ban: &serde_json::Value) -> Level {
    // A fresh connection per request: llama-server closes idle keep-alive connections, and a
    // request sent on one that was just closed fails without ever reaching the server.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let start = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let client = client.clone();
        async move {
            let mut out = Vec::new();
            for r in 0..rounds {
                out.push(one_request(&client, t, PROMPTS[(w + r) % PROMPTS.len()], max_tokens, ban).await);
            }
            out
        }
    });
    let results: Vec<anyhow::Result<Sample>> = futures::future::join_all(workers).await.into_iter().flatten().collect();
    let wall = start.elapsed().as_secs_f64();
    let failures = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("{}: a request failed: {e}", t.name);
    }
    let ok: Vec<Sample> = results.into_iter().filter_map(Result::ok).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Level {
        concurrency,
        aggregate: ok.iter().map(|s| s.tokens).sum::<usize>() as f64 / wall,
        ttft_p50: median(ok.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect()),
        decode_p50: median(ok.iter().map(|s| s.decode_rate).collect()),
        failures,
    }
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut targets = Vec::new();
    let mut levels = vec![1, 4, 16];
    let mut max_tokens = 128;
    let mut rounds = 2;
    let mut ban = serde_json::json!({});
    let mut long_prompt_tokens = 0;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--target" => {
                let (name, rest) =
                    value.split_once('=').ok_or_else(|| anyhow::anyhow!("--target NAME=URL,MODEL[,PID]"))?;
                let parts: Vec<&str> = rest.split(',').collect();
                targets.push(Target {
                    name: name.into(),
                    url: parts[0].into(),
                    model: parts.get(1).copied().unwrap_or("default").into(),
                    pid: parts.get(2).and_then(|p| p.parse().ok()),
                    extra: Default::default(),
                });
            }
            "--extra" => {
                let (name, json) = value.split_once('=').ok_or_else(|| anyhow::anyhow!("--extra NAME=JSON"))?;
                let target = targets
                    .iter_mut()
                    .find(|t| t.name == name)
                    .ok_or_else(|| anyhow::anyhow!("--extra {name}: give its --target first"))?;
                let serde_json::Value::Object(fields) = serde_json::from_str(json)? else {
                    anyhow::bail!("--extra {name}: a JSON object")
                };
                target.extra = fields;
            }
            // `none`: no concurrency levels (only the long prompt).
            "--concurrency" if value == "none" => levels.clear(),
            "--concurrency" => levels = value.split(',').map(|c| c.parse()).collect::<Result<_, _>>()?,
            "--max-tokens" => max_tokens = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            "--endpoint" => {
                let endpoint = match value.as_str() {
                    "chat" => Endpoint::Chat,
                    "completions" => Endpoint::Completions,
                    other => anyhow::bail!("--endpoint chat|completions, not {other}"),
                };
                ENDPOINT.set(endpoint).map_err(|_| anyhow::anyhow!("--endpoint given twice"))?;
            }
            // Also time the first token of prompts of about this many tokens (0: skip).
            "--long-prompt" => long_prompt_tokens = value.parse()?,
            // Token ids to ban (comma-separated), so that every request runs to max-tokens.
            "--ban" => {
                ban = value
                    .split(',')
                    .map(|id| (id.to_string(), serde_json::json!(-100)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }
    anyhow::ensure!(!targets.is_empty(), "give at least one --target");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut table: Vec<(String, Vec<Level>)> = targets.iter().map(|t| (t.name.clone(), Vec::new())).collect();
    for &c in &levels {
        for (t, row) in targets.iter().zip(table.iter_mut()) {
            // One warm-up request so that lazy loading is not measured.
            let _ = rt.block_on(run_level(t, 1, 4, 1, &ban));
            let level = rt.block_on(run_level(t, c, max_tokens, rounds, &ban));
            eprintln!(
                "{:>6} c={:<3} {:>8.1} tok/s  ttft {:>7.0} ms  decode {:>6.1} tok/s/stream",
                t.name, c, level.aggregate, level.ttft_p50, level.decode_p50
            );
            row.1.push(level);
        }
    }
    if levels.is_empty() {
        return long_prompt_ttft(&rt, &targets, long_prompt_tokens, 5, &ban);
    }
    println!("\n{max_tokens} output tokens per request, {rounds} requests per stream, greedy, streaming");
    println!("| server | streams | aggregate tok/s | TTFT p50 ms | decode tok/s/stream p50 | failed |");
    println!("|---|---|---|---|---|---|");
    for (name, row) in &table {
        for l in row {
            println!(
                "| {name} | {} | {:.1} | {:.0} | {:.1} | {} |",
                l.concurrency, l.aggregate, l.ttft_p50, l.decode_p50, l.failures
            );
        }
    }
    for t in &targets {
        if let Some(rss) = t.pid.and_then(peak_rss_mib) {
            println!("{}: peak RSS {rss:.0} MiB", t.name);
        }
    }
    if table.len() >= 2 {
        let (a, b) = (&table[0], &table[1]);
        println!(
            "\n| streams | {}/{} aggregate | {}/{} per-stream decode | {}/{} TTFT |",
            a.0, b.0, a.0, b.0, a.0, b.0
        );
        println!("|---|---|---|---|");
        for (x, y) in a.1.iter().zip(&b.1) {
            println!(
                "| {} | {:.2}x | {:.2}x | {:.2}x |",
                x.concurrency,
                x.aggregate / y.aggregate,
                x.decode_p50 / y.decode_p50,
                x.ttft_p50 / y.ttft_p50
            );
        }
    }
    if long_prompt_tokens > 0 {
        long_prompt_ttft(&rt, &targets, long_prompt_tokens, 5, &ban)?;
    }
    Ok(())
}
