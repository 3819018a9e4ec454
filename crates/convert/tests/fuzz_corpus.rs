//! Replays every committed file of fuzz/corpus/checkpoint_inputs through the fuzz target's own
//! entry point (glm_convert::fuzz), so CI keeps what the fuzzer found without nightly.

use std::path::Path;

#[test]
fn checkpoint_inputs_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixture = root.join("tests/fixtures/tiny-chatglm3");
    let dir = root.join("fuzz/corpus/checkpoint_inputs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let scratch = tempfile::tempdir().unwrap();
    let mut accepted = vec![];
    for f in files {
        if glm_convert::fuzz::checkpoint_inputs(
            &std::fs::read(&f).unwrap(),
            &fixture,
            scratch.path(),
        ) {
            accepted.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    // the seeds that are the fixture's own files pass: the target reaches the end of `prepare`
    for seed in ["seed-config", "seed-tokenizer", "seed-index"] {
        assert!(accepted.iter().any(|a| a == seed), "{seed} was rejected");
    }
}
