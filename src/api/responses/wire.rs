//! The Responses API's shape on the wire: a `response` object whose `output` is a list of items (a
//! message with its `output_text`, a `function_call` per call), or a stream of typed events that
//! build the same items: `response.created` and `.in_progress`; per item `response.output_item.added`,
//! its content (a message's `response.content_part.added`, `response.output_text.delta`s, `.done`s;
//! a call's `response.function_call_arguments.delta` and `.done`) and `response.output_item.done`;
//! then `response.completed` (or `.incomplete`) with the whole response. Each event is numbered
//! (`sequence_number`) and named in the SSE `event:` line by its type.
//!
//! The streamed items and the body's are built by the same `Output` from the same pieces (text, and
//! with tools the calls read by `CallParser`), so the two agree.

use super::types::*;
use crate::api::error::ApiError;
use crate::api::generation::{Answer, Chunk, Head, Wire};
use crate::api::openai::Usage;
use crate::api::tools::{self, ToolReader};
use crate::engine::{FinishReason, TokenLogprob};
use crate::tool_calls::{CallParser, Piece, ToolCall};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Mutex;

pub struct ResponsesWire {
    reader: Option<ToolReader>,
    settings: Settings,
    streamed: Mutex<Streamed>,
}

/// The one streamed answer so far.
struct Streamed {
    parser: Option<CallParser>,
    output: Output,
}

/// An id of OpenAI's shape: `msg_`, `fc_` or `resp_` and 32 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The events of a stream, numbered in order; none are made for a body.
struct Events {
    on: bool,
    next: usize,
    out: Vec<Chunk>,
}

impl Events {
    fn emit<T: Serialize>(&mut self, kind: &'static str, body: T) {
        if !self.on {
            return;
        }
        let event = Event { kind, sequence_number: self.next, body };
        self.next += 1;
        self.out.push(Chunk { event: Some(kind), data: serde_json::to_string(&event).expect("events serialise") });
    }
}

/// The answer's items as they are read, and the events that tell of them.
struct Output {
    items: Vec<OutputItem>,
    /// The message that text goes to, while it is open.
    open: Option<usize>,
    calls: usize,
    /// Without parallel calls, only the first call counts (as chat's).
    parallel: bool,
    reason: Option<FinishReason>,
    events: Events,
}

/// The id and text part of the message at `index`.
fn message(items: &[OutputItem], index: usize) -> (&str, &OutputText) {
    match &items[index] {
        OutputItem::Message { id, content, .. } => (id, &content[0]),
        OutputItem::FunctionCall { .. } => unreachable!("text goes to a message"),
    }
}

impl Output {
    fn new(parallel: bool, stream: bool) -> Self {
        let events = Events { on: stream, next: 0, out: Vec::new() };
        Self { items: Vec::new(), open: None, calls: 0, parallel, reason: None, events }
    }

    fn piece(&mut self, piece: Piece) {
        match piece {
            Piece::Text(text) => self.text(&text),
            Piece::Call(_) if !self.parallel && self.calls > 0 => {}
            Piece::Call(call) => self.call(call),
        }
    }

    fn text(&mut self, delta: &str) {
        let after_call = self.open.is_none() && !self.items.is_empty();
        // A message after a call starts at its first visible character: the line breaks between are
        // the call format's.
        let delta = if after_call { delta.trim_start() } else { delta };
        if after_call && delta.is_empty() {
            return;
        }
        let index = match self.open {
            Some(index) => index,
            None => self.open_message(),
        };
        if let OutputItem::Message { content, .. } = &mut self.items[index] {
            content[0].text.push_str(delta);
        }
        let (id, _) = message(&self.items, index);
        let text = TextEvent {
            item_id: id,
            output_index: index,
            content_index: 0,
            delta: Some(delta),
            text: None,
            logprobs: vec![],
        };
        self.events.emit("response.output_text.delta", text);
    }

    fn open_message(&mut self) -> usize {
        let index = self.items.len();
        let id = new_id("msg");
        self.items.push(OutputItem::Message { id, role: "assistant", status: "in_progress", content: vec![] });
        self.events.emit("response.output_item.added", ItemEvent { output_index: index, item: &self.items[index] });
        if let OutputItem::Message { content, .. } = &mut self.items[index] {
            content.push(OutputText::default());
        }
        let (id, part) = message(&self.items, index);
        self.events.emit(
            "response.content_part.added",
            PartEvent { item_id: id, output_index: index, content_index: 0, part },
        );
        self.open = Some(index);
        index
    }

