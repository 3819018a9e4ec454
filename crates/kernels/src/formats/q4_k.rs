//! q4_K: super-blocks of 256 columns = 8 sub-blocks of 32 with 6-bit scales and mins,
//! `value = d·sc_j·q − dmin·m_j` with q a nibble.
//!
//! ```text
//! ggml block (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales/mins (get_scale_min_k4),
//!                         128 bytes qs: byte 32c+l = column 64c+l (low), 64c+32+l (high)
//! packed group block (2368 bytes, 16 × 148: the scales unpacked to bytes):
//!   0     16 × f16 d          32    16 × f16 dmin
//!   64    8 × 16 u8 scales: [j][r] = row r's scale of sub-block j
//!   192   4 × 16 × 2 u8 mins: [i][r] = row r's (m_2i, m_2i+1), a pair per 16-bit lane once widened
//!   320   32 × 64 bytes: vector 8c+v, lane r = row r's qs[32c+4v .. +3]
//!         (low nibbles: columns 64c+4v+i, high nibbles: 64c+32+4v+i)
//! ```
//!
//! Activations q8_K. AVX-512 (one sub-block at a time, so that 8 tokens fit the registers): 8
//! `vpdpbusd` per sub-block and token, one `vpmulld` by the rows' sub-block scales; the mins are
//! 4 `vpdpwssd` (min pairs × activation sums of 32) per super-block. The `vpdpbusd` kernels take
//! the high nibbles times 16 (`x86::nibbles512_x16`) and shift their sums back. AVX2:
//! `vpmaddubsw` of 8 vectors into i16 (at most 8·2·15·128 = 30720), then `vpmaddwd` by the
//! scale.

use crate::act::{bsum32, f32_le, q8k};
use crate::driver::{f16_at, put_lane, Format, Prefetch};
use crate::{WeightType, GROUP};

pub(crate) struct Q4K;

pub(crate) const DMIN: usize = 32;
pub(crate) const SC: usize = 64;
pub(crate) const MINS: usize = 192;
pub(crate) const QS: usize = 320;

/// ggml's `get_scale_min_k4`: scale and min of sub-block `j` from the 12 packed bytes.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Row `r`'s d, dmin, scales and mins (shared with q5_K, which has the same header).
pub(crate) fn repack_header(blk: &[u8], r: usize, out: &mut [u8]) {
    out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
    out[DMIN + 2 * r..][..2].copy_from_slice(&blk[2..4]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &blk[4..16]);
        out[SC + 16 * j + r] = sc;
        out[MINS + 32 * (j / 2) + 2 * r + j % 2] = m;
    }
}

/// ggml's q4_K / q5_K dot with one activation super-block, given each column's q:
/// `(Σ d·da·sumi, dmin·da·summ)` as ggml's scalar code forms them.
pub(crate) fn reference_k(blk: &[u8], a: &[u8], q: impl Fn(usize) -> i32) -> (f32, f32) {
    let (mut sumi, mut summ) = (0i32, 0i32);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &blk[4..16]);
        let s: i32 = (32 * j..32 * j + 32).map(|col| q(col) * q8k(a, col)).sum();
        sumi += sc as i32 * s;
        summ += m as i32 * bsum32(a, j);
    }
    let da = f32_le(a, 0);
    let t1 = f16_at(blk, 0) * da * sumi as f32;
    let t2 = f16_at(blk, 2) * da * summ as f32;
    (t1 - t2, t1.abs() + t2.abs())
}

/// The mins' share of the scalar kernel, and the final float step (shared with q5_K).
pub(crate) fn finish_scalar(p: &[u8], a: &[u8], r: usize, sumi: i32, acc: &mut f32) {
    let summ: i32 = (0..8)
        .map(|j| p[MINS + 32 * (j / 2) + 2 * r + j % 2] as i32 * bsum32(a, j))
        .sum();
    let da = f32_le(a, 0);
    *acc += f16_at(p, 2 * r) * da * sumi as f32;
    *acc -= f16_at(p, DMIN + 2 * r) * da * summ as f32;
}

