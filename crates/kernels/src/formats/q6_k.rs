//! q6_K: super-blocks of 256 columns = 16 sub-blocks of 16 with 8-bit scales,
//! `value = d·sc_j·(q − 32)` with q of 6 bits.
//!
//! ```text
//! ggml block (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 × i8 scales,
//!                         f16 d. Column 128n + 32s + l (s = 0..3, l < 32): low bits in
//!                         ql[64n + 32(s%2) + l] (low nibble for s < 2, high for s ≥ 2), high
//!                         bits (qh[32n + l] >> 2s) & 3
//! packed group block (3360 bytes, exactly 16 × 210):
//!   0     16 × f16 d
//!   32    16 × 16 i8 scales: [j][r]
//!   288   half n = 0, then 1824 half n = 1 (columns 128n ..), each 24 × 64 bytes:
//!         +0     16 vectors ql: vector v, lane r = row r's ql[64n+4v .. +3]
//!                (low nibbles: columns 128n+4v+i, high nibbles: 128n+64+4v+i)
//!         +1024  8 vectors qh: vector w, lane r = row r's qh[32n+4w .. +3]
//!                (bits 0-1: column 128n+4w+i, 2-3: +32, 4-5: +64, 6-7: +96)
//! ```
//!
//! The kernels take the halves in turn, each half's ql and qh together, so each half's vectors
//! lie together (`Format::HEADER` for the scales). Within a half the AVX-512 kernel takes the
//! columns 32s + 16h .. +15 of every s together (quarter h: ql vectors 4h .. 4h+3 and 8+4h ..,
//! qh vectors 4h ..), AVX2 and NEON 32 columns at a time; the quarters laid out one after the
//! other, so that the AVX-512 kernel reads a block front to back, streamed no faster and cost
//! AVX2 5–10 % (one core, 1–4 tokens), so they are not.
//!
//! Activations q8_K. AVX-512: the 6-bit q (unsigned) times the activations with `vpdpbusd`,
//! starting each 16-column sum at −32·Σa, then one `vpmulld` by the sub-block scales (with GFNI,
//! the high bits put in place by `vgf2p8affineqb`). AVX2: `vpmaddubsw` of 2 vectors into i16
//! (at most 2·2·63·128 = 32256), `vpmaddwd` by the scale, and the −32 offset as one `vpmaddwd`
//! per two sub-blocks (the rows' scale pairs times −32 against the two activation sums).

use crate::act::{f32_le, q8k};
use crate::driver::{f16_at, put_lane, Format, Prefetch};
use crate::{WeightType, GROUP};

pub(crate) struct Q6K;

