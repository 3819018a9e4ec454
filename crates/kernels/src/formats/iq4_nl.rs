//! iq4_nl: blocks of 32 columns, `value = d · KVALUES[q]` with q a nibble indexing a non-linear
//! table (llama.cpp's `kvalues_iq4nl`, the same in b2757 and 2026).
//!
//! ```text
//! ggml block (18 bytes):  f16 d, 16 bytes qs: byte j = column j (low nibble), 16+j (high)
//! packed group block (288 bytes = 16 × 18), exactly q4_0's:
//!   0    16 × f16 d
//!   32   4 × 64 bytes: vector v, lane r = row r's qs[4v .. 4v+3]
//! ```
//!
//! Activations q8_0 (ggml's `vec_dot_type` for iq4_nl). A nibble becomes its value with one byte
//! shuffle (`vpshufb`, NEON `tbl`). AVX-512 looks up KVALUES + 128 (1..241, unsigned) for
//! `vpdpbusd` and subtracts 128·Σa; AVX2's `vpmaddubsw` would saturate on those, so it looks up
//! |value| and multiplies it by the activations with the value's sign (pairs of at most
//! 2·127·127), as ggml does, except that the sign comes from the nibble's top bit rather than
//! from the looked-up value ([`magnitudes_and_flips256`]).
//!
//! b2757's AVX2 `ggml_vec_dot_iq4_nl_q8_0` takes blocks two at a time with no tail, so on a row
//! with an odd number of blocks (the fixture's ffn width 352 = 11 blocks) it reads one block past
//! the row; llama.cpp 2026 finishes the odd block in scalar code. These kernels do what 2026 does.

use crate::act::{q8, q8_0_scale_sum};
use crate::driver::{f16_at, Format, Prefetch};
use crate::formats::q4_0;
use crate::{WeightType, GROUP};

/// llama.cpp's `kvalues_iq4nl` (ggml-common.h), also iq4_xs's.
pub(crate) const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[cfg(target_arch = "x86_64")]
/// KVALUES + 128, as unsigned bytes (the weights' side of `vpdpbusd`).
pub(crate) const KVALUES_U8: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

pub(crate) struct IQ4NL;

const QS: usize = 2 * GROUP;

/// The table `t` in every 128-bit lane (AVX-512).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn table512(t: &[u8; 16]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr().cast()))
}

/// The table `t` in both 128-bit lanes (AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn table256(t: &[u8; 16]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast()))
}

/// AVX-512: the values (looked up in `t`, [`table512`]) of the 4 vectors of nibbles at `q`,
/// `q + 64`, `q + 128`, `q + 192` (an iq4_nl block, an iq4_xs sub-block): low nibbles in `u[v]`,
/// high nibbles in `u[v + 4]`, as [`crate::x86::dot512`] takes them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn values512(
    t: std::arch::x86_64::__m512i,
    q: *const u8,
) -> [std::arch::x86_64::__m512i; 8] {
    use std::arch::x86_64::*;
    let mut u = [_mm512_setzero_si512(); 8];
    for v in 0..4 {
        let (lo, hi) = crate::x86::nibbles512(q.add(64 * v));
        u[v] = _mm512_shuffle_epi8(t, lo);
        u[v + 4] = _mm512_shuffle_epi8(t, hi);
    }
    u
}

/// [`values512`] with `vpermb` (AVX-512 VBMI): it looks bytes up in all 64 of `t` by the index's
/// low 6 bits, so with the table in every lane ([`table512`]) the nibbles need no mask, the high
/// ones a shift only (their neighbour's bits above them fall on the table's copies): 3
/// operations per vector instead of 5. One token's product, 2 threads, `examples/bench.rs
/// --probe`: iq4_xs 83–85 → 85–91 % of the paired read probe, iq4_nl 84 → 87–92 %
/// (docs/benchmarks.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[inline]
pub(crate) unsafe fn values512_vbmi(
    t: std::arch::x86_64::__m512i,
    q: *const u8,
) -> [std::arch::x86_64::__m512i; 8] {
    use std::arch::x86_64::*;
    let mut u = [_mm512_setzero_si512(); 8];
    for v in 0..4 {
        let x = _mm512_loadu_si512(q.add(64 * v).cast());
        u[v] = _mm512_permutexvar_epi8(x, t);
        u[v + 4] = _mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(x), t);
    }
    u
}

