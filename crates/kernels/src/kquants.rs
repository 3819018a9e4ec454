//! llama.cpp's K quants (q4_K, q6_K): the packed layout, ggml's q8_K activations, the reference
//! product on ggml's own blocks, and the portable kernel.
//!
//! A super-block is 256 columns. ggml's row-major blocks:
//!
//! ```text
//! q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32,
//!                   128 bytes of nibbles: byte 32c+l holds column 64c+l (low) and 64c+32+l (high)
//!                   value = d·sc_j·q − dmin·m_j
//! q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 × i8 scales (one
//!                   per 16 columns), f16 d;  value = d·sc_j·(q − 32)
//! ```
//!
//! Packed, per group of 16 rows and super-block (every 4-byte lane = 4 consecutive columns of
//! one row, as for q4_0, so `vpdpbusd`/`pmaddubsw` take the weights as the unsigned side):
//!
//! ```text
//! q4_K (2368 bytes, 16 × 148):
//!   0     16 × f16 d          32    16 × f16 dmin
//!   64    8 × 16 u8 scales: [j][r] = row r's scale of sub-block j (unpacked from 6 bits)
//!   192   4 × 16 × 2 u8 mins: [i][r] = row r's (m_2i, m_2i+1), a pair per 16-bit lane once widened
//!   320   32 × 64 bytes: vector 8c+v, lane r = row r's nibble bytes 32c+4v .. 32c+4v+3
//!         (low nibbles: columns 64c+4v+j, high nibbles: 64c+32+4v+j)
//! q6_K (3360 bytes, exactly 16 × 210):
//!   0     16 × f16 d
//!   32    16 × 16 i8 scales: [j][r]
//!   288   32 × 64 bytes ql: vector 16n+v, lane r = row r's ql bytes 64n+4v .. +3
//!         (low nibbles: columns 128n+4v+j, high nibbles: 128n+64+4v+j)
//!   2336  16 × 64 bytes qh: vector 8n+w, lane r = row r's qh bytes 32n+4w .. +3
//!         (bits 0-1: column 128n+4w+j, 2-3: +32, 4-5: +64, 6-7: +96)
//! ```
//!
//! Activations are ggml's q8_K (`quantize_row_q8_K_reference`, which b2757's x86 build uses):
//! per 256 values `d = 1/(−127/max)`, `q = min(127, round_ties_even(x·(−127/max)))`, the sums of
//! each 16 quants; stored as [`Q8K_BLOCK`] bytes: f32 d, 16 × i16 sums of 16, 8 × i16 sums of 32,
//! padding, 256 × i8 at offset 64.

use crate::{check, for_tiles, MatMul, Out, ShapeError, WeightType, GROUP};
use half::f16;

/// Columns of a super-block.
pub const QK_K: usize = 256;
/// Bytes of ggml's q4_K block.
pub const Q4K_BLOCK: usize = 144;
/// Bytes of ggml's q6_K block.
pub const Q6K_BLOCK: usize = 210;
/// Bytes of one group's q4_K super-block, packed (scales unpacked to bytes: +4 per row).
pub const Q4K_GROUP_BLOCK: usize = 2368;
/// Bytes of one quantized activation super-block.
pub const Q8K_BLOCK: usize = 320;

// packed q4_K offsets
pub(crate) const Q4K_DMIN: usize = 32;
pub(crate) const Q4K_SC: usize = 64;
pub(crate) const Q4K_MINS: usize = 192;
pub(crate) const Q4K_QS: usize = 320;
// packed q6_K offsets
pub(crate) const Q6K_SC: usize = 32;
pub(crate) const Q6K_QL: usize = 288;
pub(crate) const Q6K_QH: usize = 2336;
// activation block offsets
pub(crate) const A_BS16: usize = 4;
pub(crate) const A_BS32: usize = 36;
pub(crate) const A_QS: usize = 64;

/// Bytes of one token's q8_K activations (`k` a multiple of 256).
pub fn q8k_row_bytes(k: usize) -> usize {
    k / QK_K * Q8K_BLOCK
}

