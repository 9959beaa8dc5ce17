//! How models write tool calls, and how Wick reads them back and forces them.
//!
//! A model calls a tool in the format its chat template taught it, told apart by the template's
//! source (`ToolFormat::of_template`):
//! - Hermes (Qwen 2.5, Hermes, SmolLM's tool template): `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`,
//!   one block per call, possibly after some text;
//! - Llama 3.x's JSON calls: the whole answer is `{"name": .., "parameters": {..}}`;
//! - Mistral's: `[TOOL_CALLS]` and then a JSON array of `{"name": .., "arguments": {..}}`.
//!
//! `CallParser` reads an answer piece by piece, as it streams, into text and calls; the whole answer
//! goes through the same parser, so a streamed answer's calls are the non-streamed one's.
//! `ToolFormat::grammar` writes the Lark grammar (llguidance's dialect) that makes the model call.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
}

/// One call, as OpenAI returns it: `arguments` is the JSON text of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// What a piece of the answer turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

/// A tool the model may call: its name and the JSON Schema of its arguments.
pub struct ToolSpec<'a> {
    pub name: &'a str,
    pub parameters: &'a Value,
}

/// What the grammar allows.
pub enum Forced<'a> {
    /// Calls of these tools and nothing else (`tool_choice` `required`, or one named function).
    Calls(Vec<ToolSpec<'a>>),
    /// Text, or calls valid for these tools' schemas (`auto` with strict functions): an answer that
    /// opens as a call must be one.
    TextOrCalls(Vec<ToolSpec<'a>>),
}

/// How generated JSON is laid out (llguidance's `x-guidance` options), for forced calls here and
/// structured outputs (`engine::grammar`): one space after `,` and `:` and no other whitespace, as
/// Python's `json.dumps` writes it. Models know the layout well; free whitespace would let a small
/// model spend its tokens on newlines.
pub const JSON_LAYOUT: &str = r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}"#;

impl ToolFormat {
    /// The format a chat template's source renders calls in; None if it renders no tools.
    pub fn of_template(source: &str) -> Option<Self> {
        if !source.contains("tools") {
            return None;
        }
        if source.contains("<tool_call>") {
            Some(Self::Hermes)
        } else if source.contains("[TOOL_CALLS]") {
            Some(Self::Mistral)
        } else if source.contains("\"parameters\"") || source.contains("ipython") {
            Some(Self::Llama3)
        } else {
            None
        }
    }

    /// The key that holds a call's arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            Self::Hermes | Self::Mistral => "arguments",
        }
    }

    /// The Lark grammar for `forced`; `parallel` allows more than one call.
    pub fn grammar(self, forced: &Forced, parallel: bool) -> String {
        let (tools, text_too) = match forced {
            Forced::Calls(tools) => (tools, false),
            Forced::TextOrCalls(tools) => (tools, true),
        };
        let key = self.arguments_key();
        let calls: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: t.parameters},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let one_call = |mut schema: Value| {
            schema["x-guidance"] = serde_json::from_str(JSON_LAYOUT).expect("valid JSON");
            format!("%json {schema}")
        };
        let (calls_rule, opening) = match self {
            Self::Hermes => {
                let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
                let body = one_call(json!({"anyOf": calls}));
                (format!("calls: call{repeat}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: {body}\n"), '<')
            }
            // Llama 3's JSON calls are one object.
            Self::Llama3 => (format!("calls: {}\n", one_call(json!({"anyOf": calls}))), '{'),
            Self::Mistral => {
                let mut array = json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1});
                if !parallel {
                    array["maxItems"] = json!(1);
                }
                (format!("calls: \"[TOOL_CALLS]\" {}\n", one_call(array)), '[')
            }
        };
        if text_too {
            // Text may not open the way a call does: the model would have started one.
            let opening = if opening == '[' { "\\[".to_string() } else { opening.to_string() };
            format!("start: TEXT | calls\nTEXT: /[^{opening}](.|\\n)*/\n{calls_rule}")
        } else {
            format!("start: calls\n{calls_rule}")
        }
    }
}

/// Reads an answer, as it streams, into text and calls.
pub struct CallParser {
    format: ToolFormat,
    /// Text not yet given out: a possible start of a call, or a call being written.
    held: String,
    state: State,
    /// Whitespace held back until text follows it (so text between calls is not a piece).
    space: String,
}

#[derive(Debug, PartialEq)]
enum State {
    /// Nothing but whitespace yet (Llama 3: a call opens the answer).
    Start,
    Text,
    /// Inside `<tool_call>` .. `</tool_call>`.
    InCall,
    /// Everything from here to the end is calls (Llama 3's object, Mistral's array).
    Rest,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";

impl CallParser {
    pub fn new(format: ToolFormat) -> Self {
        Self { format, held: String::new(), state: State::Start, space: String::new() }
    }

