//! q8_0: blocks of 32 columns, `value = d · q` with q an i8.
//!
//! ```text
//! ggml block (34 bytes):  f16 d, 32 × i8 qs
//! packed group block (544 bytes = 16 × 34):
//!   0    16 × f16 d
//!   32   8 × 64 bytes: vector s, lane r (4 bytes) = row r's qs[4s .. 4s+3], each XOR 0x80
//!        (= q + 128 as an unsigned byte)
//! ```
//!
//! Activations q8_0. AVX-512 takes q + 128 as the unsigned side of `vpdpbusd` and subtracts
//! 128·Σa; AVX2's `vpmaddubsw` would saturate on q + 128, so it flips the bytes back and
//! multiplies |q| by the activations with q's sign.

use crate::act::{q8, q8_0_scale_sum};
use crate::driver::{f16_at, Format, Prefetch};
use crate::{WeightType, GROUP};

pub(crate) struct Q8_0;

const QS: usize = 2 * GROUP;

impl Format for Q8_0 {
    const TY: WeightType = WeightType::Q8_0;
    #[cfg(target_arch = "x86_64")]
    const AVX2_TOKENS: usize = 8;
    /// The AVX-VNNI kernel holds the block's 8 vectors for every token: 4 (not measured with 8;
    /// no AVX-VNNI CPU here).
    #[cfg(target_arch = "x86_64")]
    const AVX_VNNI_TOKENS: usize = 4;
    const PREFETCH: Prefetch = Prefetch::Off;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        // 4 quants at a time, each XOR 0x80 (byte by byte, the load's repacking of a q8_0
        // matrix ran at 2.3 GB/s)
        for (s, q) in blk[2..34].chunks_exact(4).enumerate() {
            let q = u32::from_le_bytes([q[0], q[1], q[2], q[3]]) ^ 0x8080_8080;
            out[QS + 64 * s + 4 * r..][..4].copy_from_slice(&q.to_le_bytes());
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let (da, _) = q8_0_scale_sum(a);
        let isum: i32 = (0..32).map(|i| blk[2 + i] as i8 as i32 * q8(a, i)).sum();
        let t = isum as f32 * f16_at(blk, 0) * da;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        let (da, sum) = q8_0_scale_sum(a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut isum = -128 * sum;
            for s in 0..8 {
                for i in 0..4 {
                    isum += p[QS + 64 * s + 4 * r + i] as i32 * q8(a, 4 * s + i);
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
        let mut u = [_mm512_setzero_si512(); 8];
        for (s, u) in u.iter_mut().enumerate() {
            *u = _mm512_loadu_si512(p.add(QS + 64 * s).cast());
        }
        block32_512(&u, dw, -128, a, acc);
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
        let flip = _mm256_set1_epi8(-128);
        // one vector at a time, its magnitudes beside it, used for every token before the next
        // (8 vectors and 8 magnitudes held for the tokens in turn spilled; one core, 256 tokens
        // 113–115 → 119–122 GFLOP/s, two tokens 0.090–0.091 → 0.080–0.082 ms)
        let mut sums = [_mm256_setzero_si256(); N];
        for i in 0..8 {
            let x = _mm256_loadu_si256(p.add(QS + 64 * i + 32 * half).cast());
            let w = _mm256_xor_si256(x, flip);
            let w_abs = _mm256_abs_epi8(w); // −128 stays 0x80: 128 unsigned
            for (s, &a) in sums.iter_mut().zip(a) {
                // each pair at most 2·128·127: one vpmaddwd per vector
                let p16 = signed_pairs256(w_abs, w, a.add(8 + 4 * i));
                *s = _mm256_add_epi32(*s, pairs256(p16));
            }
        }
        for ((acc, &a), &s) in acc.iter_mut().zip(a).zip(&sums) {
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
        let mut u = [_mm256_setzero_si256(); 8];
        for (s, u) in u.iter_mut().enumerate() {
            *u = _mm256_loadu_si256(p.add(QS + 64 * s + 32 * half).cast());
        }
        block32_vnni(&u, dw, -128, a, acc);
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        use std::arch::aarch64::*;
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let q = p.add(QS + 16 * quarter);
            let mut u = [vdupq_n_s8(0); 8];
            for (s, u) in u.iter_mut().enumerate() {
                *u = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q.add(64 * s)), vdupq_n_u8(0x80)));
            }
            *acc = scale_add(*acc, dot32(&u, a.add(8)), p.add(8 * quarter), f32_at(a));
        }
    }
}
