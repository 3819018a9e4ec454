#![no_main]
//! GGUF reader + hyperparameter, tokenizer and tensor validation + weight placement.
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    glm_runtime::fuzz::gguf_load(data, dir.path());
});
