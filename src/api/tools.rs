//! Tool calling on `/v1/chat/completions` and `/v1/responses`: the request's `tools`, `tool_choice`
//! and `parallel_tool_calls` checked (each API reads its own shapes, `check` chat's; `ToolRequest::new`
//! checks what they share); the tools handed to the model's chat template; the grammar that forces a
//! call where the request asks for one; and the model's calls read back from its text
//! (`crate::tool_calls`), whole or as they stream.

use super::generation::Constrained;
use super::openai::{ChatCompletionRequest, FunctionDefinition, ResponseToolCall};
use crate::api::error::ApiError;
use crate::engine::grammar::Grammar;
use crate::tool_calls::{CallParser, Forced, Piece, ToolCall, ToolFormat, ToolSpec};
use serde_json::{json, Value};

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

/// The request's tools, checked.
pub struct ToolRequest {
    pub functions: Vec<FunctionDefinition>,
    pub choice: Choice,
    pub parallel: bool,
}

/// How one answer uses tools, once the model's template is known.
pub struct ToolUse {
    /// The tools in Hugging Face's shape, for the template; None when it is not to show them.
    pub template_tools: Option<Vec<Value>>,
    pub grammar: Option<Constrained>,
    /// The format the answer's calls are read in; None: the answer is text.
    pub reader: Option<ToolReader>,
}

/// OpenAI's rule for a function's or a schema's name: 1 to 64 letters, digits, `_` or `-`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn bad<T>(message: String, param: &str) -> Result<T, ApiError> {
    Err(ApiError::invalid_request(message, Some(param)))
}

/// Checks chat's `tools`, `tool_choice` and `parallel_tool_calls`; None when there are no tools.
pub fn check(req: &ChatCompletionRequest) -> Result<Option<ToolRequest>, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let mut functions = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.custom.is_some() || tool.kind != "function" {
            return bad(
                format!("Invalid 'tools[{i}].type': '{}'. Wick serves function tools only.", tool.kind),
                &format!("tools[{i}].type"),
            );
        }
        let Some(f) = &tool.function else {
            return bad("Missing required parameter: 'function'.".into(), &format!("tools[{i}].function"));
        };
        functions.push(f.clone());
    }
    let choice = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => Some(Choice::of_option(s, "tool_choice")?),
        Some(v) if v["type"] == "function" && v["function"]["name"].is_string() => {
            Some(Choice::Named(v["function"]["name"].as_str().unwrap_or_default().to_string()))
        }
        Some(v) if v["type"] == "allowed_tools" || v["type"] == "custom" => {
            return bad(format!("'tool_choice' of type {} is not supported by this server.", v["type"]), "tool_choice.type")
        }
        Some(_) => {
            return bad(
                "Invalid 'tool_choice': use 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ..}}.".into(),
                "tool_choice",
            )
        }
    };
    if functions.is_empty() {
        if req.tool_choice.is_some() {
            return bad("'tool_choice' is only allowed when 'tools' are specified.".into(), "tool_choice");
        }
        if req.parallel_tool_calls.is_some() {
            return bad(
                "'parallel_tool_calls' is only allowed when 'tools' are specified.".into(),
                "parallel_tool_calls",
            );
        }
        return Ok(None);
    }
    let at = |i| format!("tools[{i}].function");
    ToolRequest::new(functions, &at, choice, "tool_choice.function.name", req.parallel_tool_calls).map(Some)
}

impl Choice {
    /// `tool_choice` given as one of its words (`param` names it).
    pub fn of_option(option: &str, param: &str) -> Result<Self, ApiError> {
        match option {
            "none" => Ok(Choice::None),
            "auto" => Ok(Choice::Auto),
            "required" => Ok(Choice::Required),
            other => bad(
                format!("Invalid 'tool_choice': '{other}'. Use 'none', 'auto', 'required' or a named function."),
                param,
            ),
        }
    }
}

