//! The portable kernel: the packed layout walked with plain integer arithmetic.

use crate::{act_row_bytes, act_scale, for_tiles, MatMul, Out, WeightType, ACT_BLOCK, GROUP, QK};
use half::f16;

pub(crate) fn matmul(m: MatMul, w: &[u8], acts: &[u8], groups: std::ops::Range<usize>, out: Out) {
    let nb = m.k / QK;
    let gbb = m.ty.group_block_bytes();
    let arb = act_row_bytes(m.k);
    for_tiles(&m, groups, 1, |g, t, _| {
        let wg = &w[g * nb * gbb..][..nb * gbb];
        let arow = &acts[t * arb..][..arb];
        let mut acc = [0f32; GROUP];
        for b in 0..nb {
            let blk = &wg[b * gbb..][..gbb];
            let ab = &arow[b * ACT_BLOCK..][..ACT_BLOCK];
            let (da, sum) = act_scale(ab);
            let a = &ab[8..];
            let q = &blk[2 * GROUP..];
            for (r, acc) in acc.iter_mut().enumerate() {
                let mut isum = m.ty.offset() * sum;
                match m.ty {
                    WeightType::Q4_0 => {
                        for v in 0..4 {
                            for j in 0..4 {
                                let byte = q[v * 64 + 4 * r + j];
                                isum += (byte & 15) as i32 * a[4 * v + j] as i8 as i32;
                                isum += (byte >> 4) as i32 * a[16 + 4 * v + j] as i8 as i32;
                            }
                        }
                    }
                    _ => {
                        for s in 0..8 {
                            for j in 0..4 {
                                isum += q[s * 64 + 4 * r + j] as i32 * a[4 * s + j] as i8 as i32;
                            }
                        }
                    }
                }
                let dw = f16::from_le_bytes([blk[2 * r], blk[2 * r + 1]]).to_f32();
                *acc += dw * da * isum as f32;
            }
        }
        let n = GROUP.min(m.rows - g * GROUP);
        out.put(t, g * GROUP, &acc, n);
    });
}
