//! q5_0: blocks of 32 columns, `value = d · (q − 16)` with q of 5 bits.
//!
//! ```text
//! ggml block (22 bytes):  f16 d, u32 qh (bit i = fifth bit of column i), 16 bytes qs as q4_0
//!                         (byte j: column j low nibble, column 16+j high nibble)
//! packed group block (352 bytes = 16 × 22):
//!   0    16 × f16 d
//!   32   64 bytes of fifth bits: lane r, byte i: bit v (v = 0..3) = fifth bit of column 4v+i,
//!        bit 4+v = fifth bit of column 16+4v+i
//!   96   4 × 64 bytes: vector v, lane r = row r's qs[4v .. 4v+3] (as q4_0)
//! ```
//!
//! The fifth bits are stored as bit planes matching the nibble vectors, so vector v's are one
//! shift and one mask away (`x86::bit_to_4_*`): no shuffles, on every instruction set. They
//! lie before the nibbles because the kernels read them first: a block read front to back keeps
//! the hardware prefetcher streaming (see `Format::HEADER`).
//! Activations q8_0; `Σ (q−16)·a = Σ q·a − 16·Σa`. AVX2 sums 4 `vpmaddubsw` in i16 (at most
//! 4·2·31·128 = 31744) before widening.

use crate::act::{q8, q8_0_scale_sum};
use crate::driver::{f16_at, put_lane, Format, Prefetch};
use crate::{WeightType, GROUP};

pub(crate) struct Q5_0;

const QH: usize = 2 * GROUP;
const QS: usize = QH + 64;

/// A row's fifth-bit lane (see the layout: bit v of byte i is ggml's qh bit 4v + i, bit 4 + v
/// is qh bit 16 + 4v + i) from ggml's `qh`: a fixed permutation of its 32 bits, looked up
/// byte by byte in [`PLANE`] (bit by bit, the load's repacking of q5_0 ran at 2 GB/s).
pub(crate) fn bit_plane(qh: u32) -> u32 {
    let b = qh.to_le_bytes();
    PLANE[0][b[0] as usize]
        | PLANE[1][b[1] as usize]
        | PLANE[2][b[2] as usize]
        | PLANE[3][b[3] as usize]
}

/// `PLANE[k][x]`: where the bits of `x`, as byte `k` of ggml's qh, go in [`bit_plane`]'s lane.
const PLANE: [[u32; 256]; 4] = {
    let mut t = [[0u32; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut x = 0;
        while x < 256 {
            let mut bit = 0;
            while bit < 8 {
                if x >> bit & 1 == 1 {
                    let b = 8 * k + bit; // qh bit: 4v + i, or 16 + 4v + i
                    let (hi, v, i) = (b / 16, (b % 16) / 4, b % 4);
                    t[k][x] |= 1 << (8 * i + 4 * hi + v);
                }
                bit += 1;
            }
            x += 1;
        }
        k += 1;
    }
    t
};

/// Writes row `r`'s nibbles (ggml's qs at `qs`) and fifth bits (ggml's qh) into the vectors at
/// `at_qs` (4 × 64 bytes) and `at_qh` (64 bytes). Shared with q5_1.
pub(crate) fn repack_5bit(
    qh: &[u8],
    qs: &[u8],
    r: usize,
    out: &mut [u8],
    at_qs: usize,
    at_qh: usize,
) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for v in 0..4 {
        put_lane(out, at_qs + 64 * v, r, &qs[4 * v..]);
    }
    out[at_qh + 4 * r..][..4].copy_from_slice(&bit_plane(qh).to_le_bytes());
}

/// The 5-bit q (0..31) of column `col` of ggml's block with `qh` at `blk[qh..]`, `qs` after it.
pub(crate) fn ggml_q(blk: &[u8], qh: usize, col: usize) -> i32 {
    let bits = u32::from_le_bytes([blk[qh], blk[qh + 1], blk[qh + 2], blk[qh + 3]]);
    let byte = blk[qh + 4 + col % 16];
    let nib = if col < 16 { byte & 15 } else { byte >> 4 };
    (nib as i32) | ((((bits >> col) & 1) as i32) << 4)
}

/// The 5-bit q of column `col` of row `r` in the packed vectors at `at_qs` / `at_qh`.
pub(crate) fn packed_q(p: &[u8], at_qs: usize, at_qh: usize, r: usize, col: usize) -> i32 {
    let (hi, c) = (col / 16, col % 16);
    let (v, i) = (c / 4, c % 4);
    let byte = p[at_qs + 64 * v + 4 * r + i];
    let nib = if hi == 0 { byte & 15 } else { byte >> 4 };
    let bit = (p[at_qh + 4 * r + i] >> (4 * hi + v)) & 1;
    (nib | (bit << 4)) as i32
}

