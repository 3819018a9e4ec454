//! q3_K: super-blocks of 256 columns = 16 sub-blocks of 16 with 6-bit scales,
//! `value = d·(sc_j − 32)·(q − 4)` with q of 3 bits.
//!
//! ```text
//! ggml block (110 bytes): 32 bytes hmask (high bits), 64 bytes qs (low 2 bits), 12 bytes of
//!                         6-bit scales, f16 d. Column 128n + 32s + l (s = 0..3, l < 32): low
//!                         bits (qs[32n + l] >> 2s) & 3, high bit (hmask[l] >> (4n + s)) & 1,
//!                         sub-block 8n + 2s + l/16
//! packed group block (1824 bytes, 16 × 114: the scales unpacked to bytes):
//!   0     16 × f16 d
//!   32    16 × 16 i8 scales − 32: [j][r]
//!   288   8 vectors hmask: vector w, lane r = row r's hmask[4w .. +3]
//!         (bit 4n + s: column 128n + 32s + 4w + i)
//!   800   half n = 0, then 1312 half n = 1, each 8 vectors qs: vector v, lane r = row r's
//!         qs[32n + 4v .. +3] (bits 2s, 2s+1: column 128n + 32s + 4v + i)
//! ```
//!
//! The same column order as q6_K (its 4-bit plane is q3_K's 2-bit one, its 2-bit plane q3_K's
//! high bit), so the kernels have q6_K's shape: for each half n and column group s, vectors v
//! = 0..3 are sub-block 8n + 2s and v = 4..7 sub-block 8n + 2s + 1.
//!
//! Activations q8_K. The kernels make the unsigned q = low bits | high bit · 4 (0..7) and
//! subtract 4·Σa per sub-block (the activation sums of 16), as q6_K does with its 32. AVX-512:
//! `vpdpbusd` of 4 vectors per sub-block starting at −4·Σa, one `vpmulld` by the rows' scales.
//! AVX2: `vpmaddubsw` of a sub-block's 4 vectors into i16 (at most 4·2·7·128 = 7168),
//! `vpmaddwd` by the scale, and the offset as one `vpmaddwd` per two sub-blocks (the rows'
//! scale pairs times −4 against the two activation sums).

use crate::act::{f32_le, q8k};
use crate::driver::{f16_at, put_lane, Format};
use crate::{WeightType, GROUP};

pub(crate) struct Q3K;

const SC: usize = 32;
const HM: usize = 288;
const QS: usize = 800;

/// Offset of hmask vector `w` (0..8).
const fn hm_at(w: usize) -> usize {
    HM + 64 * w
}

/// Offset of qs vector `v` (0..8) of half `n`.
const fn qs_at(n: usize, v: usize) -> usize {
    QS + 512 * n + 64 * v
}

/// Sub-block `j`'s scale (6 bits, unsigned) from ggml's 12 packed bytes: the low 4 bits are
/// byte j's low nibble (j < 8) or byte j − 8's high nibble, the high 2 bits are bits
/// 2·(j / 4), +1 of byte 8 + j % 4 (ggml's `dequantize_row_q3_K`).
fn scale(s: &[u8], j: usize) -> i32 {
    let lo = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
    let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (lo | (hi << 4)) as i32
}

/// Column `col`'s q (0..7: value q − 4) in ggml's block.
fn q_at(blk: &[u8], col: usize) -> i32 {
    let (n, l) = (col / 128, col % 128);
    let (s, l32) = (l / 32, l % 32);
    let lo = (blk[32 + 32 * n + l32] >> (2 * s)) & 3;
    let hi = (blk[l32] >> (4 * n + s)) & 1;
    (lo | (hi << 2)) as i32
}

/// Column `col`'s q (0..7) of row `r` in a packed group block.
fn packed_q(p: &[u8], r: usize, col: usize) -> i32 {
    let (n, l) = (col / 128, col % 128);
    let (s, l32) = (l / 32, l % 32);
    let (v, i) = (l32 / 4, l32 % 4);
    let lo = (p[qs_at(n, v) + 4 * r + i] >> (2 * s)) & 3;
    let hi = (p[hm_at(v) + 4 * r + i] >> (4 * n + s)) & 1;
    (lo | (hi << 2)) as i32
}

