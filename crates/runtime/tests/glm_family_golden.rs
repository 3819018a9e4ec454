//! GLM-4 and ChatGLM2 prompts and tokens against the reference implementations
//! (tests/fixtures/glm4/, made by tools/make_glm_golden.py with PyPI `tiktoken`, THUDM's GLM-4
//! chat template rendered as transformers does, and Python `sentencepiece` with ChatGLM2's
//! `build_prompt`). The vocabularies are built from the real tokenizer files in
//! ../shared/reference through the converter, as `glmtool convert` does; skipped when absent.

use std::path::{Path, PathBuf};

use glm_convert::spm::{spm_vocab, SpmModel};
use glm_convert::tiktoken::{glm4_vocab, TiktokenModel};
use glm_runtime::chat::{build_chat_ids, build_chat_ids_as, completion_ids, stop_ids, Message};
use glm_runtime::tokenizer::{ChatFormat, Tokenizer, CHATGLM2_SPECIALS};
use serde_json::Value;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn reference(rel: &str) -> Option<PathBuf> {
    let p = manifest().join("../../../shared/reference").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

fn golden(name: &str) -> Value {
    let p = manifest().join("../../tests/fixtures/glm4").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn glm4() -> Option<Tokenizer> {
    let p = reference("glm-4-9b-chat/tokenizer.model")?;
    let m = TiktokenModel::from_file(&p).unwrap();
    let v = glm4_vocab(&m, 151_552).unwrap();
    Some(Tokenizer::from_byte_level_vocab(&v.tokens, &v.token_types).unwrap())
}

#[test]
fn glm4_tokens_match_tiktoken() {
    let Some(tok) = glm4() else { return };
    let g = golden("golden_tokens.json");
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut bad = vec![];
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text).unwrap();
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
            continue;
        }
        assert_eq!(tok.decode(&got).unwrap(), text, "decode of {text:?}");
        // streaming gives the same text
        let mut d = tok.stream_decoder();
        let mut s: String = got.iter().map(|&i| d.push(i)).collect();
        s.push_str(&d.finish());
        assert_eq!(s, text);
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn glm4_chat_prompts_match_the_chat_template() {
    let Some(tok) = glm4() else { return };
    assert_eq!(tok.chat_format(), ChatFormat::Glm4);
    let g = golden("golden_chat.json");
    for (name, c) in g["conversations"].as_object().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let got = build_chat_ids(&tok, &messages).unwrap();
        assert_eq!(got, ids(&c["ids"]), "{name}: {:?}", c["prompt"]);
        assert_eq!(
            tok.decode(&got).unwrap(),
            c["prompt"].as_str().unwrap(),
            "{name}"
        );
    }
    assert_eq!(stop_ids(&tok), vec![151_329, 151_336, 151_338]);
    assert_eq!(
        ids(&g["eos_token_ids"]),
        vec![151_329, 151_336, 151_338],
        "generation_config's eos ids"
    );
}

#[test]
fn chatglm2_prompts_match_build_prompt() {
    let Some(p) = reference("chatglm3/tokenizer.model") else {
        return;
    };
    let spm = SpmModel::from_file(&p).unwrap();
    let v = spm_vocab(&spm, 65_024, &CHATGLM2_SPECIALS).unwrap();
    let tok = Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap();
    assert_eq!(tok.chat_format(), ChatFormat::Chatglm2);
    assert_eq!(stop_ids(&tok), vec![2]);
    // CodeGeeX2's tokenizer.model is ChatGLM3's with add_dummy_prefix = false
    let mut cg = spm.clone();
    cg.normalizer.add_dummy_prefix = false;
    let cv = spm_vocab(&cg, 65_024, &CHATGLM2_SPECIALS).unwrap();
    assert!(!cv.add_space_prefix);
    let codegeex = Tokenizer::from_vocab(&cv.tokens, &cv.scores, &cv.token_types)
        .unwrap()
        .with_add_space_prefix(cv.add_space_prefix);
    let g = golden("golden_chatglm2.json");
    let mut checked = 0;
    for c in g["cases"].as_array().unwrap() {
        let want = ids(&c["ids"]);
        let got = match (
            c["kind"].as_str().unwrap(),
            c["tokenizer"].as_str().unwrap(),
        ) {
            ("build_prompt", "chatglm2") => {
                let mut messages = vec![];
                for h in c["history"].as_array().unwrap() {
                    messages.push(Message::user(h[0].as_str().unwrap()));
                    messages.push(Message::assistant(h[1].as_str().unwrap()));
                }
                messages.push(Message::user(c["query"].as_str().unwrap()));
                build_chat_ids(&tok, &messages).unwrap()
            }
            ("encode", "chatglm2") => completion_ids(&tok, c["prompt"].as_str().unwrap()).unwrap(),
            ("encode", "codegeex2") => {
                let text = c["prompt"].as_str().unwrap();
                let got = completion_ids(&codegeex, text).unwrap();
                assert_eq!(codegeex.decode(&got[2..]).unwrap(), text, "{}", c["name"]);
                got
            }
            other => panic!("unknown case kind {other:?}"),
        };
        assert_eq!(got, want, "{}", c["name"]);
        checked += 1;
    }
    assert_eq!(checked, 9);
    // ChatGLM2 has no system role: a clear error, not a wrong prompt
    let e = build_chat_ids_as(
        &tok,
        ChatFormat::Chatglm2,
        &[Message::system("x"), Message::user("y")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ChatGLM2") && e.contains("system"), "{e}");
}
