#![no_main]
//! GGUF reader + hyperparameter, tokenizer and tensor validation + weight placement.
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // tmpfs when there is one: a disk stall during a build must not read as a 1 s hang
    let dir = DIR.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    });
    glm_runtime::fuzz::gguf_load(data, dir.path());
});