/// [`values512`] for one half of the group (`q` already at the half's 32 bytes; [`table256`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn values256(
    t: std::arch::x86_64::__m256i,
    q: *const u8,
) -> [std::arch::x86_64::__m256i; 8] {
    use std::arch::x86_64::*;
    let mut u = [_mm256_setzero_si256(); 8];
    for v in 0..4 {
        let (lo, hi) = crate::x86::nibbles256(q.add(64 * v));
        u[v] = _mm256_shuffle_epi8(t, lo);
        u[v + 4] = _mm256_shuffle_epi8(t, hi);
    }
    u
}

#[cfg(target_arch = "x86_64")]
/// |KVALUES| as bytes (AVX2 looks up the magnitudes; see [`magnitudes_and_flips256`]).
const KVALUES_ABS: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = KVALUES[i].unsigned_abs();
        i += 1;
    }
    t
};

/// AVX2, for the low (`which` = 0) or high (1) nibbles q of the 32 bytes at `p`: the magnitudes
/// |KVALUES[q]|, and a vector whose bytes are negative exactly where KVALUES[q] is positive and
/// never zero. KVALUES[q] is negative for q < 8 and positive for q ≥ 8, so the sign is the
/// nibble's top bit: moved to bit 7 of its byte (a 16-bit shift left by 4 for the low nibble,
/// where the bits that cross into the next byte land below its bit 7; the high nibble's is bit
/// 7 already) and or-ed with 1. `vpsignb` of the activations by it, times the magnitudes
/// (`vpmaddubsw`), gives −KVALUES[q]·a in pairs of at most 2·127·127: the callers subtract. This
/// spares the `vpabsb` of each vector, which shares the two multiply ports with `vpsignb`,
/// `vpmaddubsw` and `vpmaddwd` (measured on AMD Zen 4 with tools/x86-port-pairs.c).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn magnitudes_and_flips256(
    p: *const u8,
    which: usize,
) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let t = table256(&KVALUES_ABS);
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    let x = _mm256_loadu_si256(p.cast());
    if which == 0 {
        (
            _mm256_shuffle_epi8(t, _mm256_and_si256(x, m4)),
            _mm256_or_si256(_mm256_slli_epi16::<4>(x), one),
        )
    } else {
        (
            _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4)),
            _mm256_or_si256(x, one),
        )
    }
}

/// −(Σ of each i16 pair of `|w|` × the 4 activation bytes at `q`, broadcast, with w's sign),
/// from [`magnitudes_and_flips256`]'s vectors: `vpmaddubsw(|w|, vpsignb(a, flip))`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn flipped_pairs256(
    w_abs: std::arch::x86_64::__m256i,
    flip: std::arch::x86_64::__m256i,
    q: *const u8,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let x = _mm256_set1_epi32(crate::x86::word(q));
    _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, flip))
}

/// NEON: the values of 4 rows × 32 columns (iq4_nl's block, an iq4_xs sub-block) — the 16-byte
/// row quarters at `q`, `q + 64`, `q + 128`, `q + 192` looked up in KVALUES (`tbl`), low nibbles
/// in `u[v]`, high nibbles in `u[v + 4]`, as [`crate::neon::dot32`] takes them.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn values_neon(q: *const u8) -> [std::arch::aarch64::int8x16_t; 8] {
    use std::arch::aarch64::*;
    let t = vld1q_s8(KVALUES.as_ptr());
    let m4 = vdupq_n_u8(0x0f);
    let mut u = [vdupq_n_s8(0); 8];
    for v in 0..4 {
        let x = vld1q_u8(q.add(64 * v));
        u[v] = vqtbl1q_s8(t, vandq_u8(x, m4));
        u[v + 4] = vqtbl1q_s8(t, vshrq_n_u8::<4>(x));
    }
    u
}

