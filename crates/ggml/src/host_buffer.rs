//! A CPU buffer type whose buffers report exactly the bytes they can hold.
//!
//! ggml b2757's own CPU buffers allocate `size + 32` bytes with `malloc`, align the base up to
//! 32 bytes (glibc returns 16-byte aligned blocks, so up to 16 bytes are lost) and report
//! `size + 32` as their size. ggml-alloc decides whether the scheduler's compute buffer must grow
//! by comparing a graph's need with that reported size, so a graph that needs up to 16 bytes more
//! than the buffer really holds runs in it anyway and its last tensor is written past the end of
//! the malloc'd block: the heap corruption seen with small batches (the need then grows by a few
//! bytes per token, so it lands in that 16-byte window often). Buffers of this type are allocated
//! 64-byte aligned, with exactly the size they report.
//!
//! The scheduler takes this type for its CPU compute buffers (except with CUDA, whose pinned host
//! buffers are exact already). Weights and KV caches keep ggml's own CPU buffers: those are filled
//! once by ggml's linear allocator, which never trusts the reported size.

use crate::{ffi, sys};
use std::alloc::Layout;
use std::ffi::{c_char, c_void};

/// Alignment of the memory block, and of every tensor in it.
const BLOCK_ALIGN: usize = 64;
const TENSOR_ALIGN: usize = 32;

/// The exact-size CPU buffer type (a static object, as ggml's own buffer types are).
pub(crate) fn exact_cpu_buffer_type() -> ffi::ggml_backend_buffer_type_t {
    std::ptr::addr_of!(EXACT_CPU.0) as *mut ffi::BufferType as ffi::ggml_backend_buffer_type_t
}

struct Static(ffi::BufferType);
// SAFETY: the object is immutable function pointers and a null context; ggml only reads it.
unsafe impl Sync for Static {}

static EXACT_CPU: Static = Static(ffi::BufferType {
    iface: ffi::BufferTypeIface {
        get_name: Some(buft_name),
        alloc_buffer: Some(buft_alloc),
        get_alignment: Some(buft_alignment),
        get_max_size: None,
        get_alloc_size: None,
        supports_backend: Some(buft_supports_backend),
        is_host: Some(buft_is_host),
    },
    context: std::ptr::null_mut(),
});

const NAME: &[u8] = b"CPU\0";

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), BLOCK_ALIGN).ok()
}

extern "C" fn buft_name(_: ffi::ggml_backend_buffer_type_t) -> *const c_char {
    NAME.as_ptr().cast()
}

extern "C" fn buft_alignment(_: ffi::ggml_backend_buffer_type_t) -> usize {
    TENSOR_ALIGN
}

extern "C" fn buft_is_host(_: ffi::ggml_backend_buffer_type_t) -> bool {
    true
}

extern "C" fn buft_supports_backend(
    _: ffi::ggml_backend_buffer_type_t,
    backend: ffi::ggml_backend_t,
) -> bool {
    // SAFETY: ggml passes a live backend.
    unsafe { ffi::ggml_backend_is_cpu(backend) }
}

extern "C" fn buft_alloc(
    buft: ffi::ggml_backend_buffer_type_t,
    size: usize,
) -> ffi::ggml_backend_buffer_t {
    // Round up to whole blocks of the alignment: the rounded size is both allocated and
    // reported, so the two can never disagree.
    let Some(size) = size.checked_next_multiple_of(BLOCK_ALIGN) else {
        return std::ptr::null_mut();
    };
    let Some(l) = layout(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: non-zero size (layout() takes at least 1), valid alignment.
    let data = unsafe { std::alloc::alloc(l) };
    if data.is_null() {
        return std::ptr::null_mut(); // ggml-alloc reports the failed allocation
    }
    // SAFETY: the interface functions below match ggml-backend-impl.h (b2757); ggml copies the
    // interface and keeps `data` as the buffer's context until free_buffer.
    unsafe { ffi::ggml_backend_buffer_init(buft, BUFFER_IFACE, data.cast(), size) }
}

const BUFFER_IFACE: ffi::BufferIface = ffi::BufferIface {
    get_name: Some(buf_name),
    free_buffer: Some(buf_free),
    get_base: Some(buf_base),
    init_tensor: None,
    set_tensor: Some(buf_set),
    get_tensor: Some(buf_get),
    cpy_tensor: Some(buf_cpy),
    clear: Some(buf_clear),
    reset: None,
};

/// The block and size of one of our buffers.
fn block(buffer: ffi::ggml_backend_buffer_t) -> (*mut u8, usize) {
    // SAFETY: ggml calls the interface with one of our live buffers, whose context is the block
    // and whose size is the block's size.
    unsafe {
        (
            ffi::ggml_backend_buffer_get_base(buffer).cast(),
            ffi::ggml_backend_buffer_get_size(buffer),
        )
    }
}

extern "C" fn buf_name(_: ffi::ggml_backend_buffer_t) -> *const c_char {
    NAME.as_ptr().cast()
}

extern "C" fn buf_base(buffer: ffi::ggml_backend_buffer_t) -> *mut c_void {
    // SAFETY: `buffer` is a live ggml_backend_buffer (ggml's struct layout, see ffi.rs).
    unsafe { (*buffer.cast::<ffi::BufferHeader>()).context }
}

extern "C" fn buf_free(buffer: ffi::ggml_backend_buffer_t) {
    let (data, size) = block(buffer);
    if let Some(l) = layout(size) {
        // SAFETY: allocated in buft_alloc with this very layout (size and alignment), freed once.
        unsafe { std::alloc::dealloc(data, l) }
    }
}

extern "C" fn buf_set(
    _: ffi::ggml_backend_buffer_t,
    tensor: *mut sys::ggml_tensor,
    data: *const c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: ggml_backend_tensor_set checked offset + size <= ggml_nbytes(tensor); the tensor's
    // data lies in this buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.cast::<u8>(),
            (*tensor).data.cast::<u8>().add(offset),
            size,
        )
    }
}

extern "C" fn buf_get(
    _: ffi::ggml_backend_buffer_t,
    tensor: *const sys::ggml_tensor,
    data: *mut c_void,
    offset: usize,
    size: usize,
) {
    // SAFETY: as in buf_set, the other way.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (*tensor).data.cast::<u8>().add(offset),
            data.cast::<u8>(),
            size,
        )
    }
}

extern "C" fn buf_cpy(
    _: ffi::ggml_backend_buffer_t,
    src: *const sys::ggml_tensor,
    dst: *mut sys::ggml_tensor,
) -> bool {
    // SAFETY: live tensors of equal size (ggml_backend_tensor_copy checks the layouts); a host
    // source can be read directly, anything else is left to ggml's generic path.
    unsafe {
        if !ffi::ggml_backend_buffer_is_host((*src).buffer.cast()) {
            return false;
        }
        std::ptr::copy_nonoverlapping(
            (*src).data.cast::<u8>(),
            (*dst).data.cast::<u8>(),
            sys::ggml_nbytes(src),
        );
    }
    true
}

extern "C" fn buf_clear(buffer: ffi::ggml_backend_buffer_t, value: u8) {
    let (data, size) = block(buffer);
    // SAFETY: the whole block belongs to this buffer.
    unsafe { std::ptr::write_bytes(data, value, size) }
}
