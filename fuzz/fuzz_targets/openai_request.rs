#![no_main]
//! The server's request → prompt mapping: JSON body → parameters, ChatGLM3 messages → prompt ids.
use glm_convert::spm::{chatglm3_vocab, SpmModel};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TOK: OnceLock<glm_runtime::Tokenizer> = OnceLock::new();
    let tok = TOK.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-chatglm3/tokenizer.model");
        let spm = SpmModel::from_file(p).unwrap();
        let v = chatglm3_vocab(&spm, spm.pieces.len() + 9).unwrap();
        glm_runtime::Tokenizer::from_vocab(&v.tokens, &v.scores, &v.token_types).unwrap()
    });
    glm_openai::fuzz::openai_request(data, tok);
});
