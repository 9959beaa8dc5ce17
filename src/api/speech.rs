//! `POST /v1/audio/speech`: validate, pick the voice deployment, let its voice turn the input into
//! utterances (its family's front end, off the runtime), hand them to the deployment's engine (which
//! batches them with other requests'), and send the audio as it comes: a chunked body in the asked
//! format (a WAV whole at the end, so that its header states its true length), or
//! `speech.audio.delta` events.
//!
//! Models: a deployment's name, used as named; or `tts-1`, `tts-1-hd` and `gpt-4o-mini-tts`, which go
//! to a voice deployment that speaks the input's language ([`route`]). Voices: OpenAI's voice names
//! all map to the deployment's one voice, as do the voice's own names. Nothing here knows a voice
//! family: `crate::voice` does.

use super::json::AppJson;
use super::openai::{SpeechRequest, SpeechUsage};
use crate::api::error::ApiError;
use crate::audio::{AudioFormat, Encoder};
use crate::auth::Caller;
use crate::deploy::{Deployment, Lease};
use crate::engine::EngineError;
use crate::loader::ModelKind;
use crate::voice::{input_language, FrontEndError, InputLanguage, Language};
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
/// OpenAI's model names for speech; they reach a voice deployment that speaks the input's language.
pub const OPENAI_MODELS: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// OpenAI's voice names; each is the deployment's one voice.
pub const OPENAI_VOICES: [&str; 13] =
    ["alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse"];

