//! x86_64 kernels: AVX-512 VNNI (`vpdpbusd`, 16 rows per register) and AVX2 (`vpmaddubsw`,
//! 8 rows per register). Both run a tile of up to 4 tokens against one group of 16 rows, so each
//! group's weights are unpacked once per block and used for every token of the tile.

use crate::{act_row_bytes, for_tiles, MatMul, Out, WeightType, ACT_BLOCK, GROUP, QK};
use std::arch::x86_64::*;

/// Tokens per tile.
const TILE: usize = 4;

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub(crate) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

type Tile = [[f32; GROUP]; TILE];

/// Runs `tile(group weights, first activation block, n tokens)` over the groups and tokens and
/// stores the results.
fn run(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
    tile: impl Fn(&[u8], &[u8], usize) -> Tile,
) {
    let nb = m.k / QK;
    let gbb = m.ty.group_block_bytes();
    let arb = act_row_bytes(m.k);
    for_tiles(&m, groups, TILE, |g, t0, n| {
        let res = tile(
            &w[g * nb * gbb..][..nb * gbb],
            &acts[t0 * arb..][..n * arb],
            n,
        );
        let valid = GROUP.min(m.rows - g * GROUP);
        for (i, r) in res.iter().enumerate().take(n) {
            out.put(t0 + i, g * GROUP, r, valid);
        }
    });
}

/// Reads 4 activation bytes as one 32-bit lane value.
#[inline(always)]
unsafe fn word(p: *const u8) -> i32 {
    p.cast::<i32>().read_unaligned()
}

pub(crate) fn matmul_avx512(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let (nb, arb) = (m.k / QK, act_row_bytes(m.k));
    run(m, w, acts, groups, out, |wg, a, n| {
        macro_rules! go {
            ($q8:expr) => {
                // SAFETY: AVX-512 F/BW/VNNI were detected (matmul checks availability); `wg` holds
                // the group's nb blocks and `a` n ≤ TILE activation rows of arb bytes (sliced
                // above, sizes checked by MatMul::check), which is all the tile reads.
                unsafe {
                    match n {
                        1 => tile512::<1, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb),
                        2 => tile512::<2, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb),
                        3 => tile512::<3, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb),
                        _ => tile512::<4, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb),
                    }
                }
            };
        }
        match m.ty {
            WeightType::Q4_0 => go!(false),
            _ => go!(true),
        }
    });
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile512<const N: usize, const Q8: bool>(
    wg: *const u8,
    nb: usize,
    a: *const u8,
    arb: usize,
) -> Tile {
    let gbb = if Q8 {
        WeightType::Q8_0
    } else {
        WeightType::Q4_0
    }
    .group_block_bytes();
    let off = if Q8 { -128 } else { -8 };
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * gbb);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
        let q = p.add(2 * GROUP);
        let mut u = [_mm512_setzero_si512(); 8];
        if Q8 {
            for (s, u) in u.iter_mut().enumerate() {
                *u = _mm512_loadu_si512(q.add(64 * s).cast());
            }
        } else {
            for v in 0..4 {
                let x = _mm512_loadu_si512(q.add(64 * v).cast());
                u[v] = _mm512_and_si512(x, m4);
                u[v + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let ab = a.add(t * arb + b * ACT_BLOCK);
            let da = ab.cast::<f32>().read_unaligned();
            let mut s = _mm512_set1_epi32(off * word(ab.add(4)));
            for (i, &u) in u.iter().enumerate() {
                s = _mm512_dpbusd_epi32(s, u, _mm512_set1_epi32(word(ab.add(8 + 4 * i))));
            }
            *acc = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(s),
                _mm512_mul_ps(dw, _mm512_set1_ps(da)),
                *acc,
            );
        }
    }
    let mut res = [[0f32; GROUP]; TILE];
    for (r, acc) in res.iter_mut().zip(&acc) {
        _mm512_storeu_ps(r.as_mut_ptr(), *acc);
    }
    res
}

pub(crate) fn matmul_avx2(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let (nb, arb) = (m.k / QK, act_row_bytes(m.k));
    run(m, w, acts, groups, out, |wg, a, n| {
        let mut res = [[0f32; GROUP]; TILE];
        for half in 0..2 {
            macro_rules! go {
                ($q8:expr) => {
                    // SAFETY: AVX2/FMA/F16C were detected; reads stay inside `wg` (nb group blocks)
                    // and `a` (n activation rows), as for the AVX-512 tile.
                    unsafe {
                        match n {
                            1 => {
                                tile256::<1, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb, half, &mut res)
                            }
                            2 => {
                                tile256::<2, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb, half, &mut res)
                            }
                            3 => {
                                tile256::<3, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb, half, &mut res)
                            }
                            _ => {
                                tile256::<4, $q8>(wg.as_ptr(), nb, a.as_ptr(), arb, half, &mut res)
                            }
                        }
                    }
                };
            }
            match m.ty {
                WeightType::Q4_0 => go!(false),
                _ => go!(true),
            }
        }
        res
    });
}

/// Rows 8·half .. 8·half+7 of the group (bytes 32·half .. of each 64-byte vector).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile256<const N: usize, const Q8: bool>(
    wg: *const u8,
    nb: usize,
    a: *const u8,
    arb: usize,
    half: usize,
    res: &mut Tile,
) {
    let gbb = if Q8 {
        WeightType::Q8_0
    } else {
        WeightType::Q4_0
    }
    .group_block_bytes();
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * gbb);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half).cast()));
        let q = p.add(2 * GROUP + 32 * half);
        let mut u = [_mm256_setzero_si256(); 8];
        if Q8 {
            for (s, u) in u.iter_mut().enumerate() {
                // back to the signed quants: pmaddubsw would saturate on q + 128
                *u = _mm256_xor_si256(_mm256_loadu_si256(q.add(64 * s).cast()), flip);
            }
        } else {
            for v in 0..4 {
                let x = _mm256_loadu_si256(q.add(64 * v).cast());
                u[v] = _mm256_and_si256(x, m4);
                u[v + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let ab = a.add(t * arb + b * ACT_BLOCK);
            let da = ab.cast::<f32>().read_unaligned();
            let s = if Q8 {
                // Σ q·a as Σ |q| · (a with q's sign): pairs stay below 2·128·127
                let mut s = _mm256_setzero_si256();
                for (i, &u) in u.iter().enumerate() {
                    let x = _mm256_set1_epi32(word(ab.add(8 + 4 * i)));
                    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x, u));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                }
                s
            } else {
                // nibble products: 8 pair sums of at most 2·15·127 each fit an i16
                let mut s16 = _mm256_setzero_si256();
                for (i, &u) in u.iter().enumerate() {
                    let x = _mm256_set1_epi32(word(ab.add(8 + 4 * i)));
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u, x));
                }
                _mm256_add_epi32(
                    _mm256_madd_epi16(s16, ones),
                    _mm256_set1_epi32(-8 * word(ab.add(4))),
                )
            };
            *acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(s),
                _mm256_mul_ps(dw, _mm256_set1_ps(da)),
                *acc,
            );
        }
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        _mm256_storeu_ps(r.as_mut_ptr().add(8 * half), *acc);
    }
}
