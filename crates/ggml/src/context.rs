//! A ggml context that holds tensor metadata (`no_alloc`: the data lives in backend buffers),
//! freed on drop; and ggml's one-time global initialization. A leaf: only `sys`.

use crate::{sys, GgmlError};
use std::ptr::NonNull;

/// Owns a ggml context (metadata only, `no_alloc`) and frees it on drop.
pub(crate) struct RawContext(NonNull<sys::ggml_context>);

impl RawContext {
    pub(crate) fn new(n_tensors: usize, extra: usize) -> Result<Self, GgmlError> {
        // SAFETY: pure size computation.
        let mem_size = unsafe { sys::ggml_tensor_overhead() } * n_tensors + extra + 1024;
        let params = sys::ggml_init_params {
            mem_size,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: ggml allocates mem_size bytes itself (mem_buffer null); returns null on failure.
        let raw = unsafe { sys::ggml_init(params) };
        NonNull::new(raw)
            .map(RawContext)
            .ok_or_else(|| GgmlError::Backend("ggml_init failed".into()))
    }
    pub(crate) fn raw(&self) -> *mut sys::ggml_context {
        self.0.as_ptr()
    }
    /// Bytes of metadata memory left (ggml aborts when a context overflows: check first).
    pub(crate) fn ensure_room(&self, n_tensors: usize) -> Result<(), GgmlError> {
        // SAFETY: valid context; pure queries.
        let (used, size, over) = unsafe {
            (
                sys::ggml_used_mem(self.raw()),
                sys::ggml_get_mem_size(self.raw()),
                sys::ggml_tensor_overhead(),
            )
        };
        if used + n_tensors * over > size {
            return Err(GgmlError::Backend(format!(
                "ggml context full ({used} of {size} bytes used)"
            )));
        }
        Ok(())
    }
}

impl Drop for RawContext {
    fn drop(&mut self) {
        // SAFETY: the context was created by ggml_init and is freed exactly once.
        unsafe { sys::ggml_free(self.0.as_ptr()) }
    }
}

/// ggml fills its f16 conversion tables in the first `ggml_init`; the quantizers and
/// dequantizers read them, so make sure that happened.
pub(crate) fn ensure_ggml_initialized() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // A context is created and freed only for its side effect on ggml's global tables.
        let _ = RawContext::new(1, 0);
    });
}