impl Format for IQ4NL {
    const TY: WeightType = WeightType::IQ4NL;
    #[cfg(target_arch = "x86_64")]
    const AVX_VNNI_TOKENS: usize = 4;
    const PREFETCH_AVX512: Prefetch = Prefetch::Off;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        q4_0::Q4_0::repack_row(blk, r, out);
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let (da, _) = q8_0_scale_sum(a);
        let isum: i32 = (0..16)
            .map(|j| {
                let q = blk[2 + j];
                KVALUES[(q & 15) as usize] as i32 * q8(a, j)
                    + KVALUES[(q >> 4) as usize] as i32 * q8(a, j + 16)
            })
            .sum();
        let t = f16_at(blk, 0) * da * isum as f32;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        let (da, _) = q8_0_scale_sum(a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for v in 0..4 {
                for i in 0..4 {
                    let byte = p[QS + 64 * v + 4 * r + i];
                    isum += KVALUES[(byte & 15) as usize] as i32 * q8(a, 4 * v + i);
                    isum += KVALUES[(byte >> 4) as usize] as i32 * q8(a, 16 + 4 * v + i);
                }
            }
            *acc += f16_at(p, 2 * r) * da * isum as f32;
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
        use crate::x86::*;
        ahead.part(0, 1);
        let u = values512(table512(&KVALUES_U8), p.add(QS));
        block32_512(&u, f16x16(p), -128, a, acc);
    }

    #[cfg(target_arch = "x86_64")]
    const AVX512_VBMI: bool = true;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
    #[inline]
    unsafe fn avx512_vbmi<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        use crate::x86::*;
        ahead.part(0, 1);
        let u = values512_vbmi(table512(&KVALUES_U8), p.add(QS));
        block32_512(&u, f16x16(p), -128, a, acc);
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
        use crate::x86::*;
        use std::arch::x86_64::*;
        ahead.part(0, 1);
        let dw = f16x8(p.add(16 * half));
        let mut s = [_mm256_setzero_si256(); N];
        // one vector of weights at a time, used by every token before the next is unpacked (as
        // iq4_xs: 16 registers hold neither 8 vectors and their signs nor many tokens)
        for i in 0..8 {
            let (w_abs, flip) =
                magnitudes_and_flips256(p.add(QS + 64 * (i % 4) + 32 * half), i / 4);
            for (s, &a) in s.iter_mut().zip(a) {
                let p16 = flipped_pairs256(w_abs, flip, a.add(8 + 4 * i));
                *s = _mm256_sub_epi32(*s, pairs256(p16));
            }
        }
        for ((acc, &a), &s) in acc.iter_mut().zip(a).zip(&s) {
            *acc = fma256(*acc, s, dw, f32_at(a));
        }
    }

    /// AVX-VNNI: the AVX-512 kernel's arithmetic (`vpdpbusd`) on one half of the group (8 rows).
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
        use crate::x86::*;
        ahead.part(0, 1);
        let u = values256(table256(&KVALUES_U8), p.add(QS + 32 * half));
        block32_vnni(&u, f16x8(p.add(16 * half)), -128, a, acc);
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let u = values_neon(p.add(QS + 16 * quarter));
            *acc = scale_add(*acc, dot32(&u, a.add(8)), p.add(8 * quarter), f32_at(a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`magnitudes_and_flips256`] takes a value's sign from its nibble's top bit.
    #[test]
    fn the_tables_sign_is_the_nibbles_top_bit() {
        for (q, &v) in KVALUES.iter().enumerate() {
            assert_ne!(v, 0);
            assert_eq!(v > 0, q >= 8, "KVALUES[{q}] = {v}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn magnitudes_and_flips_match_the_table_for_every_byte() {
        if !crate::x86::has_avx2() {
            eprintln!("skipped: no AVX2 here");
            return;
        }
        // every byte value, with every value before it too (the low nibble's 16-bit shift
        // carries the previous byte's bits into the low half of the next one)
        let mut bytes: Vec<u8> = (0..=255).collect();
        bytes.extend((0..=255u8).rev());
        bytes.extend((0..256).map(|i| (i * 167 + 13) as u8));
        for chunk in bytes.chunks_exact(32) {
            for which in 0..2 {
                let (mut mag, mut flip) = ([0u8; 32], [0u8; 32]);
                // SAFETY: AVX2 was detected; the loads and stores cover 32 bytes each.
                unsafe {
                    use std::arch::x86_64::*;
                    let (m, f) = magnitudes_and_flips256(chunk.as_ptr(), which);
                    _mm256_storeu_si256(mag.as_mut_ptr().cast(), m);
                    _mm256_storeu_si256(flip.as_mut_ptr().cast(), f);
                }
                for (j, &b) in chunk.iter().enumerate() {
                    let v = KVALUES[((b >> (4 * which)) & 15) as usize];
                    assert_eq!(mag[j], v.unsigned_abs(), "byte {b:#x}, nibble {which}");
                    assert_ne!(flip[j], 0);
                    assert_eq!((flip[j] as i8) < 0, v > 0, "byte {b:#x}, nibble {which}");
                }
            }
        }
    }
}
