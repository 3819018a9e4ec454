//! Safe wrapper over ggml (crate `ggml-sys-bleedingedge`, llama.cpp release b2757).
//!
//! This is the only crate of the workspace that calls ggml, and with the GGUF reader's memory
//! map the only `unsafe` code. Everything it exports is safe:
//! - [`Backend`] (CPU, CUDA, Metal) and [`Scheduler`] (ggml-backend's scheduler: one graph run
//!   across a GPU and the CPU), freed on drop; [`gpu_devices`] lists the GPUs present;
//! - [`TensorStore`]: a ggml context plus the buffer holding its tensors (weights, KV cache);
//! - [`GraphCtx`]: a graph being built, confined to [`Scheduler::with_graph`], with checked ops;
//! - [`Tensor<'a>`]: a handle that cannot outlive its owner;
//! - [`SquareSums`]: activation statistics gathered by [`GraphCtx::observe_squares`];
//! - [`quant`]: ggml's quantizers, as a test oracle.
//!
//! Each `unsafe` block carries a `// SAFETY:` line saying why the call is sound.

mod attention;
pub mod backend;
mod context;
mod exact;
mod ffi;
pub mod graph;
mod host_buffer;
mod observe;
pub mod packed;
pub mod quant;
pub mod tensor;

pub use attention::{kv_ggml_type, kv_type_of, KvType};
pub use backend::{
    device_memory, gpu_devices, gpu_kinds, Backend, DeviceInfo, DeviceKind, Scheduler,
};
pub use ggml_sys_bleedingedge as sys;
pub use glm_kernels::ReadProbe;
pub use graph::{GraphCtx, TYPE_F16, TYPE_F32, TYPE_I32};
pub use observe::SquareSums;
pub use packed::{Isa, PackSource, Packed, PackedStore, WeightType};
pub use tensor::{Tensor, TensorSpec, TensorStore};

/// Errors raised by the wrapper itself. ggml aborts on its own assertion failures, so the wrapper
/// checks every precondition it knows of before calling into ggml.
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

/// Whether this build of ggml has the CPU features it was compiled for (for `--verbose`).
pub fn system_info() -> String {
    // SAFETY: pure queries of compile-time flags.
    unsafe {
        format!(
            "AVX2={} AVX512={} FMA={} F16C={} CUDA={} METAL={}",
            sys::ggml_cpu_has_avx2(),
            sys::ggml_cpu_has_avx512(),
            sys::ggml_cpu_has_fma(),
            sys::ggml_cpu_has_f16c(),
            sys::ggml_cpu_has_cuda(),
            sys::ggml_cpu_has_metal()
        )
    }
}
