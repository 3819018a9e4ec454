#![no_main]
//! The converter's input side: config.json, tokenizer.model, safetensors headers, index json.
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // tmpfs when there is one: a disk stall during a build must not read as a 1 s hang
    let dir = DIR.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    });
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-chatglm3");
    glm_convert::fuzz::checkpoint_inputs(data, &fixture, dir.path());
});
