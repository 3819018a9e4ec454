//! x86_64 kernels for the K quants (layouts in `kquants`): a tile of up to 4 tokens against one
//! group of 16 rows; per super-block the weights are unpacked once and used by every token.
//!
//! AVX-512 VNNI: `vpdpbusd` sums each sub-block (32 columns for q4_K, 16 for q6_K) into one i32
//! per row, `vpmulld` applies the row's sub-block scale; q4_K's mins are one `vpdpwssd` per two
//! sub-blocks (min pairs × activation sums of 32), q6_K's −32 offset starts each sub-block's sum
//! at −32·Σa. AVX2: `vpmaddubsw` into i16 (q4_K: 8 vectors ≤ 8·2·15·128 = 30720; q6_K: 2 vectors
//! ≤ 2·2·63·128 = 32256, both below 32767), then `vpmaddwd` with the scale in both halves of each
//! 32-bit lane. Every integer sum equals the scalar one; only the float accumulation differs.

use crate::kquants::*;
use crate::{for_tiles, MatMul, Out, WeightType, GROUP};
use std::arch::x86_64::*;

const TILE: usize = 4;
type Tile = [[f32; GROUP]; TILE];

/// Runs `tile(group weights, first activation row, n tokens)` and stores the results.
fn run(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
    tile: impl Fn(&[u8], &[u8], usize) -> Tile,
) {
    let nb = m.k / QK_K;
    let gbb = m.ty.group_block_bytes();
    let arb = q8k_row_bytes(m.k);
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

#[inline(always)]
unsafe fn word(p: *const u8) -> i32 {
    p.cast::<i32>().read_unaligned()
}

#[inline(always)]
unsafe fn half_word(p: *const u8) -> i16 {
    p.cast::<i16>().read_unaligned()
}

macro_rules! by_n {
    ($f:ident, $n:expr, $($arg:expr),*) => {
        match $n {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            _ => $f::<4>($($arg),*),
        }
    };
}

pub(crate) fn matmul_avx512(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let (nb, arb) = (m.k / QK_K, q8k_row_bytes(m.k));
    let q4 = m.ty == WeightType::Q4K;
    run(m, w, acts, groups, out, |wg, a, n| {
        let (wp, ap) = (wg.as_ptr(), a.as_ptr());
        // SAFETY: AVX-512 F/BW/VNNI were detected (matmul checks availability); `wg` holds the
        // group's nb packed super-blocks and `a` n ≤ TILE activation rows of arb bytes (sliced
        // by `run`, sizes checked by MatMul::check), which is all the tiles read.
        unsafe {
            if q4 {
                by_n!(q4k_512, n, wp, nb, ap, arb)
            } else {
                by_n!(q6k_512, n, wp, nb, ap, arb)
            }
        }
    });
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q4k_512<const N: usize>(wg: *const u8, nb: usize, a: *const u8, arb: usize) -> Tile {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * Q4K_GROUP_BLOCK);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
        let dm = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(Q4K_DMIN).cast()));
        let ab = |t: usize| a.add(t * arb + b * Q8K_BLOCK);
        let mut sumi = [_mm512_setzero_si512(); N];
        for c in 0..4 {
            let mut lo = [_mm512_setzero_si512(); 8];
            let mut hi = [_mm512_setzero_si512(); 8];
            for v in 0..8 {
                let x = _mm512_loadu_si512(p.add(Q4K_QS + 64 * (8 * c + v)).cast());
                lo[v] = _mm512_and_si512(x, m4);
                hi[v] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
            }
            let sc_lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(Q4K_SC + 32 * c).cast()));
            let sc_hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(Q4K_SC + 32 * c + 16).cast()));
            for (t, sumi) in sumi.iter_mut().enumerate() {
                let q = ab(t).add(A_QS + 64 * c);
                let (mut sl, mut sh) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for v in 0..8 {
                    sl = _mm512_dpbusd_epi32(sl, lo[v], _mm512_set1_epi32(word(q.add(4 * v))));
                    sh = _mm512_dpbusd_epi32(sh, hi[v], _mm512_set1_epi32(word(q.add(32 + 4 * v))));
                }
                *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(sl, sc_lo));
                *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(sh, sc_hi));
            }
        }
        let mut mins = [_mm512_setzero_si512(); 4];
        for (i, mn) in mins.iter_mut().enumerate() {
            *mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.add(Q4K_MINS + 32 * i).cast()));
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let at = ab(t);
            let mut summ = _mm512_setzero_si512();
            for (i, &mn) in mins.iter().enumerate() {
                let pair = _mm512_set1_epi32(word(at.add(A_BS32 + 4 * i)));
                summ = _mm512_dpwssd_epi32(summ, mn, pair);
            }
            let da = _mm512_set1_ps(at.cast::<f32>().read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, da), *acc);
            *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(dm, da), *acc);
        }
    }
    store512(&acc)
}

