//! Structured output through `glmtool serve` and `run`, on the bundled demo model (ChatGLM3
//! format, trained on fortune cookies: its free text is never JSON, so valid output is the
//! constraint's doing), and on the tiny GLM-4 checkpoint when the real GLM-4 tokenizer is
//! present. Every JSON reply is checked by the `jsonschema` crate; tool-call arguments
//! against their function's `parameters`; GBNF output by a recognizer written here.

#![cfg(feature = "server")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::Command;

mod common;
use common::{agent, cache, Server};

fn server(extra: &[&str]) -> Server {
    common::server(cache(), extra)
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let resp = match agent()
        .post(&format!("{}{path}", s.base))
        .send_json(body.clone())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    (resp.status(), resp.into_json().unwrap())
}

fn validate(schema: &Value, v: &Value) {
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{v} does not match: {errors:?}");
}

/// Nested objects, arrays with min/max items, enums, bounded integers, required and optional
/// properties, strings with a pattern.
fn nested_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "kind": {"enum": ["book", "film", "song"]},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,6}$"}, "minItems": 1, "maxItems": 3},
            "author": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,7}$"},
                    "born": {"type": "integer", "minimum": 1800, "maximum": 2020}
                },
                "required": ["name"],
                "additionalProperties": false
            },
            "rating": {"type": "integer", "minimum": 1, "maximum": 5}
        },
        "required": ["id", "kind", "year", "tags", "author"],
        "additionalProperties": false
    })
}

#[test]
fn fifty_json_schema_replies_at_temperature_one_all_validate() {
    let s = server(&[]);
    let schema = nested_schema();
    for i in 0..50 {
        let mut body = json!({
            "messages": [{"role": "user", "content": "Describe a work as JSON"}],
            "temperature": 1.0,
            "seed": i,
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "work", "strict": true, "schema": schema}},
        });
        if i % 10 == 9 {
            // llama-server's spelling on the completions endpoint, now and then
            body = json!({"prompt": "A work as JSON: ", "temperature": 1.0, "seed": i, "json_schema": schema});
        }
        let path = if body.get("prompt").is_some() {
            "/v1/completions"
        } else {
            "/v1/chat/completions"
        };
        let (st, v) = post(&s, path, &body);
        assert_eq!(st, 200, "{v}");
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .or_else(|| v["choices"][0]["text"].as_str())
            .unwrap_or_else(|| panic!("{v}"));
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
        let parsed: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("request {i}: {e}: {text:?}"));
        validate(&schema, &parsed);
    }
    // json_object, streamed: the chunks join into one JSON object
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", s.base))
        .send_json(
            json!({"messages": [{"role": "user", "content": "JSON please"}],
            "temperature": 1.0, "seed": 3, "stream": true, "max_tokens": 300,
            "response_format": {"type": "json_object"}}),
        )
        .unwrap();
    let mut text = String::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
    }
    // 300 tokens may end an unbounded object early; a finished one must parse
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        assert!(v.is_object(), "{text}");
    } else {
        assert!(text.trim_start().starts_with('{'), "{text:?}");
    }
}

/// Small enough for the demo model's 512-token context with its prompt (the tools' JSON is
/// part of it).
fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "pattern": "^[A-Z][a-z]{1,9}$"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "alerts": {"type": "boolean"},
                "hours": {"type": "array", "items": {"enum": [0, 6, 12]}, "maxItems": 2}
            },
            "required": ["city", "alerts"]
        }
    }})
}

fn clock_tool() -> Value {
    json!({"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}})
}

/// Forced calls through `s`: a named function and "required", each `n` times at temperature 1.
fn forced_calls(s: &Server, n: u64) {
    let params = weather_tool()["function"]["parameters"].clone();
    let mut names = std::collections::HashSet::new();
    for i in 0..n {
        let choice = if i % 2 == 0 {
            json!({"type": "function", "function": {"name": "get_weather"}})
        } else {
            json!("required")
        };
        let body = json!({
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [weather_tool(), clock_tool()],
            "tool_choice": choice,
            "temperature": 1.0,
            "seed": i,
        });
        let (st, v) = post(s, "/v1/chat/completions", &body);
        assert_eq!(st, 200, "{v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
        let call = &choice["message"]["tool_calls"][0]["function"];
        let name = call["name"].as_str().unwrap();
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        match name {
            "get_weather" => validate(&params, &args),
            "now" => assert_eq!(args, json!({}), "{v}"),
            other => panic!("called {other}: {v}"),
        }
        if i % 2 == 0 {
            assert_eq!(name, "get_weather", "{v}");
        }
        names.insert(name.to_string());
    }
    assert!(!names.is_empty());
}

#[test]
fn forced_tool_calls_match_their_parameters_in_chatglm3_format() {
    let s = server(&[]);
    forced_calls(&s, 12);
}

#[test]
fn forced_tool_calls_and_json_in_glm4_format() {
    let Some(ckpt) = common::glm4_checkpoint() else {
        return;
    };
    let s = server(&["-m", ckpt.path().to_str().unwrap(), "--type", "f16"]);
    forced_calls(&s, 6);
    let schema = nested_schema();
    for i in 0..4 {
        let (st, v) = post(
            &s,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "JSON"}], "temperature": 1.0,
                "seed": i, "response_format": {"type": "json_schema",
                "json_schema": {"name": "w", "schema": schema}}}),
        );
        assert_eq!(st, 200, "{v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        validate(&schema, &serde_json::from_str(text).unwrap());
    }
}

