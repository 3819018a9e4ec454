//! q5_K: super-blocks of 256 columns = 8 sub-blocks of 32 with 6-bit scales and mins,
//! `value = d·sc_j·q − dmin·m_j` with q of 5 bits: q4_K plus a fifth bit per column.
//!
//! ```text
//! ggml block (176 bytes): f16 d, f16 dmin, 12 bytes of scales/mins (as q4_K), 32 bytes qh,
//!                         128 bytes qs (as q4_K); the fifth bit of column 64c+l (l < 32) is
//!                         bit 2c of qh[l], of column 64c+32+l bit 2c+1 of qh[l]
//! packed group block (2880 bytes, 16 × 180): q4_K's header (d, dmin, unpacked scales and
//! mins, 320 bytes), then
//!   320   8 × 64 bytes qh: vector v, lane r = row r's qh[4v .. 4v+3]
//!   832   q4_K's 32 nibble vectors
//! ```
//!
//! The qh vectors come before the nibbles because every sub-block reads them, the first one
//! included: a block read front to back (`Format::HEADER` for the header).
//!
//! Nibble vector 8c+v's fifth bits are bits 2c (low nibbles) and 2c+1 (high nibbles) of qh
//! vector v: one shift and one mask each (`x86::bit_to_4_*`). Activations q8_K. AVX-512 runs
//! q4_K's sub-block code on the 5-bit values; AVX2 sums 4 `vpmaddubsw` in i16 (at most
//! 4·2·31·128 = 31744) and applies the scale with `vpmaddwd`, twice per sub-block.

use crate::driver::{put_lane, Format, Prefetch};
use crate::formats::q4_k::{self, finish_scalar, reference_k, repack_header};
use crate::{WeightType, GROUP};

pub(crate) struct Q5K;

const QH: usize = q4_k::QS;
const QS: usize = QH + 8 * 64;
const SC: usize = q4_k::SC;

/// How [`unpack4_256`] moves bit j of the qh bytes to bit 4: by a constant shift (the caller
/// has written each sub-block out, j a constant: `x86::bit_to_4_256`), or in a loop over j by a
/// 16-bit shift of a register count, left by 4 − j for j ≤ 4 ([`LEFT`]) and right by j − 4 for
/// j ≥ 4 ([`RIGHT`]), then a mask (a 16-bit shift carries each byte's bit j to its own bit 4:
/// the high byte's bit 8 + j to bit 12), or for any j by a shift right by j, a mask and a
/// shift left by 4 ([`BY_J`]: one operation more).
#[cfg(target_arch = "x86_64")]
const CONST_J: u8 = 0;
#[cfg(target_arch = "x86_64")]
const LEFT: u8 = 1;
#[cfg(target_arch = "x86_64")]
const RIGHT: u8 = 2;
#[cfg(target_arch = "x86_64")]
const BY_J: u8 = 3;

/// AVX2: vectors 4k .. 4k+3 of sub-block `j`'s 5-bit quants in the group's half `half`: the
/// nibbles of chunk j/2 (low for even j, high for odd) with bit j of the qh bytes as bit 4
/// (`SHIFT`: [`CONST_J`], [`LEFT`], [`RIGHT`] or [`BY_J`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn unpack4_256<const SHIFT: u8>(
    p: *const u8,
    j: usize,
    k: usize,
    half: usize,
) -> [std::arch::x86_64::__m256i; 4] {
    use std::arch::x86_64::*;
    let c = j / 2;
    let count = match SHIFT {
        LEFT => 4 - j,
        RIGHT => j - 4,
        _ => j,
    };
    let count = _mm_cvtsi32_si128(count as i32);
    let mut u = [_mm256_setzero_si256(); 4];
    for (i, u) in u.iter_mut().enumerate() {
        let v = 4 * k + i;
        let x = _mm256_loadu_si256(p.add(QS + 64 * (8 * c + v) + 32 * half).cast());
        let x = if j % 2 == 1 {
            _mm256_srli_epi16::<4>(x)
        } else {
            x
        };
        let h = _mm256_loadu_si256(p.add(QH + 64 * v + 32 * half).cast());
        let h = match SHIFT {
            CONST_J => crate::x86::bit_to_4_256(h, j),
            LEFT => _mm256_and_si256(_mm256_sll_epi16(h, count), _mm256_set1_epi8(0x10)),
            RIGHT => _mm256_and_si256(_mm256_srl_epi16(h, count), _mm256_set1_epi8(0x10)),
            _ => {
                let h = _mm256_and_si256(_mm256_srl_epi16(h, count), _mm256_set1_epi8(1));
                _mm256_slli_epi16::<4>(h)
            }
        };
        *u = _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi8(0x0f)), h);
    }
    u
}

