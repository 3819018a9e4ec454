//! Hand-declared ggml-backend / ggml-alloc functions (b2757 signatures, from ggml-backend.h and
//! ggml-alloc.h). The `ggml-sys-bleedingedge` bindings cover ggml.h only; these symbols are in its
//! static library.

#![allow(non_camel_case_types)]

use crate::sys;
use std::ffi::{c_char, c_int, c_void};

pub type ggml_backend_t = *mut c_void;
pub type ggml_backend_buffer_t = *mut c_void;
pub type ggml_backend_buffer_type_t = *mut c_void;

extern "C" {
    pub fn ggml_backend_cpu_init() -> ggml_backend_t;
    pub fn ggml_backend_cpu_set_n_threads(backend: ggml_backend_t, n_threads: c_int);
    pub fn ggml_backend_name(backend: ggml_backend_t) -> *const c_char;
    pub fn ggml_backend_free(backend: ggml_backend_t);
    pub fn ggml_backend_get_default_buffer_type(
        backend: ggml_backend_t,
    ) -> ggml_backend_buffer_type_t;

    pub fn ggml_backend_alloc_ctx_tensors(
        ctx: *mut sys::ggml_context,
        backend: ggml_backend_t,
    ) -> ggml_backend_buffer_t;
    pub fn ggml_backend_cpu_buffer_from_ptr(ptr: *mut c_void, size: usize)
        -> ggml_backend_buffer_t;
    pub fn ggml_backend_buffer_free(buffer: ggml_backend_buffer_t);
    pub fn ggml_backend_buffer_get_size(buffer: ggml_backend_buffer_t) -> usize;
    pub fn ggml_backend_buffer_get_base(buffer: ggml_backend_buffer_t) -> *mut c_void;
    pub fn ggml_backend_buffer_is_host(buffer: ggml_backend_buffer_t) -> bool;
    pub fn ggml_backend_is_cpu(backend: ggml_backend_t) -> bool;
    pub fn ggml_backend_buffer_clear(buffer: ggml_backend_buffer_t, value: u8);
    pub fn ggml_backend_tensor_alloc(
        buffer: ggml_backend_buffer_t,
        tensor: *mut sys::ggml_tensor,
        addr: *mut c_void,
    );
    pub fn ggml_backend_tensor_set(
        tensor: *mut sys::ggml_tensor,
        data: *const c_void,
        offset: usize,
        size: usize,
    );
    pub fn ggml_backend_tensor_get(
        tensor: *const sys::ggml_tensor,
        data: *mut c_void,
        offset: usize,
        size: usize,
    );

}

pub type ggml_backend_sched_t = *mut c_void;

/// `enum ggml_backend_buffer_usage`: GGML_BACKEND_BUFFER_USAGE_WEIGHTS. The scheduler runs an op
/// on the backend holding its weights only when their buffer is marked so.
pub const BUFFER_USAGE_WEIGHTS: c_int = 1;

extern "C" {
    pub fn ggml_backend_buffer_set_usage(buffer: ggml_backend_buffer_t, usage: c_int);
    pub fn ggml_backend_buft_supports_backend(
        buft: ggml_backend_buffer_type_t,
        backend: ggml_backend_t,
    ) -> bool;

    pub fn ggml_backend_sched_new(
        backends: *mut ggml_backend_t,
        bufts: *mut ggml_backend_buffer_type_t,
        n_backends: c_int,
        graph_size: usize,
        parallel: bool,
    ) -> ggml_backend_sched_t;
    pub fn ggml_backend_sched_free(sched: ggml_backend_sched_t);
    pub fn ggml_backend_sched_reserve(
        sched: ggml_backend_sched_t,
        measure_graph: *mut sys::ggml_cgraph,
    ) -> bool;
    pub fn ggml_backend_sched_get_buffer_size(
        sched: ggml_backend_sched_t,
        backend: ggml_backend_t,
    ) -> usize;
    pub fn ggml_backend_sched_alloc_graph(
        sched: ggml_backend_sched_t,
        graph: *mut sys::ggml_cgraph,
    ) -> bool;
    pub fn ggml_backend_sched_graph_compute(
        sched: ggml_backend_sched_t,
        graph: *mut sys::ggml_cgraph,
    ) -> sys::ggml_status;
    pub fn ggml_backend_sched_reset(sched: ggml_backend_sched_t);
}

