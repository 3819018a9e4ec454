//! iq4_xs: super-blocks of 256 columns = 8 sub-blocks of 32 with 6-bit scales,
//! `value = d · (ls_j − 32) · KVALUES[q]` with q a nibble (iq4_nl's table).
//!
//! ```text
//! ggml block (136 bytes): f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes qs
//!   sub-block j: ls_j = ((scales_l[j/2] >> 4·(j%2)) & 15) | (((scales_h >> 2j) & 3) << 4)
//!   qs[16j + i]: column 32j + i (low nibble), 32j + 16 + i (high nibble)
//! packed group block (2208 bytes, 16 × 138: the scales unpacked to bytes):
//!   0     16 × f16 d
//!   32    8 × 16 i8 scales ls_j − 32: [j][r]
//!   160   32 × 64 bytes: vector 4j+v, lane r = row r's qs[16j+4v .. +3]
//!         (low nibbles: columns 32j+4v+i, high nibbles: 32j+16+4v+i)
//! ```
//!
//! The layout and scale packing are llama.cpp 2026's (ggml-common.h, `dequantize_row_iq4_xs`);
//! b2757 defines the same block for 256-column super-blocks. Activations q8_K. Per sub-block and
//! token the integer sum `Σ KVALUES[q]·a` (AVX-512: `vpdpbusd` on KVALUES + 128 from −128·Σa,
//! AVX2: |value| × activations with the value's sign) is multiplied by the row's scale in i32,
//! then the super-block's sum by `d · d_a` in f32, as ggml's AVX2 `vec_dot_iq4_xs_q8_K` does.
//! |sum| ≤ 8 · 32 · 32 · 127 · 127 < 2^31.

use crate::act::{f32_le, q8k};
use crate::driver::{f16_at, put_lane, Format, Prefetch};
use crate::formats::iq4_nl::KVALUES;
use crate::{WeightType, GROUP};

pub(crate) struct IQ4XS;

/// The AVX-512 kernel, with `$values` the table lookup (`iq4_nl::values512`, or
/// `iq4_nl::values512_vbmi` in the kernel compiled for AVX-512 VBMI).
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_body {
    ($values:ident, $p:ident, $a:ident, $ahead:ident, $acc:ident) => {{
        use crate::act::{A_BS32, A_QS};
        use crate::formats::iq4_nl::{table512, KVALUES_U8};
        use crate::x86::*;
        use std::arch::x86_64::*;
        let t = table512(&KVALUES_U8);
        let mut sumi = [_mm512_setzero_si512(); N];
        for j in 0..8 {
            $ahead.part(j, 8);
            let u = $values(t, $p.add(QS + 256 * j));
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128($p.add(SC + 16 * j).cast()));
            for (sumi, &at) in sumi.iter_mut().zip($a) {
                let init = _mm512_set1_epi32(-128 * half_word(at.add(A_BS32 + 2 * j)) as i32);
                let s = dot512(init, &u, at.add(A_QS + 32 * j));
                *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(s, sc));
            }
        }
        let dw = f16x16($p);
        for ((acc, &at), &sumi) in $acc.iter_mut().zip($a).zip(&sumi) {
            *acc = fma512(*acc, sumi, dw, f32_at(at));
        }
    }};
}

const SC: usize = 2 * GROUP;
const QS: usize = SC + 8 * GROUP;

/// ls − 32 of sub-block `j` of ggml's block.
fn scale(blk: &[u8], j: usize) -> i32 {
    let h = u16::from_le_bytes([blk[2], blk[3]]);
    let ls = ((blk[4 + j / 2] >> (4 * (j % 2))) & 15) as i32 | ((((h >> (2 * j)) & 3) as i32) << 4);
    ls - 32
}

