//! Replays every committed fuzz corpus file (fuzz/corpus/<target>/) through the fuzz targets'
//! own entry points (glm_runtime::fuzz), so CI keeps what the fuzzers found without nightly or
//! cargo-fuzz. A panic, or an allocation or hang bad enough to kill the test, fails it.

use std::path::Path;

fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn gguf_load_corpus() {
    let dir = tempfile::tempdir().unwrap();
    for f in corpus("gguf_load") {
        glm_runtime::fuzz::gguf_load(&std::fs::read(&f).unwrap(), dir.path());
    }
}

#[test]
fn reply_parsers_corpus() {
    for f in corpus("reply_parsers") {
        glm_runtime::fuzz::reply_parsers(&std::fs::read(&f).unwrap());
    }
}
