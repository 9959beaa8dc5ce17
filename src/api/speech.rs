//! `POST /v1/audio/speech`: validate, split the input into sentences and phonemes, hand the
//! sentences to the voice deployment's engine (which batches them with other requests'), and send
//! the audio as it comes: a chunked body in the asked format, or `speech.audio.delta` events.
//!
//! Models: a deployment name, or `tts-1`, `tts-1-hd` and `gpt-4o-mini-tts`, which name the first
//! voice deployment (the default voice unless configured otherwise). Voices: OpenAI's voice names
//! all map to the deployment's one voice (a Piper voice has one speaker), as does the voice's own name.

use super::json::AppJson;
use super::openai::{SpeechRequest, SpeechUsage};
use crate::api::error::ApiError;
use crate::audio::{AudioFormat, Encoder};
use crate::auth::Caller;
use crate::deploy::{Deployment, Lease};
use crate::engine::EngineError;
use crate::loader::phonemize::{phonemize, unspeakable_letter};
use crate::loader::ModelKind;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::oneshot;

/// OpenAI's limit on `input`.
const MAX_INPUT_CHARS: usize = 4096;
/// OpenAI's model names for speech; they reach the first voice deployment.
pub const OPENAI_MODELS: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// OpenAI's voice names; each is the deployment's one voice.
pub const OPENAI_VOICES: [&str; 13] =
    ["alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse"];

fn bad(message: String, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

/// The voice deployment `model` names, if the caller may use it.
fn find_deployment(state: &AppState, caller: &Caller, model: &str) -> Result<Arc<Deployment>, ApiError> {
    let visible = |d: &Arc<Deployment>| caller.scope.allows(d.name());
    let found = match state.deployments.get(model).filter(visible) {
        Some(d) => Some(d),
        None if OPENAI_MODELS.contains(&model) => {
            state.deployments.all().into_iter().find(|d| d.spec.source.kind() == ModelKind::Speech && visible(d))
        }
        None => None,
    };
    super::require_kind(found.ok_or_else(|| ApiError::model_not_found(model))?, model, ModelKind::Speech)
}

/// The voice's own names: the model file's stem (`en_US-joe-medium`, listed first in errors), the
/// deployment's name and the model's name.
fn own_voice_names(d: &Deployment) -> Vec<String> {
    let file = match &d.spec.source {
        crate::loader::ModelSource::Catalog(e) => e.local_path(),
        crate::loader::ModelSource::PiperVoice(p) => p.clone(),
        _ => std::path::PathBuf::new(),
    };
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    vec![stem, d.name().to_string(), d.spec.source.default_name()]
}

/// `POST /v1/audio/speech`
#[utoipa::path(post, path = "/v1/audio/speech", operation_id = "createSpeech", tag = "inference", security(("inference" = [])), request_body(content = SpeechRequest, examples(
        ("wav" = (value = json!({"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav"}))),
        ("streamed" = (value = json!({"model": "tts-1", "voice": "alloy", "input": "Hello there.", "stream_format": "sse"}))),
    )), responses(
        (status = 200, description = "The audio in `response_format`, or with `stream_format: sse` its pieces as events",
            content(("audio/mpeg"), ("audio/opus"), ("audio/aac"), ("audio/flac"), ("audio/wav"), ("audio/pcm"),
                (crate::api::openapi::StreamEvent = "text/event-stream"))),
        crate::api::openapi::OpenAiErrors,
))]
pub async fn speech(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(req): AppJson<SpeechRequest>,
) -> Result<Response, ApiError> {
    let input = req.input.trim();
    if input.is_empty() {
        return Err(bad("'input' must not be empty.".into(), "input"));
    }
    let chars = req.input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(bad(format!("'input' is {chars} characters; the maximum is {MAX_INPUT_CHARS}."), "input"));
    }
    let speed = req.speed.unwrap_or(1.0);
    if !(0.25..=4.0).contains(&speed) {
        return Err(bad(format!("Invalid 'speed': {speed}. It must be between 0.25 and 4.0."), "speed"));
    }
    if req.instructions.as_deref().is_some_and(|i| !i.trim().is_empty()) {
        return Err(bad(
            "'instructions' is not supported by this server: a Piper voice speaks in one style.".into(),
            "instructions",
        ));
    }
    let sse = match req.stream_format.as_deref() {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(bad(format!("Invalid 'stream_format': '{other}'. Use 'audio' or 'sse'."), "stream_format"))
        }
    };
    let deployment = find_deployment(&state, &caller, &req.model)?;
    let format_name = req.response_format.clone().or_else(|| deployment.spec.default_response_format.clone());
    let format = match format_name.as_deref() {
        None => AudioFormat::Mp3,
        Some(f) => AudioFormat::parse(f).ok_or_else(|| {
            bad(format!("Invalid 'response_format': '{f}'. Use mp3, opus, aac, flac, wav or pcm."), "response_format")
        })?,
    };
    let own = own_voice_names(&deployment);
    if !OPENAI_VOICES.contains(&req.voice.as_str()) && !own.contains(&req.voice) {
        return Err(bad(
            format!("Invalid 'voice': '{}'. Use one of {} or '{}'.", req.voice, OPENAI_VOICES.join(", "), own[0]),
            "voice",
        ));
    }

    let lease = deployment.acquire().await?;
    let engine = lease.speech().ok_or_else(|| ApiError::internal("a voice deployment without a speech engine"))?;
    let info = engine.info.clone();
    if let Some(letter) = unspeakable_letter(input, &info.espeak_voice) {
        return Err(bad(
            format!(
                "The voice of `{}` speaks {} and cannot pronounce '{letter}'; give it text in its language.",
                req.model, info.espeak_voice
            ),
            "input",
        ));
    }
    let text = input.to_string();
    let espeak_voice = info.espeak_voice.clone();
    let sentences = tokio::task::spawn_blocking(move || phonemize(&text, &espeak_voice))
        .await
        .map_err(|e| ApiError::internal(format!("the phonemizer crashed: {e}")))?
        .map_err(|e| ApiError::model_unavailable(&req.model, &format!("{e:#}")))?;
    let ids: Vec<Vec<u32>> = sentences.iter().map(|s| info.ids(&s.phonemes)).collect();
    if ids.is_empty() {
        return Err(bad("'input' has nothing the voice can say.".into(), "input"));
    }
    let mut scales = info.scales;
    scales.length /= speed as f32;
    let input_tokens = ids.iter().map(Vec::len).sum();
    let pending = ids
        .into_iter()
        .map(|ids| engine.synthesize(ids, scales))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::engine(&req.model, e))?;
    let encoder = Encoder::new(format, info.sample_rate).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let audio = AudioStream {
        pending: pending.into(),
        encoder: Some(encoder),
        samples: 0,
        sample_rate: info.sample_rate,
        frame: info.frame_samples,
        lease,
        input_tokens,
    };
    Ok(if sse { audio.into_sse() } else { audio.into_body(format) })
}

