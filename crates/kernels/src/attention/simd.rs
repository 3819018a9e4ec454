//! The attention kernels' vectors: one trait, [`Vector`], for a register of `W` f32 lanes, with
//! three implementations — portable (16 lanes as an array, which compilers vectorize for NEON or
//! SSE), AVX2 (8 lanes) and AVX-512 (16 lanes). The kernels in `attention.rs` are written once
//! against the trait and instantiated inside `#[target_feature]` functions, so every method
//! (`#[inline(always)]`) is compiled with the instruction set of its caller.
//!
//! `exp` is ours, the same algorithm everywhere: `e^x = 2^n · e^r` with `n = round(x·log2 e)`,
//! `r = x − n·ln 2` in two parts (Cody and Waite: `n·LN2_HI` is exact for |n| < 2^15), and `e^r`
//! by its Taylor series to `r^7/7!` (|r| ≤ ln2/2: truncation below 2^−27 relative). Each of the
//! 7 Horner steps rounds once (FMA) or twice (portable: multiply, add), and a step's error is
//! damped by the powers of |r| ≤ 0.35 that multiply it, so the result is within [`EXP_ULPS`]
//! units of roundoff of `e^x` — checked against f64 in the tests. Arguments below −87.3 give 0
//! (`e^x` is below f32's normal range there: the softmax's masked and negligible terms).

/// Bound on the relative error of [`Vector::exp`] in units of roundoff (2^−24).
pub const EXP_ULPS: f32 = 8.0;

pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits (n·LN2_HI is exact).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `e^x` is not a normal f32: the result is 0.
pub(crate) const EXP_MIN: f32 = -87.3;
/// Above this `e^x` overflows (arguments are clamped to it; softmax arguments are ≤ 0).
pub(crate) const EXP_MAX: f32 = 88.0;
/// 1/k! for k = 7 down to 2 (Horner order).
pub(crate) const EXP_POLY: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// A register of `W` f32 lanes.
///
/// # Safety
/// Implementations for an instruction set may only be used where the CPU has it (the kernels
/// are entered through `Isa` values whose availability was checked). Pointers passed to `load`
/// and `store` must be valid for `W` f32s, those of the other methods for what their docs name.
pub(crate) trait Vector: Copy {
    const W: usize;
    /// Whether the kernels built on this vector score quantized keys in 16-bit integers
    /// (qk16.rs, with the `int_*` methods).
    const INT_SCORES: bool;
    /// `W` lanes of i32: the integer scores' accumulators, or `W` pairs of i16 (the low
    /// element in the low half of a lane).
    type Int: Copy;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a · b + c`.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn max(a: Self, b: Self) -> Self;
    /// Lanes equal to −∞ become 0 (the row maximum of rows whose keys are all masked so far).
    unsafe fn neg_inf_to_zero(self) -> Self;
    /// `e^x` per lane (module doc), 0 for lanes below `EXP_MIN` (−∞ included).
    unsafe fn exp(self) -> Self;
    /// `W` f16 values at `p` (unaligned).
    unsafe fn from_f16(p: *const u8) -> Self;
    /// The f16 at `p` (unaligned) in every lane: a block's scale.
    unsafe fn splat_f16(p: *const u8) -> Self;
    /// `W` i8 values at `p`.
    unsafe fn from_i8(p: *const u8) -> Self;
    /// The low (or, with `high`, the high) nibbles of the `W` bytes at `p`, less 8.
    unsafe fn from_nibbles(p: *const u8, high: bool) -> Self;
    /// 0 in every lane.
    unsafe fn int_zero() -> Self::Int;
    /// `W` pairs of i16 at `p`.
    unsafe fn int_load(p: *const i16) -> Self::Int;
    /// The pair of i16 at `p` in every lane.
    unsafe fn int_splat_pair(p: *const i16) -> Self::Int;
    /// `acc + a.lo · b.lo + a.hi · b.hi` per lane (`a`, `b` pairs of i16; no overflow: the
    /// caller's sums stay below 2³¹).
    unsafe fn int_dot(acc: Self::Int, a: Self::Int, b: Self::Int) -> Self::Int;
    /// The lanes as f32 (rounded to nearest).
    unsafe fn int_to_f32(a: Self::Int) -> Self;
    /// A q8_0 block's 32 values (i8 at `p`) as i16 at `out`.
    unsafe fn widen_i8x32(p: *const u8, out: *mut i16);
    /// A q4_0 block's 32 values (16 bytes at `p`: the low nibbles, then the high ones), less 8,
    /// as i16 at `out`.
    unsafe fn widen_nibbles32(p: *const u8, out: *mut i16);
}

/// The portable [`Vector::widen_i8x32`] and [`Vector::widen_nibbles32`].
#[inline(always)]
unsafe fn widen_portable(p: *const u8, out: *mut i16, nibbles: bool) {
    let out = std::slice::from_raw_parts_mut(out, 32);
    if nibbles {
        let b: [u8; 16] = std::ptr::read_unaligned(p.cast());
        for (i, &x) in b.iter().enumerate() {
            out[i] = (x & 0x0f) as i16 - 8;
            out[16 + i] = (x >> 4) as i16 - 8;
        }
    } else {
        let b: [u8; 32] = std::ptr::read_unaligned(p.cast());
        for (o, &x) in out.iter_mut().zip(&b) {
            *o = x as i8 as i16;
        }
    }
}

/// The portable vector: 16 lanes in an array.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 16]);

impl Portable {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        Portable(self.0.map(f))
    }
    #[inline(always)]
    fn zip(a: Self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|i| f(a.0[i], b.0[i])))
    }
}

/// [`Vector::exp`] for one lane, with separate multiplies and adds (no FMA assumed).
#[inline(always)]
pub(crate) fn exp_portable(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    // round to nearest (ties to even) by adding and removing 1.5·2^23
    let n = (xc * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < EXP_MIN {
        0.0
    } else {
        p * scale
    }
}

impl Vector for Portable {
    const W: usize = 16;
    const INT_SCORES: bool = false;
    type Int = [i32; 16];
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 16])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 16])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p.cast()))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p.cast(), self.0)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Self::zip(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Self::zip(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        Self::zip(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        Self::zip(a, b, |x, y| if y > x { y } else { x })
    }
    #[inline(always)]
    unsafe fn neg_inf_to_zero(self) -> Self {
        self.map(|x| if x == f32::NEG_INFINITY { 0.0 } else { x })
    }
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        self.map(exp_portable)
    }
    #[inline(always)]
    unsafe fn from_f16(p: *const u8) -> Self {
        let b: [u8; 32] = std::ptr::read_unaligned(p.cast());
        Portable(std::array::from_fn(|i| {
            half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
        }))
    }
    #[inline(always)]
    unsafe fn splat_f16(p: *const u8) -> Self {
        Self::splat(half::f16::from_le_bytes(std::ptr::read_unaligned(p.cast())).to_f32())
    }
    #[inline(always)]
    unsafe fn from_i8(p: *const u8) -> Self {
        let b: [u8; 16] = std::ptr::read_unaligned(p.cast());
        Portable(b.map(|q| q as i8 as f32))
    }
    #[inline(always)]
    unsafe fn from_nibbles(p: *const u8, high: bool) -> Self {
        let b: [u8; 16] = std::ptr::read_unaligned(p.cast());
        let shift = if high { 4 } else { 0 };
        Portable(b.map(|q| ((q >> shift) & 0x0f) as f32 - 8.0))
    }
    #[inline(always)]
    unsafe fn int_zero() -> [i32; 16] {
        [0; 16]
    }
    #[inline(always)]
    unsafe fn int_load(p: *const i16) -> [i32; 16] {
        std::ptr::read_unaligned(p.cast())
    }
    #[inline(always)]
    unsafe fn int_splat_pair(p: *const i16) -> [i32; 16] {
        [p.cast::<i32>().read_unaligned(); 16]
    }
    #[inline(always)]
    unsafe fn int_dot(acc: [i32; 16], a: [i32; 16], b: [i32; 16]) -> [i32; 16] {
        let (lo, hi) = (|x: i32| x as i16 as i32, |x: i32| x >> 16);
        std::array::from_fn(|i| acc[i] + lo(a[i]) * lo(b[i]) + hi(a[i]) * hi(b[i]))
    }
    #[inline(always)]
    unsafe fn int_to_f32(a: [i32; 16]) -> Self {
        Portable(a.map(|x| x as f32))
    }
    #[inline(always)]
    unsafe fn widen_i8x32(p: *const u8, out: *mut i16) {
        widen_portable(p, out, false)
    }
    #[inline(always)]
    unsafe fn widen_nibbles32(p: *const u8, out: *mut i16) {
        widen_portable(p, out, true)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// 8 lanes (AVX2 + FMA).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Vector for Avx2 {
        const W: usize = 8;
        const INT_SCORES: bool = true;
        type Int = __m256i;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx2(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            Avx2(_mm256_mul_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx2(_mm256_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            Avx2(_mm256_sub_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            Avx2(_mm256_max_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn neg_inf_to_zero(self) -> Self {
            let inf = _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, _mm256_set1_ps(f32::NEG_INFINITY));
            Avx2(_mm256_andnot_ps(inf, self.0))
        }
        #[inline(always)]
        unsafe fn exp(self) -> Self {
            let x = self.0;
            let xc = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)),
                _mm256_set1_ps(EXP_MAX),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
            // 2^n: n + 127 in the exponent field (n ≥ −126 for x ≥ EXP_MIN)
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            let y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_MIN));
            Avx2(_mm256_and_ps(y, keep))
        }
        #[inline(always)]
        unsafe fn from_f16(p: *const u8) -> Self {
            Avx2(_mm256_cvtph_ps(_mm_loadu_si128(p.cast())))
        }
        #[inline(always)]
        unsafe fn splat_f16(p: *const u8) -> Self {
            let h = p.cast::<i16>().read_unaligned();
            Avx2(_mm256_cvtph_ps(_mm_set1_epi16(h)))
        }
        #[inline(always)]
        unsafe fn from_i8(p: *const u8) -> Self {
            Avx2(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                p.cast(),
            ))))
        }
        #[inline(always)]
        unsafe fn from_nibbles(p: *const u8, high: bool) -> Self {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
            let b = if high { _mm256_srli_epi32::<4>(b) } else { b };
            let q = _mm256_sub_epi32(
                _mm256_and_si256(b, _mm256_set1_epi32(0x0f)),
                _mm256_set1_epi32(8),
            );
            Avx2(_mm256_cvtepi32_ps(q))
        }
        #[inline(always)]
        unsafe fn int_zero() -> __m256i {
            _mm256_setzero_si256()
        }
        #[inline(always)]
        unsafe fn int_load(p: *const i16) -> __m256i {
            _mm256_loadu_si256(p.cast())
        }
        #[inline(always)]
        unsafe fn int_splat_pair(p: *const i16) -> __m256i {
            _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
        }
        #[inline(always)]
        unsafe fn int_dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
        }
        #[inline(always)]
        unsafe fn int_to_f32(a: __m256i) -> Self {
            Avx2(_mm256_cvtepi32_ps(a))
        }
        #[inline(always)]
        unsafe fn widen_i8x32(p: *const u8, out: *mut i16) {
            let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
            let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16).cast()));
            _mm256_storeu_si256(out.cast(), lo);
            _mm256_storeu_si256(out.add(16).cast(), hi);
        }
        #[inline(always)]
        unsafe fn widen_nibbles32(p: *const u8, out: *mut i16) {
            let x = _mm_loadu_si128(p.cast());
            let m = _mm_set1_epi8(0x0f);
            let eight = _mm256_set1_epi16(8);
            let lo = _mm256_cvtepu8_epi16(_mm_and_si128(x, m));
            let hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(x), m));
            _mm256_storeu_si256(out.cast(), _mm256_sub_epi16(lo, eight));
            _mm256_storeu_si256(out.add(16).cast(), _mm256_sub_epi16(hi, eight));
        }
    }

    /// 16 lanes (AVX-512 F; the integer methods need BW and VNNI, which every entry through
    /// `Isa::Avx512Vnni` has).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Vector for Avx512 {
        const W: usize = 16;
        const INT_SCORES: bool = true;
        type Int = __m512i;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx512(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            Avx512(_mm512_mul_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx512(_mm512_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            Avx512(_mm512_sub_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            Avx512(_mm512_max_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn neg_inf_to_zero(self) -> Self {
            let inf = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, _mm512_set1_ps(f32::NEG_INFINITY));
            Avx512(_mm512_mask_blend_ps(inf, self.0, _mm512_setzero_ps()))
        }
        #[inline(always)]
        unsafe fn exp(self) -> Self {
            let x = self.0;
            let xc = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)),
                _mm512_set1_ps(EXP_MAX),
            );
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
            let mut p = _mm512_set1_ps(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
            }
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
            let y = _mm512_scalef_ps(p, n);
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_MIN));
            Avx512(_mm512_maskz_mov_ps(keep, y))
        }
        #[inline(always)]
        unsafe fn from_f16(p: *const u8) -> Self {
            Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast())))
        }
        #[inline(always)]
        unsafe fn splat_f16(p: *const u8) -> Self {
            let h = p.cast::<i16>().read_unaligned();
            Avx512(_mm512_cvtph_ps(_mm256_set1_epi16(h)))
        }
        #[inline(always)]
        unsafe fn from_i8(p: *const u8) -> Self {
            Avx512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                p.cast(),
            ))))
        }
        #[inline(always)]
        unsafe fn from_nibbles(p: *const u8, high: bool) -> Self {
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
            let b = if high { _mm512_srli_epi32::<4>(b) } else { b };
            let q = _mm512_sub_epi32(
                _mm512_and_si512(b, _mm512_set1_epi32(0x0f)),
                _mm512_set1_epi32(8),
            );
            Avx512(_mm512_cvtepi32_ps(q))
        }
        #[inline(always)]
        unsafe fn int_zero() -> __m512i {
            _mm512_setzero_si512()
        }
        #[inline(always)]
        unsafe fn int_load(p: *const i16) -> __m512i {
            _mm512_loadu_si512(p.cast())
        }
        #[inline(always)]
        unsafe fn int_splat_pair(p: *const i16) -> __m512i {
            _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
        }
        #[inline(always)]
        unsafe fn int_dot(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
            _mm512_dpwssd_epi32(acc, a, b)
        }
        #[inline(always)]
        unsafe fn int_to_f32(a: __m512i) -> Self {
            Avx512(_mm512_cvtepi32_ps(a))
        }
        #[inline(always)]
        unsafe fn widen_i8x32(p: *const u8, out: *mut i16) {
            _mm512_storeu_si512(
                out.cast(),
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast())),
            );
        }
        #[inline(always)]
        unsafe fn widen_nibbles32(p: *const u8, out: *mut i16) {
            let x = _mm_loadu_si128(p.cast());
            let m = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(x, m);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m);
            let w = _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
            _mm512_storeu_si512(out.cast(), _mm512_sub_epi16(w, _mm512_set1_epi16(8)));
        }
    }
}