/// NEON for q4_K and q5_K (`qs`: the offset of the nibble vectors, `qh`: of q5_K's fifth-bit
/// vectors), 4 rows at a time:
/// each sub-block's dot product times the rows' scales in i32, the mins' sums per row, then
/// `d·da·Σ − dmin·da·Σmins` in f32.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn neon_k(
    p: *const u8,
    a: *const u8,
    acc: &mut [std::arch::aarch64::float32x4_t; 4],
    qs: usize,
    qh: Option<usize>,
) {
    use crate::act::{A_QS, Q8K_BLOCK};
    use crate::neon::*;
    use std::arch::aarch64::*;
    let ab = std::slice::from_raw_parts(a, Q8K_BLOCK);
    let mins = std::slice::from_raw_parts(p.add(MINS), 4 * 32);
    let da = f32_le(ab, 0);
    let (m4, one) = (vdupq_n_u8(0x0f), vdupq_n_u8(1));
    for (quarter, acc) in acc.iter_mut().enumerate() {
        let rows = 4 * quarter;
        let mut sumi = vdupq_n_s32(0);
        for c in 0..4 {
            let (mut lo, mut hi) = ([vdupq_n_s8(0); 8], [vdupq_n_s8(0); 8]);
            for v in 0..8 {
                let x = vld1q_u8(p.add(qs + 64 * (8 * c + v) + 4 * rows));
                let (mut l, mut h) = (vandq_u8(x, m4), vshrq_n_u8::<4>(x));
                if let Some(qh) = qh {
                    // bits 2c (low nibbles) and 2c+1 (high nibbles): the fifth bits, worth 16
                    let b = vld1q_u8(p.add(qh + 64 * v + 4 * rows));
                    let b0 = vandq_u8(vshlq_u8(b, vdupq_n_s8(-2 * c as i8)), one);
                    let b1 = vandq_u8(vshlq_u8(b, vdupq_n_s8(-2 * c as i8 - 1)), one);
                    l = vorrq_u8(l, vshlq_n_u8::<4>(b0));
                    h = vorrq_u8(h, vshlq_n_u8::<4>(b1));
                }
                lo[v] = vreinterpretq_s8_u8(l);
                hi[v] = vreinterpretq_s8_u8(h);
            }
            let q = a.add(A_QS + 64 * c);
            let sc_lo = bytes4(p.add(SC + 16 * (2 * c) + rows), false);
            let sc_hi = bytes4(p.add(SC + 16 * (2 * c + 1) + rows), false);
            sumi = vmlaq_s32(sumi, dot32(&lo, q), sc_lo);
            sumi = vmlaq_s32(sumi, dot32(&hi, q.add(32)), sc_hi);
        }
        let summ: [i32; 4] = std::array::from_fn(|r| {
            (0..8)
                .map(|j| mins[32 * (j / 2) + 2 * (rows + r) + j % 2] as i32 * bsum32(ab, j))
                .sum()
        });
        let d = vmulq_n_f32(f16x4(p.add(2 * rows)), da);
        let dmin = vmulq_n_f32(f16x4(p.add(DMIN + 2 * rows)), da);
        *acc = vfmaq_f32(*acc, vcvtq_f32_s32(sumi), d);
        *acc = vfmsq_f32(*acc, vcvtq_f32_s32(vld1q_s32(summ.as_ptr())), dmin);
    }
}

impl Format for Q4K {
    const TY: WeightType = WeightType::Q4K;
    const PREFETCH: Prefetch = Prefetch::Twice;
    const HEADER: usize = QS;

    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]) {
        repack_header(blk, r, out);
        for v in 0..32 {
            put_lane(out, QS + 64 * v, r, &blk[16 + 4 * v..]);
        }
    }

    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32) {
        reference_k(blk, a, |col| {
            let (c, l) = (col / 64, col % 64);
            let byte = blk[16 + 32 * c + l % 32];
            (if l < 32 { byte & 15 } else { byte >> 4 }) as i32
        })
    }

    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for v in 0..8 {
                    for i in 0..4 {
                        let byte = p[QS + 64 * (8 * c + v) + 4 * r + i];
                        lo += (byte & 15) as i32 * q8k(a, 64 * c + 4 * v + i);
                        hi += (byte >> 4) as i32 * q8k(a, 64 * c + 32 + 4 * v + i);
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
        let (m4, m4_x16) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0xf0u8 as i8));
        let mut sumi = [_mm512_setzero_si512(); N];
        // one sub-block at a time: 8 registers of weights, the rest for up to 8 tokens
        for j in 0..8 {
            ahead.part(j, 8);
            // odd sub-blocks: the high nibbles times 16 (`x86::nibbles512_x16`)
            let mask = if j % 2 == 1 { m4_x16 } else { m4 };
            let mut u = [_mm512_setzero_si512(); 8];
            for (v, u) in u.iter_mut().enumerate() {
                let x = _mm512_loadu_si512(p.add(QS + 64 * (8 * (j / 2) + v)).cast());
                *u = _mm512_and_si512(x, mask);
            }
            k_sub_block_512(p, a, j, &u, j % 2 == 1, &mut sumi);
        }
        k_finish_512(p, a, &sumi, acc);
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
        for c in 0..4 {
            ahead.part(c, 4);
            let (lo, hi) = chunk256(p, c, half);
            for (j, u) in [(2 * c, &lo), (2 * c + 1, &hi)] {
                let sc = scales16(p.add(SC + 16 * j + 8 * half), false);
                for (sumi, &at) in sumi.iter_mut().zip(a) {
                    let s16 = maddubs256::<8>(u, at.add(A_QS + 32 * j));
                    *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(s16, sc));
                }
            }
        }
        k_finish_256(p, a, half, &sumi, acc);
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
        use crate::act::A_QS;
        use crate::x86::*;
        use std::arch::x86_64::*;
        let mut sumi = [_mm256_setzero_si256(); N];
        for c in 0..4 {
            ahead.part(c, 4);
            // the high nibbles times 16 (`x86::nibbles256_x16`), their sums shifted back
            let (mut lo, mut hi16) = ([_mm256_setzero_si256(); 8], [_mm256_setzero_si256(); 8]);
            for v in 0..8 {
                (lo[v], hi16[v]) = nibbles256_x16(p.add(QS + 64 * (8 * c + v) + 32 * half));
            }
            for (j, u) in [(2 * c, &lo), (2 * c + 1, &hi16)] {
                let sc = scales32(p.add(SC + 16 * j + 8 * half), false);
                for (sumi, &at) in sumi.iter_mut().zip(a) {
                    let s = dot256_vnni(_mm256_setzero_si256(), u, at.add(A_QS + 32 * j));
                    let s = if j % 2 == 1 {
                        _mm256_srai_epi32::<4>(s)
                    } else {
                        s
                    };
                    *sumi = _mm256_add_epi32(*sumi, _mm256_mullo_epi32(s, sc));
                }
            }
        }
        k_finish_256(p, a, half, &sumi, acc);
    }

    #[cfg(target_arch = "aarch64")]
    const NEON: bool = true;

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(p: *const u8, a: *const u8, acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        neon_k(p, a, acc, QS, None)
    }
}