/// Sentences of the arithmetic grammar below.
fn is_arithmetic(s: &str) -> bool {
    fn expr(b: &[u8], i: &mut usize) -> bool {
        if !term(b, i) {
            return false;
        }
        while *i < b.len() && b"+-*".contains(&b[*i]) {
            *i += 1;
            if !term(b, i) {
                return false;
            }
        }
        true
    }
    fn term(b: &[u8], i: &mut usize) -> bool {
        if b.get(*i) == Some(&b'(') {
            *i += 1;
            if !expr(b, i) || b.get(*i) != Some(&b')') {
                return false;
            }
            *i += 1;
            return true;
        }
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        (1..=3).contains(&(*i - start))
    }
    let b = s.as_bytes();
    let mut i = 0;
    expr(b, &mut i) && i == b.len()
}

const ARITHMETIC: &str = "root ::= expr\nexpr ::= term ((\"+\" | \"-\" | \"*\") term)*\nterm ::= [0-9]{1,3} | \"(\" expr \")\"\n";

#[test]
fn a_gbnf_grammar_yields_only_its_sentences_on_both_endpoints() {
    assert!(is_arithmetic("(1+22)*333") && !is_arithmetic("1+") && !is_arithmetic(""));
    let s = server(&[]);
    for i in 0..12 {
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/completions",
                json!({"prompt": "Compute: ", "grammar": ARITHMETIC, "temperature": 1.0, "seed": i, "max_tokens": 200}),
            )
        } else {
            (
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "Compute"}], "grammar": ARITHMETIC,
                    "temperature": 1.0, "seed": i, "max_tokens": 200}),
            )
        };
        let (st, v) = post(&s, path, &body);
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        let text = c["text"]
            .as_str()
            .or_else(|| c["message"]["content"].as_str())
            .unwrap();
        if c["finish_reason"] == "stop" {
            assert!(is_arithmetic(text), "{text:?}");
        } else {
            // cut by max_tokens: a prefix of a sentence
            assert!(
                text.bytes().all(|b| b"0123456789+-*()".contains(&b)),
                "{text:?}"
            );
        }
    }
    // the CLI takes a grammar too (a finite one: the run goes on until the grammar ends)
    let finite = "root ::= term ((\"+\" | \"-\") term){0,3}\nterm ::= [0-9]{1,3}\n";
    let out = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args([
            "run",
            "-t",
            "1",
            "--temp",
            "1",
            "-s",
            "5",
            "-p",
            "Compute",
            "--grammar",
        ])
        .arg(finite)
        .env("GLMTOOL_CACHE", cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(is_arithmetic(text.trim_end_matches('\n')), "{text:?}");
}

/// `run --raw --json` ids of a greedy continuation, with extra flags.
fn greedy_ids(extra: &[&str]) -> (Vec<u64>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args([
            "run",
            "--raw",
            "--json",
            "-t",
            "1",
            "--temp",
            "0",
            "-n",
            "40",
            "-p",
            "The fortune of",
        ])
        .args(extra)
        .env("GLMTOOL_CACHE", cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    (ids, v["text"].as_str().unwrap().to_string())
}

#[test]
fn logit_bias_of_minus_100_removes_the_most_frequent_token() {
    let (ids, text) = greedy_ids(&[]);
    let mut counts = std::collections::HashMap::new();
    for &id in &ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    let (&top, &n) = counts
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .unwrap();
    assert!(n >= 2, "{ids:?}");
    let banned = format!("{top}-100");
    let (ids2, text2) = greedy_ids(&["-l", &banned]);
    assert!(!ids2.contains(&top), "{top} still in {ids2:?}");
    let first = ids.iter().position(|&i| i == top).unwrap();
    assert_eq!(
        ids[..first],
        ids2[..first],
        "the text before the banned token is unchanged"
    );
    // the server applies the same bias to the same greedy continuation
    let s = server(&[]);
    let body = |bias: Value| json!({"prompt": "The fortune of", "temperature": 0, "max_tokens": 40, "logit_bias": bias});
    let (st, v) = post(&s, "/v1/completions", &body(json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], text);
    let (st, v) = post(&s, "/v1/completions", &body(json!({top.to_string(): -100})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], text2);
    assert_ne!(text, text2);
    let (st, v) = post(&s, "/v1/completions", &body(json!({"99999999": 5})));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the vocabulary"),
        "{v}"
    );
}