/// The 8 vectors of 5-bit q (u8): lanes as the nibble vectors, low nibbles' columns first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn unpack512(
    p: *const u8,
    at_qs: usize,
    at_qh: usize,
) -> [std::arch::x86_64::__m512i; 8] {
    use crate::x86::*;
    use std::arch::x86_64::*;
    let h = _mm512_loadu_si512(p.add(at_qh).cast());
    let mut u = [_mm512_setzero_si512(); 8];
    for v in 0..4 {
        let (lo, hi) = nibbles512(p.add(at_qs + 64 * v));
        u[v] = _mm512_or_si512(lo, bit_to_4_512(h, v));
        u[v + 4] = _mm512_or_si512(hi, bit_to_4_512(h, 4 + v));
    }
    u
}

/// [`unpack512`] with GFNI ([`crate::x86::bit_to_4_gfni`], [`crate::x86::merge_nibble`]): 5
/// operations per 64 bytes of nibbles where it takes 9.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
#[inline]
pub(crate) unsafe fn unpack512_gfni(
    p: *const u8,
    at_qs: usize,
    at_qh: usize,
) -> [std::arch::x86_64::__m512i; 8] {
    use crate::x86::*;
    use std::arch::x86_64::*;
    let h = _mm512_loadu_si512(p.add(at_qh).cast());
    let mut u = [_mm512_setzero_si512(); 8];
    for v in 0..4 {
        let x = _mm512_loadu_si512(p.add(at_qs + 64 * v).cast());
        u[v] = merge_nibble(x, bit_to_4_gfni(h, v));
        u[v + 4] = merge_nibble(_mm512_srli_epi16::<4>(x), bit_to_4_gfni(h, 4 + v));
    }
    u
}

/// [`unpack512`] for rows 8·half .. of the group (AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn unpack256(
    p: *const u8,
    at_qs: usize,
    at_qh: usize,
    half: usize,
) -> [std::arch::x86_64::__m256i; 8] {
    use crate::x86::*;
    use std::arch::x86_64::*;
    let h = _mm256_loadu_si256(p.add(at_qh + 32 * half).cast());
    let mut u = [_mm256_setzero_si256(); 8];
    for v in 0..4 {
        let (lo, hi) = nibbles256(p.add(at_qs + 64 * v + 32 * half));
        u[v] = _mm256_or_si256(lo, bit_to_4_256(h, v));
        u[v + 4] = _mm256_or_si256(hi, bit_to_4_256(h, 4 + v));
    }
    u
}

/// Each token's `Σ q·a` over the block's 8 vectors of 5-bit q (layout as [`unpack256`]), for
/// tiles of 3+ tokens: the vectors unpacked 4 at a time (two of low nibbles, two of high) and
/// used for every token before the next 4, so that 8 tokens' sums and the vectors fit the
/// registers; 4 `vpmaddubsw` summed in i16 (at most 4·2·31·128 = 31744). One core
/// (`examples/bench.rs --threads 1 --isa avx2 q5_0`): 256 tokens × `up` 162–168 → 168–172
/// GFLOP/s (q5_1 166–168 → 175–178), 4 tokens from the caches 0.110–0.112 → 0.104–0.106 ms. One
/// or two tokens keep [`unpack256`] and [`dot5_256`]: two tokens took 0.073–0.076 ms this way,
/// 0.068–0.069 that way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dots5_256<const N: usize>(
    p: *const u8,
    at_qs: usize,
    at_qh: usize,
    half: usize,
    a: &[*const u8; N],
) -> [std::arch::x86_64::__m256i; N] {
    use crate::x86::*;
    use std::arch::x86_64::*;
    let mut sums = [_mm256_setzero_si256(); N];
    let h = _mm256_loadu_si256(p.add(at_qh + 32 * half).cast());
    for v0 in [0, 2] {
        let mut u = [_mm256_setzero_si256(); 4];
        for i in 0..2 {
            let (lo, hi) = nibbles256(p.add(at_qs + 64 * (v0 + i) + 32 * half));
            u[i] = _mm256_or_si256(lo, bit_to_4_256(h, v0 + i));
            u[2 + i] = _mm256_or_si256(hi, bit_to_4_256(h, 4 + v0 + i));
        }
        for (s, &a) in sums.iter_mut().zip(a) {
            let x = _mm256_add_epi16(
                maddubs256::<2>(&u[..2], a.add(8 + 4 * v0)),
                maddubs256::<2>(&u[2..], a.add(8 + 16 + 4 * v0)),
            );
            *s = _mm256_add_epi32(*s, pairs256(x));
        }
    }
    sums
}

