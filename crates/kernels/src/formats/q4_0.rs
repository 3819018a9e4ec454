//! q4_0: blocks of 32 columns, `value = d · (q − 8)` with q a nibble.
//!
//! ```text
//! ggml block (18 bytes):  f16 d, 16 bytes qs: byte j = column j (low nibble), column 16+j (high)
//! packed group block (288 bytes = 16 × 18):
//!   0    16 × f16 d
//!   32   4 × 64 bytes: vector v, lane r (4 bytes) = row r's qs[4v .. 4v+3]
//!        (low nibbles: columns 4v+i, high nibbles: columns 16+4v+i)
//! ```
//!
//! Activations q8_0. The nibbles are the unsigned side of `vpdpbusd`/`vpmaddubsw`; the −8 comes
//! back as one term per block and token: `Σ (q−8)·a = Σ q·a − 8·Σa`. The `vpdpbusd` kernels take
//! the high nibbles times 16 (`x86::nibbles512_x16`) and shift their sum back.

use crate::act::{q8, q8_0_scale_sum};
use crate::driver::{f16_at, put_lane, Format, Prefetch};
use crate::{WeightType, GROUP};

pub(crate) struct Q4_0;

pub(crate) const QS: usize = 2 * GROUP;

impl Format for Q4_0 {
    const TY: WeightType = WeightType::Q4_0;
    #[cfg(target_arch = "x86_64")]
    const AVX2_TOKENS: usize = 4;
    const PREFETCH: Prefetch = Prefetch::Twice;
    const PREFETCH_AVX512: Prefetch = Prefetch::Off;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        for v in 0..4 {
            put_lane(out, QS + 64 * v, r, &blk[2 + 4 * v..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let (da, _) = q8_0_scale_sum(a);
        let isum: i32 = (0..16)
            .map(|j| {
                let q = blk[2 + j];
                ((q & 15) as i32 - 8) * q8(a, j) + ((q >> 4) as i32 - 8) * q8(a, j + 16)
            })
            .sum();
        let t = isum as f32 * f16_at(blk, 0) * da;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        let (da, sum) = q8_0_scale_sum(a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut isum = -8 * sum;
            for v in 0..4 {
                for i in 0..4 {
                    let byte = p[QS + 64 * v + 4 * r + i];
                    isum += (byte & 15) as i32 * q8(a, 4 * v + i);
                    isum += (byte >> 4) as i32 * q8(a, 16 + 4 * v + i);
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
        use std::arch::x86_64::*;
        ahead.part(0, 1);
        let dw = f16x16(p);
        let (mut lo, mut hi16) = ([_mm512_setzero_si512(); 4], [_mm512_setzero_si512(); 4]);
        for v in 0..4 {
            (lo[v], hi16[v]) = nibbles512_x16(p.add(QS + 64 * v));
        }
        // the low and the high nibbles' sums are the two chains of `vpdpbusd`
        for (acc, &a) in acc.iter_mut().zip(a) {
            let s = dot512(_mm512_set1_epi32(-8 * word(a.add(4))), &lo, a.add(8));
            let s16 = dot512(_mm512_setzero_si512(), &hi16, a.add(8 + 16));
            let s = _mm512_add_epi32(s, _mm512_srai_epi32::<4>(s16));
            *acc = fma512(*acc, s, dw, f32_at(a));
        }
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
        // one nibble vector pair at a time, used for every token before the next (holding all
        // 8 for the tokens in turn: 256 tokens 188 → 207 GFLOP/s on one core this way); 8 pair
        // sums of at most 2·15·128 each fit an i16
        let mut sums = [_mm256_setzero_si256(); N];
        for v in 0..4 {
            let (lo, hi) = nibbles256(p.add(QS + 64 * v + 32 * half));
            for (s, &a) in sums.iter_mut().zip(a) {
                let x = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(word(a.add(8 + 4 * v))));
                let y = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(word(a.add(24 + 4 * v))));
                *s = _mm256_add_epi16(*s, _mm256_add_epi16(x, y));
            }
        }
        for ((acc, &a), &s) in acc.iter_mut().zip(a).zip(&sums) {
            let s = _mm256_add_epi32(pairs256(s), _mm256_set1_epi32(-8 * word(a.add(4))));
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
        use std::arch::x86_64::*;
        ahead.part(0, 1);
        let dw = f16x8(p.add(16 * half));
        let (mut lo, mut hi16) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
        for v in 0..4 {
            (lo[v], hi16[v]) = nibbles256_x16(p.add(QS + 64 * v + 32 * half));
        }
        for (acc, &a) in acc.iter_mut().zip(a) {
            let s = dot256_vnni(_mm256_set1_epi32(-8 * word(a.add(4))), &lo, a.add(8));
            let s16 = dot256_vnni(_mm256_setzero_si256(), &hi16, a.add(8 + 16));
            let s = _mm256_add_epi32(s, _mm256_srai_epi32::<4>(s16));
            *acc = fma256(*acc, s, dw, f32_at(a));
        }
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        use std::arch::aarch64::*;
        let (m4, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let q = p.add(QS + 16 * quarter);
            let mut u = [vdupq_n_s8(0); 8];
            for v in 0..4 {
                let x = vld1q_u8(q.add(64 * v));
                u[v] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(x, m4)), eight);
                u[v + 4] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(x)), eight);
            }
            *acc = scale_add(*acc, dot32(&u, a.add(8)), p.add(8 * quarter), f32_at(a));
        }
    }
}
