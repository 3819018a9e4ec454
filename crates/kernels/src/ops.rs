//! Exact f32 softmax and SwiGLU rows (the graph's custom ops in glm-ggml's exact.rs call them).

use crate::{check, ShapeError};

/// `row = softmax(row · scale + mask)` in place, with `exp` in f32 and the sum in f64 (as
/// ggml's CPU softmax, but without its f16 table of exp). `-inf` entries (masked) give 0.
pub fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32) -> Result<(), ShapeError> {
    check(row.len() == mask.len() && !row.is_empty(), || {
        format!(
            "softmax over {} values with a mask of {}",
            row.len(),
            mask.len()
        )
    })?;
    let mut max = f32::NEG_INFINITY;
    for (o, &m) in row.iter_mut().zip(mask) {
        *o = *o * scale + m;
        max = max.max(*o);
    }
    let mut sum = 0f64;
    for o in row.iter_mut() {
        *o = if *o == f32::NEG_INFINITY {
            0.0
        } else {
            (*o - max).exp()
        };
        sum += *o as f64;
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|o| *o *= inv);
    Ok(())
}

/// `out = silu(gate) ⊙ up` with `silu(x) = x / (1 + exp(−x))` in f32 (ggml's CPU SiLU reads a
/// table indexed by x rounded to f16).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ShapeError> {
    check(gate.len() == up.len() && gate.len() == out.len(), || {
        format!(
            "swiglu of {} and {} values into {}",
            gate.len(),
            up.len(),
            out.len()
        )
    })?;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
    Ok(())
}
