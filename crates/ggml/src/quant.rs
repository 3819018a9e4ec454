//! ggml's own quantizers and dequantizers, behind checked safe functions. The converter has its
//! own pure-Rust quantizers; these exist so tests can prove them bit-exact against ggml, and so
//! the runtime can dequantize a row when it needs one on the host.

use crate::context::ensure_ggml_initialized;
use crate::{sys, GgmlError};
use std::ffi::CStr;

/// Number of ggml types in this ggml (`GGML_TYPE_COUNT`).
pub const TYPE_COUNT: u32 = sys::ggml_type_GGML_TYPE_COUNT;

fn check_type(ty: u32) -> Result<(), GgmlError> {
    ensure_ggml_initialized();
    if ty >= TYPE_COUNT {
        return Err(GgmlError::UnknownType(ty));
    }
    // SAFETY: `ty` is below GGML_TYPE_COUNT, so it indexes ggml's static type-traits table.
    let size = unsafe { sys::ggml_type_size(ty) };
    if size == 0 {
        // Removed types (Q4_2, Q4_3) have an empty traits entry.
        return Err(GgmlError::UnknownType(ty));
    }
    Ok(())
}

/// ggml's name for a type (`"q4_0"`, `"f16"`, ...).
pub fn type_name(ty: u32) -> Result<&'static str, GgmlError> {
    check_type(ty)?;
    // SAFETY: valid type (checked); ggml returns a pointer to a static NUL-terminated string.
    let p = unsafe { sys::ggml_type_name(ty) };
    if p.is_null() {
        return Err(GgmlError::UnknownType(ty));
    }
    // SAFETY: non-null pointer to a static C string owned by ggml.
    Ok(unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?"))
}

/// Elements per block for `ty`.
pub fn block_size(ty: u32) -> Result<usize, GgmlError> {
    check_type(ty)?;
    // SAFETY: valid type (checked); a pure table lookup.
    Ok(unsafe { sys::ggml_blck_size(ty) } as usize)
}

/// Bytes of one row of `ncols` elements of type `ty`.
pub fn row_size(ty: u32, ncols: usize) -> Result<usize, GgmlError> {
    let bs = block_size(ty)?;
    if !ncols.is_multiple_of(bs) {
        return Err(GgmlError::Shape(format!(
            "row of {ncols} elements is not a multiple of the {}-element block of {}",
            bs,
            type_name(ty)?
        )));
    }
    // SAFETY: valid type and a whole number of blocks (checked above).
    Ok(unsafe { sys::ggml_row_size(ty, ncols as i64) })
}

/// Quantizes `nrows` rows of `ncols` floats with ggml's `ggml_quantize_chunk` (the reference
/// quantizers llama-quantize uses, without an importance matrix).
pub fn quantize_chunk(
    ty: u32,
    src: &[f32],
    nrows: usize,
    ncols: usize,
) -> Result<Vec<u8>, GgmlError> {
    let rs = row_size(ty, ncols)?;
    if src.len() != nrows * ncols {
        return Err(GgmlError::Shape(format!(
            "{} floats given for {nrows} rows of {ncols}",
            src.len()
        )));
    }
    // SAFETY: valid type (checked by row_size); a pure predicate.
    if unsafe { sys::ggml_quantize_requires_imatrix(ty) } {
        return Err(GgmlError::Unsupported {
            ty: type_name(ty)?,
            why: "needs an importance matrix",
        });
    }
    if matches!(
        ty,
        sys::ggml_type_GGML_TYPE_F32
            | sys::ggml_type_GGML_TYPE_I8
            | sys::ggml_type_GGML_TYPE_I16
            | sys::ggml_type_GGML_TYPE_I32
            | sys::ggml_type_GGML_TYPE_Q8_1
            | sys::ggml_type_GGML_TYPE_Q8_K
    ) {
        return Err(GgmlError::Unsupported {
            ty: type_name(ty)?,
            why: "ggml_quantize_chunk does not produce it",
        });
    }
    let mut dst = vec![0u8; rs * nrows];
    // SAFETY: `src` holds nrows*ncols floats and `dst` nrows*row_size bytes (checked above);
    // start = 0 satisfies ggml's alignment asserts; the type needs no imatrix (checked), so NULL is allowed.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            nrows as i64,
            ncols as i64,
            std::ptr::null(),
        )
    };
    debug_assert_eq!(written, dst.len());
    Ok(dst)
}

/// Dequantizes `n` elements stored as type `ty` in `src` with ggml's `to_float`.
pub fn dequantize(ty: u32, src: &[u8], n: usize) -> Result<Vec<f32>, GgmlError> {
    let rs = row_size(ty, n)?;
    if src.len() != rs {
        return Err(GgmlError::Shape(format!(
            "{} bytes given for {n} elements of {}, expected {rs}",
            src.len(),
            type_name(ty)?
        )));
    }
    // SAFETY: valid type; returns a copy of the static traits entry.
    let traits = unsafe { sys::ggml_internal_get_type_traits(ty) };
    let to_float = traits.to_float.ok_or(GgmlError::Unsupported {
        ty: type_name(ty)?,
        why: "no to_float",
    })?;
    let mut out = vec![0f32; n];
    // SAFETY: `src` holds exactly the bytes of n elements (a whole number of blocks) and `out` n floats.
    unsafe { to_float(src.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    Ok(out)
}
