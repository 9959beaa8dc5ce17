//! Real-time factor of the candle voice (synthesis seconds / audio seconds; below 1 is faster than
//! real time), for the sentences of tests/fixtures/joe_parity.json, warm, median of 5.
//!
//!     cargo bench --bench speech            (benches/speech_compare.sh also runs onnxruntime)
//!     cargo bench --bench speech -- voice   (the voice alone; `kernel`: the convolution alone,
//!                                            for profiling or pairing two builds in farm-bench)
//!
//! Alone: one sentence per forward. Batched: the three sentences in one forward (as concurrent
//! requests are batched), RTF over their total audio.

use candle_core::Device;
use std::time::Instant;
use wick::arch::vits::Scales;
use wick::loader::voice::Voice;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // The one argument that is not a flag of cargo's (`--bench`) names a part.
    let part = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    if part.as_deref() != Some("kernel") {
        voice_speed()?;
    }
    if part.as_deref() != Some("voice") {
        conv_kernel_speed();
    }
    Ok(())
}

fn voice_speed() -> anyhow::Result<()> {
    let threads = candle_core::utils::get_num_threads();
    println!("{}", wick::arch::cpu::isa::describe());
    let entry = wick::catalog::Catalog::builtin().default_speech();
    let voice = Voice::load(&entry.local_path(), &Device::Cpu)?;
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/joe_parity.json"))?;
    let sentences: Vec<(String, Vec<u32>)> = fixture["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let ids = i["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            (i["text"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    let rate = voice.info.sample_rate as f64;
    let scales = Scales { noise: 0.0, length: 1.0, noise_w: 0.0 };
    let time = |batch: &[Vec<u32>]| -> anyhow::Result<(f64, f64)> {
        voice.model.synthesize(batch, scales)?; // warm
        voice.model.synthesize(batch, scales)?;
        let mut times = Vec::new();
        let mut audio = 0.0;
        for _ in 0..5 {
            let t = Instant::now();
            let out = voice.model.synthesize(batch, scales)?;
            times.push(t.elapsed().as_secs_f64());
            audio = out.iter().map(|a| a.len() as f64 / rate).sum();
        }
        Ok((median(times), audio))
    };
    println!("candle voice, {threads} threads, scales [0, 1, 0], warm, median of 5");
    println!("| input | ids | audio s | synthesis s | RTF |");
    println!("|---|---|---|---|---|");
    for (text, ids) in &sentences {
        let (t, audio) = time(std::slice::from_ref(ids))?;
        println!("| {text} | {} | {audio:.3} | {t:.3} | {:.3} |", ids.len(), t / audio);
    }
    let all: Vec<Vec<u32>> = sentences.iter().map(|(_, ids)| ids.clone()).collect();
    let (t, audio) = time(&all)?;
    println!(
        "| all three, one batch | {} | {audio:.3} | {t:.3} | {:.3} |",
        all.iter().map(Vec::len).sum::<usize>(),
        t / audio
    );
    Ok(())
}

/// GFLOP/s of our fused resblock convolution (direct-form operations over time; Winograd's form
/// does fewer), median of 5, at two kinds of shape:
/// - a ~2 s sentence's whole stages on the pool's threads (channels, samples, kernel, dilation), as
///   `leaky_conv` runs the flow's and text encoder's convolutions;
/// - one decoder window on one thread (1,024 steps and the block's margin), as the decoder runs
///   its resblocks: there the activations stay in the core's cache, and the arithmetic shows.
fn conv_kernel_speed() {
    use wick::arch::cpu::conv1d::{leaky_conv, leaky_conv_here, PackedConv, Rows};
    let conv = |ch: usize, kernel: usize, dilation: usize| {
        let w: Vec<f32> = (0..ch * ch * kernel).map(|i| ((i * 104729) % 1000) as f32 / 5e4 - 0.01).collect();
        PackedConv::same(&w, &vec![0f32; ch], kernel, dilation)
    };
    let input = |ch: usize, len: usize| -> Vec<f32> {
        (0..ch * len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
    };
    let row = |ch: usize, len: usize, kernel: usize, dilation: usize, calls: usize, run: &dyn Fn()| {
        run();
        let times = (0..5)
            .map(|_| {
                let t = Instant::now();
                (0..calls).for_each(|_| run());
                t.elapsed().as_secs_f64() / calls as f64
            })
            .collect();
        let t = median(times);
        let flop = 2.0 * (ch * ch * kernel * len) as f64;
        println!("| {ch} x {len} | {kernel}, {dilation} | {:.2} | {:.0} |", t * 1e3, flop / t / 1e9);
    };
    println!("\nresblock conv1d kernel (src/arch/cpu/conv1d/), median of 5");
    println!("| channels x samples | kernel, dilation | ms | GFLOP/s |");
    println!("|---|---|---|---|");
    println!("| **whole stages, {} threads** | | | |", candle_core::utils::get_num_threads());
    for (ch, len, kernel, dilation) in [(128, 1600, 3, 1), (64, 12800, 7, 3), (32, 51200, 11, 5)] {
        let (x, conv) = (input(ch, len), conv(ch, kernel, dilation));
        row(ch, len, kernel, dilation, 1, &|| drop(leaky_conv(&x, len, len, 0.1, &conv, Some(&x))));
    }
    println!("| **a decoder window, 1 thread** | | | |");
    for (ch, kernel, dilation) in [(128, 3, 1), (128, 7, 3), (128, 11, 5), (64, 7, 3), (32, 11, 5)] {
        let conv = conv(ch, kernel, dilation);
        let len = 1024 + 2 * conv.reach();
        let x = input(ch, len);
        let run = || drop(leaky_conv_here(Rows::whole(&x, len), len, 0..len, 0.1, &conv, Some(Rows::whole(&x, len))));
        row(ch, len, kernel, dilation, 10, &run);
    }
}