    fn close_message(&mut self, how: &'static str) {
        let Some(index) = self.open.take() else { return };
        if let OutputItem::Message { status, .. } = &mut self.items[index] {
            *status = how;
        }
        let (id, part) = message(&self.items, index);
        let text = TextEvent {
            item_id: id,
            output_index: index,
            content_index: 0,
            delta: None,
            text: Some(&part.text),
            logprobs: vec![],
        };
        self.events.emit("response.output_text.done", text);
        self.events
            .emit("response.content_part.done", PartEvent { item_id: id, output_index: index, content_index: 0, part });
        self.events.emit("response.output_item.done", ItemEvent { output_index: index, item: &self.items[index] });
    }

    /// A call, whole: as OpenAI streams one, its item with no arguments, the arguments, then the item.
    fn call(&mut self, call: ToolCall) {
        self.close_message("completed");
        self.calls += 1;
        let index = self.items.len();
        let call = tools::response_call(call);
        let id = new_id("fc");
        let arguments = call.function.arguments;
        self.items.push(OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call.id,
            name: call.function.name,
            arguments: String::new(),
            status: "in_progress",
        });
        self.events.emit("response.output_item.added", ItemEvent { output_index: index, item: &self.items[index] });
        let delta = ArgumentsEvent { item_id: &id, output_index: index, delta: Some(&arguments), arguments: None };
        self.events.emit("response.function_call_arguments.delta", delta);
        let done = ArgumentsEvent { item_id: &id, output_index: index, delta: None, arguments: Some(&arguments) };
        self.events.emit("response.function_call_arguments.done", done);
        if let OutputItem::FunctionCall { arguments: a, status, .. } = &mut self.items[index] {
            *a = arguments;
            *status = "completed";
        }
        self.events.emit("response.output_item.done", ItemEvent { output_index: index, item: &self.items[index] });
    }

    /// The answer ended: the open message closes (incomplete where the token limit cut it), and an
    /// answer with no items at all is one empty message.
    fn finish(&mut self, reason: FinishReason) {
        if self.items.is_empty() {
            self.open_message();
        }
        self.close_message(if reason == FinishReason::Length { "incomplete" } else { "completed" });
        self.reason = Some(reason);
    }

    fn status(&self) -> &'static str {
        match self.reason {
            None => "in_progress",
            Some(FinishReason::Length) => "incomplete",
            Some(FinishReason::Stop) => "completed",
        }
    }
}

impl ResponsesWire {
    pub fn new(reader: Option<ToolReader>, settings: Settings, stream: bool) -> Self {
        let parallel = reader.is_none_or(|r| r.parallel);
        let streamed =
            Streamed { parser: reader.map(|r| CallParser::new(r.format)), output: Output::new(parallel, stream) };
        Self { reader, settings, streamed: Mutex::new(streamed) }
    }

    /// The response with its `output` as it stands, and `usage` once known; `failed` with the
    /// error that broke it off.
    fn object<'a>(
        &'a self,
        head: &'a Head,
        output: &'a [OutputItem],
        status: &'static str,
        usage: Option<Usage>,
        failed: Option<&ApiError>,
    ) -> ResponseObject<'a> {
        ResponseObject {
            id: &head.id,
            object: "response",
            created_at: head.created,
            status,
            completed_at: (status == "completed").then(crate::unix_now),
            error: failed.map(|e| ResponseError { code: "server_error", message: e.message.clone() }),
            incomplete_details: (status == "incomplete").then_some(IncompleteDetails { reason: "max_output_tokens" }),
            model: &head.model,
            output,
            usage: usage.map(ResponseUsage::from),
            settings: &self.settings,
        }
    }

    /// Runs `f` on the streamed answer and returns the events it made.
    fn streamed(&self, f: impl FnOnce(&mut Streamed)) -> Vec<Chunk> {
        let mut guard = self.streamed.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
        std::mem::take(&mut guard.output.events.out)
    }
}

impl Wire for ResponsesWire {
    const PROMPT_PARAM: &'static str = "input";

