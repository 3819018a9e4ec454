//! Shared by the HTTP test binaries (serve.rs, browser.rs, structured.rs): a `glmtool serve`
//! process on an ephemeral port, killed on drop, with its stderr collected; the official
//! `openai` Python client's scripts run against it.
#![allow(dead_code)] // each binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

#[path = "../../../runtime/tests/common/shared_dir.rs"]
mod shared_dir;
pub use shared_dir::shared_dir;
use std::time::{Duration, Instant};

/// The `GLMTOOL_CACHE` the tests of this binary share.
pub fn cache() -> &'static Path {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| shared_dir("cache"))
}

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `glmtool serve --port 0 --temp 0 -t 1 EXTRA…` on the demo model (cached in `cache`), once
/// it says where it listens.
pub fn server(cache: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glmtool"))
        .args(["serve", "--port", "0", "--temp", "0", "-t", "1"])
        .args(extra)
        .env("GLMTOOL_CACHE", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut base = None;
    let mut line = String::new();
    while base.is_none() && Instant::now() < deadline {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        log.lock().unwrap().push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("listening on ") {
            assert!(rest.starts_with("http://127.0.0.1:"), "{rest}");
            base = Some(rest.to_string());
        }
    }
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut rest = String::new();
        while err.read_line(&mut rest).unwrap_or(0) > 0 {
            log2.lock().unwrap().push_str(&rest);
            rest.clear();
        }
    });
    let base = base.unwrap_or_else(|| panic!("no listening line: {}", log.lock().unwrap()));
    // it listens while the model loads (/health: 503 "Loading model"): wait until it is ready
    loop {
        match agent().get(&format!("{base}/health")).call() {
            Ok(r) if r.status() == 200 => break,
            Err(ureq::Error::Status(503, r)) => {
                let v: serde_json::Value = r.into_json().unwrap();
                assert_eq!(v["error"]["message"], "Loading model", "{v}");
            }
            other => {
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    panic!("not ready: {other:?}: {}", log.lock().unwrap());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, base, log }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// The tiny GLM-4 checkpoint (tests/fixtures/tiny-glm4 + the real GLM-4 tokenizer from
/// ../shared/reference), or None when the tokenizer is absent.
pub fn glm4_checkpoint() -> Option<tempfile::TempDir> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tok = root.join("../shared/reference/glm-4-9b-chat/tokenizer.model");
    if !tok.exists() {
        eprintln!("skipping: {} not found", tok.display());
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root.join("tests/fixtures/tiny-glm4").join(f),
            d.path().join(f),
        )
        .unwrap();
    }
    std::fs::copy(tok, d.path().join("tokenizer.model")).unwrap();
    Some(d)
}

/// A Python that imports `modules` (e.g. "openai, pydantic"): GLMTOOL_TEST_PYTHON, else python3.
/// None, with a line saying the test skips, where it cannot.
pub fn python_with(modules: &str) -> Option<String> {
    let python = std::env::var("GLMTOOL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let pip = modules.replace(',', "");
    eprintln!("skipping: {python} cannot import {modules} (pip install {pip}; GLMTOOL_TEST_PYTHON=path/to/python)");
    None
}

/// Runs `script` with `python`, the server's base URL as its argument; its standard output.
/// Fails with the script's stderr and the server's log when the script does.
pub fn run_python(python: &str, script: &str, s: &Server) -> Vec<u8> {
    let out = Command::new(python)
        .args(["-c", script, &s.base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log.lock().unwrap()
    );
    out.stdout
}
