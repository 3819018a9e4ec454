//! Hugging Face ChatGLM checkpoint -> GGUF (`convert`), GGUF -> GGUF of another type
//! (`requantize`), the SentencePiece vocabulary (`spm`), and ggml-exact quantizers (`quant`).
//!
//! Pure Rust: ggml is not linked here (its quantizers are only a test oracle).

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod family;
pub mod fuzz;
pub mod layout;
pub mod policy;
pub mod quant;
pub mod requantize;
pub mod spm;
pub mod tiktoken;

pub use config::GlmConfig;
pub use convert::{convert, convert_with, ConvertOptions};
pub use family::Family;
pub use policy::{FileType, TypePolicy};
pub use requantize::{
    plan_requantize, requantize, requantize_with, PlannedTensor, QuantizePlan, RequantizeOptions,
};

use gguf::GgmlType;
use std::path::{Path, PathBuf};

/// Progress events for a front end's progress bar.
#[derive(Clone, Debug)]
pub enum Progress {
    Start {
        n_tensors: usize,
        total_bytes: u64,
    },
    Tensor {
        name: String,
        ty: GgmlType,
        bytes_in: u64,
    },
}

/// What a conversion produced.
#[derive(Clone, Debug)]
pub struct Summary {
    pub n_tensors: usize,
    pub n_params: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// The model family converted (`None` for a requantization).
    pub family: Option<family::Family>,
}

impl Summary {
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes_written as f64 * 8.0 / self.n_params.max(1) as f64
    }
}

/// Everything that can go wrong converting; each message names the file, key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {what}", path.display())]
    Config { path: PathBuf, what: String },
    #[error("{}: {what}", path.display())]
    Checkpoint { path: PathBuf, what: String },
    #[error(transparent)]
    Tokenizer(#[from] spm::SpmError),
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    #[error(transparent)]
    Imatrix(#[from] quant::imatrix::ImatrixError),
    #[error("tensor {tensor}: {err}")]
    InTensor {
        tensor: String,
        err: Box<ConvertError>,
    },
    #[error("{}: {what}", path.display())]
    Input { path: PathBuf, what: String },
    #[error("interrupted")]
    Interrupted,
}

impl ConvertError {
    pub(crate) fn io(path: &Path, err: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    pub(crate) fn in_tensor(self, tensor: &str) -> Self {
        match self {
            ConvertError::Interrupted => self,
            e => ConvertError::InTensor {
                tensor: tensor.to_string(),
                err: Box::new(e),
            },
        }
    }
}
