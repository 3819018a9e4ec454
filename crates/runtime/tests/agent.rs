//! ChatGLM3's agent protocol: the tool-call parser on realistic model outputs, the Python
//! literal writer, reply splitting, and the golden prompt ids of the tool and interpreter
//! conversations (tests/fixtures/chatglm3/golden_chat.json) built through the agent helpers and
//! through the OpenAI mapping (skipped when the real tokenizer is absent).

use std::path::{Path, PathBuf};

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use glm_runtime::agent::*;
use glm_runtime::chat::{build_chat_ids, Message, Role};
use glm_runtime::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn parses_realistic_tool_calls() {
    let cases: Vec<(&str, Value)> = vec![
        ("```python\ntool_call(city_name='北京')\n```", json!({"city_name": "北京"})),
        ("tool_call(city_name=\"上海\", unit='celsius')", json!({"city_name": "上海", "unit": "celsius"})),
        (
            "```python\ntool_call(query={'filters': {'year': [2020, 2021], 'tags': ('a', 'b')}, 'limit': 10}, verbose=True, cursor=None)\n```",
            json!({"query": {"filters": {"year": [2020, 2021], "tags": ["a", "b"]}, "limit": 10}, "verbose": true, "cursor": null}),
        ),
        (
            "tool_call(text='It\\'s \"quoted\"', path=r'C:\\new', nl=\"a\\nb\\t\\x41\\u4e2d\\U0001F600\", cat='ab' \"cd\")",
            json!({"text": "It's \"quoted\"", "path": "C:\\new", "nl": "a\nb\tA中😀", "cat": "abcd"}),
        ),
        (
            "```python\ntool_call(\n    a=-3, b=+2.5, c=1e-3, d=0x1F, e=1_000, f=[], g={}, h=(), i=(1,), j=-0.0,\n)\n```",
            json!({"a": -3, "b": 2.5, "c": 0.001, "d": 31, "e": 1000, "f": [], "g": {}, "h": [], "i": [1], "j": -0.0}),
        ),
        ("tool_call()", json!({})),
        ("tool_call(doc='''多行\n文本''', 名字='值', k={1: 'x', True: None})", json!({"doc": "多行\n文本", "名字": "值", "k": {"1": "x", "true": null}})),
        ("  ```\ntool_call(x=1) # a comment\n```  ", json!({"x": 1})),
    ];
    for (text, want) in cases {
        let got = parse_tool_call(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(Value::Object(got), want, "{text:?}");
    }
}

#[test]
fn rejects_malformed_calls_with_a_reason() {
    // nesting is capped (the parser recurses): an error, not a stack overflow
    for open in ["[", "{'k': ", "-", "("] {
        let close = match open {
            "[" => "]",
            "(" => ",)",
            "-" => "",
            _ => "}",
        };
        let deep = format!(
            "tool_call(x={}1{})",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let e = parse_tool_call(&deep).unwrap_err().to_string();
        assert!(e.contains("nested more than 100"), "{open}: {e}");
    }
    let cases = [
        ("tool_call(city_name='北京'", "expected ')'"),
        ("tool_call('北京')", "positional"),
        (
            "tool_call(x=__import__('os').system('rm -rf /'))",
            "only literals",
        ),
        ("tool_call(x=1, x=2)", "repeated"),
        ("tool_call(x='abc)", "unterminated string"),
        ("tool_call(x=1) + 1", "after tool_call"),
        ("print('hi')", "expected tool_call"),
        ("tool_call(x={1, 2})", "sets are not supported"),
        ("tool_call(x=[1, 2)", "expected ']'"),
        ("tool_call(x=1 + 2)", "expected ')'"),
        ("tool_call(x=99999999999999999999999)", "too large"),
        ("tool_call(x='\\N{DASH}')", "\\N"),
        ("tool_call(x=-'a')", "unary sign"),
        ("tool_call(x=1e999)", "bad number"),
        ("tool_call(x=0777)", "bad number"),
        ("tool_call(x==1)", "positional"),
        ("", "expected tool_call"),
    ];
    for (text, needle) in cases {
        match parse_tool_call(text) {
            Ok(v) => panic!("{text:?} parsed as {v:?}"),
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("malformed tool call"), "{s}");
                assert!(s.contains(needle), "{text:?}: {s:?} lacks {needle:?}");
            }
        }
    }
    // The position points into the original content (after the fence line).
    let e = parse_tool_call("```python\ntool_call(x=?)\n```").unwrap_err();
    assert_eq!(e.pos, "```python\ntool_call(x=".len());
}

