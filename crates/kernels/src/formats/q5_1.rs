//! q5_1: blocks of 32 columns, `value = d · q + m` with q of 5 bits (0..31).
//!
//! ```text
//! ggml block (24 bytes):  f16 d, f16 m, u32 qh, 16 bytes qs (bits and nibbles as q5_0)
//! packed group block (384 bytes = 16 × 24):
//!   0    16 × f16 d
//!   32   16 × f16 m
//!   64   64 bytes of fifth bits, as q5_0's
//!   128  4 × 64 bytes: vector v, lane r = row r's qs[4v .. 4v+3]
//! ```
//!
//! Activations q8_1, as ggml's `vec_dot_type` for q5_1: each block carries `s = f16(d_a·Σa)`,
//! and ggml's dot is `d·d_a·Σ q·a + m·s` per block. q is unsigned, so it is the weights' side of
//! `vpdpbusd` directly, with no offset term.

use crate::act::{f32_le, q8};
use crate::driver::{f16_at, Format, Prefetch};
use crate::formats::q5_0::{ggml_q, packed_q, repack_5bit};
use crate::{WeightType, GROUP};

pub(crate) struct Q5_1;

const M: usize = 2 * GROUP;
const QH: usize = 4 * GROUP;
const QS: usize = QH + 64;

/// The AVX-512 kernels' arithmetic on the unpacked block `u`: `acc[t] += dw·d_a·Σ u·a + m·s_a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn block32_512_q5_1<const N: usize>(
    p: *const u8,
    u: &[std::arch::x86_64::__m512i; 8],
    a: &[*const u8; N],
    acc: &mut [std::arch::x86_64::__m512; N],
) {
    use crate::x86::*;
    use std::arch::x86_64::*;
    let dw = f16x16(p);
    let mw = f16x16(p.add(M));
    for (acc, &a) in acc.iter_mut().zip(a) {
        let s = dot512(_mm512_setzero_si512(), u, a.add(8));
        *acc = fma512(*acc, s, dw, f32_at(a));
        *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(f32_at(a.add(4))), *acc);
    }
}

impl Format for Q5_1 {
    const TY: WeightType = WeightType::Q5_1;
    const PREFETCH_AVX512: Prefetch = Prefetch::Off;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        out[M + 2 * r..M + 2 * r + 2].copy_from_slice(&blk[2..4]);
        repack_5bit(&blk[4..8], &blk[8..24], r, out, QS, QH);
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let (da, s) = (f32_le(a, 0), f32_le(a, 4));
        let isum: i32 = (0..32).map(|col| ggml_q(blk, 4, col) * q8(a, col)).sum();
        let t1 = f16_at(blk, 0) * da * isum as f32;
        let t2 = f16_at(blk, 2) * s;
        (t1 + t2, t1.abs() + t2.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        let (da, s) = (f32_le(a, 0), f32_le(a, 4));
        for (r, acc) in acc.iter_mut().enumerate() {
            let isum: i32 = (0..32)
                .map(|col| packed_q(p, QS, QH, r, col) * q8(a, col))
                .sum();
            *acc += f16_at(p, 2 * r) * da * isum as f32;
            *acc += f16_at(p, M + 2 * r) * s;
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
        ahead.part(0, 1);
        block32_512_q5_1(p, &crate::formats::q5_0::unpack512(p, QS, QH), a, acc)
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
        ahead.part(0, 1);
        block32_512_q5_1(p, &crate::formats::q5_0::unpack512_gfni(p, QS, QH), a, acc)
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
        use crate::formats::q5_0::{dot5_256, dots5_256, unpack256};
        use crate::x86::*;
        use std::arch::x86_64::*;
        ahead.part(0, 1);
        let dw = f16x8(p.add(16 * half));
        let mw = f16x8(p.add(M + 16 * half));
        if N <= 2 {
            let u = unpack256(p, QS, QH, half);
            for (acc, &a) in acc.iter_mut().zip(a) {
                *acc = fma256(*acc, dot5_256(&u, a.add(8)), dw, f32_at(a));
                *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(f32_at(a.add(4))), *acc);
            }
            return;
        }
        let sums = dots5_256(p, QS, QH, half, a);
        for ((acc, &a), &s) in acc.iter_mut().zip(a).zip(&sums) {
            *acc = fma256(*acc, s, dw, f32_at(a));
            *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(f32_at(a.add(4))), *acc);
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
        use crate::formats::q5_0::unpack256;
        use crate::x86::*;
        use std::arch::x86_64::*;
        ahead.part(0, 1);
        let dw = f16x8(p.add(16 * half));
        let mw = f16x8(p.add(M + 16 * half));
        let u = unpack256(p, QS, QH, half);
        for (acc, &a) in acc.iter_mut().zip(a) {
            let s = dot256_vnni(_mm256_setzero_si256(), &u, a.add(8));
            *acc = fma256(*acc, s, dw, f32_at(a));
            *acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(f32_at(a.add(4))), *acc);
        }
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::formats::q5_0::unpack_neon;
        use crate::neon::*;
        use std::arch::aarch64::*;
        let s = f32_at(a.add(4));
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let u = unpack_neon(p, QS, QH, quarter);
            let d = scale_add(*acc, dot32(&u, a.add(8)), p.add(8 * quarter), f32_at(a));
            *acc = vfmaq_n_f32(d, f16x4(p.add(M + 8 * quarter)), s);
        }
    }
}