impl ToolRequest {
    /// The tools of a request, whichever API's shape they came in: `functions` (function `i` is at
    /// `at(i)` in the request; each must have a valid name, unique, and an object for
    /// `parameters`), what `tool_choice` asks (None: absent; a named function must be among them,
    /// or the error names `named_param`), and `parallel_tool_calls`.
    pub fn new(
        functions: Vec<FunctionDefinition>,
        at: &dyn Fn(usize) -> String,
        choice: Option<Choice>,
        named_param: &str,
        parallel: Option<bool>,
    ) -> Result<Self, ApiError> {
        for (i, f) in functions.iter().enumerate() {
            if !is_valid_name(&f.name) {
                return bad(
                    format!(
                        "Invalid '{}.name': '{}'. It must be 1 to 64 letters, digits, underscores or dashes.",
                        at(i),
                        f.name
                    ),
                    &format!("{}.name", at(i)),
                );
            }
            if f.parameters.as_ref().is_some_and(|p| !p.is_object()) {
                return bad(
                    "A function's 'parameters' must be a JSON Schema object.".into(),
                    &format!("{}.parameters", at(i)),
                );
            }
            if functions[..i].iter().any(|g| g.name == f.name) {
                return bad(format!("Two tools are named '{}'.", f.name), &format!("{}.name", at(i)));
            }
        }
        let choice = match choice {
            None if functions.is_empty() => Choice::None,
            None => Choice::Auto,
            Some(Choice::Named(name)) if !functions.iter().any(|f| f.name == name) => {
                return bad(format!("'tool_choice' names '{name}', which is not among the tools."), named_param)
            }
            Some(choice) => choice,
        };
        Ok(Self { functions, choice, parallel: parallel.unwrap_or(true) })
    }

    /// How the answer uses the tools, given the format the model's template writes calls in (None:
    /// it renders no tools).
    pub fn plan(&self, template_format: Option<ToolFormat>) -> Result<ToolUse, ApiError> {
        if self.choice == Choice::None {
            return Ok(ToolUse { template_tools: None, grammar: None, reader: None });
        }
        let forced = matches!(self.choice, Choice::Required | Choice::Named(_));
        let format =
            match template_format {
                Some(format) => format,
                // Without the template's help the model never sees the tools; a grammar alone can still
                // make it call, in the Hermes format.
                None if forced => ToolFormat::Hermes,
                None => return bad(
                    "This model's chat template cannot show it tools, so it cannot choose to call one. Ask for a call \
                     with 'tool_choice' 'required' or a named function (a grammar then writes the call), or give the \
                     deployment a tool-capable 'chat_template'."
                        .into(),
                    "tools",
                ),
            };
        let template_tools = template_format
            .map(|_| self.functions.iter().map(|f| json!({"type": "function", "function": f})).collect::<Vec<_>>());
        let no_parameters = json!({"type": "object", "properties": {}});
        let specs = |keep: &dyn Fn(&FunctionDefinition) -> bool| -> Vec<ToolSpec<'_>> {
            self.functions
                .iter()
                .filter(|f| keep(f))
                .map(|f| ToolSpec { name: &f.name, parameters: f.parameters.as_ref().unwrap_or(&no_parameters) })
                .collect()
        };
        let grammar = match &self.choice {
            Choice::Required => Some(Forced::Calls(specs(&|_| true))),
            Choice::Named(name) => Some(Forced::Calls(specs(&|f| &f.name == name))),
            // `strict` functions are enforced under `auto` too: an answer that opens as a call must be one.
            Choice::Auto if self.functions.iter().any(|f| f.strict == Some(true)) => {
                Some(Forced::TextOrCalls(specs(&|_| true)))
            }
            _ => None,
        };
        // A named function is called once.
        let parallel = self.parallel && !matches!(self.choice, Choice::Named(_));
        let grammar = grammar
            .map(|forced| Constrained { grammar: Grammar::Lark(format.grammar(&forced, parallel)), param: "tools" });
        Ok(ToolUse { template_tools, grammar, reader: Some(ToolReader { format, parallel }) })
    }
}

/// Reads calls out of answers in one format.
#[derive(Clone, Copy)]
pub struct ToolReader {
    pub format: ToolFormat,
    /// Without parallel calls, only the first call counts.
    pub parallel: bool,
}

/// One answer read: its text (None if it is only calls) and its calls.
pub struct ReadAnswer {
    pub content: Option<String>,
    pub calls: Vec<ResponseToolCall>,
}

impl ToolReader {
    pub fn read(&self, answer: &str) -> ReadAnswer {
        let mut content = String::new();
        let mut calls = Vec::new();
        for piece in CallParser::parse(self.format, answer) {
            match piece {
                Piece::Text(t) => content.push_str(&t),
                Piece::Call(call) if self.parallel || calls.is_empty() => calls.push(response_call(call)),
                Piece::Call(_) => {}
            }
        }
        ReadAnswer { content: (!content.is_empty() || calls.is_empty()).then_some(content), calls }
    }
}

/// A call as OpenAI returns it, with a fresh id.
pub fn response_call(call: ToolCall) -> ResponseToolCall {
    ResponseToolCall {
        id: format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
        kind: "function",
        function: super::openai::FunctionCall { name: call.name, arguments: call.arguments },
    }
}
