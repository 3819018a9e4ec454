//! Constrained decoding over the real vocabularies, without a model: random logits at every
//! step (so any valid output is the constraint's doing), the sampler's pipeline with the
//! grammar, and the decoded text checked by an independent judge — the `jsonschema` crate for
//! schemas, `agent::parse_reply` for tool calls, a recognizer written here for GBNF.
//!
//! Vocabularies: the tiny ChatGLM3 fixture's `tokenizer.model` (SentencePiece, in the repo,
//! with padding rows added past it); the real ChatGLM3 and GLM-4 tokenizers from
//! `../shared/reference/` when present (skipped with a message otherwise).

use std::path::{Path, PathBuf};

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use glm_convert::tiktoken::{glm4_vocab, TiktokenModel};
use glm_runtime::agent::{parse_reply_as, Segment};
use glm_runtime::chat::stop_ids;
use glm_runtime::constraint::{Constraint, ConstraintError, Grammar, OutputSpec, Shape, ToolSpec};
use glm_runtime::sampler::{Sampler, SamplerOptions};
use glm_runtime::tokenizer::{ChatFormat, Tokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny ChatGLM3 fixture's SentencePiece vocabulary, with 23 padding rows after the specials.
fn tiny_spm() -> Tokenizer {
    let spm =
        SpmModel::from_file(root().join("tests/fixtures/tiny-chatglm3/tokenizer.model")).unwrap();
    let v = chatglm3_vocab(&spm, spm.pieces.len() + 32).unwrap();
    Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap()
}

fn shared(rel: &str) -> Option<PathBuf> {
    let p = root().join("../shared/reference").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

/// The real ChatGLM3 vocabulary (65,024 ids with padding), when present.
fn chatglm3() -> Option<Tokenizer> {
    let spm = SpmModel::from_file(&shared("chatglm3/tokenizer.model")?).unwrap();
    let v = chatglm3_vocab(&spm, 65024).unwrap();
    Some(Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap())
}

/// The real GLM-4 vocabulary (151,552 ids with padding), when present.
fn glm4() -> Option<Tokenizer> {
    let m = TiktokenModel::from_file(&shared("glm-4-9b-chat/tokenizer.model")?).unwrap();
    let v = glm4_vocab(&m, 151552).unwrap();
    Some(Tokenizer::from_byte_level_vocab(&v.tokens, &v.token_types).unwrap())
}

/// Samples with random logits under `c` until a stop id; returns the ids before it.
fn walk(tok: &Tokenizer, c: Constraint, stops: &[u32], seed: u64) -> Vec<u32> {
    let mut s = Sampler::new(SamplerOptions {
        temperature: 1.0,
        top_p: 1.0,
        seed,
        ..Default::default()
    });
    s.set_constraint(Some(c));
    s.begin();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut ids = Vec::new();
    for _ in 0..600 {
        let mut logits: Vec<f32> = (0..tok.vocab_size())
            .map(|_| rng.gen::<f32>() * 4.0)
            .collect();
        tok.mask_unsampleable(&mut logits);
        let id = s.sample(&logits, &ids).unwrap();
        if stops.contains(&id) {
            return ids;
        }
        assert!(tok.decode(&[id]).is_ok(), "sampled the padding id {id}");
        ids.push(id);
    }
    panic!("no end after 600 tokens: {:?}", tok.decode(&ids));
}

/// Objects, arrays with bounds, enums, bounded integers, required and optional properties,
/// strings with a pattern or a length limit, a nested $ref and a nullable field.
fn nested_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "kind": {"enum": ["book", "film", "song"]},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            "score": {"type": "number", "minimum": 0, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
            "author": {"$ref": "#/$defs/person"},
            "sequel": {"type": ["string", "null"], "maxLength": 5},
            "done": {"type": "boolean"}
        },
        "required": ["id", "kind", "year", "tags", "author"],
        "additionalProperties": false,
        "$defs": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 8},
                    "born": {"type": "integer", "minimum": 1800, "maximum": 2020}
                },
                "required": ["name"],
                "additionalProperties": false
            }
        }
    })
}

fn validate(schema: &Value, v: &Value) {
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{v} does not match: {errors:?}");
}