/// ggml's q8_K quantization of one token (`x.len()` a multiple of 256) into `out`
/// (`q8k_row_bytes(x.len())` bytes), with the sums of 16 and of 32 quants.
pub fn quantize_q8k(x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
    check(x.len().is_multiple_of(QK_K), || {
        format!(
            "{} activations are not whole q8_K blocks of {QK_K}",
            x.len()
        )
    })?;
    check(out.len() == q8k_row_bytes(x.len()), || {
        format!("{} bytes for {} q8_K activations", out.len(), x.len())
    })?;
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BLOCK)) {
        ob.fill(0);
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            continue; // d = 0, quants and sums 0
        }
        let iscale = -127.0f32 / max;
        for (o, &v) in ob[A_QS..].iter_mut().zip(xb) {
            // ggml's nearest_int (round half to even) then MIN(127, ·)
            *o = ((iscale * v).round_ties_even() as i32).min(127) as i8 as u8;
        }
        ob[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for j in 0..16 {
            let s: i32 = ob[A_QS + 16 * j..][..16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            ob[A_BS16 + 2 * j..][..2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        for j in 0..8 {
            let s = bsum16(ob, 2 * j) + bsum16(ob, 2 * j + 1);
            ob[A_BS32 + 2 * j..][..2].copy_from_slice(&(s as i16).to_le_bytes());
        }
    }
    Ok(())
}

#[inline(always)]
fn bsum16(a: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([a[A_BS16 + 2 * j], a[A_BS16 + 2 * j + 1]]) as i32
}

#[inline(always)]
fn bsum32(a: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([a[A_BS32 + 2 * j], a[A_BS32 + 2 * j + 1]]) as i32
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// ggml's `get_scale_min_k4`: scale and min of sub-block `j` from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Repacks (shapes checked by the caller): ggml's rows into groups of 16, padding rows zero.
pub(crate) fn repack(ty: WeightType, src: &[u8], rows: usize, k: usize, dst: &mut [u8]) {
    let nb = k / QK_K;
    let (bb, gbb) = (ty.ggml_block_bytes(), ty.group_block_bytes());
    for (g, group) in dst.chunks_exact_mut(nb * gbb).enumerate() {
        for (b, out) in group.chunks_exact_mut(gbb).enumerate() {
            out.fill(0);
            for r in 0..GROUP.min(rows - g * GROUP) {
                let blk = &src[((g * GROUP + r) * nb + b) * bb..][..bb];
                match ty {
                    WeightType::Q4K => {
                        out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                        out[Q4K_DMIN + 2 * r..][..2].copy_from_slice(&blk[2..4]);
                        for j in 0..8 {
                            let (sc, m) = scale_min_k4(j, &blk[4..16]);
                            out[Q4K_SC + 16 * j + r] = sc;
                            out[Q4K_MINS + 32 * (j / 2) + 2 * r + j % 2] = m;
                        }
                        for v in 0..32 {
                            out[Q4K_QS + 64 * v + 4 * r..][..4]
                                .copy_from_slice(&blk[16 + 4 * v..][..4]);
                        }
                    }
                    _ => {
                        out[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
                        for j in 0..16 {
                            out[Q6K_SC + 16 * j + r] = blk[192 + j];
                        }
                        for v in 0..32 {
                            out[Q6K_QL + 64 * v + 4 * r..][..4].copy_from_slice(&blk[4 * v..][..4]);
                        }
                        for w in 0..16 {
                            out[Q6K_QH + 64 * w + 4 * r..][..4]
                                .copy_from_slice(&blk[128 + 4 * w..][..4]);
                        }
                    }
                }
            }
        }
    }
}

/// One row's super-block against one activation super-block, from ggml's own block:
/// (Σ sc·q·a, Σ m·a) as integers (q4_K; for q6_K the second is 0 and q − 32 is used).
fn ggml_block_dot(ty: WeightType, blk: &[u8], a: &[u8]) -> (i64, i64) {
    let x = |i: usize| a[A_QS + i] as i8 as i64;
    let (mut sumi, mut summ) = (0i64, 0i64);
    match ty {
        WeightType::Q4K => {
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                let (c, hi) = (j / 2, j % 2 == 1);
                let mut s = 0i64;
                let mut sa = 0i64;
                for l in 0..32 {
                    let byte = blk[16 + 32 * c + l];
                    let q = if hi { byte >> 4 } else { byte & 15 } as i64;
                    let col = 64 * c + 32 * (j % 2) + l;
                    s += q * x(col);
                    sa += x(col);
                }
                sumi += sc as i64 * s;
                summ += m as i64 * sa;
            }
        }
        _ => {
            for col in 0..QK_K {
                let (n, l) = (col / 128, col % 128);
                let (g, l32) = (l / 32, l % 32);
                let qlb = blk[64 * n + 32 * (g % 2) + l32];
                let lo = if g < 2 { qlb & 15 } else { qlb >> 4 };
                let hi = (blk[128 + 32 * n + l32] >> (2 * g)) & 3;
                let q = (lo | (hi << 4)) as i64 - 32;
                sumi += blk[192 + col / 16] as i8 as i64 * q * x(col);
            }
        }
    }
    (sumi, summ)
}

/// The reference product on ggml's row-major blocks (see `crate::reference_terms`).
pub(crate) fn reference(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    acts: &[u8],
    n_tokens: usize,
) -> (Vec<f32>, Vec<f32>) {
    let nb = k / QK_K;
    let bb = ty.ggml_block_bytes();
    let arb = q8k_row_bytes(k);
    let mut out = vec![0f32; rows * n_tokens];
    let mut mag = vec![0f32; rows * n_tokens];
    for t in 0..n_tokens {
        for r in 0..rows {
            let (mut acc, mut abs) = (0f32, 0f32);
            for b in 0..nb {
                let blk = &src[(r * nb + b) * bb..][..bb];
                let a = &acts[t * arb + b * Q8K_BLOCK..][..Q8K_BLOCK];
                let da = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
                let (sumi, summ) = ggml_block_dot(ty, blk, a);
                let (d, dmin) = match ty {
                    WeightType::Q4K => (f16_at(blk, 0), f16_at(blk, 2)),
                    _ => (f16_at(blk, 208), 0.0),
                };
                let (t1, t2) = (d * da * sumi as f32, dmin * da * summ as f32);
                acc += t1 - t2;
                abs += t1.abs() + t2.abs();
            }
            out[t * rows + r] = acc;
            mag[t * rows + r] = abs;
        }
    }
    (out, mag)
}

/// The portable kernel on the packed layout: one token at a time, integer sums per row.
pub(crate) fn matmul_scalar(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let nb = m.k / QK_K;
    let gbb = m.ty.group_block_bytes();
    let arb = q8k_row_bytes(m.k);
    for_tiles(&m, groups, 1, |g, t, _| {
        let wg = &w[g * nb * gbb..][..nb * gbb];
        let mut acc = [0f32; GROUP];
        for b in 0..nb {
            let p = &wg[b * gbb..][..gbb];
            let a = &acts[t * arb + b * Q8K_BLOCK..][..Q8K_BLOCK];
            let da = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
            let x = |col: usize| a[A_QS + col] as i8 as i32;
            for (r, acc) in acc.iter_mut().enumerate() {
                let (mut sumi, mut summ) = (0i32, 0i32);
                match m.ty {
                    WeightType::Q4K => {
                        for c in 0..4 {
                            let (mut lo, mut hi) = (0i32, 0i32);
                            for v in 0..8 {
                                for j in 0..4 {
                                    let byte = p[Q4K_QS + 64 * (8 * c + v) + 4 * r + j];
                                    lo += (byte & 15) as i32 * x(64 * c + 4 * v + j);
                                    hi += (byte >> 4) as i32 * x(64 * c + 32 + 4 * v + j);
                                }
                            }
                            sumi += p[Q4K_SC + 16 * (2 * c) + r] as i32 * lo
                                + p[Q4K_SC + 16 * (2 * c + 1) + r] as i32 * hi;
                        }
                        for j in 0..8 {
                            let mn = p[Q4K_MINS + 32 * (j / 2) + 2 * r + j % 2] as i32;
                            summ += mn * bsum32(a, j);
                        }
                        let d = f16_at(p, 2 * r) * da;
                        let dmin = f16_at(p, Q4K_DMIN + 2 * r) * da;
                        *acc += d * sumi as f32;
                        *acc -= dmin * summ as f32;
                    }
                    _ => {
                        for col in 0..QK_K {
                            let (n, l) = (col / 128, col % 128);
                            let (s, l32) = (l / 32, l % 32);
                            let (v, j) = (l32 / 4, l32 % 4);
                            // ql vector: v for s = 0, 2 and 8 + v for s = 1, 3
                            let qlb = p[Q6K_QL + 64 * (16 * n + 8 * (s % 2) + v) + 4 * r + j];
                            let lo = if s < 2 { qlb & 15 } else { qlb >> 4 };
                            let qh = p[Q6K_QH + 64 * (8 * n + v) + 4 * r + j];
                            let q = (lo | (((qh >> (2 * s)) & 3) << 4)) as i32 - 32;
                            sumi += p[Q6K_SC + 16 * (col / 16) + r] as i8 as i32 * q * x(col);
                        }
                        *acc += f16_at(p, 2 * r) * da * sumi as f32;
                    }
                }
            }
        }
        out.put(t, g * GROUP, &acc, GROUP.min(m.rows - g * GROUP));
    });
}
