//! aarch64 kernel (NEON, which every aarch64 CPU has): 4 rows per register. The dot-product
//! instructions (`sdot`) are not in stable Rust yet, so products are widened with `smull` and
//! summed pairwise; the weights are made signed first (nibble − 8, q8 XOR 0x80), so no offset
//! term is needed.

use crate::{act_row_bytes, act_scale, for_tiles, MatMul, Out, WeightType, ACT_BLOCK, GROUP, QK};
use half::f16;
use std::arch::aarch64::*;

pub(crate) fn matmul(m: MatMul, w: &[u8], acts: &[u8], groups: std::ops::Range<usize>, out: Out) {
    let nb = m.k / QK;
    let gbb = m.ty.group_block_bytes();
    let arb = act_row_bytes(m.k);
    for_tiles(&m, groups, 1, |g, t, _| {
        let wg = &w[g * nb * gbb..][..nb * gbb];
        let arow = &acts[t * arb..][..arb];
        let mut res = [0f32; GROUP];
        for quarter in 0..4 {
            // SAFETY: NEON is part of aarch64; the tile reads `wg` (nb group blocks) and `arow`
            // (one activation row), whose sizes MatMul::check verified.
            let r = unsafe { quarter_rows(m.ty, wg, nb, arow, quarter) };
            res[4 * quarter..4 * quarter + 4].copy_from_slice(&r);
        }
        out.put(t, g * GROUP, &res, GROUP.min(m.rows - g * GROUP));
    });
}

/// Rows 4·quarter .. 4·quarter+3 of the group against one token.
#[target_feature(enable = "neon")]
unsafe fn quarter_rows(
    ty: WeightType,
    wg: &[u8],
    nb: usize,
    arow: &[u8],
    quarter: usize,
) -> [f32; 4] {
    let gbb = ty.group_block_bytes();
    let mut facc = vdupq_n_f32(0.0);
    for b in 0..nb {
        let blk = &wg[b * gbb..][..gbb];
        let ab = &arow[b * ACT_BLOCK..][..ACT_BLOCK];
        let (da, _) = act_scale(ab);
        let mut dw = [0f32; 4];
        for (i, d) in dw.iter_mut().enumerate() {
            let r = 4 * quarter + i;
            *d = f16::from_le_bytes([blk[2 * r], blk[2 * r + 1]]).to_f32() * da;
        }
        let q = blk[2 * GROUP + 16 * quarter..].as_ptr();
        let mut u = [vdupq_n_s8(0); 8];
        match ty {
            WeightType::Q4_0 => {
                let (m4, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
                for v in 0..4 {
                    let x = vld1q_u8(q.add(64 * v));
                    u[v] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(x, m4)), eight);
                    u[v + 4] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(x)), eight);
                }
            }
            _ => {
                for (s, u) in u.iter_mut().enumerate() {
                    *u = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q.add(64 * s)), vdupq_n_u8(0x80)));
                }
            }
        }
        let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
        for (i, &u) in u.iter().enumerate() {
            let a4 =
                i32::from_le_bytes([ab[8 + 4 * i], ab[9 + 4 * i], ab[10 + 4 * i], ab[11 + 4 * i]]);
            let x = vreinterpretq_s8_s32(vdupq_n_s32(a4));
            lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(u), vget_low_s8(x)));
            hi = vpadalq_s16(hi, vmull_high_s8(u, x));
        }
        let isum = vpaddq_s32(lo, hi); // rows 0..3 of the quarter
        facc = vfmaq_f32(facc, vcvtq_f32_s32(isum), vld1q_f32(dw.as_ptr()));
    }
    let mut r = [0f32; 4];
    vst1q_f32(r.as_mut_ptr(), facc);
    r
}
