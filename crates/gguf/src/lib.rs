//! GGUF v3: the ggml type table, metadata values, a validating mmap reader, a streaming writer,
//! atomic output files, and the `chatglm` key / tensor-name tables (`names`).
//!
//! This crate knows the file format and nothing about running models. Its only `unsafe` is the
//! read-only memory map in [`reader::map_readonly`].

pub mod atomic;
pub mod names;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use atomic::AtomicFile;
pub use reader::{GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorDecl};

use std::path::PathBuf;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// Everything that can go wrong reading or writing GGUF. Each message names the file and, where
/// there is one, the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("{}: not a GGUF file (missing 'GGUF' magic)", path.display())]
    NotGguf { path: PathBuf },
    #[error("{}: bad GGUF at byte {offset}: {what}", path.display())]
    Format {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: file truncated: tensor {tensor} ends at byte {need} but the file has {have} bytes", path.display())]
    Truncated {
        path: PathBuf,
        tensor: String,
        need: u64,
        have: u64,
    },
    #[error("{}: missing metadata key {key}", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("{}: metadata key {key} should be {expected}, found {found}", path.display())]
    KeyType {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
    #[error("{}: already exists (use --force to overwrite)", path.display())]
    Exists { path: PathBuf },
    #[error("{}: exists and is not a regular file ({kind}); refusing to replace it, even with --force", path.display())]
    NotRegular { path: PathBuf, kind: String },
    #[error("{}: is the input file {} (the same file, a link to it or a hard link); refusing to overwrite an input, even with --force — choose another output", path.display(), input.display())]
    SameAsInput { path: PathBuf, input: PathBuf },
    #[error("{0}")]
    Invalid(String),
}
