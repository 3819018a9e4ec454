//! Safe wrapper over ggml (crate `ggml-sys-bleedingedge`, llama.cpp release b2757).
//!
//! This is the only crate of the workspace that contains `unsafe` code. Everything it exports is
//! safe: RAII types for contexts, backends, buffers and allocators; tensors that borrow their
//! context; and checked entry points for ggml's quantizers. Each `unsafe` block carries a
//! `// SAFETY:` line saying why the call is sound.

pub mod quant;

pub use ggml_sys_bleedingedge as sys;

/// Errors raised by the wrapper itself (ggml aborts on its own assertion failures; the
/// wrapper checks every precondition it knows of before calling into ggml).
#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    #[error("ggml type {0} is not known to this ggml")]
    UnknownType(u32),
    #[error("ggml type {ty} cannot be used here: {why}")]
    Unsupported { ty: &'static str, why: &'static str },
    #[error("bad shape: {0}")]
    Shape(String),
    #[error("{0}")]
    Backend(String),
}