#[inline(always)]
unsafe fn store512<const N: usize>(acc: &[__m512; N]) -> Tile {
    let mut res = [[0f32; GROUP]; TILE];
    for (r, acc) in res.iter_mut().zip(acc) {
        _mm512_storeu_ps(r.as_mut_ptr(), *acc);
    }
    res
}

#[allow(clippy::needless_range_loop)] // u[s][i] is indexed by two loops
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q6k_512<const N: usize>(wg: *const u8, nb: usize, a: *const u8, arb: usize) -> Tile {
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * Q6K_BLOCK * GROUP);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
        let ab = |t: usize| a.add(t * arb + b * Q8K_BLOCK);
        let mut sumi = [_mm512_setzero_si512(); N];
        for n in 0..2 {
            for h4 in 0..2 {
                // u[s][i]: columns 128n + 32s + 4(4h4 + i) .. +3, s = 0..3
                let mut u = [[_mm512_setzero_si512(); 4]; 4];
                for i in 0..4 {
                    let w = 4 * h4 + i;
                    let xa = _mm512_loadu_si512(p.add(Q6K_QL + 64 * (16 * n + w)).cast());
                    let xb = _mm512_loadu_si512(p.add(Q6K_QL + 64 * (16 * n + 8 + w)).cast());
                    let qh = _mm512_loadu_si512(p.add(Q6K_QH + 64 * (8 * n + w)).cast());
                    let hb = |x: __m512i| _mm512_and_si512(x, m30);
                    u[0][i] =
                        _mm512_or_si512(_mm512_and_si512(xa, m4), hb(_mm512_slli_epi16::<4>(qh)));
                    u[1][i] =
                        _mm512_or_si512(_mm512_and_si512(xb, m4), hb(_mm512_slli_epi16::<2>(qh)));
                    u[2][i] =
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(xa), m4), hb(qh));
                    u[3][i] = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(xb), m4),
                        hb(_mm512_srli_epi16::<2>(qh)),
                    );
                }
                let mut sc = [_mm512_setzero_si512(); 4];
                for (s, sc) in sc.iter_mut().enumerate() {
                    let j = 8 * n + 2 * s + h4;
                    *sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(Q6K_SC + 16 * j).cast()));
                }
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    let at = ab(t);
                    for s in 0..4 {
                        let j = 8 * n + 2 * s + h4;
                        let q = at.add(A_QS + 128 * n + 32 * s + 16 * h4);
                        let mut x =
                            _mm512_set1_epi32(-32 * half_word(at.add(A_BS16 + 2 * j)) as i32);
                        for i in 0..4 {
                            x = _mm512_dpbusd_epi32(
                                x,
                                u[s][i],
                                _mm512_set1_epi32(word(q.add(4 * i))),
                            );
                        }
                        *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(x, sc[s]));
                    }
                }
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let da = _mm512_set1_ps(ab(t).cast::<f32>().read_unaligned());
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(dw, da), *acc);
        }
    }
    store512(&acc)
}

pub(crate) fn matmul_avx2(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let (nb, arb) = (m.k / QK_K, q8k_row_bytes(m.k));
    let q4 = m.ty == WeightType::Q4K;
    run(m, w, acts, groups, out, |wg, a, n| {
        let mut res = [[0f32; GROUP]; TILE];
        let (wp, ap) = (wg.as_ptr(), a.as_ptr());
        for half in 0..2 {
            // SAFETY: AVX2/FMA/F16C were detected; reads stay inside `wg` (nb packed
            // super-blocks) and `a` (n activation rows), as for the AVX-512 tiles.
            unsafe {
                if q4 {
                    by_n!(q4k_256, n, wp, nb, ap, arb, half, &mut res)
                } else {
                    by_n!(q6k_256, n, wp, nb, ap, arb, half, &mut res)
                }
            }
        }
        res
    });
}

/// 8 scales (u8 or i8 at `p`) as i32 lanes holding the scale in both 16-bit halves.
#[inline(always)]
unsafe fn scales16(p: *const u8, signed: bool) -> __m256i {
    let b = _mm_loadl_epi64(p.cast());
    let s = if signed {
        _mm256_cvtepi8_epi32(b)
    } else {
        _mm256_cvtepu8_epi32(b)
    };
    _mm256_or_si256(
        _mm256_slli_epi32::<16>(s),
        _mm256_and_si256(s, _mm256_set1_epi32(0xffff)),
    )
}