    fn start(&self, head: &Head) -> Vec<Chunk> {
        self.streamed(|s| {
            for kind in ["response.created", "response.in_progress"] {
                let response = self.object(head, &s.output.items, "in_progress", None, None);
                s.output.events.emit(kind, ResponseEvent { response });
            }
        })
    }

    fn opening(&self, _head: &Head, _index: usize) -> Option<Chunk> {
        None
    }

    fn text(&self, _head: &Head, _index: usize, text: String, _logprobs: Option<&[TokenLogprob]>) -> Vec<Chunk> {
        self.streamed(|s| match &mut s.parser {
            Some(parser) => parser.push(&text).into_iter().for_each(|p| s.output.piece(p)),
            None => s.output.text(&text),
        })
    }

    fn finish(&self, _head: &Head, _index: usize, reason: FinishReason) -> Vec<Chunk> {
        self.streamed(|s| {
            if let Some(parser) = &mut s.parser {
                parser.finish().into_iter().for_each(|p| s.output.piece(p));
            }
            s.output.finish(reason);
        })
    }

    fn end(&self, head: &Head, usage: Usage) -> Vec<Chunk> {
        self.streamed(|s| {
            let status = s.output.status();
            let kind = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
            let response = self.object(head, &s.output.items, status, Some(usage), None);
            s.output.events.emit(kind, ResponseEvent { response });
        })
    }

    /// An `error` event, then `response.failed`.
    fn error(&self, head: &Head, error: ApiError) -> Vec<Chunk> {
        self.streamed(|s| {
            let body = ErrorEvent { code: error.code, message: &error.message, param: error.param.as_deref() };
            s.output.events.emit("error", body);
            let response = self.object(head, &s.output.items, "failed", None, Some(&error));
            s.output.events.emit("response.failed", ResponseEvent { response });
        })
    }

    fn body(&self, head: &Head, answers: Vec<Answer>, usage: Usage) -> Response {
        let answer = answers.into_iter().next().expect("one answer");
        let mut output = Output::new(self.reader.is_none_or(|r| r.parallel), false);
        match self.reader {
            Some(reader) => CallParser::parse(reader.format, &answer.text).into_iter().for_each(|p| output.piece(p)),
            None => output.text(&answer.text),
        }
        output.finish(answer.reason);
        axum::Json(self.object(head, &output.items, output.status(), Some(usage), None)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::{PromptTokensDetails, ResponseFormatType};
    use crate::tool_calls::ToolFormat;
    use serde_json::{json, Value};

    const HERMES: ToolReader = ToolReader { format: ToolFormat::Hermes, parallel: true };
    const USAGE: Usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 2,
        total_tokens: 5,
        prompt_tokens_details: PromptTokensDetails { cached_tokens: 1 },
    };

    fn settings() -> Settings {
        let format =
            TextFormat { kind: ResponseFormatType::Text, name: None, schema: None, description: None, strict: None };
        Settings {
            instructions: None,
            max_output_tokens: None,
            max_tool_calls: None,
            temperature: 1.0,
            top_p: 1.0,
            tools: vec![],
            tool_choice: json!("auto"),
            parallel_tool_calls: true,
            text: EchoedText { format },
            metadata: Default::default(),
            user: None,
            safety_identifier: None,
            prompt_cache_key: None,
            store: false,
            background: false,
            truncation: "disabled",
            service_tier: "default",
        }
    }

    fn head() -> Head {
        Head { id: "resp_1".into(), model: "m".into(), created: 1, include_usage: false }
    }

    /// The events of a stream of `answer` in pieces of 4 characters; each is named by its type.
    fn stream(reader: Option<ToolReader>, answer: &str, reason: FinishReason) -> Vec<Value> {
        let (wire, head) = (ResponsesWire::new(reader, settings(), true), head());
        let mut chunks = wire.start(&head);
        let chars: Vec<char> = answer.chars().collect();
        for piece in chars.chunks(4) {
            chunks.extend(wire.text(&head, 0, piece.iter().collect(), None));
        }
        chunks.extend(wire.finish(&head, 0, reason));
        chunks.extend(wire.end(&head, USAGE));
        chunks
            .into_iter()
            .map(|c| {
                let v: Value = serde_json::from_str(&c.data).unwrap();
                assert_eq!(Some(v["type"].as_str().unwrap()), c.event);
                v
            })
            .collect()
    }

    async fn body(reader: Option<ToolReader>, answer: &str, reason: FinishReason) -> Value {
        let wire = ResponsesWire::new(reader, settings(), false);
        let answer = Answer { text: answer.into(), reason, logprobs: None };
        let response = wire.body(&head(), vec![answer], USAGE);
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()).unwrap()
    }

