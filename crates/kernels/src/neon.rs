//! aarch64 (NEON, which every aarch64 CPU has): the driver and the helpers of every format's
//! kernel, 4 rows per register, one token at a time. The dot-product instructions (`sdot`) are
//! not in stable Rust yet, so products are widened with `smull` and summed pairwise; the 32-column
//! formats make their weights signed first (nibble − 8, q8 XOR 0x80, the iq4_nl table), so no
//! offset term is needed. The K formats and iq4_xs multiply each sub-block's sum by the rows'
//! scales in i32 (`mla`), as their x86 kernels do; q6_K's q − 32 is made signed, q4_K/q5_K's
//! unsigned quants need no sign and their mins are subtracted per super-block.

use crate::driver::{f16_at, for_tiles, Format, Strides};
use crate::{MatMul, Out, GROUP};
use std::arch::aarch64::*;

pub(crate) fn matmul<F: Format>(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let s = Strides::of(&m);
    for_tiles(&m, groups, 1, |g, t, _| {
        let wg = &w[g * s.nb * s.gbb..][..s.nb * s.gbb];
        let arow = &acts[t * s.arb..][..s.arb];
        let mut res = [0f32; GROUP];
        // SAFETY: NEON is part of aarch64; the loop reads `wg` (nb group blocks) and `arow` (one
        // activation row), whose sizes MatMul::check verified.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 4];
            for b in 0..s.nb {
                F::neon(
                    wg.as_ptr().add(b * s.gbb),
                    arow.as_ptr().add(b * s.abb),
                    &mut acc,
                );
            }
            for (q, acc) in acc.iter().enumerate() {
                vst1q_f32(res.as_mut_ptr().add(4 * q), *acc);
            }
        }
        out.put(t, g * GROUP, &res, GROUP.min(m.rows - g * GROUP));
    });
}

/// The f32 at `p`.
#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    p.cast::<f32>().read_unaligned()
}

/// `Σ_i u[i] · (4 activation bytes at q + 4i, broadcast)` for 4 rows: each `u[i]` holds 4 rows ×
/// 4 consecutive columns (signed), the result one i32 per row. Each product is at most
/// 128·127 in magnitude (an i16), pairs are summed into i32.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn dot32(u: &[int8x16_t; 8], q: *const u8) -> int32x4_t {
    dot(u, q)
}

/// [`dot32`] over `K` vectors (4·K columns).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn dot<const K: usize>(u: &[int8x16_t; K], q: *const u8) -> int32x4_t {
    let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for (i, &u) in u.iter().enumerate() {
        let x = vreinterpretq_s8_s32(vdupq_n_s32(q.add(4 * i).cast::<i32>().read_unaligned()));
        lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(u), vget_low_s8(x))); // rows 0, 1
        hi = vpadalq_s16(hi, vmull_high_s8(u, x)); // rows 2, 3
    }
    vpaddq_s32(lo, hi)
}

/// 4 f16 at `p` as f32 lanes.
#[inline(always)]
pub(crate) unsafe fn f16x4(p: *const u8) -> float32x4_t {
    let b = std::slice::from_raw_parts(p, 8);
    let v = [f16_at(b, 0), f16_at(b, 2), f16_at(b, 4), f16_at(b, 6)];
    vld1q_f32(v.as_ptr())
}

/// `acc + f32(isum) · (d · da)` with `d` the 4 rows' f16 scales at `d`.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn scale_add(
    acc: float32x4_t,
    isum: int32x4_t,
    d: *const u8,
    da: f32,
) -> float32x4_t {
    vfmaq_f32(acc, vcvtq_f32_s32(isum), vmulq_n_f32(f16x4(d), da))
}

/// 4 bytes at `p` (u8, or i8 when `signed`) as i32 lanes: one scale per row.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn bytes4(p: *const u8, signed: bool) -> int32x4_t {
    let b = std::slice::from_raw_parts(p, 4);
    let v: [i32; 4] = std::array::from_fn(|i| {
        if signed {
            b[i] as i8 as i32
        } else {
            b[i] as i32
        }
    });
    vld1q_s32(v.as_ptr())
}

/// The 16-column sub-blocks of q3_K and q6_K (sub-block j = 8n + 2s + h: columns
/// 128n + 32s + 16h ..): for each quarter of the group (4 rows) and each sub-block, `u(n, s, v,
/// rows)` makes vector v's (0..8 within the half's column group) signed values q − offset for
/// rows `rows ..`, the 4 vectors of the sub-block are dotted with the activations and the sum
/// is multiplied by the rows' i8 scales (`sc`: the offset of the 16 × 16 scales, [j][r]).
/// NEON is part of every aarch64 target, so `u` (a closure) is compiled with it too.
#[inline(always)]
pub(crate) unsafe fn sub_blocks16(
    p: *const u8,
    a: *const u8,
    acc: &mut [float32x4_t; 4],
    sc: usize,
    u: impl Fn(usize, usize, usize, usize) -> int8x16_t,
) {
    use crate::act::A_QS;
    for (quarter, acc) in acc.iter_mut().enumerate() {
        let rows = 4 * quarter;
        let mut sumi = vdupq_n_s32(0);
        for j in 0..16 {
            let (n, s, h) = (j / 8, (j % 8) / 2, j % 2);
            let v: [int8x16_t; 4] = std::array::from_fn(|i| u(n, s, 4 * h + i, rows));
            let d = dot::<4>(&v, a.add(A_QS + 128 * n + 32 * s + 16 * h));
            sumi = vmlaq_s32(sumi, d, bytes4(p.add(sc + 16 * j + rows), true));
        }
        *acc = scale_add(*acc, sumi, p.add(2 * rows), f32_at(a));
    }
}
