//! Softmax and SwiGLU with `exp` in f32, as custom ops for CPU graphs.
//!
//! ggml b2757's CPU softmax and SiLU read `exp` / `silu` from 65,536-entry tables indexed by
//! the argument rounded to f16: that alone limits f32 runs to ~1e-5 relative perplexity against
//! transformers. These ops compute them in f32 (glm-kernels `softmax_row`, `swiglu`); SwiGLU
//! also reads the gate and up halves in place, without ggml's contiguous copy of the gate.

use crate::tensor::Tensor;
use crate::{sys, GgmlError};
use std::ffi::{c_int, c_void};

/// ggml.h's GGML_N_TASKS_MAX: every thread.
const ALL_THREADS: c_int = -1;

/// softmax(scores · scale + mask) per row; scores `[n_kv, T, heads]` contiguous, mask
/// `[n_kv, T]` contiguous (broadcast over heads).
///
/// # Safety
/// `ctx` must be a live graph context with room for one more tensor; the tensors must be usable
/// in that graph.
pub(crate) unsafe fn soft_max(
    ctx: *mut sys::ggml_context,
    scores: Tensor<'_>,
    mask: Tensor<'_>,
    scale: f32,
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    let (ns, nm) = (scores.ne(), mask.ne());
    let f32_cont = |t: &Tensor<'_>| t.ty() == sys::ggml_type_GGML_TYPE_F32 && t.is_contiguous();
    if !f32_cont(&scores)
        || !f32_cont(&mask)
        || nm[0] != ns[0]
        || nm[1] != ns[1]
        || nm[2] != 1
        || ns[3] != 1
    {
        return Err(GgmlError::Shape(format!(
            "soft_max_exact: scores {ns:?}, mask {nm:?}"
        )));
    }
    // In place, as ggml's softmax: the scores are not needed afterwards, and a second
    // [n_kv, T, heads] buffer would cost hundreds of MiB at long contexts.
    let r = sys::ggml_map_custom2_inplace(
        ctx,
        scores.raw(),
        mask.raw(),
        Some(soft_max_op),
        ALL_THREADS,
        scale.to_bits() as usize as *mut c_void,
    );
    if r.is_null() {
        return Err(GgmlError::Backend("ggml_map_custom2 failed".into()));
    }
    Ok(r)
}

unsafe extern "C" fn soft_max_op(
    dst: *mut sys::ggml_tensor,
    x: *const sys::ggml_tensor,
    mask: *const sys::ggml_tensor,
    ith: c_int,
    nth: c_int,
    scale: *mut c_void,
) {
    let (dst, x, mask) = (&*dst, &*x, &*mask);
    let scale = f32::from_bits(scale as usize as u32);
    let (n, t) = (x.ne[0] as usize, x.ne[1] as usize);
    let rows = t * x.ne[2] as usize;
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    for i in (ith..rows).step_by(nth) {
        // SAFETY: dst is a view of the contiguous [n, t, heads] f32 scores (in place: same data
        // pointer, checked when the op was made), mask is contiguous [n, t]; row i is read and
        // written by this thread only, through the one slice.
        let row = std::slice::from_raw_parts_mut((dst.data as *mut f32).add(i * n), n);
        let ms = std::slice::from_raw_parts((mask.data as *const f32).add((i % t) * n), n);
        let _ = glm_kernels::softmax_row(row, ms, scale); // lengths equal by construction
    }
}

/// silu(gate) ⊙ up for `[ff, T]` views with contiguous rows (e.g. the halves of one `[2ff, T]`
/// projection); returns a contiguous `[ff, T]`.
///
/// # Safety
/// As [`soft_max`].
pub(crate) unsafe fn swiglu(
    ctx: *mut sys::ggml_context,
    gate: Tensor<'_>,
    up: Tensor<'_>,
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    let (ng, nu) = (gate.ne(), up.ne());
    let rows_ok = |t: &Tensor<'_>| t.ty() == sys::ggml_type_GGML_TYPE_F32 && t.nb()[0] == 4;
    if !rows_ok(&gate) || !rows_ok(&up) || ng != nu || ng[2] != 1 || ng[3] != 1 {
        return Err(GgmlError::Shape(format!(
            "swiglu_exact: gate {ng:?}, up {nu:?}"
        )));
    }
    // The result is a new contiguous tensor of gate's shape (ggml_dup_tensor keeps ne, not nb).
    let r = sys::ggml_map_custom2(
        ctx,
        gate.raw(),
        up.raw(),
        Some(swiglu_op),
        ALL_THREADS,
        std::ptr::null_mut(),
    );
    if r.is_null() {
        return Err(GgmlError::Backend("ggml_map_custom2 failed".into()));
    }
    Ok(r)
}

unsafe extern "C" fn swiglu_op(
    dst: *mut sys::ggml_tensor,
    gate: *const sys::ggml_tensor,
    up: *const sys::ggml_tensor,
    ith: c_int,
    nth: c_int,
    _: *mut c_void,
) {
    let (dst, gate, up) = (&*dst, &*gate, &*up);
    let (ff, t) = (gate.ne[0] as usize, gate.ne[1] as usize);
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    let cols = ff * ith / nth..ff * (ith + 1) / nth; // every thread a slice of every row
    for tok in 0..t {
        // SAFETY: gate and up have t rows of ff contiguous f32 at stride nb[1] (checked when the
        // op was made; shared reads); dst is a contiguous [ff, t] f32 tensor, of which this
        // thread takes, and writes, only its own column slice of each row.
        let g = std::slice::from_raw_parts(
            (gate.data as *const u8).add(tok * gate.nb[1]).cast::<f32>(),
            ff,
        );
        let u = std::slice::from_raw_parts(
            (up.data as *const u8).add(tok * up.nb[1]).cast::<f32>(),
            ff,
        );
        let out = std::slice::from_raw_parts_mut(
            (dst.data as *mut f32).add(tok * ff + cols.start),
            cols.len(),
        );
        let _ = glm_kernels::swiglu(&g[cols.clone()], &u[cols.clone()], out);
    }
}
