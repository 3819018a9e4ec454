//! The non-linear 4-bit types iq4_nl (32-element blocks, 4.5 bpw) and iq4_xs (256-element
//! super-blocks with 6-bit block scales, 4.25 bpw), byte-identical to llama.cpp 2026's
//! `quantize_iq4_nl` / `quantize_iq4_xs` (`quantize_row_iq4_nl_impl` with 7 scale trials) and
//! `dequantize_row_iq4_*`. Each 4-bit code indexes the 16 values of [`KVALUES`]; like the
//! k-quants these run in ggml-base (no FMA contraction, software f16), so every expression is
//! written in C's order (see `k.rs`).

#![allow(clippy::needless_range_loop)] // index loops mirror ggml-quants.c line by line

use super::k::{f16_at, fp16, nearest_int, GROUP_MAX_EPS};
use gguf::GgmlType;

/// ggml's `kvalues_iq4nl`.
const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
/// `quantize_iq4_nl` / `quantize_iq4_xs` try 2 × 7 + 1 scales around the first guess.
const NTRY: i32 = 7;

/// Whether `ty` is handled here.
pub(super) fn is_iq(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ4NL | GgmlType::IQ4XS)
}

/// ggml's `best_index_int8`: the index of the nearest value (the upper one of two unless the
/// lower is strictly nearer).
fn best_index(x: f32) -> u8 {
    let v = |k: usize| KVALUES[k] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `quantize_row_iq4_nl_impl` for one super-block `x` (32 or 256 values): writes the codes into
/// `q4` (x.len()/2 bytes) and, for 256, the 6-bit block scales; returns the f16 scale bits.
fn superblock(
    x: &[f32],
    qw: Option<&[f32]>,
    q4: &mut [u8],
    scales_h: &mut u16,
    scales_l: &mut [u8],
) -> u16 {
    let n = x.len();
    let nb = n / 32;
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / n as f32;
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    let mut weight = [0f32; 32];
    for ib in 0..nb {
        let xb = &x[ib * 32..ib * 32 + 32];
        for j in 0..32 {
            weight[j] = match qw {
                Some(q) => q[ib * 32 + j] * (sigma2 + xb[j] * xb[j]).sqrt(),
                None => xb[j] * xb[j],
            };
        }
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = -max / KVALUES[0] as f32;
        let mut id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for j in 0..32 {
            let k = best_index(id * xb[j]);
            l[ib * 32 + j] = k;
            let q = KVALUES[k as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + KVALUES[0] as i32) as f32 / max;
            let (mut sqx, mut sq2) = (0f32, 0f32);
            for j in 0..32 {
                let q = KVALUES[best_index(id * xb[j]) as usize] as f32;
                let w = weight[j];
                sqx += w * q * xb[j];
                sq2 += w * q * q;
            }
            if sq2 > 0.0 && sqx * sqx > best * sq2 {
                d = sqx / sq2;
                best = d * sqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let dh;
    if nb > 1 {
        *scales_h = 0;
        let d = -max_scale / 32.0;
        dh = fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let li = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[ib * 32 + j] = best_index(idl * x[ib * 32 + j]);
            }
            let lu = (li + 32) as u8;
            if ib % 2 == 0 {
                scales_l[ib / 2] = lu & 0xf;
            } else {
                scales_l[ib / 2] |= (lu & 0xf) << 4;
            }
            *scales_h |= ((lu >> 4) as u16) << (2 * (ib % 8));
        }
    } else {
        dh = fp16(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for j in 0..n {
            l[j] = best_index(id * x[j]);
        }
    }
    for i in 0..nb {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    dh
}

/// Quantizes one row (whole blocks) into `out` (exactly its size).
pub(super) fn encode_row(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let (block, bytes) = (ty.block_size(), ty.type_size());
    for (ib, (xb, ob)) in x
        .chunks_exact(block)
        .zip(out.chunks_exact_mut(bytes))
        .enumerate()
    {
        let qw = imatrix.map(|w| &w[ib * block..(ib + 1) * block]);
        let d = match ty {
            // block_iq4_nl { f16 d; u8 qs[16] }
            GgmlType::IQ4NL => superblock(xb, qw, &mut ob[2..18], &mut 0, &mut []),
            // block_iq4_xs { f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128] }
            _ => {
                let (head, qs) = ob.split_at_mut(8);
                let mut scales_h = 0u16;
                let d = superblock(xb, qw, qs, &mut scales_h, &mut head[4..8]);
                head[2..4].copy_from_slice(&scales_h.to_le_bytes());
                d
            }
        };
        ob[0..2].copy_from_slice(&d.to_le_bytes());
    }
}

/// `dequantize_row_iq4_nl` / `_xs`: appends the values of whole blocks to `dst`.
pub(super) fn decode(ty: GgmlType, src: &[u8], dst: &mut Vec<f32>) {
    let kv = |q: u8| KVALUES[q as usize] as f32;
    match ty {
        GgmlType::IQ4NL => {
            for b in src.chunks_exact(18) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                dst.extend(qs.iter().map(|&q| d * kv(q & 0xf)));
                dst.extend(qs.iter().map(|&q| d * kv(q >> 4)));
            }
        }
        _ => {
            for b in src.chunks_exact(136) {
                let d = f16_at(b, 0);
                let scales_h = u16::from_le_bytes([b[2], b[3]]);
                for ib in 0..8 {
                    let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
                        | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
                    let dl = d * (ls - 32) as f32;
                    let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
                    dst.extend(qs.iter().map(|&q| dl * kv(q & 0xf)));
                    dst.extend(qs.iter().map(|&q| dl * kv(q >> 4)));
                }
            }
        }
    }
}
