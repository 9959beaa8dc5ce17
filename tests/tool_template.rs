//! Wick's tool-capable ChatML template (models/templates/chatml-hermes-tools.jinja, the default
//! model's) rendered by Wick as Hugging Face transformers renders it: tools shown with its `tojson`,
//! earlier calls and their results in their places. tests/fixtures/make_tool_template_fixture.py wrote
//! the fixture with transformers.

use serde_json::Value;
use wick::loader::chat_template::{ChatTemplate, TemplateMessage};

#[test]
fn tools_and_calls_render_as_transformers_renders_them() {
    let source = wick::catalog::Catalog::builtin().default_chat().chat_template.clone().unwrap();
    let template = ChatTemplate::new(source, None, None).unwrap();
    assert_eq!(template.tool_format, Some(wick::tool_calls::ToolFormat::Hermes));
    let cases: Vec<Value> = serde_json::from_str(include_str!("fixtures/tool_template.json")).unwrap();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let messages: Vec<TemplateMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| TemplateMessage {
                tool_calls: m.get("tool_calls").map(|c| c.as_array().unwrap().clone()),
                tool_call_id: m.get("tool_call_id").map(|id| id.as_str().unwrap().to_string()),
                ..TemplateMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
            })
            .collect();
        let tools = case["tools"].as_array().cloned();
        let rendered = template.render(&messages, tools.as_deref(), true).unwrap();
        assert_eq!(rendered.text, case["text"].as_str().unwrap());
        // The client's strings (content, tool descriptions, call arguments) are all marked as text.
        let marked = rendered.content.expect("content marked");
        let marked: Vec<&str> = marked.iter().map(|r| &rendered.text[r.clone()]).collect();
        if tools.is_some() {
            assert!(marked.contains(&"Get the weather in a city <b>now</b> & here"), "{marked:?}");
        }
    }
}