#[test]
fn refused_and_unknown_fields_and_unsupported_formats_are_400s() {
    let s = server(&[]);
    let msgs = json!([{"role": "user", "content": "x"}]);
    let chat = |extra: Value| {
        let mut b = json!({"messages": msgs, "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (
            chat(json!({"tempreature": 1})),
            "unknown field \"tempreature\" (did you mean \"temperature\"?)",
        ),
        (
            chat(json!({"audio": {"voice": "alloy", "format": "wav"}})),
            "audio: not supported",
        ),
        (
            chat(json!({"modalities": ["text", "audio"]})),
            "modalities: not supported",
        ),
        (
            chat(json!({"prediction": {"type": "content", "content": "x"}})),
            "prediction: not supported",
        ),
        (
            chat(json!({"reasoning_effort": "low"})),
            "reasoning_effort: not supported",
        ),
        (
            chat(json!({"verbosity": "low"})),
            "verbosity: not supported",
        ),
        (
            chat(json!({"service_tier": "flex"})),
            "service_tier: not supported",
        ),
        (chat(json!({"store": true})), "store: not supported"),
        (
            chat(json!({"metadata": {"a": "b"}})),
            "metadata: not supported",
        ),
        (
            chat(json!({"web_search_options": {}})),
            "web_search_options: not supported",
        ),
        (
            chat(json!({"functions": [{"name": "f"}]})),
            "functions: not supported",
        ),
        (
            chat(json!({"function_call": "auto"})),
            "function_call: not supported",
        ),
        (
            chat(json!({"prompt": "x"})),
            "prompt: a field of /v1/completions",
        ),
        (
            chat(
                json!({"tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            ),
            "tool_choice: no function named \"get_time\" in tools (there are: get_weather)",
        ),
        (
            chat(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}),
            ),
            "response_format.json_schema.schema: ",
        ),
        (
            chat(json!({"grammar": "root ::= undefined-rule"})),
            "grammar: GBNF grammar: rule \"undefined-rule\" is used but not defined",
        ),
        (
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"x": {"type": "array", "uniqueItems": true}}}}}], "tool_choice": "required"}),
            ),
            "\"uniqueItems\" is not supported",
        ),
    ];
    for (body, needle) in cases {
        let (st, v) = post(&s, "/v1/chat/completions", &body);
        assert_eq!(st, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    for (body, needle) in [
        (json!({"prompt": "x", "echo": true}), "echo: not supported"),
        (
            json!({"prompt": "x", "suffix": "y"}),
            "suffix: not supported",
        ),
        (
            json!({"prompt": "x", "best_of": 3}),
            "best_of: not supported",
        ),
        (
            json!({"prompt": "x", "messages": []}),
            "messages: a field of /v1/chat/completions",
        ),
        (
            json!({"prompt": "x", "max_tokns": 3}),
            "did you mean \"max_tokens\"",
        ),
        (
            json!({"prompt": "x", "json_schema": {"type": "string", "format": "no-such-format"}}),
            "json_schema: ",
        ),
    ] {
        let (st, v) = post(&s, "/v1/completions", &body);
        assert_eq!(st, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    // neutral values of refused fields, and fields without effect, are fine
    let (st, v) = post(
        &s,
        "/v1/chat/completions",
        &chat(
            json!({"model": "gpt-4o", "user": "u", "store": false, "modalities": ["text"],
            "audio": null, "frequency_penalty": 0.5, "presence_penalty": 0.5, "min_p": 0.05,
            "top_k": 40, "parallel_tool_calls": true}),
        ),
    );
    assert_eq!(st, 200, "{v}");
}

/// The official `openai` Python client's structured-output helper with a Pydantic model.
/// Skipped when no Python with `openai` and `pydantic` is found (GLMTOOL_TEST_PYTHON, else
/// python3).
#[test]
fn python_openai_client_parses_into_a_pydantic_model() {
    let Some(python) = common::python_with("openai, pydantic") else {
        return;
    };
    let s = server(&[]);
    let script = r#"
import sys
from typing import List, Literal, Optional
from openai import OpenAI
from pydantic import BaseModel, Field

class Person(BaseModel):
    name: str = Field(pattern=r"^[A-Z][a-z]{1,7}$")
    age: int = Field(ge=0, le=120)

class Answer(BaseModel):
    kind: Literal["story", "poem"]
    people: List[Person] = Field(min_length=1, max_length=2)
    note: Optional[str] = Field(max_length=6)

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
for seed in range(3):
    r = client.beta.chat.completions.parse(
        model="demo", messages=[{"role": "user", "content": "Tell me about people"}],
        response_format=Answer, temperature=1.0, seed=seed)
    answer = r.choices[0].message.parsed
    assert isinstance(answer, Answer), r
    print(answer.model_dump_json())
"#;
    let lines: Vec<Value> = String::from_utf8(common::run_python(&python, script, &s))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
}
