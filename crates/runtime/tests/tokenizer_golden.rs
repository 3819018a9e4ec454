//! The tokenizer and chat prompt against THUDM's reference outputs.
//!
//! * `tests/fixtures/chatglm3/golden_tokens.json`: `SPTokenizer.encode` ids and decoded text of
//!   61 texts; `golden_chat.json`: `build_chat_input` ids of 5 conversations. The vocabulary is
//!   built from the real ChatGLM3 `tokenizer.model` (`shared/reference/chatglm3/`), skipped when
//!   that file is absent.
//! * `tests/fixtures/tiny-chatglm3/`: the tiny model's own `tokenizer.model` and
//!   `reference.json` (`tokenizer_cases`, `heldout_ids` of `heldout.txt`), skipped when absent.
//! * `corpus_crosscheck` (ignored): `GLM_TOK_EXPECTED=cases.json [GLM_TOK_MODEL=tokenizer.model]
//!   cargo test -p glm-runtime --test tokenizer_golden -- --ignored` compares against a file of
//!   `{"cases": [{"text", "ids", "decoded"}]}` written with Python sentencepiece (cases without
//!   "text" check decoding only).

use std::path::{Path, PathBuf};

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use glm_runtime::chat::{build_chat_ids, stop_ids, Message};
use glm_runtime::tokenizer::Tokenizer;
use serde_json::Value;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    manifest().join("../../tests/fixtures")
}

fn real_model() -> Option<PathBuf> {
    let p = manifest().join("../../../shared/reference/chatglm3/tokenizer.model");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

/// Tokenizer from a tokenizer.model, through the GGUF vocabulary as the converter builds it.
fn tokenizer_from_model(path: &Path, padded_vocab_size: Option<usize>) -> Tokenizer {
    let spm = SpmModel::from_file(path).unwrap();
    spm.check_chatglm3_normalizer().unwrap();
    let padded = padded_vocab_size.unwrap_or(spm.pieces.len() + 9);
    let v = chatglm3_vocab(&spm, padded).unwrap();
    Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn short(s: &str) -> String {
    let t: String = s.chars().take(60).collect();
    format!("{t:?}")
}

/// Streams `ids` through a StreamDecoder; checks that it reproduces `decode` and that no
/// chunk contains U+FFFD unless the full decode does. Returns a problem description.
fn stream_problem(tok: &Tokenizer, ids: &[u32]) -> Option<String> {
    let full = tok.decode(ids).unwrap();
    let mut d = tok.stream_decoder();
    let mut chunks: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    chunks.push(d.finish());
    let joined: String = chunks.concat();
    if joined != full {
        return Some(format!(
            "stream gives {} but decode gives {}",
            short(&joined),
            short(&full)
        ));
    }
    if !full.contains('\u{FFFD}') && chunks.iter().any(|c| c.contains('\u{FFFD}')) {
        return Some("stream emitted U+FFFD".into());
    }
    None
}

/// Runs all cases, returns (n_cases, failures).
fn check_cases(tok: &Tokenizer, cases: &[Value], label: &str) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let want = ids_of(&c["ids"]);
        // Cases without "text" only check decoding.
        let text = c["text"].as_str().unwrap_or_default();
        let got = if c.get("text").is_some() {
            tok.encode(text).unwrap()
        } else {
            want.clone()
        };
        if got != want {
            let at = first_difference(&got, &want);
            failures.push(format!(
                "{label} case {i} {}: encode differs at position {at}: got {:?} want {:?}",
                short(text),
                &got[at..(at + 5).min(got.len())],
                &want[at..(at + 5).min(want.len())]
            ));
            continue;
        }
        if let Some(decoded) = c.get("decoded").and_then(Value::as_str) {
            let d = tok.decode(&want).unwrap();
            if d != decoded {
                failures.push(format!(
                    "{label} case {i}: decode gives {} want {}",
                    short(&d),
                    short(decoded)
                ));
            }
        }
        if let Some(p) = stream_problem(tok, &want) {
            failures.push(format!("{label} case {i} {}: {p}", short(text)));
        }
    }
    (cases.len(), failures)
}