#[test]
fn python_repr_round_trips_through_the_parser() {
    let v = json!({
        "s": "It's", "d": "say \"hi\"", "both": "'\"", "esc": "a\\b\nc\td\u{1}\u{7f}",
        "zh": "北京 天气", "emoji": "😀", "i": -42, "u": 18446744073709551615u64,
        "f": 1.5, "small": 1e-7, "big": 1e22, "b": [true, false, null], "o": {"k": [1, {"x": []}]}
    });
    let a = args(v.clone());
    let content = format_tool_call(&a);
    assert!(content.starts_with("```python\ntool_call(s=\"It's\", d='say \"hi\"', both='\\'\"'"));
    assert!(content.contains("zh='北京 天气'"), "{content}");
    assert!(
        content.contains("small=1e-07, big=1e+22, b=[True, False, None]"),
        "{content}"
    );
    assert_eq!(Value::Object(parse_tool_call(&content).unwrap()), v);
    assert_eq!(python_str_repr("a'b\"c"), "'a\\'b\"c'");
}

#[test]
fn replies_split_like_process_response() {
    let tool = "get_weather\n```python\ntool_call(city_name='北京')\n```";
    assert_eq!(
        parse_reply(tool, true),
        vec![Segment::ToolCall(ToolCall {
            name: "get_weather".into(),
            arguments: args(json!({"city_name": "北京"})),
            raw: None,
        })]
    );
    // Without tools, the same reply is a named answer, not a call.
    assert!(
        matches!(&parse_reply(tool, false)[0], Segment::Other { metadata, error: None, .. } if metadata == "get_weather")
    );
    assert_eq!(
        parse_reply("\n 北京今天晴。 ", true),
        vec![Segment::Text("北京今天晴。".into())]
    );
    assert_eq!(
        parse_reply("no newline ", false),
        vec![Segment::Text("no newline".into())]
    );
    // A call that does not parse is kept as text with the reason.
    match &parse_reply(
        "get_weather\n```python\ntool_call(city_name=北京)\n```",
        true,
    )[0]
    {
        Segment::Other {
            metadata,
            content,
            error: Some(e),
        } => {
            assert_eq!(metadata, "get_weather");
            assert!(content.contains("tool_call(city_name=北京)"));
            assert!(e.contains("only literals"), "{e}");
        }
        s => panic!("{s:?}"),
    }
    // Text, then a code-interpreter cell in a second <|assistant|> segment.
    let segs = parse_reply(
        "\n我来计算一下。<|assistant|>interpreter\n```python\nprint(2**100)\n```",
        false,
    );
    assert_eq!(segs[0], Segment::Text("我来计算一下。".into()));
    match &segs[1] {
        Segment::Code { code, content } => {
            assert_eq!(code, "print(2**100)\n");
            let m = segs[1].to_message();
            assert_eq!((m.metadata.as_str(), &m.content), ("interpreter", content));
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(
        extract_code("a ```py\nx=1\n``` b ```python\ny=2\n```").as_deref(),
        Some("y=2\n")
    );
    assert_eq!(extract_code("no code"), None);
}

// ---- golden prompt ids (real ChatGLM3 tokenizer) ----

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
fn golden_tool_conversation_through_agent_helpers() {
    let (messages, want) = golden("tool_call");
    // The agent helpers rebuild the same messages ...
    let tools = messages[0].tools.clone().unwrap();
    let call = match &parse_reply(
        &format!("{}\n{}", messages[2].metadata, messages[2].content),
        true,
    )[0]
    {
        Segment::ToolCall(c) => c.clone(),
        s => panic!("{s:?}"),
    };
    let built = vec![
        tools_system_message(tools.clone()),
        Message::user(messages[1].content.clone()),
        call.to_message(),
        Message::observation(messages[3].content.clone()),
    ];
    assert_eq!(built, messages);
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(build_chat_ids(&tok, &built).unwrap(), want);
}

#[test]
fn golden_interpreter_conversation_through_agent_helpers() {
    let (messages, want) = golden("interpreter");
    let reply = format!("{}\n{}", messages[2].metadata, messages[2].content);
    let segs = parse_reply(&reply, false);
    let code = match &segs[0] {
        Segment::Code { code, .. } => code.clone(),
        s => panic!("{s:?}"),
    };
    assert_eq!(code, "print(2**100)\n");
    let built = vec![
        interpreter_system_message(),
        Message::user("Compute 2**100"),
        segs[0].to_message(),
        result_observation("1267650600228229401496703205376"),
    ];
    assert_eq!(built, messages);
    assert_eq!(built[3].role, Role::Observation);
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(build_chat_ids(&tok, &built).unwrap(), want);
}
