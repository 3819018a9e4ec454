//! The OpenAI mapping: messages, tools and request parameters, errors naming the field, and
//! the golden ChatGLM3 prompt ids reached from an OpenAI request.

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use glm_openai::*;
use glm_runtime::agent::INTERPRETER_SYSTEM_PROMPT;
use glm_runtime::chat::{build_chat_ids, Message};
use glm_runtime::constraint::Grammar;
use glm_runtime::Tokenizer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[test]
fn openai_mapping_and_errors() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let msgs = json!([
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": [1, \"二\"]}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"ok\": true}"},
    ]);
    let m = openai_messages(&msgs, Some(&tools), &ToolChoice::Auto).unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].tools, Some(json!([{"name": "f", "parameters": {}}])));
    assert_eq!(m[1], Message::user("ab"));
    assert_eq!(m[2].metadata, "f");
    assert_eq!(m[2].content, "```python\ntool_call(x=[1, '二'])\n```");
    assert_eq!(m[3], Message::observation("{\"ok\": true}"));
    let none = openai_messages(&msgs, Some(&tools), &ToolChoice::None).unwrap();
    assert_eq!(none.len(), 3);

    for (msgs, tools, needle) in [
        (json!([]), None, "at least one"),
        (json!({"role": "user"}), None, "expected an array"),
        (
            json!([{"content": "x"}]),
            None,
            "messages[0]: missing the string field \"role\"",
        ),
        (
            json!([{"role": "robot", "content": "x"}]),
            None,
            "unknown role \"robot\"",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
            None,
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]),
            None,
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "user", "content": "x"}]),
            Some(json!([{"function": {}}])),
            "tools[0]: missing",
        ),
        (
            json!([{"role": "user", "content": "x"}]),
            Some(json!({})),
            "tools: expected",
        ),
    ] {
        let e = openai_messages(&msgs, tools.as_ref(), &ToolChoice::Auto).unwrap_err();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
    assert_eq!(
        ToolChoice::from_openai(Some(
            &json!({"type": "function", "function": {"name": "g"}})
        )),
        Ok(ToolChoice::Function("g".into()))
    );
    assert!(ToolChoice::from_openai(Some(&json!("sometimes"))).is_err());
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn real_tokenizer() -> Option<Tokenizer> {
    let p: PathBuf = manifest().join("../../../shared/reference/chatglm3/tokenizer.model");
    if !p.exists() {
        eprintln!("skipping: {} not found", p.display());
        return None;
    }
    let spm = SpmModel::from_file(&p).unwrap();
    let v = chatglm3_vocab(&spm, spm.pieces.len() + 9).unwrap();
    Some(Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap())
}

fn golden(name: &str) -> (Vec<Message>, Vec<u32>) {
    let p = manifest().join("../../tests/fixtures/chatglm3/golden_chat.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let c = &v["conversations"][name];
    (
        serde_json::from_value(c["messages"].clone()).unwrap(),
        serde_json::from_value(c["ids"].clone()).unwrap(),
    )
}

#[test]
fn golden_tool_conversation_from_an_openai_request() {
    let (messages, want) = golden("tool_call");
    let tools = messages[0].tools.clone().unwrap();
    let openai_tools: Vec<Value> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|f| json!({"type": "function", "function": f}))
        .collect();
    let req = json!([
        {"role": "user", "content": messages[1].content},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city_name\": \"北京\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": messages[3].content},
    ]);
    let mapped =
        openai_messages(&req, Some(&Value::Array(openai_tools)), &ToolChoice::Auto).unwrap();
    assert_eq!(mapped, messages);
    assert_eq!(mapped, messages);
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(build_chat_ids(&tok, &mapped).unwrap(), want);
}

#[test]
fn golden_interpreter_conversation_from_an_openai_request() {
    let (messages, want) = golden("interpreter");
    // The OpenAI mapping of the same turns (the cell as a plain assistant text is not the
    // same prompt: metadata matters, so the test checks the mapped user/system turns only).
    let mapped = openai_messages(
        &json!([{"role": "system", "content": INTERPRETER_SYSTEM_PROMPT}, {"role": "user", "content": "Compute 2**100"}]),
        None,
        &ToolChoice::Auto,
    )
    .unwrap();
    assert_eq!(mapped[..], messages[..2]);
    let Some(tok) = real_tokenizer() else { return };
    let prefix = build_chat_ids(&tok, &mapped).unwrap();
    assert_eq!(prefix[..prefix.len() - 1], want[..prefix.len() - 1]);
}

