//! Shared by the runtime's test binaries: the tiny fixture model, converted once per type.

use gguf::GgmlType;
use glm_convert::{convert, ConvertOptions, TypePolicy};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod shared_dir;
pub use shared_dir::shared_dir;

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3"
);

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