#[cfg(feature = "cuda")]
extern "C" {
    pub fn ggml_backend_cuda_init(device: c_int) -> ggml_backend_t;
    pub fn ggml_backend_cuda_get_device_count() -> c_int;
    pub fn ggml_backend_cuda_get_device_description(
        device: c_int,
        description: *mut c_char,
        description_size: usize,
    );
    pub fn ggml_backend_cuda_get_device_memory(device: c_int, free: *mut usize, total: *mut usize);
    pub fn ggml_backend_cuda_host_buffer_type() -> ggml_backend_buffer_type_t;
}

#[cfg(feature = "metal")]
extern "C" {
    pub fn ggml_backend_metal_init() -> ggml_backend_t;
}

// ---- ggml-backend-impl.h (b2757): a buffer type of our own (host_buffer.rs).

/// `struct ggml_backend_buffer_type_i`.
#[repr(C)]
pub struct BufferTypeIface {
    pub get_name: Option<extern "C" fn(ggml_backend_buffer_type_t) -> *const c_char>,
    pub alloc_buffer:
        Option<extern "C" fn(ggml_backend_buffer_type_t, usize) -> ggml_backend_buffer_t>,
    pub get_alignment: Option<extern "C" fn(ggml_backend_buffer_type_t) -> usize>,
    pub get_max_size: Option<extern "C" fn(ggml_backend_buffer_type_t) -> usize>,
    pub get_alloc_size:
        Option<extern "C" fn(ggml_backend_buffer_type_t, *const sys::ggml_tensor) -> usize>,
    pub supports_backend: Option<extern "C" fn(ggml_backend_buffer_type_t, ggml_backend_t) -> bool>,
    pub is_host: Option<extern "C" fn(ggml_backend_buffer_type_t) -> bool>,
}

/// `struct ggml_backend_buffer_type`.
#[repr(C)]
pub struct BufferType {
    pub iface: BufferTypeIface,
    pub context: *mut c_void,
}

/// `struct ggml_backend_buffer_i`.
#[repr(C)]
pub struct BufferIface {
    pub get_name: Option<extern "C" fn(ggml_backend_buffer_t) -> *const c_char>,
    pub free_buffer: Option<extern "C" fn(ggml_backend_buffer_t)>,
    pub get_base: Option<extern "C" fn(ggml_backend_buffer_t) -> *mut c_void>,
    pub init_tensor: Option<extern "C" fn(ggml_backend_buffer_t, *mut sys::ggml_tensor)>,
    pub set_tensor: Option<
        extern "C" fn(ggml_backend_buffer_t, *mut sys::ggml_tensor, *const c_void, usize, usize),
    >,
    pub get_tensor: Option<
        extern "C" fn(ggml_backend_buffer_t, *const sys::ggml_tensor, *mut c_void, usize, usize),
    >,
    pub cpy_tensor: Option<
        extern "C" fn(
            ggml_backend_buffer_t,
            *const sys::ggml_tensor,
            *mut sys::ggml_tensor,
        ) -> bool,
    >,
    pub clear: Option<extern "C" fn(ggml_backend_buffer_t, u8)>,
    pub reset: Option<extern "C" fn(ggml_backend_buffer_t)>,
}

/// `struct ggml_backend_buffer`: only read for its context (our buffers' memory block).
#[repr(C)]
pub struct BufferHeader {
    pub iface: BufferIface,
    pub buft: ggml_backend_buffer_type_t,
    pub context: *mut c_void,
    pub size: usize,
    pub usage: c_int,
}

extern "C" {
    pub fn ggml_backend_buffer_init(
        buft: ggml_backend_buffer_type_t,
        iface: BufferIface,
        context: *mut c_void,
        size: usize,
    ) -> ggml_backend_buffer_t;
}