/// Rows 8·half .. 8·half+7 of the group (bytes 32·half .. of each 64-byte vector).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_256<const N: usize>(
    wg: *const u8,
    nb: usize,
    a: *const u8,
    arb: usize,
    half: usize,
    res: &mut Tile,
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * Q4K_GROUP_BLOCK);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half).cast()));
        let dm = _mm256_cvtph_ps(_mm_loadu_si128(p.add(Q4K_DMIN + 16 * half).cast()));
        let ab = |t: usize| a.add(t * arb + b * Q8K_BLOCK);
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            // sub-block j: nibbles (low for even j, high for odd) of vectors 8(j/2) .. +7
            let (c, shift) = (j / 2, j % 2 == 1);
            let mut u = [_mm256_setzero_si256(); 8];
            for (v, u) in u.iter_mut().enumerate() {
                let x = _mm256_loadu_si256(p.add(Q4K_QS + 64 * (8 * c + v) + 32 * half).cast());
                let x = if shift { _mm256_srli_epi16::<4>(x) } else { x };
                *u = _mm256_and_si256(x, m4);
            }
            let sc = scales16(p.add(Q4K_SC + 16 * j + 8 * half), false);
            for (t, sumi) in sumi.iter_mut().enumerate() {
                let q = ab(t).add(A_QS + 32 * j);
                let mut s16 = _mm256_setzero_si256();
                for (v, &u) in u.iter().enumerate() {
                    let x = _mm256_set1_epi32(word(q.add(4 * v)));
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u, x));
                }
                *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(s16, sc));
            }
        }
        let mut mins = [_mm256_setzero_si256(); 4];
        for (i, mn) in mins.iter_mut().enumerate() {
            *mn =
                _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(Q4K_MINS + 32 * i + 16 * half).cast()));
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let at = ab(t);
            let mut summ = _mm256_setzero_si256();
            for (i, &mn) in mins.iter().enumerate() {
                let pair = _mm256_set1_epi32(word(at.add(A_BS32 + 4 * i)));
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mn, pair));
            }
            let da = _mm256_set1_ps(at.cast::<f32>().read_unaligned());
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(dw, da), *acc);
            *acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(dm, da), *acc);
        }
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        _mm256_storeu_ps(r.as_mut_ptr().add(8 * half), *acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_256<const N: usize>(
    wg: *const u8,
    nb: usize,
    a: *const u8,
    arb: usize,
    half: usize,
    res: &mut Tile,
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = wg.add(b * Q6K_BLOCK * GROUP);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half).cast()));
        let ab = |t: usize| a.add(t * arb + b * Q8K_BLOCK);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut osum = [_mm256_setzero_si256(); N];
        for n in 0..2 {
            for s in 0..4 {
                // columns 128n + 32s .. +31: sub-blocks 8n+2s (w 0..3) and 8n+2s+1 (w 4..7)
                let mut u = [_mm256_setzero_si256(); 8];
                for (w, u) in u.iter_mut().enumerate() {
                    let ql = p.add(Q6K_QL + 64 * (16 * n + 8 * (s % 2) + w) + 32 * half);
                    let x = _mm256_loadu_si256(ql.cast());
                    let x = if s >= 2 { _mm256_srli_epi16::<4>(x) } else { x };
                    let qh =
                        _mm256_loadu_si256(p.add(Q6K_QH + 64 * (8 * n + w) + 32 * half).cast());
                    let h = match s {
                        0 => _mm256_slli_epi16::<4>(qh),
                        1 => _mm256_slli_epi16::<2>(qh),
                        2 => qh,
                        _ => _mm256_srli_epi16::<2>(qh),
                    };
                    *u = _mm256_or_si256(_mm256_and_si256(x, m4), _mm256_and_si256(h, m30));
                }
                for sub in 0..2 {
                    let j = 8 * n + 2 * s + sub;
                    let sc = scales16(p.add(Q6K_SC + 16 * j + 8 * half), true);
                    for t in 0..N {
                        let at = ab(t);
                        let q = at.add(A_QS + 16 * j);
                        let mut s32 = _mm256_setzero_si256();
                        for pair in 0..2 {
                            let i = 4 * sub + 2 * pair;
                            let x0 = _mm256_set1_epi32(word(q.add(8 * pair)));
                            let x1 = _mm256_set1_epi32(word(q.add(8 * pair + 4)));
                            let s16 = _mm256_add_epi16(
                                _mm256_maddubs_epi16(u[i], x0),
                                _mm256_maddubs_epi16(u[i + 1], x1),
                            );
                            s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, sc));
                        }
                        sumi[t] = _mm256_add_epi32(sumi[t], s32);
                        // 2·sc·Σa (|Σa| ≤ 16·128, so the i16 fits); −32·sc·Σa = −16 × this
                        let bs = _mm256_set1_epi16(half_word(at.add(A_BS16 + 2 * j)));
                        osum[t] = _mm256_add_epi32(osum[t], _mm256_madd_epi16(sc, bs));
                    }
                }
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32::<4>(osum[t]));
            let da = _mm256_set1_ps(ab(t).cast::<f32>().read_unaligned());
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, da), *acc);
        }
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        _mm256_storeu_ps(r.as_mut_ptr().add(8 * half), *acc);
    }
}
