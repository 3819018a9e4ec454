//! Hand-declared ggml-backend / ggml-alloc functions (b2757 signatures, from ggml-backend.h and
//! ggml-alloc.h). The `ggml-sys-bleedingedge` bindings cover ggml.h only; these symbols are in its
//! static library.

#![allow(non_camel_case_types)]

use crate::sys;
use std::ffi::{c_char, c_int, c_void};

pub type ggml_backend_t = *mut c_void;
pub type ggml_backend_buffer_t = *mut c_void;
pub type ggml_backend_buffer_type_t = *mut c_void;
pub type ggml_gallocr_t = *mut c_void;

extern "C" {
    pub fn ggml_backend_cpu_init() -> ggml_backend_t;
    pub fn ggml_backend_cpu_set_n_threads(backend: ggml_backend_t, n_threads: c_int);
    pub fn ggml_backend_name(backend: ggml_backend_t) -> *const c_char;
    pub fn ggml_backend_free(backend: ggml_backend_t);
    pub fn ggml_backend_get_default_buffer_type(
        backend: ggml_backend_t,
    ) -> ggml_backend_buffer_type_t;
    pub fn ggml_backend_graph_compute(
        backend: ggml_backend_t,
        graph: *mut sys::ggml_cgraph,
    ) -> sys::ggml_status;

    pub fn ggml_backend_alloc_ctx_tensors(
        ctx: *mut sys::ggml_context,
        backend: ggml_backend_t,
    ) -> ggml_backend_buffer_t;
    pub fn ggml_backend_cpu_buffer_from_ptr(ptr: *mut c_void, size: usize)
        -> ggml_backend_buffer_t;
    pub fn ggml_backend_buffer_free(buffer: ggml_backend_buffer_t);
    pub fn ggml_backend_buffer_get_size(buffer: ggml_backend_buffer_t) -> usize;
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

    pub fn ggml_gallocr_new(buft: ggml_backend_buffer_type_t) -> ggml_gallocr_t;
    pub fn ggml_gallocr_free(galloc: ggml_gallocr_t);
    pub fn ggml_gallocr_alloc_graph(galloc: ggml_gallocr_t, graph: *mut sys::ggml_cgraph) -> bool;
    pub fn ggml_gallocr_get_buffer_size(galloc: ggml_gallocr_t, buffer_id: c_int) -> usize;
}