impl Format for Q3K {
    const TY: WeightType = WeightType::Q3K;
    const HEADER: usize = HM;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[108..110]);
        for j in 0..16 {
            out[SC + 16 * j + r] = (scale(&blk[96..108], j) - 32) as i8 as u8;
        }
        for w in 0..8 {
            put_lane(out, hm_at(w), r, &blk[4 * w..]);
        }
        for v in 0..16 {
            put_lane(out, qs_at(v / 8, v % 8), r, &blk[32 + 4 * v..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let mut sumi = 0i32;
        for col in 0..256 {
            let sc = scale(&blk[96..108], col / 16) - 32;
            sumi += sc * (q_at(blk, col) - 4) * q8k(a, col);
        }
        let t = f16_at(blk, 108) * f32_le(a, 0) * sumi as f32;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for col in 0..256 {
                let sc = p[SC + 16 * (col / 16) + r] as i8 as i32;
                sumi += sc * (packed_q(p, r, col) - 4) * q8k(a, col);
            }
            *acc += f16_at(p, 2 * r) * f32_le(a, 0) * sumi as f32;
        }
    }

    /// For each half n and sub-block parity h, the 4 qs and 4 hmask vectors loaded once and
    /// the 4 sub-blocks s = 0..3 made from them (each step written out, s a constant), as
    /// q6_K's kernel: 4 `vpdpbusd` per sub-block and token starting at −4·Σa, one `vpmulld` by
    /// the rows' scales. One token prefetches 1/16 of the next block with each sub-block,
    /// tiles 1/4 with each (n, h).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn avx512<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        use crate::act::{A_BS16, A_QS};
        use crate::x86::*;
        use std::arch::x86_64::*;
        let (m3, m4) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
        let mut sumi = [_mm512_setzero_si512(); N];
        // sub-block j = 8n + 2s + h: columns 128n + 32s + 16h + 4i .. (i = 0..3)
        for n in 0..2 {
            for h in 0..2 {
                if N > 1 {
                    ahead.part(2 * n + h, 4);
                }
                let mut lo = [_mm512_setzero_si512(); 4];
                let mut hm = [_mm512_setzero_si512(); 4];
                for i in 0..4 {
                    lo[i] = _mm512_loadu_si512(p.add(qs_at(n, 4 * h + i)).cast());
                    hm[i] = _mm512_loadu_si512(p.add(hm_at(4 * h + i)).cast());
                }
                macro_rules! sub_block {
                    ($s:literal) => {{
                        const S: usize = $s;
                        let j = 8 * n + 2 * S + h;
                        if N == 1 {
                            ahead.part(8 * n + 4 * h + S, 16);
                        }
                        let mut u = [_mm512_setzero_si512(); 4];
                        for i in 0..4 {
                            let l = _mm512_srli_epi16::<{ 2 * S as u32 }>(lo[i]);
                            // bit 4n + s of hmask to bit 2
                            let b = if n == 0 {
                                match S {
                                    0 => _mm512_slli_epi16::<2>(hm[i]),
                                    1 => _mm512_slli_epi16::<1>(hm[i]),
                                    2 => hm[i],
                                    _ => _mm512_srli_epi16::<1>(hm[i]),
                                }
                            } else {
                                _mm512_srli_epi16::<{ 2 + S as u32 }>(hm[i])
                            };
                            u[i] =
                                _mm512_or_si512(_mm512_and_si512(l, m3), _mm512_and_si512(b, m4));
                        }
                        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(SC + 16 * j).cast()));
                        for (sumi, &at) in sumi.iter_mut().zip(a) {
                            let q = at.add(A_QS + 128 * n + 32 * S + 16 * h);
                            let bs = half_word(at.add(A_BS16 + 2 * j)) as i32;
                            let x = dot512(_mm512_set1_epi32(-4 * bs), &u, q);
                            *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(x, sc));
                        }
                    }};
                }
                sub_block!(0);
                sub_block!(1);
                sub_block!(2);
                sub_block!(3);
            }
        }
        let dw = f16x16(p);
        for ((acc, &at), &sumi) in acc.iter_mut().zip(a).zip(&sumi) {
            *acc = fma512(*acc, sumi, dw, f32_at(at));
        }
    }

    /// Rows 8·half .. of the group: for each half n and column group s, the 8 vectors' q (one
    /// or two tokens: all 8 first; tiles: each sub-block's 4, used for every token before the
    /// next), `vpmaddubsw` of a sub-block's 4 vectors into i16, `vpmaddwd` by its scale pair.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn avx2<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        half: usize,
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m256; N],
    ) {
        use crate::act::A_QS;
        use crate::x86::*;
        use std::arch::x86_64::*;
        let (m3, m4) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
        let twice = [
            _mm256_loadu_si256(TWICE[0].as_ptr().cast()),
            _mm256_loadu_si256(TWICE[1].as_ptr().cast()),
        ];
        let mut sumi = [_mm256_setzero_si256(); N];
        // Tiles of 5+ tokens: every (n, s) written out, so every shift of hmask is by a
        // constant (256 tokens 153 → 179 GFLOP/s on one core). 1–4 tokens: the halves stay a
        // loop (written out, two and four tokens spilled: 0.076 → 0.15 ms), and half n's bits
        // come down by 4n from a register; with a branch on n there, LLVM emulated a per-lane
        // variable 16-bit shift in 6 operations a vector (one token 0.060 → 0.081 ms).
        {
            macro_rules! group {
                ($n:expr, $s:literal, $rolled:literal) => {{
                    const S: usize = $s;
                    let n: usize = $n;
                    ahead.part(4 * n + S, 8);
                    // each row's two scales as an i16 pair (lane r), and times −4 for the
                    // offset
                    let j0 = 8 * n + 2 * S;
                    let sc_pair = scale_pairs256(p.add(SC), j0, half);
                    let off_pair = _mm256_mullo_epi16(sc_pair, _mm256_set1_epi16(-4));
                    // vector v's q: the low bits of s at bits 0-1, the high bit at bit 2
                    macro_rules! three {
                        ($v:expr) => {{
                            let lo = _mm256_loadu_si256(p.add(qs_at(n, $v) + 32 * half).cast());
                            let lo =
                                _mm256_and_si256(_mm256_srli_epi16::<{ 2 * S as i32 }>(lo), m3);
                            let hm = _mm256_loadu_si256(p.add(hm_at($v) + 32 * half).cast());
                            // bit 4n + s to bit 2: with n a loop variable, half n's bits
                            // first to bits 0-3 by a shift of 4n from a register
                            let (hm, n0) = if $rolled {
                                (_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * n as i32)), true)
                            } else {
                                (hm, n == 0)
                            };
                            let hb = if n0 {
                                match S {
                                    0 => _mm256_slli_epi16::<2>(hm),
                                    1 => _mm256_slli_epi16::<1>(hm),
                                    2 => hm,
                                    _ => _mm256_srli_epi16::<1>(hm),
                                }
                            } else {
                                _mm256_srli_epi16::<{ 2 + S as i32 }>(hm)
                            };
                            _mm256_or_si256(lo, _mm256_and_si256(hb, m4))
                        }};
                    }
                    macro_rules! products {
                        ($u:expr, $at:expr, $sub:expr) => {{
                            let sc = _mm256_shuffle_epi8(sc_pair, twice[$sub]);
                            for t in 0..N {
                                let q = a[t].add(A_QS + 128 * n + 32 * S + 16 * $sub);
                                let s16 = maddubs256::<4>(&$u[$at..], q);
                                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s16, sc));
                            }
                        }};
                    }
                    if N <= 2 {
                        let mut u = [_mm256_setzero_si256(); 8];
                        for (v, u) in u.iter_mut().enumerate() {
                            *u = three!(v);
                        }
                        products!(u, 0, 0);
                        products!(u, 4, 1);
                    } else {
                        for sub in 0..2 {
                            let mut u = [_mm256_setzero_si256(); 4];
                            for (i, u) in u.iter_mut().enumerate() {
                                *u = three!(4 * sub + i);
                            }
                            products!(u, 0, sub);
                        }
                    }
                    // −4·(sc_j0·Σa_j0 + sc_j0+1·Σa_j0+1)
                    add_offsets256(&mut sumi, off_pair, a, j0);
                }};
            }
            if N <= 4 {
                for n in 0..2 {
                    group!(n, 0, true);
                    group!(n, 1, true);
                    group!(n, 2, true);
                    group!(n, 3, true);
                }
            } else {
                group!(0, 0, false);
                group!(0, 1, false);
                group!(0, 2, false);
                group!(0, 3, false);
                group!(1, 0, false);
                group!(1, 1, false);
                group!(1, 2, false);
                group!(1, 3, false);
            }
        }
        let dw = f16x8(p.add(16 * half));
        for t in 0..N {
            acc[t] = fma256(acc[t], sumi[t], dw, f32_at(a[t]));
        }
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    /// NEON: each 16-column sub-block's q − 4 (signed bytes) against the activations, times
    /// the rows' scales in i32.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        use std::arch::aarch64::*;
        let (three, one, four) = (vdupq_n_u8(3), vdupq_n_u8(1), vdupq_n_s8(4));
        sub_blocks16(p, a, acc, SC, |n, s, v, rows| {
            let qs = vld1q_u8(p.add(qs_at(n, v) + 4 * rows));
            let lo = vandq_u8(vshlq_u8(qs, vdupq_n_s8(-2 * s as i8)), three);
            let hm = vld1q_u8(p.add(hm_at(v) + 4 * rows));
            let hi = vandq_u8(vshlq_u8(hm, vdupq_n_s8(-((4 * n + s) as i8))), one);
            let q = vorrq_u8(lo, vshlq_n_u8::<2>(hi));
            vsubq_s8(vreinterpretq_s8_u8(q), four)
        })
    }
}