/// The request's sentences in order, encoded as they arrive. Holding the lease keeps the deployment
/// loaded until the last byte; dropping this (the client left) drops the pending sentences, which
/// the engine then skips.
struct AudioStream {
    pending: std::collections::VecDeque<oneshot::Receiver<Result<Vec<f32>, EngineError>>>,
    encoder: Option<Encoder>,
    samples: usize,
    sample_rate: u32,
    /// Samples per frame of the voice.
    frame: usize,
    lease: Lease,
    input_tokens: usize,
}

impl AudioStream {
    /// The next encoded bytes, `None` at the end.
    async fn next(&mut self) -> Option<Result<Vec<u8>, ApiError>> {
        let encoder_failed = |e: anyhow::Error| ApiError::internal(format!("{e:#}"));
        if let Some(rx) = self.pending.pop_front() {
            let samples = match rx.await {
                Ok(Ok(samples)) => samples,
                Ok(Err(e)) => return Some(Err(ApiError::engine(self.lease.deployment().name(), e))),
                Err(_) => return Some(Err(ApiError::internal("the voice's engine dropped the sentence"))),
            };
            self.samples += samples.len();
            let encoder = self.encoder.as_mut().expect("present until finished");
            return Some(encoder.push(&samples).map_err(encoder_failed));
        }
        let encoder = self.encoder.take()?;
        Some(encoder.finish().map_err(encoder_failed))
    }

    fn audio_seconds(&self) -> f64 {
        self.samples as f64 / self.sample_rate as f64
    }

    fn into_body(self, format: AudioFormat) -> Response {
        let stream = futures::stream::unfold(self, |mut s| async move {
            match s.next().await? {
                Ok(bytes) => Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), s)),
                Err(e) => {
                    // The status is sent: all that is left is to cut the body short.
                    tracing::error!(error = %e, "speech failed mid-stream");
                    Some((Err(std::io::Error::other(e.message)), s))
                }
            }
        });
        ([(header::CONTENT_TYPE, format.content_type())], Body::from_stream(stream)).into_response()
    }

    fn into_sse(self) -> Response {
        let events = futures::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            let mut next = s.next().await;
            // An encoder may have nothing to send yet: no empty deltas.
            while matches!(&next, Some(Ok(bytes)) if bytes.is_empty()) {
                next = s.next().await;
            }
            let event = match next {
                Some(Ok(bytes)) => serde_json::json!({
                    "type": "speech.audio.delta",
                    "audio": base64::engine::general_purpose::STANDARD.encode(bytes),
                }),
                Some(Err(e)) => {
                    let error = e.to_json();
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(error.to_string())), None));
                }
                None => {
                    // One output token per frame of the voice (256 samples for Piper's voices).
                    let output_tokens = s.samples.div_ceil(s.frame);
                    let usage = SpeechUsage {
                        input_tokens: s.input_tokens,
                        output_tokens,
                        total_tokens: s.input_tokens + output_tokens,
                    };
                    let done = serde_json::json!({"type": "speech.audio.done", "usage": usage});
                    return Some((Ok(SseEvent::default().data(done.to_string())), None));
                }
            };
            Some((Ok(SseEvent::default().data(event.to_string())), Some(s)))
        });
        Sse::new(events).into_response()
    }
}

impl Drop for AudioStream {
    fn drop(&mut self) {
        let d = self.lease.deployment();
        d.usage.add_request(self.input_tokens, 0);
        d.usage.add_audio(std::time::Duration::from_secs_f64(self.audio_seconds()));
    }
}
