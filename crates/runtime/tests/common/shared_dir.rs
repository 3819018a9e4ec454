//! Shared by the test binaries of several crates (included with `#[path]` outside glm-runtime).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder the tests of this binary share, `target/tmp/<binary>/<name>`, emptied when the
/// process first asks for one: a `TempDir` kept in a static is never dropped, so every run
/// would leave its fixtures behind in /tmp.
pub fn shared_dir(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(exe.file_stem().unwrap());
        let _ = std::fs::remove_dir_all(&root);
        root
    });
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