    /// Reads the whole of `answer`.
    pub fn parse(format: ToolFormat, answer: &str) -> Vec<Piece> {
        let mut parser = Self::new(format);
        let mut pieces: Vec<Piece> = Vec::new();
        for piece in parser.push(answer).into_iter().chain(parser.finish()) {
            match (pieces.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, piece) => pieces.push(piece),
            }
        }
        pieces
    }

    /// The next piece of the answer; what it completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        return out;
                    }
                    self.state = if self.format == ToolFormat::Llama3 && trimmed.starts_with('{') {
                        self.held = trimmed.to_string();
                        State::Rest
                    } else {
                        State::Text
                    };
                }
                State::Text => {
                    let open = match self.format {
                        ToolFormat::Hermes => HERMES_OPEN,
                        ToolFormat::Mistral => MISTRAL_OPEN,
                        ToolFormat::Llama3 => {
                            let text = std::mem::take(&mut self.held);
                            self.text(text, &mut out);
                            return out;
                        }
                    };
                    match self.held.find(open) {
                        Some(at) => {
                            let before = self.held[..at].to_string();
                            self.held.drain(..at + open.len());
                            self.text(before, &mut out);
                            self.state = if self.format == ToolFormat::Hermes { State::InCall } else { State::Rest };
                        }
                        None => {
                            // Keep back what may be the start of the opening marker.
                            let keep = partial_suffix(&self.held, open);
                            let text: String = self.held.drain(..self.held.len() - keep).collect();
                            self.text(text, &mut out);
                            return out;
                        }
                    }
                }
                State::InCall => match self.held.find(HERMES_CLOSE) {
                    Some(at) => {
                        let body: String = self.held.drain(..at + HERMES_CLOSE.len()).collect();
                        let body = &body[..at];
                        match self.calls_in(body) {
                            Some(calls) => out.extend(calls.into_iter().map(Piece::Call)),
                            None => self.text(format!("{HERMES_OPEN}{body}{HERMES_CLOSE}"), &mut out),
                        }
                        self.state = State::Text;
                    }
                    None => return out,
                },
                State::Rest => return out,
            }
        }
    }

    /// The end of the answer: what was held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Start | State::Text => self.text(held, &mut out),
            // An unclosed call (the model stopped before `</tool_call>`), or the rest of the answer.
            State::InCall | State::Rest => match self.calls_in(&held) {
                Some(calls) => out.extend(calls.into_iter().map(Piece::Call)),
                None => {
                    let opening = match (&self.state, self.format) {
                        (State::InCall, _) => HERMES_OPEN,
                        (_, ToolFormat::Mistral) => MISTRAL_OPEN,
                        _ => "",
                    };
                    self.text(format!("{opening}{held}"), &mut out)
                }
            },
        }
        self.state = State::Text;
        out
    }

    /// Gives out text, holding trailing whitespace back until more text follows.
    fn text(&mut self, text: String, out: &mut Vec<Piece>) {
        let body = text.trim_end();
        if body.is_empty() {
            self.space.push_str(&text);
            return;
        }
        let mut piece = std::mem::take(&mut self.space);
        piece.push_str(body);
        self.space = text[body.len()..].to_string();
        match out.last_mut() {
            Some(Piece::Text(t)) => t.push_str(&piece),
            _ => out.push(Piece::Text(piece)),
        }
    }

    /// The calls in a call's JSON (an object, or for Mistral an array of them, or for Llama 3
    /// objects separated by `;`); None if it is not that.
    fn calls_in(&self, body: &str) -> Option<Vec<ToolCall>> {
        let body = body.trim();
        let values: Vec<Value> = match serde_json::from_str::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(one) => vec![one],
            Err(_) if self.format == ToolFormat::Llama3 => {
                body.split(';').map(|part| serde_json::from_str(part.trim())).collect::<Result<_, _>>().ok()?
            }
            Err(_) => return None,
        };
        values.iter().map(|v| self.call(v)).collect()
    }

    fn call(&self, value: &Value) -> Option<ToolCall> {
        let name = value.get("name")?.as_str()?.to_string();
        // Models mix the two keys up; either is read.
        let arguments =
            value.get(self.format.arguments_key()).or_else(|| value.get("arguments")).or(value.get("parameters"));
        let arguments = match arguments {
            None => "{}".to_string(),
            // Some models write the arguments as a JSON string, as OpenAI returns them.
            Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object()) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => return None,
        };
        Some(ToolCall { name, arguments })
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> Piece {
        Piece::Call(ToolCall { name: name.into(), arguments: arguments.into() })
    }

    fn text(t: &str) -> Piece {
        Piece::Text(t.into())
    }

    /// `answer` read whole and read in pieces of every size gives the same pieces (text merged).
    fn check(format: ToolFormat, answer: &str, expected: &[Piece]) {
        assert_eq!(CallParser::parse(format, answer), expected, "whole: {answer:?}");
        for size in 1..=7 {
            let mut parser = CallParser::new(format);
            let mut pieces: Vec<Piece> = Vec::new();
            let chars: Vec<char> = answer.chars().collect();
            for chunk in chars.chunks(size) {
                pieces.extend(parser.push(&chunk.iter().collect::<String>()));
            }
            pieces.extend(parser.finish());
            let mut merged: Vec<Piece> = Vec::new();
            for p in pieces {
                match (merged.last_mut(), p) {
                    (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                    (_, p) => merged.push(p),
                }
            }
            assert_eq!(merged, expected, "in pieces of {size}: {answer:?}");
        }
    }

    #[test]
    fn hermes_calls_after_text_and_in_parallel() {
        let answer = "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        check(
            ToolFormat::Hermes,
            answer,
            &[text("Let me look."), call("weather", r#"{"city":"Paris"}"#), call("time", "{}")],
        );
        check(ToolFormat::Hermes, "plain <tool text> & more", &[text("plain <tool text> & more")]);
        // Unclosed at the end: still a call if its JSON is whole; otherwise text, as written.
        check(
            ToolFormat::Hermes,
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
            &[call("f", r#"{"a":1}"#)],
        );
        check(
            ToolFormat::Hermes,
            "<tool_call>{\"name\": \"f\", \"argu",
            &[text("<tool_call>{\"name\": \"f\", \"argu")],
        );
        check(
            ToolFormat::Hermes,
            "<tool_call>not json</tool_call> after",
            &[text("<tool_call>not json</tool_call> after")],
        );
    }

    #[test]
    fn llama3_json_calls_open_the_answer() {
        check(
            ToolFormat::Llama3,
            " {\"name\": \"weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            &[call("weather", r#"{"city":"Oslo"}"#)],
        );
        check(
            ToolFormat::Llama3,
            "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 2}}",
            &[call("a", "{}"), call("b", r#"{"x":2}"#)],
        );
        check(ToolFormat::Llama3, "The answer is {not a call}.", &[text("The answer is {not a call}.")]);
        check(ToolFormat::Llama3, "{\"no\": \"name\"}", &[text("{\"no\": \"name\"}")]);
    }

    #[test]
    fn mistral_calls_follow_their_marker() {
        check(
            ToolFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"weather\", \"arguments\": {\"city\": \"Rome\"}}, {\"name\": \"time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}]",
            &[call("weather", r#"{"city":"Rome"}"#), call("time", r#"{"tz": "CET"}"#)],
        );
        check(ToolFormat::Mistral, "Sure. [TOOL_CALLS]broken", &[text("Sure. [TOOL_CALLS]broken")]);
        check(ToolFormat::Mistral, "[TOOL text]", &[text("[TOOL text]")]);
    }

    #[test]
    fn formats_are_told_from_templates() {
        assert_eq!(ToolFormat::of_template("{% if tools %}<tool_call>{% endif %}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::of_template("{{ tools }}[TOOL_CALLS]"), Some(ToolFormat::Mistral));
        assert_eq!(ToolFormat::of_template("{{ tools }} ipython \"parameters\""), Some(ToolFormat::Llama3));
        assert_eq!(ToolFormat::of_template("<|im_start|>{{ m.content }}"), None);
    }

    #[test]
    fn grammars_name_each_tool() {
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let tools = || vec![ToolSpec { name: "weather", parameters: &params }];
        let g = ToolFormat::Hermes.grammar(&Forced::Calls(tools()), true);
        assert!(g.starts_with("start: calls\ncalls: call (\"\\n\" call)*\n"), "{g}");
        assert!(g.contains(r#""const":"weather""#), "{g}");
        let g = ToolFormat::Llama3.grammar(&Forced::TextOrCalls(tools()), false);
        assert!(g.starts_with("start: TEXT | calls\nTEXT: /[^{](.|\\n)*/\n"), "{g}");
        assert!(g.contains(r#""parameters":{"#), "{g}");
        let g = ToolFormat::Mistral.grammar(&Forced::Calls(tools()), false);
        assert!(g.contains("\"[TOOL_CALLS]\" %json") && g.contains(r#""maxItems":1"#), "{g}");
    }
}