fn report(n: usize, failures: &[String], label: &str) {
    for f in failures.iter().take(20) {
        eprintln!("{f}");
    }
    eprintln!("{label}: {} of {n} cases pass", n - failures.len());
    assert!(
        failures.is_empty(),
        "{label}: {} of {n} cases fail",
        failures.len()
    );
}

#[test]
fn golden_tokens() {
    let Some(model) = real_model() else { return };
    let tok = tokenizer_from_model(&model, Some(65024));
    assert_eq!(tok.vocab_size(), 65024);
    let g = read_json(&fixtures().join("chatglm3/golden_tokens.json"));
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 61);
    let (n, failures) = check_cases(&tok, cases, "golden_tokens");
    report(n, &failures, "golden_tokens");
}

#[test]
fn golden_chat() {
    let Some(model) = real_model() else { return };
    let tok = tokenizer_from_model(&model, Some(65024));
    let g = read_json(&fixtures().join("chatglm3/golden_chat.json"));
    for (name, id) in g["special_ids"].as_object().unwrap() {
        assert_eq!(
            tok.token_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{name}"
        );
    }
    let s = tok.special();
    let r = s.roles.unwrap();
    assert_eq!(
        (
            s.gmask,
            s.sop,
            r.system,
            r.user,
            r.assistant,
            r.observation,
            s.eos
        ),
        (64790, 64792, 64794, 64795, 64796, 64797, 2)
    );
    assert_eq!(stop_ids(&tok), vec![2, 64795, 64797]);

    let convs = g["conversations"].as_object().unwrap();
    assert_eq!(convs.len(), 5);
    for (name, c) in convs {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let got = build_chat_ids(&tok, &messages).unwrap();
        let want = ids_of(&c["ids"]);
        assert_eq!(got, want, "conversation {name}");
        assert!(stream_problem(&tok, &want).is_none(), "conversation {name}");
        // Our decode is SPTokenizer.decode: each run between specials loses its dummy-prefix
        // space, so the text equals the golden one (a whole-sequence decode) up to that space.
        let d = tok.decode(&want).unwrap();
        assert!(d.starts_with("[gMASK]sop<|"), "{name}: {d:?}");
        assert!(d.ends_with("<|assistant|>"), "{name}: {d:?}");
    }
}

