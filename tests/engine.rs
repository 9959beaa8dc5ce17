//! The engine without HTTP: a failed step ends only the sequences in it, and the engine goes on.

mod common;

use tokio::sync::mpsc;
use wick::arch::linear::WeightFormat;
use wick::engine::sampling::SamplingParams;
use wick::engine::scheduler::Limits;
use wick::engine::{Engine, Event, GenerationRequest};
use wick::loader::ModelSource;

fn request(prompt: Vec<u32>) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sampling = SamplingParams { temperature: 0.0, ..Default::default() };
    (GenerationRequest { prompt, n: 1, max_tokens: 3, sampling, stop: vec![], events: tx }, rx)
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
        Event::Error(message) => assert!(message.contains("vocabulary"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let (good, good_rx) = request(vec![5, 6, 7]);
    engine.submit(good).unwrap();
    assert!(matches!(last_event(good_rx).await, Event::Done { .. }));
}
