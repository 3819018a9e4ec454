//! Replays every committed file of fuzz/corpus/openai_request through the fuzz target's own
//! entry point (glm_openai::fuzz), so CI keeps what the fuzzer found without nightly.

use glm_convert::spm::{chatglm3_vocab, SpmModel};
use std::path::Path;

#[test]
fn openai_request_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spm =
        SpmModel::from_file(root.join("tests/fixtures/tiny-chatglm3/tokenizer.model")).unwrap();
    let v = chatglm3_vocab(&spm, spm.pieces.len() + 9).unwrap();
    let tok = glm_runtime::Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap();
    let dir = root.join("fuzz/corpus/openai_request");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for f in files {
        glm_openai::fuzz::openai_request(&std::fs::read(&f).unwrap(), &tok);
    }
}