#[test]
fn request_parameters_and_their_errors() {
    let r = ChatRequest::parse(
        br#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "top_p": 0.9,
            "seed": -1, "max_completion_tokens": 7, "stop": "x", "stream": true,
            "stream_options": {"include_usage": true}, "user": "u1"}"#,
    )
    .unwrap();
    assert_eq!(
        r.params,
        Params {
            stream: true,
            include_usage: true,
            max_tokens: Some(7),
            temperature: Some(0.5),
            top_p: Some(0.9),
            seed: Some(u64::MAX),
            stops: vec!["x".into()],
            logprobs: None,
            n: 1,
            ..Default::default()
        }
    );
    assert_eq!(r.messages, vec![Message::user("hi")]);
    assert!(!r.tools && !r.output.is_constrained());
    let forced = ChatRequest::parse(
        br#"{"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}}"#,
    )
    .unwrap();
    assert!(forced.tools && forced.output.call_required);
    assert_eq!(forced.output.tools.len(), 1);
    assert_eq!(forced.output.tools[0].name, "f");
    let required = ChatRequest::parse(
        br#"{"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}],
            "tool_choice": "required", "parallel_tool_calls": false}"#,
    )
    .unwrap();
    assert!(required.output.call_required && required.output.tools.len() == 2);
    assert!(!required.parallel_tool_calls);

    // every sampling field, and the output formats
    let r = ChatRequest::parse(
        br#"{"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 0.5,
            "presence_penalty": -1, "logit_bias": {"42": -100, " 7": 2.5}, "min_p": 0.1,
            "top_k": 40, "repeat_penalty": 1.1, "repeat_last_n": 32,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "object"}}}}"#,
    )
    .unwrap();
    let p = &r.params;
    assert_eq!(
        (p.frequency_penalty, p.presence_penalty),
        (Some(0.5), Some(-1.0))
    );
    assert_eq!(p.logit_bias, vec![(42, -100.0), (7, 2.5)]);
    assert_eq!(
        (p.min_p, p.top_k, p.repeat_penalty, p.repeat_last_n),
        (Some(0.1), Some(40), Some(1.1), Some(32))
    );
    let s = p.structured.as_ref().unwrap();
    assert_eq!(s.field, "response_format.json_schema.schema");
    assert_eq!(s.grammar, Grammar::JsonSchema(json!({"type": "object"})));
    assert_eq!(r.output.content, Some(s.grammar.clone()));
    let fmt = |body: &str| {
        ChatRequest::parse(
            format!(r#"{{"messages": [{{"role": "user", "content": "hi"}}], {body}}}"#).as_bytes(),
        )
        .map(|r| r.params.structured.map(|s| (s.field, s.grammar)))
    };
    assert_eq!(
        fmt(r#""response_format": {"type": "json_object"}"#).unwrap(),
        Some(("response_format", Grammar::JsonObject))
    );
    assert_eq!(fmt(r#""response_format": {"type": "text"}"#).unwrap(), None);
    assert_eq!(
        fmt(r#""grammar": "root ::= \"a\"""#).unwrap(),
        Some(("grammar", Grammar::Gbnf("root ::= \"a\"".into())))
    );
    assert_eq!(
        fmt(r#""json_schema": {"type": "integer"}"#).unwrap(),
        Some((
            "json_schema",
            Grammar::JsonSchema(json!({"type": "integer"}))
        ))
    );
    assert_eq!(
        CompletionRequest::parse(br#"{"prompt": "x", "grammar": "root ::= \"a\""}"#)
            .unwrap()
            .params
            .structured
            .map(|s| s.field),
        Some("grammar")
    );

    let msgs = r#""messages": [{"role": "user", "content": "hi"}]"#;
    for (body, needle) in [
        ("[1]".to_string(), "must be a JSON object"),
        ("{".to_string(), "malformed JSON body"),
        ("{}".to_string(), "messages: required"),
        (
            format!(r#"{{{msgs}, "temperature": "hot"}}"#),
            "temperature: invalid type: string \"hot\", expected f64",
        ),
        (
            format!(r#"{{{msgs}, "temperature": 3}}"#),
            "temperature: must be between 0 and 2",
        ),
        (
            format!(r#"{{{msgs}, "top_p": -0.1}}"#),
            "top_p: must be between 0 and 1",
        ),
        (
            format!(r#"{{{msgs}, "seed": 1.5}}"#),
            "seed: expected an integer",
        ),
        (
            format!(r#"{{{msgs}, "max_tokens": 0}}"#),
            "max_tokens: expected an integer >= 1",
        ),
        (
            format!(r#"{{{msgs}, "stop": [1]}}"#),
            "stop: expected a string",
        ),
        (
            format!(
                r#"{{{msgs}, "stop": ["a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a"]}}"#
            ),
            "stop: at most 16",
        ),
        (
            format!(r#"{{{msgs}, "n": 0}}"#),
            "n: expected an integer from 1 to 16",
        ),
        (
            format!(r#"{{{msgs}, "n": 17}}"#),
            "n: expected an integer from 1 to 16",
        ),
        (
            format!(r#"{{{msgs}, "stream": "yes"}}"#),
            "stream: invalid type: string \"yes\", expected a boolean",
        ),
        (
            format!(
                r#"{{{msgs}, "tool_choice": {{"type": "function", "function": {{"name": "f"}}}}}}"#
            ),
            "no tools are given",
        ),
        (
            format!(
                r#"{{{msgs}, "tools": [{{"type": "function", "function": {{"name": "g"}}}}], "tool_choice": {{"type": "function", "function": {{"name": "f"}}}}}}"#
            ),
            "tool_choice: no function named \"f\" in tools (there are: g)",
        ),
        (
            format!(r#"{{{msgs}, "tool_choice": "required"}}"#),
            "no tools are given",
        ),
        (
            format!(r#"{{{msgs}, "tempreature": 1}}"#),
            "unknown field \"tempreature\" (did you mean \"temperature\"?)",
        ),
        (
            format!(r#"{{{msgs}, "audio": {{"voice": "alloy"}}}}"#),
            "audio: not supported by glmtool",
        ),
        (
            format!(r#"{{{msgs}, "functions": []}}"#),
            "functions: not supported by glmtool: use \"tools\"",
        ),
        (
            format!(r#"{{{msgs}, "frequency_penalty": 3}}"#),
            "frequency_penalty: must be between -2 and 2",
        ),
        (
            format!(r#"{{{msgs}, "presence_penalty": -2.5}}"#),
            "presence_penalty: must be between -2 and 2",
        ),
        (
            format!(r#"{{{msgs}, "logit_bias": {{"x": 1}}}}"#),
            "logit_bias: the key \"x\" is not a token id",
        ),
        (
            format!(r#"{{{msgs}, "logit_bias": {{"5": -101}}}}"#),
            "logit_bias.5: expected a number from -100 to 100",
        ),
        (
            format!(r#"{{{msgs}, "min_p": 1.5}}"#),
            "min_p: must be between 0 and 1",
        ),
        (
            format!(r#"{{{msgs}, "top_k": -1}}"#),
            "top_k: expected an integer >= 0",
        ),
        (
            format!(r#"{{{msgs}, "repeat_penalty": 0}}"#),
            "repeat_penalty: must be > 0",
        ),
        (
            format!(r#"{{{msgs}, "response_format": {{"type": "yaml"}}}}"#),
            "response_format.type: \"yaml\" is not one of",
        ),
        (
            format!(r#"{{{msgs}, "response_format": {{"type": "json_schema"}}}}"#),
            "response_format.json_schema: expected",
        ),
        (
            format!(
                r#"{{{msgs}, "response_format": {{"type": "json_object"}}, "grammar": "root ::= \"a\""}}"#
            ),
            "response_format and grammar: give one output format",
        ),
    ] {
        let e = ChatRequest::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(needle), "{body}: {e:?} lacks {needle:?}");
    }
    assert_eq!(
        CompletionRequest::parse(br#"{"prompt": ["a b"]}"#)
            .unwrap()
            .prompt,
        "a b"
    );
    for (body, needle) in [
        (r#"{}"#, "prompt: required"),
        (r#"{"prompt": ["a", "b"]}"#, "one prompt per request"),
    ] {
        let e = CompletionRequest::parse(body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{body}: {e:?} lacks {needle:?}");
    }
}
