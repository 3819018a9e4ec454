//! ChatGLM inference on ggml: the model graph (`chatglm`), model loading (`model`), sessions with
//! a KV cache (`session`), the GPU offload planner (`plan`), tokenizer and chat format
//! (`tokenizer`, `chat`), sampling (`sampler`), perplexity (`perplexity`), and importance-matrix
//! collection (`imatrix`).

pub mod agent;
pub mod chat;
pub mod chatglm;
pub mod constraint;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod generate;
pub mod imatrix;
pub mod model;
pub mod perplexity;
pub mod plan;
pub mod python;
pub mod sampler;
pub mod session;
pub mod tokenizer;

pub use glm_ggml::{
    device_memory, gpu_devices, gpu_kinds, DeviceInfo, DeviceKind, Isa, ReadProbe, WeightType,
};
pub use model::{LoadOptions, Model};
pub use plan::{GpuLayers, Plan, PlanShape};
pub use session::{CacheType, SeqInput, Session, SessionOptions};
pub use tokenizer::Tokenizer;

/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Ggml(#[from] glm_ggml::GgmlError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error(transparent)]
    Sample(#[from] sampler::SampleError),
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Input(String),
    /// The KV cache asked for does not fit in the available memory (the message names what
    /// would).
    #[error("{0}")]
    CacheTooBig(String),
}

/// Physical cores (more ggml threads than cores collapses speed).
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}
pub use glm_ggml::system_info;

/// The first `n` items joined by "; ", then "and N more": error lines stay short whatever a
/// broken file lists.
pub(crate) fn few(items: &[String], n: usize) -> String {
    let mut s = items[..items.len().min(n)].join("; ");
    if items.len() > n {
        s.push_str(&format!("; and {} more", items.len() - n));
    }
    s
}