/// The AVX-512 kernel, with `$five` (an expression of `$x`, `$h`, `$j`) making sub-block `$j`'s
/// 5-bit values from its nibbles (at bits 0-3 of `$x`) and the fifth bits (bit `$j` of `$h`).
/// A macro rather than a closure, so that the expression is compiled with the features of the
/// kernel it is written in.
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_body {
    ($p:ident, $a:ident, $ahead:ident, $acc:ident, |$x:ident, $h:ident, $j:ident| $five:expr) => {{
        use crate::x86::*;
        let mut sumi = [_mm512_setzero_si512(); N];
        for j in 0..8 {
            $ahead.part(j, 8);
            // sub-block j: nibbles of vectors 8(j/2) .., fifth bits = bit j of the qh vectors
            let mut u = [_mm512_setzero_si512(); 8];
            for (v, u) in u.iter_mut().enumerate() {
                let x = _mm512_loadu_si512($p.add(QS + 64 * (8 * (j / 2) + v)).cast());
                let $x = if j % 2 == 1 {
                    _mm512_srli_epi16::<4>(x)
                } else {
                    x
                };
                let $h = _mm512_loadu_si512($p.add(QH + 64 * v).cast());
                let $j = j;
                *u = $five;
            }
            q4_k::k_sub_block_512($p, $a, j, &u, false, &mut sumi);
        }
        q4_k::k_finish_512($p, $a, &sumi, $acc);
    }};
}

