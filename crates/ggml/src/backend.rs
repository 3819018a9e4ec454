//! Backends (CPU; CUDA and Metal behind features), backend buffers, and the graph allocator.

use crate::graph::GraphCtx;
use crate::{ffi, GgmlError};
use std::ffi::CStr;
use std::ptr::NonNull;

/// A ggml compute backend.
pub struct Backend {
    raw: NonNull<std::ffi::c_void>,
    is_cpu: bool,
}

impl Backend {
    /// The CPU backend with `n_threads` threads.
    pub fn cpu(n_threads: usize) -> Result<Self, GgmlError> {
        // SAFETY: plain constructor; returns null on failure.
        let raw = unsafe { ffi::ggml_backend_cpu_init() };
        let b = Backend {
            raw: NonNull::new(raw)
                .ok_or_else(|| GgmlError::Backend("CPU backend init failed".into()))?,
            is_cpu: true,
        };
        b.set_n_threads(n_threads);
        Ok(b)
    }

    /// Sets the thread count (CPU backend only; ignored elsewhere).
    pub fn set_n_threads(&self, n: usize) {
        if self.is_cpu {
            // SAFETY: self is a live CPU backend.
            unsafe { ffi::ggml_backend_cpu_set_n_threads(self.raw(), n.clamp(1, 512) as i32) };
        }
    }

    pub fn name(&self) -> String {
        // SAFETY: live backend; ggml returns a static NUL-terminated name.
        let p = unsafe { ffi::ggml_backend_name(self.raw()) };
        if p.is_null() {
            return "?".into();
        }
        // SAFETY: non-null static C string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    pub(crate) fn raw(&self) -> *mut std::ffi::c_void {
        self.raw.as_ptr()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: created by a ggml_backend_*_init and freed once.
        unsafe { ffi::ggml_backend_free(self.raw()) }
    }
}

/// A backend buffer, freed on drop.
pub(crate) struct Buffer(NonNull<std::ffi::c_void>);

impl Buffer {
    pub(crate) fn from_raw(raw: ffi::ggml_backend_buffer_t) -> Option<Self> {
        NonNull::new(raw).map(Buffer)
    }
    pub(crate) fn raw(&self) -> ffi::ggml_backend_buffer_t {
        self.0.as_ptr()
    }
    pub(crate) fn size(&self) -> usize {
        // SAFETY: live buffer.
        unsafe { ffi::ggml_backend_buffer_get_size(self.raw()) }
    }
    pub(crate) fn clear(&self, v: u8) {
        // SAFETY: live buffer; clears its own memory.
        unsafe { ffi::ggml_backend_buffer_clear(self.raw(), v) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer was returned by ggml and is freed once.
        unsafe { ffi::ggml_backend_buffer_free(self.raw()) }
    }
}

/// ggml's graph allocator: places a graph's intermediate tensors in one reusable buffer of the
/// backend's memory, growing it when a bigger graph comes.
pub struct Allocator {
    raw: NonNull<std::ffi::c_void>,
}

impl Allocator {
    pub fn new(backend: &Backend) -> Result<Self, GgmlError> {
        // SAFETY: live backend; its default buffer type is a static object.
        let raw = unsafe {
            ffi::ggml_gallocr_new(ffi::ggml_backend_get_default_buffer_type(backend.raw()))
        };
        Ok(Allocator {
            raw: NonNull::new(raw)
                .ok_or_else(|| GgmlError::Backend("ggml_gallocr_new failed".into()))?,
        })
    }

    pub(crate) fn raw(&self) -> ffi::ggml_gallocr_t {
        self.raw.as_ptr()
    }

    /// Bytes of the compute buffer (after at least one graph was allocated).
    pub fn buffer_size(&self) -> usize {
        // SAFETY: live allocator; buffer id 0 exists for a single-buffer allocator.
        unsafe { ffi::ggml_gallocr_get_buffer_size(self.raw(), 0) }
    }

    /// Builds, allocates and runs one graph inside `f`. The graph context and every tensor made
    /// in it are confined to the closure (`'g` is chosen per call, like `std::thread::scope`), so
    /// nothing can outlive the graph's memory, and everything the graph reads (`'w`: weights,
    /// cache) outlives the call.
    pub fn with_graph<'w, R, E: From<GgmlError>>(
        &mut self,
        max_nodes: usize,
        f: impl for<'g> FnOnce(&'g GraphCtx<'g, 'w>) -> Result<R, E>,
    ) -> Result<R, E> {
        let g = GraphCtx::new(self, max_nodes)?;
        f(&g)
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        // SAFETY: created by ggml_gallocr_new, freed once.
        unsafe { ffi::ggml_gallocr_free(self.raw()) }
    }
}
