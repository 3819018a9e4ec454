//! ggml-exact quantizers and dequantizers, in pure Rust.
//!
//! One file per family, all behind this module's API, each byte-identical to llama.cpp 2026's
//! `ggml_quantize_chunk` and `to_float` (tests/quant_golden.rs):
//!
//! * [`classic`]: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 (32-element blocks), the
//!   reference quantizers (`quantize_row_*_ref`);
//! * `classic_imatrix`: the importance-matrix paths of q4_0 … q5_1 (`quantize_row_*_impl`);
//! * `k`: the k-quants q2_K … q6_K (256-element super-blocks), with and without an importance
//!   matrix;
//! * `iq`: iq4_nl (32) and iq4_xs (256), with and without an importance matrix;
//! * [`imatrix`]: the importance-matrix files (llama.cpp 2026's GGUF form, the legacy `.dat`)
//!   and how llama-quantize derives the per-column weights from them.
//!
//! Every entry point takes whole rows of `ncols` elements. An importance matrix (llama.cpp's
//! `quant_weights`) is one non-negative weight per column, the same for every row; a type that
//! has no weighted quantizer in llama.cpp (f32, f16, q8_0) ignores it, exactly as
//! `ggml_quantize_chunk` does.

mod classic;
mod classic_imatrix;
pub mod imatrix;
mod iq;
mod k;

pub use classic::{f16_bits_to_f32, f32_to_f16_bits};

use gguf::GgmlType;
use rayon::prelude::*;

/// Types the converter can write, each checked byte for byte against llama.cpp 2026
/// (`tests/quant_golden.rs`).
pub const WRITABLE: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// Types [`dequantize`] can read.
pub const READABLE: [GgmlType; 15] = WRITABLE;

/// Below this many elements `quantize_rows_par` does not bother splitting.
const PAR_MIN_ELEMS: usize = 1 << 16;

/// Shape and type errors of the quantizers. Nothing here panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("cannot quantize to {ty}: the converter writes only {}", type_list(&WRITABLE))]
    CannotQuantize { ty: GgmlType },
    #[error("cannot dequantize {ty}: only {} can be read", type_list(&READABLE))]
    CannotDequantize { ty: GgmlType },
    #[error("{ty}: a row of {ncols} elements is not a multiple of the {block}-element block")]
    RowNotBlockMultiple {
        ty: GgmlType,
        ncols: usize,
        block: usize,
    },
    #[error("{ty}: {len} values are not a whole number of rows of {ncols} elements")]
    NotWholeRows {
        ty: GgmlType,
        len: usize,
        ncols: usize,
    },
    #[error("{ty}: output buffer of {got} bytes, {want} needed")]
    OutputSize {
        ty: GgmlType,
        got: usize,
        want: usize,
    },
    #[error("{ty}: {n} elements are not a multiple of the {block}-element block")]
    CountNotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: {n} elements take {expected} bytes, but {got} bytes were given")]
    ByteLength {
        ty: GgmlType,
        n: usize,
        expected: usize,
        got: usize,
    },
    #[error("{ty}: the importance matrix has {got} weights, but rows have {ncols} elements")]
    ImatrixWidth {
        ty: GgmlType,
        got: usize,
        ncols: usize,
    },
    #[error("{ty}: importance weight {index} is {value}, expected a finite value >= 0")]
    ImatrixValue {
        ty: GgmlType,
        index: usize,
        value: f32,
    },
    #[error("{ty}: quantizing with an importance matrix is not implemented for this type")]
    ImatrixUnsupported { ty: GgmlType },
}

fn type_list(types: &[GgmlType]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}

/// Whether [`quantize_rows`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    WRITABLE.contains(&ty)
}

/// Whether [`dequantize`] can read `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    READABLE.contains(&ty)
}

/// Checks a quantization request; returns the bytes of one row.
fn check_rows(
    ty: GgmlType,
    len: usize,
    ncols: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize, QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::CannotQuantize { ty });
    }
    let block = ty.block_size();
    if !ncols.is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple { ty, ncols, block });
    }
    if (ncols == 0 && len != 0) || (ncols != 0 && !len.is_multiple_of(ncols)) {
        return Err(QuantError::NotWholeRows { ty, len, ncols });
    }
    if let Some(w) = imatrix {
        if w.len() != ncols {
            return Err(QuantError::ImatrixWidth {
                ty,
                got: w.len(),
                ncols,
            });
        }
        if let Some((index, &value)) = w
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(QuantError::ImatrixValue { ty, index, value });
        }
        if !ignores_imatrix(ty)
            && !k::is_k(ty)
            && !iq::is_iq(ty)
            && !classic_imatrix::is_weighted_classic(ty)
        {
            return Err(QuantError::ImatrixUnsupported { ty });
        }
    }
    Ok(ncols / block * ty.type_size())
}

/// Types that `ggml_quantize_chunk` quantizes the same with or without `quant_weights`.
fn ignores_imatrix(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    )
}

/// Quantizes whole rows of `ncols` elements to `ty` (no importance matrix), appending the bytes
/// to `dst`.
///
/// `src.len()` must be a multiple of `ncols`, and `ncols` a multiple of the block size of `ty`;
/// otherwise a [`QuantError`] is returned and `dst` is left untouched.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    dst: &mut Vec<u8>,
) -> Result<(), QuantError> {
    quantize_rows_weighted(ty, src, ncols, None, dst)
}

