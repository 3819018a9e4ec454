//! Shared by the runtime's test binaries: the tiny fixture model, converted once per type.

use gguf::GgmlType;
use glm_convert::{convert, ConvertOptions, TypePolicy};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3"
);

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

/// The fixture converted to `ty`, in a directory shared by the tests of one binary.
pub fn gguf(ty: GgmlType) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| shared_dir("tiny"));
    let out = dir.join(format!("tiny-{ty}.gguf"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    if !out.exists() {
        let opts = ConvertOptions {
            family: None,
            policy: TypePolicy::new(ty),
            overwrite: false,
            cancel: None,
            progress: &|_| {},
        };
        convert(Path::new(FIXTURE), &out, &opts).unwrap();
    }
    out
}