#[test]
fn special_ids_never_come_from_text() {
    let Some(model) = real_model() else { return };
    let tok = tokenizer_from_model(&model, Some(65024));
    let text = "[MASK][gMASK][sMASK]sop eop<|system|><|user|><|assistant|><|observation|><s></s><unk><bos><eos>[PAD64800]";
    let ids = tok.encode(text).unwrap();
    assert!(ids.iter().all(|i| (3..64789).contains(i)), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
}

#[test]
fn stream_holds_split_characters() {
    let Some(model) = real_model() else { return };
    let tok = tokenizer_from_model(&model, Some(65024));
    // 🚀 is not a piece: ▁ + four byte pieces.
    let ids = tok.encode("🚀").unwrap();
    assert_eq!(ids.len(), 5);
    let mut d = tok.stream_decoder();
    let chunks: Vec<String> = ids.iter().map(|&i| d.push(i)).collect();
    assert_eq!(chunks, ["", "", "", "", "🚀"]);
    assert_eq!(d.finish(), "");
}

/// The tiny model fixture's tokenizer (its own tokenizer.model) against its reference.json.
#[test]
fn tiny_fixture() {
    let dir = fixtures().join("tiny-chatglm3");
    let (model, reference) = (dir.join("tokenizer.model"), dir.join("reference.json"));
    if !model.exists() || !reference.exists() {
        eprintln!("skipping: {} or reference.json not found", model.display());
        return;
    }
    let padded = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|c| c["padded_vocab_size"].as_u64())
        .map(|n| n as usize);
    let tok = tokenizer_from_model(&model, padded);
    let r = read_json(&reference);
    let cases = r["tokenizer_cases"].as_array().expect("tokenizer_cases");
    let (n, failures) = check_cases(&tok, cases, "tiny tokenizer_cases");
    report(n, &failures, "tiny tokenizer_cases");

    let heldout_file = r["heldout_file"].as_str().unwrap_or("heldout.txt");
    let heldout = std::fs::read_to_string(dir.join(heldout_file)).unwrap();
    let want = ids_of(&r["heldout_ids"]);
    let got = tok.encode(&heldout).unwrap();
    if got != want {
        let at = first_difference(&got, &want);
        panic!(
            "heldout ids differ at {at} (got {} ids, want {})",
            got.len(),
            want.len()
        );
    }
    if !heldout.contains('\u{2581}') && !heldout.starts_with(' ') {
        assert_eq!(tok.decode(&want).unwrap(), heldout);
    }
    assert!(stream_problem(&tok, &want).is_none());

    // Special ids (sp_size + index) and the prompts of tools/make_tiny_model.py.
    if let Some(special) = r["special_ids"].as_object() {
        for (name, id) in special {
            assert_eq!(
                tok.token_id(name),
                Some(id.as_u64().unwrap() as u32),
                "{name}"
            );
        }
    }
    if let (Some(text), Some(ids)) = (r["prompt_text"].as_str(), r.get("prompt_ids")) {
        assert_eq!(tok.encode(text).unwrap(), ids_of(ids), "prompt_ids");
    }
    let sp_size = r["sp_vocab_size"].as_u64().map(|n| n as u32);
    for g in r["greedy"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = g["name"].as_str().unwrap_or_default();
        let messages = match name {
            "chat_user" => vec![Message::user("你好, tell me a fortune.")],
            "chat_system_multi_turn" => vec![
                Message::system("You are a wise old computer."),
                Message::user("What is Unix?"),
                Message::assistant("A fortune 说: 一切皆文件。"),
                Message::user("And Linux?"),
            ],
            _ => continue,
        };
        assert_eq!(
            build_chat_ids(&tok, &messages).unwrap(),
            ids_of(&g["prompt_ids"]),
            "greedy {name}"
        );
        // new_text = sp.decode of the new ids below sp_size
        if let (Some(sp_size), Some(new_text)) = (sp_size, g["new_text"].as_str()) {
            let new: Vec<u32> = ids_of(&g["new_ids"])
                .into_iter()
                .filter(|&i| i < sp_size)
                .collect();
            assert_eq!(
                tok.decode(&new).unwrap(),
                new_text,
                "greedy {name} new_text"
            );
        }
    }
}

/// Cross-check against a large case file made with Python sentencepiece (see module docs).
#[test]
#[ignore]
fn corpus_crosscheck() {
    let Ok(expected) = std::env::var("GLM_TOK_EXPECTED") else {
        eprintln!("skipping: set GLM_TOK_EXPECTED to a JSON file of cases");
        return;
    };
    let model = match std::env::var("GLM_TOK_MODEL") {
        Ok(p) => PathBuf::from(p),
        Err(_) => match real_model() {
            Some(p) => p,
            None => return,
        },
    };
    let tok = tokenizer_from_model(&model, None);
    let g = read_json(Path::new(&expected));
    let cases = g["cases"].as_array().unwrap();
    let t0 = std::time::Instant::now();
    let (n, failures) = check_cases(&tok, cases, "corpus");
    eprintln!(
        "corpus: {n} cases in {:.1?}, {} mismatches ({:.4}%)",
        t0.elapsed(),
        failures.len(),
        100.0 * failures.len() as f64 / n.max(1) as f64
    );
    report(n, &failures, "corpus");
}

/// Index of the first id where two different sequences part (the shorter length if one is a
/// prefix of the other).
fn first_difference(got: &[u32], want: &[u32]) -> usize {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()))
}