/// The AVX-512 kernel, with `$six` (an expression of `$ql`, `$qh`, `$s`) making a vector of
/// 6-bit values from the low bits `$ql` (their nibble at bits 0-3) and the high bits `$qh` (those
/// of column group `$s` at bits 2s, 2s+1). A macro rather than a closure, so that the expression
/// is compiled with the features of the kernel it is written in.
///
/// Each quarter of the block (half `n`, sub-block parity `h`) loads its 8 ql and 4 qh vectors
/// once and makes the 4 sub-blocks `s = 0..3` from them (ql's low nibbles for s = 0, 1, its high
/// nibbles for s = 2, 3; qh's bit pairs for every s), each step written out with `s` a constant,
/// so that the loop over the block's 16 sub-blocks needs no index arithmetic and no branches.
/// One token issues 1/16 of the next block's prefetch with each sub-block (rather than 1/4 with
/// each quarter: slow memory 86 → 89 % of the paired probe), tiles of several tokens 1/4 with
/// each quarter (1/16 there made 4–8 tokens 1.5–2× slower: the code LLVM made spilled).
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_body {
    ($p:ident, $a:ident, $ahead:ident, $acc:ident, |$ql:ident, $qh:ident, $s:ident| $six:block) => {{
        use crate::act::{A_BS16, A_QS};
        use crate::x86::*;
        let mut sumi = [_mm512_setzero_si512(); N];
        // sub-block j = 8n + 2s + h: columns 128n + 32s + 16h + 4i .. (i = 0..3)
        for n in 0..2 {
            for h in 0..2 {
                if N > 1 {
                    $ahead.part(2 * n + h, 4);
                }
                let mut ql = [[_mm512_setzero_si512(); 4]; 2];
                let mut qh = [_mm512_setzero_si512(); 4];
                for i in 0..4 {
                    let w = 4 * h + i;
                    ql[0][i] = _mm512_loadu_si512($p.add(ql_at(n, w)).cast());
                    ql[1][i] = _mm512_loadu_si512($p.add(ql_at(n, 8 + w)).cast());
                    qh[i] = _mm512_loadu_si512($p.add(qh_at(n, w)).cast());
                }
                macro_rules! sub_block {
                    ($sc:literal) => {{
                        let $s: usize = $sc;
                        let j = 8 * n + 2 * $s + h;
                        if N == 1 {
                            $ahead.part(8 * n + 4 * h + $s, 16);
                        }
                        let mut u = [_mm512_setzero_si512(); 4];
                        for i in 0..4 {
                            let $ql = if $s >= 2 {
                                _mm512_srli_epi16::<4>(ql[$s % 2][i])
                            } else {
                                ql[$s % 2][i]
                            };
                            let $qh = qh[i];
                            u[i] = $six;
                        }
                        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128($p.add(SC + 16 * j).cast()));
                        for (sumi, &at) in sumi.iter_mut().zip($a) {
                            let q = at.add(A_QS + 16 * j);
                            let bs = half_word(at.add(A_BS16 + 2 * j)) as i32;
                            let x = dot512(_mm512_set1_epi32(-32 * bs), &u, q);
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
        let dw = f16x16($p);
        for ((acc, &at), &sumi) in $acc.iter_mut().zip($a).zip(&sumi) {
            *acc = fma512(*acc, sumi, dw, f32_at(at));
        }
    }};
}

const SC: usize = 32;
const QL: usize = 288;

/// Bytes of one 128-column half's vectors: 16 of ql, then 8 of qh.
const HALF: usize = 24 * 64;

/// Offset of ql vector `v` (0..16) of half `n`.
const fn ql_at(n: usize, v: usize) -> usize {
    QL + HALF * n + 64 * v
}

/// Offset of qh vector `w` (0..8) of half `n`.
const fn qh_at(n: usize, w: usize) -> usize {
    QL + HALF * n + 16 * 64 + 64 * w
}

impl Format for Q6K {
    const TY: WeightType = WeightType::Q6K;
    const PREFETCH_AVX512: Prefetch = Prefetch::Twice;
    const HEADER: usize = QL;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
        for j in 0..16 {
            out[SC + 16 * j + r] = blk[192 + j];
        }
        for v in 0..32 {
            put_lane(out, ql_at(v / 16, v % 16), r, &blk[4 * v..]);
        }
        for w in 0..16 {
            put_lane(out, qh_at(w / 8, w % 8), r, &blk[128 + 4 * w..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let mut sumi = 0i32;
        for col in 0..256 {
            let (n, l) = (col / 128, col % 128);
            let (s, l32) = (l / 32, l % 32);
            let qlb = blk[64 * n + 32 * (s % 2) + l32];
            let lo = if s < 2 { qlb & 15 } else { qlb >> 4 };
            let hi = (blk[128 + 32 * n + l32] >> (2 * s)) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            sumi += blk[192 + col / 16] as i8 as i32 * q * q8k(a, col);
        }
        let t = f16_at(blk, 208) * f32_le(a, 0) * sumi as f32;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for col in 0..256 {
                let (n, l) = (col / 128, col % 128);
                let (s, l32) = (l / 32, l % 32);
                let (v, i) = (l32 / 4, l32 % 4);
                // ql vector: v for s = 0, 2 and 8 + v for s = 1, 3
                let qlb = p[ql_at(n, 8 * (s % 2) + v) + 4 * r + i];
                let lo = if s < 2 { qlb & 15 } else { qlb >> 4 };
                let qh = p[qh_at(n, v) + 4 * r + i];
                let q = (lo | (((qh >> (2 * s)) & 3) << 4)) as i32 - 32;
                sumi += p[SC + 16 * (col / 16) + r] as i8 as i32 * q * q8k(a, col);
            }
            *acc += f16_at(p, 2 * r) * f32_le(a, 0) * sumi as f32;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn avx512<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        use std::arch::x86_64::*;
        let (m4, m30) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
        avx512_body!(p, a, ahead, acc, |ql, qh, s| {
            // bits 2s, 2s+1 of qh to bits 4, 5
            let hb = match s {
                0 => _mm512_slli_epi16::<4>(qh),
                1 => _mm512_slli_epi16::<2>(qh),
                2 => qh,
                _ => _mm512_srli_epi16::<2>(qh),
            };
            _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(hb, m30))
        })
    }

    #[cfg(target_arch = "x86_64")]
    const AVX512_VBMI: bool = true;

    /// With GFNI (which every CPU with AVX-512 VBMI has): `vgf2p8affineqb` moves bits 2s, 2s+1
    /// of each qh byte to bits 4, 5 and clears the rest, one `vpternlogd` takes the low nibble
    /// from ql and bits 4-5 from that: 2 operations (3 for s ≥ 2) where the kernel above has 4
    /// (5). One token's product, 2 threads: 78 → 83 % of the paired read probe (medians of 8,
    /// docs/benchmarks.md).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
    #[inline]
    unsafe fn avx512_vbmi<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        use crate::x86::gf_move;
        use std::arch::x86_64::*;
        // the bit matrix of each s: bits 2s, 2s+1 to bits 4, 5
        let pick: [__m512i; 4] =
            std::array::from_fn(|s| _mm512_set1_epi64(gf_move(2 * s, 4) | gf_move(2 * s + 1, 5)));
        avx512_body!(p, a, ahead, acc, |ql, qh, s| {
            merge_nibble(ql, _mm512_gf2p8affine_epi64_epi8::<0>(qh, pick[s]))
        })
    }

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
        let m4 = _mm256_set1_epi8(0x0f);
        let m30 = _mm256_set1_epi8(0x30);
        let twice = [
            _mm256_loadu_si256(TWICE[0].as_ptr().cast()),
            _mm256_loadu_si256(TWICE[1].as_ptr().cast()),
        ];
        let mut sumi = [_mm256_setzero_si256(); N];
        for n in 0..2 {
            // columns 128n + 32s .. +31 (sub-blocks 8n+2s: vectors w 0..3, 8n+2s+1: w 4..7),
            // written out for each s (a loop over s kept the vectors and the scale indices in
            // memory and branched on s in every step)
            macro_rules! quarter {
                ($s:literal) => {{
                    const S: usize = $s;
                    ahead.part(4 * n + S, 8);
                    // each row's two scales as an i16 pair (lane r), and times −32 for the
                    // offset (|−32·sc| ≤ 4096)
                    let j0 = 8 * n + 2 * S;
                    let sc_pair = scale_pairs256(p.add(SC), j0, half);
                    let off_pair = _mm256_mullo_epi16(sc_pair, _mm256_set1_epi16(-32));
                    // vector w's 6-bit values (ql's nibble, qh's two bits of s at bits 4, 5)
                    macro_rules! six {
                        ($w:expr) => {{
                            let ql = p.add(ql_at(n, 8 * (S % 2) + $w) + 32 * half);
                            let x = _mm256_loadu_si256(ql.cast());
                            let x = if S >= 2 { _mm256_srli_epi16::<4>(x) } else { x };
                            let qh = p.add(qh_at(n, $w) + 32 * half);
                            let qh = _mm256_loadu_si256(qh.cast());
                            let h = match S {
                                0 => _mm256_slli_epi16::<4>(qh),
                                1 => _mm256_slli_epi16::<2>(qh),
                                2 => qh,
                                _ => _mm256_srli_epi16::<2>(qh),
                            };
                            let (x, h) = (_mm256_and_si256(x, m4), _mm256_and_si256(h, m30));
                            _mm256_or_si256(x, h)
                        }};
                    }
                    // sub-block j0 + sub (its vectors in u[at..at + 4]) times every token
                    macro_rules! products {
                        ($u:expr, $at:expr, $sub:expr, $twice:expr) => {{
                            let sc = _mm256_shuffle_epi8(sc_pair, $twice);
                            for t in 0..N {
                                let q = a[t].add(A_QS + 16 * (j0 + $sub));
                                for pair in 0..2 {
                                    let u = &$u[$at + 2 * pair..];
                                    let s16 = maddubs256::<2>(u, q.add(8 * pair));
                                    let s = _mm256_madd_epi16(s16, sc);
                                    sumi[t] = _mm256_add_epi32(sumi[t], s);
                                }
                            }
                        }};
                    }
                    if N <= 2 {
                        // one or two tokens: all 8 vectors first
                        let mut u = [_mm256_setzero_si256(); 8];
                        for (w, u) in u.iter_mut().enumerate() {
                            *u = six!(w);
                        }
                        for (sub, &twice) in twice.iter().enumerate() {
                            products!(u, 4 * sub, sub, twice);
                        }
                    } else {
                        // a tile: each sub-block's 4 vectors made and used for every token
                        // before the next (8 held beside 8 tokens' sums spilled)
                        for (sub, &twice) in twice.iter().enumerate() {
                            let mut u = [_mm256_setzero_si256(); 4];
                            for (i, u) in u.iter_mut().enumerate() {
                                *u = six!(4 * sub + i);
                            }
                            products!(u, 0, sub, twice);
                        }
                    }
                    // −32·(sc_j0·Σa_j0 + sc_j0+1·Σa_j0+1) (|Σa| ≤ 16·128)
                    add_offsets256(&mut sumi, off_pair, a, j0);
                }};
            }
            quarter!(0);
            quarter!(1);
            quarter!(2);
            quarter!(3);
        }
        let dw = f16x8(p.add(16 * half));
        for t in 0..N {
            acc[t] = fma256(acc[t], sumi[t], dw, f32_at(a[t]));
        }
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    /// NEON: each 16-column sub-block's 6-bit q − 32 (signed bytes) against the activations,
    /// times the rows' scales in i32.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        use std::arch::aarch64::*;
        let (m4, three, m32) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
        sub_blocks16(p, a, acc, SC, |n, s, w, rows| {
            let ql = vld1q_u8(p.add(ql_at(n, 8 * (s % 2) + w) + 4 * rows));
            let lo = if s >= 2 {
                vshrq_n_u8::<4>(ql)
            } else {
                vandq_u8(ql, m4)
            };
            let qh = vld1q_u8(p.add(qh_at(n, w) + 4 * rows));
            let hi = vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * s as i8)), three);
            let q = vorrq_u8(lo, vshlq_n_u8::<4>(hi));
            vsubq_s8(vreinterpretq_s8_u8(q), m32)
        })
    }
}