impl Format for IQ4XS {
    const TY: WeightType = WeightType::IQ4XS;
    const PREFETCH_AVX512: Prefetch = Prefetch::Twice;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        for j in 0..8 {
            out[SC + 16 * j + r] = scale(blk, j) as i8 as u8;
        }
        for v in 0..32 {
            put_lane(out, QS + 64 * v, r, &blk[8 + 4 * v..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let mut sumi = 0i32;
        for j in 0..8 {
            let s: i32 = (0..16)
                .map(|i| {
                    let q = blk[8 + 16 * j + i];
                    KVALUES[(q & 15) as usize] as i32 * q8k(a, 32 * j + i)
                        + KVALUES[(q >> 4) as usize] as i32 * q8k(a, 32 * j + 16 + i)
                })
                .sum();
            sumi += scale(blk, j) * s;
        }
        let t = f16_at(blk, 0) * f32_le(a, 0) * sumi as f32;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for j in 0..8 {
                let mut s = 0i32;
                for v in 0..4 {
                    for i in 0..4 {
                        let byte = p[QS + 64 * (4 * j + v) + 4 * r + i];
                        s += KVALUES[(byte & 15) as usize] as i32 * q8k(a, 32 * j + 4 * v + i);
                        s += KVALUES[(byte >> 4) as usize] as i32 * q8k(a, 32 * j + 16 + 4 * v + i);
                    }
                }
                sumi += p[SC + 16 * j + r] as i8 as i32 * s;
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
        use crate::formats::iq4_nl::values512;
        avx512_body!(values512, p, a, ahead, acc)
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
        use crate::formats::iq4_nl::values512_vbmi;
        avx512_body!(values512_vbmi, p, a, ahead, acc)
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
        use crate::formats::iq4_nl::{flipped_pairs256, magnitudes_and_flips256};
        use crate::x86::*;
        use std::arch::x86_64::*;
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            ahead.part(j, 8);
            let sc = scales16(p.add(SC + 16 * j + 8 * half), true);
            // one vector of weights at a time, used by every token before the next is unpacked:
            // AVX2 has 16 registers, too few for a sub-block's 8 vectors and many tokens
            for i in 0..8 {
                let (w_abs, flip) =
                    magnitudes_and_flips256(p.add(QS + 64 * (4 * j + i % 4) + 32 * half), i / 4);
                for (sumi, &at) in sumi.iter_mut().zip(a) {
                    // −(pairs ≤ 2·127·127), times a scale ≤ 32: vpmaddwd by the scale is exact
                    let p16 = flipped_pairs256(w_abs, flip, at.add(A_QS + 32 * j + 4 * i));
                    *sumi = _mm256_sub_epi32(*sumi, _mm256_madd_epi16(p16, sc));
                }
            }
        }
        let dw = f16x8(p.add(16 * half));
        for ((acc, &at), &sumi) in acc.iter_mut().zip(a).zip(&sumi) {
            *acc = fma256(*acc, sumi, dw, f32_at(at));
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
        use crate::act::{A_BS32, A_QS};
        use crate::formats::iq4_nl::{table256, values256, KVALUES_U8};
        use crate::x86::*;
        use std::arch::x86_64::*;
        let t = table256(&KVALUES_U8);
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            ahead.part(j, 8);
            let u = values256(t, p.add(QS + 256 * j + 32 * half));
            let sc = scales32(p.add(SC + 16 * j + 8 * half), true);
            for (sumi, &at) in sumi.iter_mut().zip(a) {
                let init = _mm256_set1_epi32(-128 * half_word(at.add(A_BS32 + 2 * j)) as i32);
                let s = dot256_vnni(init, &u, at.add(A_QS + 32 * j));
                *sumi = _mm256_add_epi32(*sumi, _mm256_mullo_epi32(s, sc));
            }
        }
        let dw = f16x8(p.add(16 * half));
        for ((acc, &at), &sumi) in acc.iter_mut().zip(a).zip(&sumi) {
            *acc = fma256(*acc, sumi, dw, f32_at(at));
        }
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    /// NEON: iq4_nl's table lookup, each sub-block's dot product times the rows' scales
    /// (ls − 32) in i32.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::act::A_QS;
        use crate::formats::iq4_nl::values_neon;
        use crate::neon::*;
        use std::arch::aarch64::*;
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let rows = 4 * quarter;
            let mut sumi = vdupq_n_s32(0);
            for j in 0..8 {
                let u = values_neon(p.add(QS + 64 * (4 * j) + 4 * rows));
                let d = dot32(&u, a.add(A_QS + 32 * j));
                sumi = vmlaq_s32(sumi, d, bytes4(p.add(SC + 16 * j + rows), true));
            }
            *acc = scale_add(*acc, sumi, p.add(2 * rows), f32_at(a));
        }
    }
}