/// [`quantize_rows`] with an optional importance matrix: `imatrix` has `ncols` finite,
/// non-negative weights (llama.cpp's `quant_weights`).
pub fn quantize_rows_weighted(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    imatrix: Option<&[f32]>,
    dst: &mut Vec<u8>,
) -> Result<(), QuantError> {
    let row_bytes = check_rows(ty, src.len(), ncols, imatrix)?;
    if src.is_empty() {
        return Ok(());
    }
    let start = dst.len();
    dst.resize(start + src.len() / ncols * row_bytes, 0);
    encode(ty, src, ncols, imatrix, &mut dst[start..]);
    Ok(())
}

/// Quantizes whole rows into `out`, which must be exactly their encoded size.
pub fn quantize_rows_into(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    out: &mut [u8],
) -> Result<(), QuantError> {
    quantize_rows_into_weighted(ty, src, ncols, None, out)
}

/// [`quantize_rows_into`] with an optional importance matrix (see [`quantize_rows_weighted`]).
pub fn quantize_rows_into_weighted(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantError> {
    let row_bytes = check_rows(ty, src.len(), ncols, imatrix)?;
    let want = src.len().checked_div(ncols).unwrap_or(0) * row_bytes;
    if out.len() != want {
        return Err(QuantError::OutputSize {
            ty,
            got: out.len(),
            want,
        });
    }
    if !src.is_empty() {
        encode(ty, src, ncols, imatrix, out);
    }
    Ok(())
}

/// Same as [`quantize_rows`], splitting the rows across the rayon pool; the output is
/// bit-identical (every row is encoded independently).
pub fn quantize_rows_par(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    dst: &mut Vec<u8>,
) -> Result<(), QuantError> {
    quantize_rows_par_weighted(ty, src, ncols, None, dst)
}

/// [`quantize_rows_par`] with an optional importance matrix (see [`quantize_rows_weighted`]).
pub fn quantize_rows_par_weighted(
    ty: GgmlType,
    src: &[f32],
    ncols: usize,
    imatrix: Option<&[f32]>,
    dst: &mut Vec<u8>,
) -> Result<(), QuantError> {
    let row_bytes = check_rows(ty, src.len(), ncols, imatrix)?;
    if src.is_empty() {
        return Ok(());
    }
    let nrows = src.len() / ncols;
    let threads = rayon::current_num_threads().max(1);
    if src.len() < 2 * PAR_MIN_ELEMS || nrows < 2 || threads < 2 {
        return quantize_rows_weighted(ty, src, ncols, imatrix, dst);
    }
    // A few tasks per thread for balance, none smaller than PAR_MIN_ELEMS elements.
    let rows_per_task = nrows
        .div_ceil(threads * 4)
        .max(PAR_MIN_ELEMS.div_ceil(ncols))
        .max(1);
    let start = dst.len();
    dst.resize(start + nrows * row_bytes, 0);
    src.par_chunks(rows_per_task * ncols)
        .zip(dst[start..].par_chunks_mut(rows_per_task * row_bytes))
        .for_each(|(s, d)| encode(ty, s, ncols, imatrix, d));
    Ok(())
}

/// `n_per_row`-element rows of `data` quantized to `ty` (rows in parallel), with an optional
/// importance matrix of `n_per_row` weights: the shape of llama.cpp's `ggml_quantize_chunk`.
pub fn quantize(
    ty: GgmlType,
    data: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantError> {
    let mut out = Vec::new();
    quantize_rows_par_weighted(ty, data, n_per_row, imatrix, &mut out)?;
    Ok(out)
}

/// Encodes whole rows of `src` into `out` (exactly the right size; type, shape and imatrix
/// checked by [`check_rows`]).
fn encode(ty: GgmlType, src: &[f32], ncols: usize, imatrix: Option<&[f32]>, out: &mut [u8]) {
    let row_bytes = ncols / ty.block_size() * ty.type_size();
    let rows = src.chunks_exact(ncols).zip(out.chunks_exact_mut(row_bytes));
    match imatrix {
        _ if k::is_k(ty) => rows.for_each(|(x, o)| k::encode_row(ty, x, imatrix, o)),
        _ if iq::is_iq(ty) => rows.for_each(|(x, o)| iq::encode_row(ty, x, imatrix, o)),
        Some(w) if classic_imatrix::is_weighted_classic(ty) => {
            rows.for_each(|(x, o)| classic_imatrix::encode_row(ty, x, w, o))
        }
        _ => classic::encode(ty, src, out),
    }
}

/// Decodes `n` elements of type `ty` from `src` (exactly `n` elements' worth of bytes, `n` a
/// multiple of the block size) and appends them to `dst`. Bit-identical to ggml's `to_float`.
pub fn dequantize(
    ty: GgmlType,
    src: &[u8],
    n: usize,
    dst: &mut Vec<f32>,
) -> Result<(), QuantError> {
    if !can_dequantize(ty) {
        return Err(QuantError::CannotDequantize { ty });
    }
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::CountNotBlockMultiple { ty, n, block });
    }
    let expected = n / block * ty.type_size();
    if src.len() != expected {
        return Err(QuantError::ByteLength {
            ty,
            n,
            expected,
            got: src.len(),
        });
    }
    dst.reserve(n);
    if k::is_k(ty) {
        k::decode(ty, src, dst);
    } else if iq::is_iq(ty) {
        iq::decode(ty, src, dst);
    } else {
        classic::decode(ty, src, dst);
    }
    Ok(())
}