/// AVX2: chunk `c` (64 columns) of the group's half `half`: its 8 vectors' low nibbles
/// (sub-block 2c) and high nibbles (sub-block 2c + 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn chunk256(
    p: *const u8,
    c: usize,
    half: usize,
) -> (
    [std::arch::x86_64::__m256i; 8],
    [std::arch::x86_64::__m256i; 8],
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm256_setzero_si256(); 8];
    let mut hi = [_mm256_setzero_si256(); 8];
    for v in 0..8 {
        (lo[v], hi[v]) = crate::x86::nibbles256(p.add(QS + 64 * (8 * c + v) + 32 * half));
    }
    (lo, hi)
}

/// Sub-block `j` (32 columns, `u`: 8 vectors of 4 columns) of a q4_K/q5_K super-block into
/// `sumi`, times the rows' scales; `x16`: `u` holds the values times 16, their sum is shifted
/// back. Shared with q5_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn k_sub_block_512<const N: usize>(
    p: *const u8,
    a: &[*const u8; N],
    j: usize,
    u: &[std::arch::x86_64::__m512i; 8],
    x16: bool,
    sumi: &mut [std::arch::x86_64::__m512i; N],
) {
    use crate::act::A_QS;
    use crate::x86::*;
    use std::arch::x86_64::*;
    let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(SC + 16 * j).cast()));
    for (sumi, &at) in sumi.iter_mut().zip(a) {
        let s = dot512(_mm512_setzero_si512(), u, at.add(A_QS + 32 * j));
        let s = if x16 { _mm512_srai_epi32::<4>(s) } else { s };
        *sumi = _mm512_add_epi32(*sumi, _mm512_mullo_epi32(s, sc));
    }
}

/// The mins and the float step of a q4_K/q5_K super-block (AVX-512).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn k_finish_512<const N: usize>(
    p: *const u8,
    a: &[*const u8; N],
    sumi: &[std::arch::x86_64::__m512i; N],
    acc: &mut [std::arch::x86_64::__m512; N],
) {
    use crate::act::A_BS32;
    use crate::x86::*;
    use std::arch::x86_64::*;
    let dw = f16x16(p);
    let dm = f16x16(p.add(DMIN));
    let mut mins = [_mm512_setzero_si512(); 4];
    for (i, mn) in mins.iter_mut().enumerate() {
        *mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.add(MINS + 32 * i).cast()));
    }
    for ((acc, &at), &sumi) in acc.iter_mut().zip(a).zip(sumi) {
        let mut summ = _mm512_setzero_si512();
        for (i, &mn) in mins.iter().enumerate() {
            let pair = _mm512_set1_epi32(word(at.add(A_BS32 + 4 * i)));
            summ = _mm512_dpwssd_epi32(summ, mn, pair);
        }
        let da = _mm512_set1_ps(f32_at(at));
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dw, da), *acc);
        *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(dm, da), *acc);
    }
}

/// The mins and the float step of a q4_K/q5_K super-block (AVX2, rows 8·half ..).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn k_finish_256<const N: usize>(
    p: *const u8,
    a: &[*const u8; N],
    half: usize,
    sumi: &[std::arch::x86_64::__m256i; N],
    acc: &mut [std::arch::x86_64::__m256; N],
) {
    use crate::act::A_BS32;
    use crate::x86::*;
    use std::arch::x86_64::*;
    let dw = f16x8(p.add(16 * half));
    let dm = f16x8(p.add(DMIN + 16 * half));
    let mut mins = [_mm256_setzero_si256(); 4];
    for (i, mn) in mins.iter_mut().enumerate() {
        *mn = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(MINS + 32 * i + 16 * half).cast()));
    }
    for ((acc, &at), &sumi) in acc.iter_mut().zip(a).zip(sumi) {
        let mut summ = _mm256_setzero_si256();
        for (i, &mn) in mins.iter().enumerate() {
            let pair = _mm256_set1_epi32(word(at.add(A_BS32 + 4 * i)));
            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mn, pair));
        }
        let da = _mm256_set1_ps(f32_at(at));
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dw, da), *acc);
        *acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(dm, da), *acc);
    }
}