impl Format for Q5K {
    const TY: WeightType = WeightType::Q5K;
    const PREFETCH_AVX512: Prefetch = Prefetch::Off;
    const HEADER: usize = QH;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        repack_header(blk, r, out);
        for v in 0..32 {
            put_lane(out, QS + 64 * v, r, &blk[48 + 4 * v..]);
        }
        for v in 0..8 {
            put_lane(out, QH + 64 * v, r, &blk[16 + 4 * v..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        reference_k(blk, a, |col| {
            let (c, l) = (col / 64, col % 64);
            let byte = blk[48 + 32 * c + l % 32];
            let nib = if l < 32 { byte & 15 } else { byte >> 4 };
            let bit = (blk[16 + l % 32] >> (2 * c + l / 32)) & 1;
            (nib | (bit << 4)) as i32
        })
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        use crate::act::q8k;
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for v in 0..8 {
                    for i in 0..4 {
                        let byte = p[QS + 64 * (8 * c + v) + 4 * r + i];
                        let h = p[QH + 64 * v + 4 * r + i];
                        let ql = (byte & 15) | (((h >> (2 * c)) & 1) << 4);
                        let qh = (byte >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
                        lo += ql as i32 * q8k(a, 64 * c + 4 * v + i);
                        hi += qh as i32 * q8k(a, 64 * c + 32 + 4 * v + i);
                    }
                }
                sumi +=
                    p[SC + 16 * (2 * c) + r] as i32 * lo + p[SC + 16 * (2 * c + 1) + r] as i32 * hi;
            }
            finish_scalar(p, a, r, sumi, acc);
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
        let m4 = _mm512_set1_epi8(0x0f);
        avx512_body!(p, a, ahead, acc, |x, h, j| {
            _mm512_or_si512(_mm512_and_si512(x, m4), bit_to_4_512(h, j))
        })
    }

    #[cfg(target_arch = "x86_64")]
    const AVX512_VBMI: bool = true;

    /// With GFNI: the fifth bits put in place by `vgf2p8affineqb` and merged with the nibbles
    /// in one `vpternlogd` (`x86::bit_to_4_gfni`, `x86::merge_nibble`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
    #[inline]
    unsafe fn avx512_vbmi<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        use std::arch::x86_64::*;
        avx512_body!(p, a, ahead, acc, |x, h, j| merge_nibble(
            x,
            bit_to_4_gfni(h, j)
        ))
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
        let mut sumi = [_mm256_setzero_si256(); N];
        // sub-block j in halves of 16 columns: 4 vectors of weights at a time (16 registers hold
        // neither a sub-block pair's 16 vectors nor one sub-block's 8 beside 4 accumulators)
        macro_rules! sub_block {
            ($j:expr, $shift:ident) => {{
                let j = $j;
                ahead.part(j, 8);
                let sc = scales16(p.add(SC + 16 * j + 8 * half), false);
                for k in 0..2 {
                    let u = unpack4_256::<$shift>(p, j, k, half);
                    for (sumi, &at) in sumi.iter_mut().zip(a) {
                        let q = at.add(A_QS + 32 * j + 16 * k);
                        let s = _mm256_madd_epi16(maddubs256::<4>(&u, q), sc);
                        *sumi = _mm256_add_epi32(*sumi, s);
                    }
                }
            }};
        }
        if N > 2 {
            // a tile of prompt tokens: each sub-block written out, one operation fewer per
            // vector (the shift by a constant): 512 tokens × `up`, 2 threads, 307–365 → 391–395
            // GFLOP/s. One or two tokens keep the loop, whose code decoded faster (one core,
            // 512×4096 from its caches: written out, one token took 0.086–0.092 ms against
            // 0.071–0.079, two 0.135–0.153 against 0.084–0.100)
            sub_block!(0, CONST_J);
            sub_block!(1, CONST_J);
            sub_block!(2, CONST_J);
            sub_block!(3, CONST_J);
            sub_block!(4, CONST_J);
            sub_block!(5, CONST_J);
            sub_block!(6, CONST_J);
            sub_block!(7, CONST_J);
        } else {
            for j in 0..4 {
                sub_block!(j, LEFT);
            }
            for j in 4..8 {
                sub_block!(j, RIGHT);
            }
        }
        q4_k::k_finish_256(p, a, half, &sumi, acc);
    }

    /// AVX-VNNI: the AVX2 kernel's steps of 4 vectors with `vpdpbusd`, each sub-block's sum times
    /// the rows' scales with `vpmulld`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    #[inline]
    unsafe fn avx_vnni<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        half: usize,
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m256; N],
    ) {
        use crate::act::A_QS;
        use crate::x86::*;
        use std::arch::x86_64::*;
        let mut sumi = [_mm256_setzero_si256(); N];
        // sub-block j in halves of 16 columns, 4 vectors of weights at a time (as the AVX2
        // kernel), each token's sum of the two halves times the rows' scales in i32
        for j in 0..8 {
            ahead.part(j, 8);
            let sc = scales32(p.add(SC + 16 * j + 8 * half), false);
            // for one or two tokens the two halves' sums in two chains of 4 `vpdpbusd` (one
            // chain of 8 is what one token waited on, see `x86::dot_chains`; more tokens have
            // chains enough, and no registers to spare)
            let chains = if N <= 2 { 2 } else { 1 };
            let mut s = [[_mm256_setzero_si256(); N]; 2];
            for k in 0..2 {
                let u = unpack4_256::<BY_J>(p, j, k, half);
                for (s, &at) in s[k % chains].iter_mut().zip(a) {
                    *s = dot256_vnni(*s, &u, at.add(A_QS + 32 * j + 16 * k));
                }
            }
            for ((sumi, &s0), &s1) in sumi.iter_mut().zip(&s[0]).zip(&s[1]) {
                let s = if chains == 2 {
                    _mm256_add_epi32(s0, s1)
                } else {
                    s0
                };
                *sumi = _mm256_add_epi32(*sumi, _mm256_mullo_epi32(s, sc));
            }
        }
        q4_k::k_finish_256(p, a, half, &sumi, acc);
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        q4_k::neon_k(p, a, acc, QS, Some(QH))
    }
}