fn bad(message: String, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

/// The voice deployment that answers: the one `model` names, if the caller may use it; for OpenAI's
/// model names, the one [`route`] picks among those the caller may use.
fn find_deployment(
    state: &AppState,
    caller: &Caller,
    model: &str,
    voice: &str,
    input: &str,
) -> Result<Arc<Deployment>, ApiError> {
    let visible = |d: &Arc<Deployment>| caller.scope.allows(d.name());
    if let Some(d) = state.deployments.get(model).filter(visible) {
        return super::require_kind(d, model, ModelKind::Speech);
    }
    if !OPENAI_MODELS.contains(&model) {
        return Err(ApiError::model_not_found(model));
    }
    let voices: Vec<(Arc<Deployment>, Vec<String>, Language)> = state
        .deployments
        .all()
        .into_iter()
        .filter(|d| d.spec.source.kind() == ModelKind::Speech && visible(d))
        .filter_map(|d| {
            let language = d.spec.voice.as_ref()?.language.clone();
            Some((d.clone(), own_voice_names(&d), language))
        })
        .collect();
    let candidates: Vec<(&[String], &Language)> = voices.iter().map(|(_, n, l)| (n.as_slice(), l)).collect();
    match route(&candidates, voice, input) {
        Ok(i) => Ok(voices[i].0.clone()),
        Err(Unrouted::NoVoice) => Err(ApiError::model_not_found(model)),
        Err(Unrouted::Japanese(kana)) => Err(bad(
            format!("'input' is Japanese (it has the kana '{kana}'), and no voice here speaks Japanese."),
            "input",
        )),
        Err(Unrouted::NoVoiceFor(language)) => Err(bad(
            format!(
                "'input' is {language} by its script, and no voice deployment here speaks {language}; name a \
                 voice deployment in 'model' to use it anyway."
            ),
            "input",
        )),
    }
}

/// Why [`route`] found no voice.
#[derive(Debug, PartialEq)]
enum Unrouted {
    /// The caller may use no voice deployment.
    NoVoice,
    /// The input has Kana.
    Japanese(char),
    /// No voice speaks the input's language.
    NoVoiceFor(Language),
}

/// Where OpenAI's model names send a request, given the voice deployments the caller may use (in
/// the order they were configured or created, each with its own voice names and its language):
/// - `voice`, where it is a voice's own name rather than one of OpenAI's, picks that voice, whatever
///   the input;
/// - otherwise the input's language, read from its script for the whole input
///   (`voice::input_language`: Han characters against Latin-script words, the larger count winning),
///   picks the first voice that speaks it: Latin script English, Han Mandarin. Input of neither
///   script (digits, punctuation, Cyrillic) goes to the first voice, which may then refuse it.
/// - Kana is refused: no voice speaks Japanese (its kanji would read as Mandarin, wrongly).
fn route(voices: &[(&[String], &Language)], voice: &str, input: &str) -> Result<usize, Unrouted> {
    if voices.is_empty() {
        return Err(Unrouted::NoVoice);
    }
    if !OPENAI_VOICES.contains(&voice) {
        if let Some(i) = voices.iter().position(|(names, _)| names.iter().any(|n| n == voice)) {
            return Ok(i);
        }
    }
    match input_language(input) {
        InputLanguage::Japanese(kana) => Err(Unrouted::Japanese(kana)),
        InputLanguage::Unknown => Ok(0),
        InputLanguage::Of(language) => {
            voices.iter().position(|(_, l)| **l == language).ok_or(Unrouted::NoVoiceFor(language))
        }
    }
}

/// The voice's own names: those of its voice (the file's stem, `en_US-joe-medium`, listed first in
/// errors), the deployment's name and the model's name.
fn own_voice_names(d: &Deployment) -> Vec<String> {
    let mut names = d.spec.voice.as_ref().map(|v| v.names.clone()).unwrap_or_default();
    names.extend([d.name().to_string(), d.spec.source.default_name()]);
    names
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
            "'instructions' is not supported by this server: each of its voices speaks in one style.".into(),
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
    let deployment = find_deployment(&state, &caller, &req.model, &req.voice, input)?;
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
    let model = engine.model.clone();
    let text = input.to_string();
    let utterances = tokio::task::spawn_blocking(move || model.utterances(&text, speed as f32))
        .await
        .map_err(|e| ApiError::internal(format!("the voice's front end crashed: {e}")))?
        .map_err(|e| match e {
            FrontEndError::Unspeakable { character, language } => bad(
                format!(
                    "The voice of `{}` speaks {language} and cannot pronounce '{character}'; give it text in its \
                     language.",
                    deployment.name()
                ),
                "input",
            ),
            FrontEndError::Failed(e) => ApiError::model_unavailable(&req.model, &format!("{e:#}")),
        })?;
    if utterances.is_empty() {
        return Err(bad("'input' has nothing the voice can say.".into(), "input"));
    }
    let input_tokens = utterances.iter().map(|u| u.ids.len()).sum();
    let pending = utterances
        .into_iter()
        .map(|u| engine.synthesize(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::engine(&req.model, e))?;
    let (sample_rate, frame) = (engine.model.sample_rate(), engine.model.frame_samples());
    // A body is a whole file (a WAV states its true length); events stream it.
    let encoder = if sse { Encoder::new(format, sample_rate) } else { Encoder::whole(format, sample_rate) };
    let encoder = encoder.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let audio = AudioStream {
        pending: pending.into(),
        encoder: Some(encoder),
        samples: 0,
        sample_rate,
        frame,
        lease,
        input_tokens,
    };
    Ok(if sse { audio.into_sse() } else { audio.into_body(format) })
}

/// The request's utterances in order, encoded as they arrive. Holding the lease keeps the deployment
/// loaded until the last byte; dropping this (the client left) drops the pending utterances, which
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
    /// The next encoded bytes, never empty (an encoder may have nothing to send yet, and a whole
    /// WAV has nothing before the end); `None` at the end.
    async fn next(&mut self) -> Option<Result<Vec<u8>, ApiError>> {
        loop {
            match self.next_piece().await {
                Some(Ok(bytes)) if bytes.is_empty() => continue,
                next => return next,
            }
        }
    }

    /// What the next sentence (or the end) encodes to, possibly nothing.
    async fn next_piece(&mut self) -> Option<Result<Vec<u8>, ApiError>> {
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
            let event = match s.next().await {
                Some(Ok(bytes)) => serde_json::json!({
                    "type": "speech.audio.delta",
                    "audio": base64::engine::general_purpose::STANDARD.encode(bytes),
                }),
                Some(Err(e)) => {
                    let error = e.to_json();
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(error.to_string())), None));
                }
                None => {
                    // One output token per frame of the voice (`SpeechModel::frame_samples`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn openai_models_go_to_the_voice_of_the_inputs_script() {
        let (en, zh) = (names(&["en_US-joe-medium", "joe"]), names(&["baker", "zh"]));
        let voices = [(en.as_slice(), &Language::ENGLISH), (zh.as_slice(), &Language::MANDARIN)];
        assert_eq!(route(&voices, "alloy", "Hello there."), Ok(0));
        assert_eq!(route(&voices, "alloy", "放學我們一起去打籃球怎麼樣，今天天氣不錯"), Ok(1));
        assert_eq!(route(&voices, "alloy", "iPhone 15 很好"), Ok(1), "mostly Mandarin");
        assert_eq!(route(&voices, "alloy", "The word 你好 means hello."), Ok(0), "mostly English");
        assert_eq!(route(&voices, "alloy", "12345!"), Ok(0), "no script: the first voice");
        let reversed = [voices[1], voices[0]];
        assert_eq!(route(&reversed, "nova", "Hello there."), Ok(1), "not merely the first voice");
        assert_eq!(route(&reversed, "nova", "12345!"), Ok(0));
    }

    #[test]
    fn a_voice_named_by_its_own_name_is_used_whatever_the_input() {
        let (en, zh) = (names(&["en_US-joe-medium", "joe"]), names(&["baker", "zh"]));
        let voices = [(en.as_slice(), &Language::ENGLISH), (zh.as_slice(), &Language::MANDARIN)];
        assert_eq!(route(&voices, "baker", "Hello there."), Ok(1));
        assert_eq!(route(&voices, "en_US-joe-medium", "你好"), Ok(0));
        // An unknown voice routes by script; the endpoint then refuses the voice.
        assert_eq!(route(&voices, "nobody", "你好"), Ok(1));
    }

    #[test]
    fn kana_and_languages_without_a_voice_are_refused() {
        let (en, zh) = (names(&["en_US-joe-medium"]), names(&["baker"]));
        let voices = [(en.as_slice(), &Language::ENGLISH), (zh.as_slice(), &Language::MANDARIN)];
        assert_eq!(route(&voices, "alloy", "こんにちは"), Err(Unrouted::Japanese('こ')));
        assert_eq!(route(&voices, "alloy", "東京へ行きます"), Err(Unrouted::Japanese('へ')));
        assert_eq!(route(&voices[..1], "alloy", "你好"), Err(Unrouted::NoVoiceFor(Language::MANDARIN)));
        assert_eq!(route(&voices[1..], "alloy", "Hello."), Err(Unrouted::NoVoiceFor(Language::ENGLISH)));
        assert_eq!(route(&[], "alloy", "Hello."), Err(Unrouted::NoVoice));
    }
}
