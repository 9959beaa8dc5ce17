//! The engine without HTTP: a failed step ends only the sequences in it, and the engine goes on.

mod common;

use tokio::sync::mpsc;
use wick::arch::linear::WeightFormat;
use wick::engine::sampling::SamplingParams;
use wick::engine::scheduler::Limits;
use wick::engine::{Engine, EngineError, Event, GenerationRequest};
use wick::loader::ModelSource;

fn request(prompt: Vec<u32>) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sampling = SamplingParams { temperature: 0.0, ..Default::default() };
    (GenerationRequest { prompt, n: 1, max_tokens: 3, sampling, stop: vec![], constraint: None, events: tx }, rx)
}

async fn last_event(mut rx: mpsc::UnboundedReceiver<Event>) -> Event {
    let mut last = None;
    while let Some(e) = rx.recv().await {
        let end = matches!(e, Event::Done { .. } | Event::Error(_));
        last = Some(e);
        if end {
            break;
        }
    }
    last.expect("an event")
}

#[tokio::test]
async fn a_failed_step_answers_an_error_and_the_engine_goes_on() {
    let loaded =
        ModelSource::GgufFile(common::tiny_model()).load(WeightFormat::Native, &candle_core::Device::Cpu).unwrap();
    let engine = Engine::start(loaded, Limits::default(), "tiny").unwrap();
    // Token 999999 is outside the vocabulary: the forward refuses the step.
    let (bad, bad_rx) = request(vec![5, 999_999]);
    engine.submit(bad).unwrap();
    match last_event(bad_rx).await {
        Event::Error(EngineError::Failed(message)) => assert!(message.contains("vocabulary"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let (good, good_rx) = request(vec![5, 6, 7]);
    engine.submit(good).unwrap();
    assert!(matches!(last_event(good_rx).await, Event::Done { .. }));
}

/// `wick probe` (the CPU side of benches/gpu/'s reference check) writes logits and a greedy
/// continuation that agree with each other and with the engine's own greedy decode.
#[tokio::test]
async fn probe_writes_logits_and_the_engines_greedy_continuation() {
    let model = common::tiny_model();
    let out = std::env::temp_dir().join(format!("wick-probe-{}.json", std::process::id()));
    let prompt = vec![5u32, 6, 7, 8];
    wick::probe::run(wick::probe::ProbeArgs {
        model: model.to_str().unwrap().into(),
        device: "cpu".into(),
        tokens: prompt.clone(),
        steps: 6,
        decode_steps: 2,
        weights: WeightFormat::Native,
        json: Some(out.clone()),
    })
    .unwrap();
    let probe: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let logits: Vec<f32> = serde_json::from_value(probe["logits"].clone()).unwrap();
    let greedy: Vec<u32> = serde_json::from_value(probe["greedy"].clone()).unwrap();
    assert_eq!(greedy.len(), 6);
    let top = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
    assert_eq!(greedy[0], top);
    assert!(probe["weights_bytes"].as_u64().unwrap() > 0);

    // The engine, greedy, from the same prompt: the same tokens (or an earlier end of generation).
    let loaded = ModelSource::GgufFile(model).load(WeightFormat::Native, &candle_core::Device::Cpu).unwrap();
    let engine = Engine::start(loaded, Limits::default(), "tiny").unwrap();
    let tokenizer = engine.tokenizer.clone();
    let (mut req, mut rx) = request(prompt);
    req.max_tokens = 6;
    engine.submit(req).unwrap();
    let mut text = String::new();
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text { text: t, .. } => text.push_str(&t),
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
    }
    let bytes: Vec<u8> = greedy
        .iter()
        .take_while(|&&t| !tokenizer.is_end_of_generation(t))
        .flat_map(|&t| tokenizer.token_bytes(t).to_vec())
        .collect();
    assert_eq!(text, String::from_utf8_lossy(&bytes));
}