/// `Σ q·a` of 8 vectors of 5-bit q with the block's activations at `q` (AVX2: two i16 partial
/// sums of 4 vectors each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dot5_256(
    u: &[std::arch::x86_64::__m256i; 8],
    q: *const u8,
) -> std::arch::x86_64::__m256i {
    use crate::x86::*;
    use std::arch::x86_64::*;
    _mm256_add_epi32(
        pairs256(maddubs256::<4>(&u[..4], q)),
        pairs256(maddubs256::<4>(&u[4..], q.add(16))),
    )
}

/// Quarter `quarter` (rows 4·quarter ..) of the 8 vectors of 5-bit q, as signed bytes (NEON).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn unpack_neon(
    p: *const u8,
    at_qs: usize,
    at_qh: usize,
    quarter: usize,
) -> [std::arch::aarch64::int8x16_t; 8] {
    use std::arch::aarch64::*;
    let m4 = vdupq_n_u8(0x0f);
    let m10 = vdupq_n_u8(0x10);
    let h = vld1q_u8(p.add(at_qh + 16 * quarter));
    // bit b of each byte to bit 4 (byte shifts: nothing crosses bytes)
    let bit = |b: usize| -> uint8x16_t {
        let s = match b {
            0 => vshlq_n_u8::<4>(h),
            1 => vshlq_n_u8::<3>(h),
            2 => vshlq_n_u8::<2>(h),
            3 => vshlq_n_u8::<1>(h),
            4 => h,
            5 => vshrq_n_u8::<1>(h),
            6 => vshrq_n_u8::<2>(h),
            _ => vshrq_n_u8::<3>(h),
        };
        vandq_u8(s, m10)
    };
    let mut u = [vdupq_n_s8(0); 8];
    for v in 0..4 {
        let x = vld1q_u8(p.add(at_qs + 64 * v + 16 * quarter));
        u[v] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(x, m4), bit(v)));
        u[v + 4] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(x), bit(4 + v)));
    }
    u
}

impl Format for Q5_0 {
    const TY: WeightType = WeightType::Q5_0;
    const PREFETCH_AVX512: Prefetch = Prefetch::Off;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        out[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
        repack_5bit(&blk[2..6], &blk[6..22], r, out, QS, QH);
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        let (da, _) = q8_0_scale_sum(a);
        let isum: i32 = (0..32)
            .map(|col| (ggml_q(blk, 2, col) - 16) * q8(a, col))
            .sum();
        let t = isum as f32 * f16_at(blk, 0) * da;
        (t, t.abs())
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        let (da, sum) = q8_0_scale_sum(a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let isum: i32 = (0..32)
                .map(|col| packed_q(p, QS, QH, r, col) * q8(a, col))
                .sum();
            *acc += f16_at(p, 2 * r) * da * (isum - 16 * sum) as f32;
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
        let dw = f16x16(p);
        let u = unpack512(p, QS, QH);
        block32_512(&u, dw, -16, a, acc);
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
        let dw = f16x16(p);
        let u = unpack512_gfni(p, QS, QH);
        block32_512(&u, dw, -16, a, acc);
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
        if N <= 2 {
            let u = unpack256(p, QS, QH, half);
            for (acc, &a) in acc.iter_mut().zip(a) {
                let s = _mm256_add_epi32(
                    dot5_256(&u, a.add(8)),
                    _mm256_set1_epi32(-16 * word(a.add(4))),
                );
                *acc = fma256(*acc, s, dw, f32_at(a));
            }
            return;
        }
        let sums = dots5_256(p, QS, QH, half, a);
        for ((acc, &a), &s) in acc.iter_mut().zip(a).zip(&sums) {
            let s = _mm256_add_epi32(s, _mm256_set1_epi32(-16 * word(a.add(4))));
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
        let dw = f16x8(p.add(16 * half));
        let u = unpack256(p, QS, QH, half);
        block32_vnni(&u, dw, -16, a, acc);
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        use crate::neon::*;
        use std::arch::aarch64::*;
        let sixteen = vdupq_n_s8(16);
        for (quarter, acc) in acc.iter_mut().enumerate() {
            let mut u = unpack_neon(p, QS, QH, quarter);
            for u in &mut u {
                *u = vsubq_s8(*u, sixteen);
            }
            *acc = scale_add(*acc, dot32(&u, a.add(8)), p.add(8 * quarter), f32_at(a));
        }
    }
}
