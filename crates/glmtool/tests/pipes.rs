//! Every printing subcommand exits quietly when its stdout is a closed pipe (`glmtool info | head`),
//! never with Rust's "failed printing to stdout" panic (exit 101).

use std::process::{Command, Stdio};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3"
);

/// Runs glmtool with its stdout a pipe whose read end is closed before the child can write.
fn with_closed_stdout(args: &[&str], cache: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args(args)
        .env("GLMTOOL_CACHE", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-f16.gguf");
    let ok = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args([
            "convert",
            FIXTURE,
            "-o",
            model.to_str().unwrap(),
            "--type",
            "f16",
            "-q",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let m = model.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["info", "-m", m, "--tensors"],
        &["info", "-m", m, "--json"],
        &["tokenize", "-m", m, "hello world, a closed pipe"],
        &["completions", "bash"],
        &["man"],
        &["bench", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-t", "1"],
    ];
    for args in cases {
        let (code, err) = with_closed_stdout(args, dir.path());
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert_ne!(code, Some(101), "{args:?} exited 101: {err}");
    }
}
