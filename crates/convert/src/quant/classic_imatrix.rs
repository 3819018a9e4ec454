//! The importance-matrix paths of the classic types: llama.cpp 2026's `quantize_row_q4_0_impl`,
//! `_q4_1_impl`, `_q5_0_impl` and `_q5_1_impl`, which replace the reference quantizers (in
//! `classic.rs`) whenever `quant_weights` is given. They search the scale like the k-quants
//! (`make_qx_quants` for q4_0/q5_0, `make_qkx3_quants` for q4_1/q5_1) with the weights
//! `qw[j] * sqrt(sigma2 + x[j]²)`, `sigma2` the mean square of the whole row, and run in
//! ggml-base like them (see `k.rs` for the float rules).

#![allow(clippy::needless_range_loop)] // index loops mirror ggml-quants.c line by line

use super::k::{fp16, make_qkx_quants, make_qx_quants, Qkx};
use gguf::GgmlType;

/// Whether `ty` has an importance-matrix path here.
pub(super) fn is_weighted_classic(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1
    )
}

/// `make_qkx3_quants(32, nmax, x, w, L, &min, Laux, -0.9f, 0.05f, 36, false)`.
fn qkx(nmax: i32) -> Qkx {
    Qkx {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

/// Quantizes one row (whole 32-element blocks) with the weights `qw` into `out`.
pub(super) fn encode_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let bytes = ty.type_size();
    for (ib, (xb, ob)) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let q = &qw[ib * 32..ib * 32 + 32];
        let mut weight = [0f32; 32];
        for j in 0..32 {
            weight[j] = q[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        // the 32 codes (4 or 5 bits each) and the block's f16 scale (and min)
        let mut l = [0u8; 32];
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let nmax = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                let mut li = [0i8; 32];
                let d = make_qx_quants(nmax, xb, &mut li, Some(&weight));
                for j in 0..32 {
                    l[j] = li[j] as u8;
                }
                ob[0..2].copy_from_slice(&fp16(d).to_le_bytes());
            }
            _ => {
                let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
                let (d, the_min) = make_qkx_quants(&qkx(nmax), xb, &weight, &mut l);
                ob[0..2].copy_from_slice(&fp16(d).to_le_bytes());
                ob[2..4].copy_from_slice(&fp16(-the_min).to_le_bytes());
            }
        }
        let (qh_at, qs_at) = match ty {
            GgmlType::Q4_0 => (None, 2),
            GgmlType::Q4_1 => (None, 4),
            GgmlType::Q5_0 => (Some(2), 6),
            _ => (Some(4), 8),
        };
        let mut qh = 0u32;
        for j in 0..16 {
            let (x0, x1) = (l[j], l[j + 16]);
            ob[qs_at + j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
        }
        if let Some(at) = qh_at {
            ob[at..at + 4].copy_from_slice(&qh.to_le_bytes());
        }
    }
}
