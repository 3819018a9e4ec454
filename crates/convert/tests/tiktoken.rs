//! GLM-4's tiktoken vocabulary → GGUF tokens/types/merges, on the real tokenizer.model
//! (../shared/reference/glm-4-9b-chat; skipped when absent).

use glm_convert::tiktoken::{glm4_vocab, looks_like_tiktoken, TiktokenModel};
use std::path::{Path, PathBuf};

fn real() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/glm-4-9b-chat/tokenizer.model");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

#[test]
fn real_glm4_vocabulary() {
    let Some(p) = real() else { return };
    let data = std::fs::read(&p).unwrap();
    assert!(looks_like_tiktoken(&data));
    let m = TiktokenModel::from_bytes(&data, &p).unwrap();
    assert_eq!(m.ranks.len(), 151_329);
    let v = glm4_vocab(&m, 151_552).unwrap();
    assert_eq!(v.tokens.len(), 151_552);
    assert_eq!(v.tokens[151_329], "<|endoftext|>");
    assert_eq!(v.tokens[151_336], "<|user|>");
    assert_eq!(v.tokens[151_338], "<|observation|>");
    assert_eq!(v.tokens[151_551], "[PAD151551]");
    assert_eq!(&v.token_types[151_328..151_331], &[1, 3, 3]);
    assert_eq!(v.token_types[151_343], 5);
    // one merge per multi-byte token; its parts spell the token
    let multi = m.ranks.iter().filter(|t| t.len() > 1).count();
    assert_eq!(v.merges.len(), multi);
    let mut k = 0;
    for (rank, t) in m.ranks.iter().enumerate() {
        if t.len() > 1 {
            let parts: Vec<&str> = v.merges[k].split(' ').collect();
            assert!(parts.len() >= 2, "rank {rank}: {:?}", v.merges[k]);
            assert_eq!(parts.concat(), v.tokens[rank], "rank {rank}");
            k += 1;
        }
    }
    // byte-level spelling: a space is Ġ, a newline Ċ
    let space = m.ranks.iter().position(|t| t == b" ").unwrap();
    assert_eq!(v.tokens[space], "\u{120}");
    let nl = m.ranks.iter().position(|t| t == b"\n").unwrap();
    assert_eq!(v.tokens[nl], "\u{10a}");
    // a SentencePiece model is not mistaken for one
    let spm = std::fs::read(p.parent().unwrap().join("../chatglm3/tokenizer.model")).unwrap();
    assert!(!looks_like_tiktoken(&spm));
}

#[test]
fn broken_tiktoken_files_are_clear_errors() {
    let p = Path::new("tokenizer.model");
    let e = |data: &[u8]| {
        TiktokenModel::from_bytes(data, p)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(e(b"QQ== 1\n").contains("rank 1, expected 0"));
    assert!(e(b"!!! 0\n").contains("bad base64"));
    assert!(e(b"QQ== x\n").contains("not a number"));
    assert!(e(b"QQ== 0\nQQ== 1\n").contains("repeats rank 0"));
    assert!(e(b"QQ== 0\n").contains("byte 0x00 is not a token"));
    let all: String = (0..=255u8)
        .enumerate()
        .map(|(r, b)| {
            use base64::Engine;
            format!(
                "{} {r}\n",
                base64::engine::general_purpose::STANDARD.encode([b])
            )
        })
        .collect();
    let m = TiktokenModel::from_bytes(all.as_bytes(), p).unwrap();
    assert!(glm4_vocab(&m, 260)
        .err()
        .unwrap()
        .to_string()
        .contains("padded_vocab_size 260"));
    assert_eq!(glm4_vocab(&m, 270).unwrap().tokens.len(), 270);
}