    /// The items without their ids, which are fresh in each answer.
    fn items(response: &Value) -> Vec<Value> {
        let mut items = response["output"].as_array().unwrap().clone();
        for item in &mut items {
            item.as_object_mut().unwrap().retain(|k, _| k != "id" && k != "call_id");
        }
        items
    }

    #[tokio::test]
    async fn text_and_calls_stream_as_the_items_of_the_body() {
        let answer = "Let me look.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\nDone.";
        let events = stream(Some(HERMES), answer, FinishReason::Stop);
        let numbers: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
        let mut kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        kinds.dedup();
        let message = [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ];
        let call = [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ];
        let expected: Vec<&str> = ["response.created", "response.in_progress"]
            .into_iter()
            .chain(message)
            .chain(call)
            .chain(message)
            .chain(["response.completed"])
            .collect();
        assert_eq!(kinds, expected);
        let last = &events.last().unwrap()["response"];
        assert_eq!(last["usage"]["input_tokens_details"]["cached_tokens"], 1);
        let items = items(last);
        assert_eq!(items[0]["content"][0]["text"], "Let me look.");
        assert_eq!((items[1]["name"].as_str(), items[1]["arguments"].as_str()), (Some("f"), Some("{\"a\":1}")));
        assert_eq!(items[2]["content"][0]["text"], "Done.");
        assert_eq!(items, self::items(&body(Some(HERMES), answer, FinishReason::Stop).await));
    }

    #[tokio::test]
    async fn only_the_first_call_without_parallel_calls_and_an_empty_answer_is_an_empty_message() {
        let call = |n: u8| format!("<tool_call>\n{{\"name\": \"f{n}\", \"arguments\": {{}}}}\n</tool_call>");
        let one = ToolReader { parallel: false, ..HERMES };
        let response = body(Some(one), &format!("{}{}", call(1), call(2)), FinishReason::Stop).await;
        assert_eq!(items(&response).len(), 1);
        assert_eq!(response["output"][0]["name"], "f1");
        let response = body(Some(HERMES), &format!("{}{}", call(1), call(2)), FinishReason::Stop).await;
        assert_eq!(items(&response).len(), 2);

        let empty = json!({"type": "message", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]});
        let events = stream(None, "", FinishReason::Stop);
        for response in [body(None, "", FinishReason::Stop).await, events.last().unwrap()["response"].clone()] {
            assert_eq!(items(&response), std::slice::from_ref(&empty));
        }
    }

    #[tokio::test]
    async fn a_cut_answer_is_incomplete_and_an_error_fails_the_response() {
        let response = body(None, "abc", FinishReason::Length).await;
        assert_eq!(
            (response["status"].as_str(), response["output"][0]["status"].as_str()),
            (Some("incomplete"), Some("incomplete"))
        );
        assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
        assert!(response["completed_at"].is_null());
        assert_eq!(stream(None, "abc", FinishReason::Length).last().unwrap()["type"], "response.incomplete");

        let (wire, head) = (ResponsesWire::new(None, settings(), true), head());
        wire.start(&head);
        wire.text(&head, 0, "ab".into(), None);
        let events: Vec<Value> = wire
            .error(&head, ApiError::internal("boom"))
            .iter()
            .map(|c| serde_json::from_str(&c.data).unwrap())
            .collect();
        assert_eq!((events[0]["type"].as_str(), events[0]["message"].as_str()), (Some("error"), Some("boom")));
        let failed = &events[1];
        assert_eq!(
            (failed["type"].as_str(), failed["response"]["status"].as_str()),
            (Some("response.failed"), Some("failed"))
        );
        assert_eq!(failed["response"]["error"]["message"], "boom");
        assert_eq!(failed["sequence_number"].as_u64(), Some(events[0]["sequence_number"].as_u64().unwrap() + 1));
    }
}