fn json_schema_walks(tok: &Tokenizer, n: u64) {
    let schema = nested_schema();
    let g = tok.grammars().unwrap();
    let spec = OutputSpec {
        content: Some(Grammar::JsonSchema(schema.clone())),
        ..Default::default()
    };
    let stops = stop_ids(tok);
    for seed in 0..n {
        // the whole text (completions) and a chat reply (metadata line, then content)
        let c = g.compile(&spec, Shape::Text, &stops).unwrap();
        let text = tok.decode(&walk(tok, c, &stops, seed)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        validate(&schema, &v);

        let format = tok.vocab_chat_format();
        let c = g.compile(&spec, Shape::Reply(format), &stops).unwrap();
        let text = tok.decode(&walk(tok, c, &stops, 1000 + seed)).unwrap();
        match parse_reply_as(format, &text, false).as_slice() {
            [Segment::Text(content)] => {
                let v: Value =
                    serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                validate(&schema, &v);
            }
            other => panic!("not one answer: {other:?} from {text:?}"),
        }
    }
}

#[test]
fn random_logits_give_valid_json_on_the_tiny_vocabulary() {
    json_schema_walks(&tiny_spm(), 20);
}

#[test]
fn random_logits_give_valid_json_on_chatglm3_and_glm4() {
    if let Some(t) = chatglm3() {
        json_schema_walks(&t, 5);
    }
    if let Some(t) = glm4() {
        json_schema_walks(&t, 5);
    }
}

#[test]
fn json_object_and_padding_rows() {
    let tok = tiny_spm();
    let g = tok.grammars().unwrap();
    let stops = stop_ids(&tok);
    let spec = OutputSpec {
        content: Some(Grammar::JsonObject),
        ..Default::default()
    };
    let mut c = g.compile(&spec, Shape::Text, &stops).unwrap();
    let mut logits = vec![1.0f32; tok.vocab_size() + 7];
    c.apply(&mut logits).unwrap();
    let padding: Vec<usize> = (0..tok.vocab_size())
        .filter(|&i| tok.decode(&[i as u32]).is_err())
        .collect();
    assert!(!padding.is_empty());
    for i in padding
        .iter()
        .copied()
        .chain(tok.vocab_size()..logits.len())
    {
        assert_eq!(logits[i], f32::NEG_INFINITY, "id {i}");
    }
    // the stop ids wait for the end of the object; "{" and " {" are allowed
    for &s in &stops {
        assert_eq!(logits[s as usize], f32::NEG_INFINITY);
    }
    let open = tok.token_id("<0x7B>").unwrap() as usize;
    assert_eq!(logits[open], 1.0);
    // a space the decoder would keep (the byte token) cannot start the text; `▁` can
    assert_eq!(
        logits[tok.token_id("<0x20>").unwrap() as usize],
        f32::NEG_INFINITY
    );
    assert_eq!(logits[tok.token_id("\u{2581}").unwrap() as usize], 1.0);
    // "{}" then only the stop ids
    c.accept(open as u32).unwrap();
    c.accept(tok.token_id("<0x7D>").unwrap()).unwrap();
    let mut logits = vec![1.0f32; tok.vocab_size()];
    c.apply(&mut logits).unwrap();
    let allowed: Vec<usize> = (0..logits.len()).filter(|&i| logits[i] > 0.0).collect();
    let want: Vec<usize> = {
        let mut w: Vec<usize> = stops.iter().map(|&s| s as usize).collect();
        w.sort();
        w
    };
    assert_eq!(allowed, want);
}

/// Sentences of `expr ::= term (("+" | "-") term)*`, `term ::= [0-9]{1,3} | "(" expr ")"`.
fn is_arithmetic(s: &str) -> bool {
    fn expr(b: &[u8], i: &mut usize) -> bool {
        if !term(b, i) {
            return false;
        }
        while *i < b.len() && (b[*i] == b'+' || b[*i] == b'-') {
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

const ARITHMETIC: &str = r#"
root  ::= expr
expr  ::= term (("+" | "-") term)*   # sums
term  ::= [0-9]{1,3} | "(" expr ")"
"#;

fn gbnf_walks(tok: &Tokenizer, n: u64) {
    let g = tok.grammars().unwrap();
    let stops = vec![tok.special().eos];
    let spec = OutputSpec {
        content: Some(Grammar::Gbnf(ARITHMETIC.into())),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for seed in 0..n {
        let c = g.compile(&spec, Shape::Text, &stops).unwrap();
        let ids = walk(tok, c, &stops, seed);
        let text = tok.decode(&ids).unwrap();
        assert!(is_arithmetic(&text), "{text:?} is not a sentence");
        seen.insert(text);
    }
    assert!(
        seen.len() > n as usize / 2,
        "random walks should differ: {seen:?}"
    );
}

#[test]
fn gbnf_arithmetic_yields_only_its_sentences() {
    assert!(is_arithmetic("1+(22-333)") && !is_arithmetic("1+") && !is_arithmetic("1234"));
    gbnf_walks(&tiny_spm(), 30);
    if let Some(t) = glm4() {
        gbnf_walks(&t, 10);
    }
}

fn weather_tools() -> Vec<ToolSpec> {
    ToolSpec::from_tools(&json!([
        {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "units": {"enum": ["metric", "imperial"]},
                "alerts": {"type": "boolean"},
                "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}, "maxItems": 3},
                "where": {"type": "object", "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90}, "note": {"type": ["string", "null"], "maxLength": 4}}, "required": ["lat"]}
            },
            "required": ["city", "alerts"]
        }},
        {"name": "now", "parameters": {"type": "object", "properties": {}}}
    ]))
}

fn forced_call_walks(tok: &Tokenizer, format: ChatFormat, n: u64) {
    let g = tok.grammars().unwrap();
    let stops = stop_ids(tok);
    let tools = weather_tools();
    let schema = tools[0].parameters.clone().unwrap();
    let mut names = std::collections::HashSet::new();
    for seed in 0..n {
        // a named function, then "required" (any of the tools)
        let (only, required) = if seed % 2 == 0 {
            (vec![tools[0].clone()], &tools[..1])
        } else {
            (tools.clone(), &tools[..])
        };
        let spec = OutputSpec {
            content: None,
            tools: only,
            call_required: true,
        };
        let c = g.compile(&spec, Shape::Reply(format), &stops).unwrap();
        let text = tok.decode(&walk(tok, c, &stops, seed)).unwrap();
        let segs = parse_reply_as(format, &text, true);
        let [Segment::ToolCall(call)] = segs.as_slice() else {
            panic!("not one call: {segs:?} from {text:?}");
        };
        assert!(required.iter().any(|t| t.name == call.name), "{text:?}");
        names.insert(call.name.clone());
        if call.name == "get_weather" {
            validate(&schema, &Value::Object(call.arguments.clone()));
        } else {
            assert!(call.arguments.is_empty(), "{text:?}");
        }
    }
    assert!(names.len() == 2, "both tools should come up: {names:?}");
}

#[test]
fn forced_tool_calls_match_their_parameters_in_both_formats() {
    forced_call_walks(&tiny_spm(), ChatFormat::Chatglm3, 16);
    if let Some(t) = chatglm3() {
        forced_call_walks(&t, ChatFormat::Chatglm3, 4);
    }
    if let Some(t) = glm4() {
        forced_call_walks(&t, ChatFormat::Glm4, 8);
    }
}

#[test]
fn what_the_engine_cannot_take_is_named() {
    let tok = tiny_spm();
    let g = tok.grammars().unwrap();
    let stops = stop_ids(&tok);
    let check = |spec: OutputSpec, shape: Shape, want: &str| match g.compile(&spec, shape, &stops) {
        Err(ConstraintError::Unsupported(m)) => assert!(m.contains(want), "{m}"),
        other => panic!("expected Unsupported({want}), got {other:?}"),
    };
    let schema = |s: Value| OutputSpec {
        content: Some(Grammar::JsonSchema(s)),
        ..Default::default()
    };
    check(schema(json!({"type": "objekt"})), Shape::Text, "objekt");
    check(
        schema(json!({"type": "string", "pattern": "(?<=a)b"})),
        Shape::Text,
        "",
    );
    check(schema(json!([1])), Shape::Text, "must be an object");
    check(
        OutputSpec {
            content: Some(Grammar::Gbnf("root ::= \"a\" undefined".into())),
            ..Default::default()
        },
        Shape::Text,
        "\"undefined\" is used but not defined",
    );
    let tools = ToolSpec::from_tools(&json!([{"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "array", "uniqueItems": true}}}}]));
    check(
        OutputSpec {
            content: None,
            tools,
            call_required: true,
        },
        Shape::Reply(ChatFormat::Chatglm3),
        "\"uniqueItems\"",
    );
}

#[test]
fn gbnf_repetitions_empty_alternatives_and_any_character() {
    let tok = tiny_spm();
    let g = tok.grammars().unwrap();
    let stops = vec![tok.special().eos];
    let gbnf = "root ::= \"<\" item{2,3} \">\" tail\nitem ::= [a-c] | \"\"\ntail ::= [^a-z\\n]{0,2} \"!\" | \"x\"{2,} | .\n";
    let spec = OutputSpec {
        content: Some(Grammar::Gbnf(gbnf.into())),
        ..Default::default()
    };
    for seed in 0..20 {
        let c = g.compile(&spec, Shape::Text, &stops).unwrap();
        let text = tok.decode(&walk(&tok, c, &stops, seed)).unwrap();
        let (head, tail) = text.split_once('>').unwrap_or_else(|| panic!("{text:?}"));
        let items = head.strip_prefix('<').unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            items.len() <= 3 && items.chars().all(|c| "abc".contains(c)),
            "{text:?}"
        );
        let n = tail.chars().count();
        let ok = (tail.ends_with('!')
            && n <= 3
            && tail[..tail.len() - 1]
                .chars()
                .all(|c| !c.is_ascii_lowercase() && c != '\n'))
            || (n >= 2 && tail.chars().all(|c| c == 'x'))
            || n == 1;
        assert!(ok, "{text:?}");
    }
}
