//! Flash attention (glm-kernels' `attention`) as a custom op of CPU graphs: one node reads Q and
//! the layer's whole KV cache and writes the attention output, without the `[n_kv, T, heads]`
//! scores that the unfused path (`mul_mat`, softmax, `mul_mat`) puts in the compute buffer.

use crate::tensor::Tensor;
use crate::{sys, GgmlError};
pub use glm_kernels::attention::KvType;
use glm_kernels::attention::{AttnOut, AttnShape, Mask};
use glm_kernels::Isa;
use std::ffi::{c_int, c_void};

/// ggml's type id of a cache type.
pub fn kv_ggml_type(t: KvType) -> u32 {
    match t {
        KvType::F32 => sys::ggml_type_GGML_TYPE_F32,
        KvType::F16 => sys::ggml_type_GGML_TYPE_F16,
        KvType::Q8_0 => sys::ggml_type_GGML_TYPE_Q8_0,
        KvType::Q4_0 => sys::ggml_type_GGML_TYPE_Q4_0,
    }
}

/// The cache type of a ggml type id.
pub fn kv_type_of(ty: u32) -> Option<KvType> {
    KvType::ALL.into_iter().find(|&t| kv_ggml_type(t) == ty)
}

/// The op's user data: the scale's bits and the kernel (a pointer-sized integer: glmtool runs on
/// 64-bit targets, where both fit).
fn params_to_ptr(scale: f32, isa: Isa) -> *mut c_void {
    let i = isa.code() as usize;
    ((scale.to_bits() as u64) << 8 | i as u64) as usize as *mut c_void
}

fn params_from_ptr(p: *mut c_void) -> (f32, Isa) {
    let p = p as usize as u64;
    let isa = Isa::from_code((p & 0xff) as u8);
    (f32::from_bits((p >> 8) as u32), isa)
}

/// The shape of the op `dst = attention(q, k, v)`: q `[d, heads, T]` f32, k and v `[kv_width,
/// n_kv]` cache rows.
fn shape_of(
    q: &sys::ggml_tensor,
    k: &sys::ggml_tensor,
    v: &sys::ggml_tensor,
    scale: f32,
) -> Option<AttnShape> {
    let (d, nh, t) = (q.ne[0] as usize, q.ne[1] as usize, q.ne[2] as usize);
    let kv_w = k.ne[0] as usize;
    if d == 0 || !kv_w.is_multiple_of(d) || v.ne[0] != k.ne[0] || v.ne[1] != k.ne[1] {
        return None;
    }
    Some(AttnShape {
        head_dim: d,
        n_head: nh,
        n_head_kv: kv_w / d,
        n_tokens: t,
        n_kv: k.ne[1] as usize,
        k_type: kv_type_of(k.type_)?,
        v_type: kv_type_of(v.type_)?,
        scale,
    })
}

/// `softmax(scale · Q·Kᵀ + causal mask) · V` as one op; returns `[d, heads, T]` f32.
///
/// # Safety
/// `ctx` must be a live graph context with room for one more tensor; the tensors must be usable
/// in that graph (CPU memory once allocated: the op is a CPU custom op).
pub(crate) unsafe fn flash_attn(
    ctx: *mut sys::ggml_context,
    q: Tensor<'_>,
    k: Tensor<'_>,
    v: Tensor<'_>,
    scale: f32,
    isa: Isa,
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    let (nq, nk, nv) = (q.ne(), k.ne(), v.ne());
    let bad = |why: &str| {
        Err(GgmlError::Shape(format!(
            "flash_attn: q {nq:?}, k {nk:?}, v {nv:?}: {why}"
        )))
    };
    if q.ty() != sys::ggml_type_GGML_TYPE_F32 || !q.is_contiguous() || nq[3] != 1 {
        return bad("q must be a contiguous f32 [d, heads, T]");
    }
    let Some(s) = shape_of(&*q.raw(), &*k.raw(), &*v.raw(), scale) else {
        return bad("k and v must be [kv width, n_kv] of f32, f16, q8_0 or q4_0");
    };
    for (t, ty) in [(k, s.k_type), (v, s.v_type)] {
        // rows of one token back to back, the first at the tensor's data
        if t.ne()[2] != 1 || t.ne()[3] != 1 || t.nb()[1] != s.row_bytes(ty) {
            return bad("the cache rows must be contiguous");
        }
    }
    if let Err(e) = s.validate(&Mask::Causal) {
        return Err(GgmlError::Shape(format!("flash_attn: {e}")));
    }
    if !isa.runs_here() {
        return Err(GgmlError::Backend(format!(
            "flash_attn: {} kernels cannot run on this CPU",
            isa.name()
        )));
    }
    // The result is a new contiguous f32 tensor of q's shape.
    let r = sys::ggml_map_custom3(
        ctx,
        q.raw(),
        k.raw(),
        v.raw(),
        Some(flash_attn_op),
        -1, // GGML_N_TASKS_MAX: every thread
        params_to_ptr(scale, isa),
    );
    if r.is_null() {
        return Err(GgmlError::Backend("ggml_map_custom3 failed".into()));
    }
    Ok(r)
}

unsafe extern "C" fn flash_attn_op(
    dst: *mut sys::ggml_tensor,
    q: *const sys::ggml_tensor,
    k: *const sys::ggml_tensor,
    v: *const sys::ggml_tensor,
    ith: c_int,
    nth: c_int,
    params: *mut c_void,
) {
    let (dst, q, k, v) = (&*dst, &*q, &*k, &*v);
    let (scale, isa) = params_from_ptr(params);
    let Some(s) = shape_of(q, k, v, scale) else {
        return; // unreachable: checked when the op was made
    };
    // SAFETY: q is a contiguous f32 [d, heads, T] (q_len() values); k and v are views of
    // n_kv contiguous cache rows starting at their data pointers (checked when the op was made);
    // dst is this op's contiguous f32 output of q's shape, of which each thread writes only its
    // own work items' rows (flash_attention's contract for distinct ith of one nth).
    let qs = std::slice::from_raw_parts(q.data as *const f32, s.q_len());
    let ks = std::slice::from_raw_parts(k.data as *const u8, s.n_kv * s.row_bytes(s.k_type));
    let vs = std::slice::from_raw_parts(v.data as *const u8, s.n_kv * s.row_bytes(s.v_type));
    let out = AttnOut::new(dst.data as *mut f32);
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    if glm_kernels::attention::flash_attention(isa, &s, qs, ks, vs, Mask::Causal, out, ith, nth)
        .is_err()
    {
        // Unreachable (shapes were checked when the op was made). Every thread fails the same
        // check before writing anything, so one thread marks the whole output.
        if ith == 0 {
            std::slice::from_raw_parts_mut(dst.data as *mut f32, s.q_len()).fill(f32::NAN);
        }
    }
}
