//! The classic 32-element block types (f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1), ggml-exact.
//!
//! The f32 -> {F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1} encoders and the {F32, F16, BF16, Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0} -> f32 decoders used to requantize a GGUF.
//! Their output is bit-identical to llama.cpp 2026's `ggml_quantize_chunk` without an importance
//! matrix (`quantize_row_*_ref`, compiled into ggml-base with no `-march`) and to ggml's
//! `to_float` (tests/quant_golden.rs), and to the ggml this workspace links (llama.cpp b2757)
//! except at the rare exact rounding points noted below (tests/quant_exact.rs):
//!
//! * f32 -> f16 is round-to-nearest-even; overflow gives ±inf.
//! * `x0 = x*id; (int8_t)(x0 + 8.5f)` rounds twice, as ggml-base computes it without FMA.
//!   b2757, built with `-march=native`, fuses it into one multiply-add; the two differ on about
//!   3.5 blocks in 100,000 of random data (measured: 5 q4_0 and 2 q5_0 blocks of 200,000). Where
//!   they differ llama.cpp 2026 is the reference, as llama-quantize 2026 writes it.
//! * float -> int8 casts are `cvttps2dq` followed by keeping the low byte: NaN / out-of-range
//!   give `i32::MIN` (low byte 0), and `MIN(15, ...)` is a *signed* byte minimum.
//! * q8_0 uses `roundf` (ties away from zero), not round-to-even.
//! * the q4_0/q5_0 scale is the *first* element of largest magnitude, divided by -8 / -16; an
//!   all-zero block gets the scale -0.0 (f16 bits 0x8000). q4_1/q5_1 take the first occurrence of
//!   min and max, which decides the sign of a zero `m`.
//! * q4_1/q5_1 dequantization is `fma(q, d, m)` in ggml; `q*d` is exact, so one rounding of
//!   `q*d + m` is the same. NaNs coming out of dequantization get the payload x86 would give.
//!
//! Inputs are assumed free of NaN (ggml's own handling of NaN inputs is an accident of how each
//! loop was compiled); everything else, including ±inf, subnormals and values beyond the f16
//! range, matches ggml.

use gguf::GgmlType;

/// Elements per block of every classic quantized type.
pub(super) const QK: usize = 32;

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even on the upper 16 bits; a NaN keeps its
/// sign and upper payload and is made quiet.
pub(super) fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Encodes whole blocks of `src` into `out` (exactly the right size, checked by the callers).
pub(super) fn encode(ty: GgmlType, src: &[f32], out: &mut [u8]) {
    match ty {
        GgmlType::F32 => {
            for (o, x) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            let mut xs = src.chunks_exact(8);
            let mut os = out.chunks_exact_mut(16);
            for (x, o) in (&mut xs).zip(&mut os) {
                let mut h = [0u16; 8];
                for (h, &x) in h.iter_mut().zip(x) {
                    *h = f32_to_f16_bits(x);
                }
                for (o, h) in o.chunks_exact_mut(2).zip(h) {
                    o.copy_from_slice(&h.to_le_bytes());
                }
            }
            for (o, &x) in os.into_remainder().chunks_exact_mut(2).zip(xs.remainder()) {
                o.copy_from_slice(&f32_to_f16_bits(x).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_bf16_bits(x).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => blocks::<34>(src, out, q8_0_block),
        GgmlType::Q4_0 => blocks::<18>(src, out, q4_0_block),
        GgmlType::Q4_1 => blocks::<20>(src, out, q4_1_block),
        GgmlType::Q5_0 => blocks::<22>(src, out, q5_0_block),
        GgmlType::Q5_1 => blocks::<24>(src, out, q5_1_block),
        _ => unreachable!("encode called with unchecked type {ty}"),
    }
}

#[inline(always)]
fn blocks<const B: usize>(src: &[f32], out: &mut [u8], f: fn(&[f32; QK], &mut [u8; B])) {
    for (x, o) in src.chunks_exact(QK).zip(out.chunks_exact_mut(B)) {
        // Both conversions are infallible: chunks_exact yields exactly QK / B items.
        f(x.try_into().unwrap(), o.try_into().unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar helpers that reproduce x86 / ggml semantics.

// Float -> int8 conversions. GCC compiles ggml's `(int8_t)(x0 + 8.5f)` and `roundf` + store to
// `cvttps2dq`/`cvttss2si` (truncation toward zero; NaN and out-of-range give i32::MIN) and keeps
// the low byte. Each block encoder has two paths:
//
// * the general path, exact for every input, using `cvtt` below;
// * a fast path, taken when the inputs and the scale 1/d are finite. Then d = max/-8 (or /-16,
//   range/15, range/31, amax/127) with |x| <= max, so a product is at most the quant range times
//   (1 + 2^-20) (d >= 2^-128 whenever 1/d is finite, so d keeps 21 bits even when subnormal):
//   the q4/q5 arguments lie in (0, 34) and the q8_0 ones in [-128, 128]. On those ranges
//   truncation and rounding are done with the exact float tricks below, which vectorize on plain
//   SSE2 (Rust's saturating `as i32` does not).

/// `cvttss2si`: truncation toward zero, `i32::MIN` for NaN and out-of-range.
#[inline(always)]
fn cvtt(x: f32) -> i32 {
    if (-2147483648.0..2147483648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// `cvttss2si(roundf(x))`: ties away from zero, `i32::MIN` for NaN and out-of-range.
#[inline(always)]
fn round_cvtt(x: f32) -> i32 {
    let t = cvtt(x);
    // Exact for |x| < 2^31: t is x's integer part.
    let frac = x - t as f32;
    let adj = (frac >= 0.5) as i32 - (frac <= -0.5) as i32;
    if t == i32::MIN {
        i32::MIN
    } else {
        t + adj
    }
}

/// `x + MAGIC - MAGIC` rounds x to an integer (to nearest even) for |x| < 2^22.
const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23

/// `roundf(p)` as an integer, ties away from zero, for |p| < 2^22 (fast path).
#[inline(always)]
fn round_int(p: f32) -> i32 {
    let t = p + MAGIC;
    let n = t - MAGIC; // p rounded to nearest, ties to even
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let d = p - n; // exact
                   // Ties that went to the even neighbour towards zero move away from zero.
    k + (d == 0.5 && p > 0.0) as i32 - (d == -0.5 && p < 0.0) as i32
}

/// f32 -> f16 bits, round-to-nearest-even, exactly as F16C's `vcvtps2ph` (imm 0): overflow to
/// ±inf, subnormals rounded, NaN quieted keeping the top payload bits.
#[inline(always)]
pub fn f32_to_f16_bits(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = (x >> 16) & 0x8000;
    let a = x & 0x7FFF_FFFF;
    // Normal f16 (or overflow to inf): rebias the exponent, round the 13 dropped bits to even.
    let odd = (a >> 13) & 1;
    let normal = a.wrapping_add(0xC800_0FFF).wrapping_add(odd) >> 13;
    // Subnormal f16: adding 0.5 lines the 10 result bits up at the bottom of the mantissa, and
    // the hardware's own round-to-nearest-even does the rounding.
    let sub = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3F00_0000);
    let inf_nan = if a > 0x7F80_0000 {
        0x7E00 | ((a >> 13) & 0x3FF)
    } else {
        0x7C00
    };
    let h = if a >= 0x4780_0000 {
        inf_nan
    } else if a < 0x3880_0000 {
        sub
    } else {
        normal
    };
    (sign | h) as u16
}

/// f16 bits -> f32, exactly as F16C's `vcvtph2ps` (NaNs are quieted).
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let e = h & 0x7C00;
    let m = h & 0x03FF;
    let normal = ((h & 0x7FFF) << 13) + 0x3800_0000;
    let sub = (m as f32 * (1.0 / 16_777_216.0)).to_bits();
    let inf_nan = 0x7F80_0000 | (m << 13) | if m != 0 { 0x0040_0000 } else { 0 };
    let bits = if e == 0x7C00 {
        inf_nan
    } else if e == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(sign | bits)
}

/// Largest |v| (no NaN inputs, so the order of comparisons does not matter). Eight independent
/// lanes so the loop vectorizes.
#[inline(always)]
fn abs_max(x: &[f32; QK]) -> f32 {
    let mut acc = [0f32; 8];
    for c in x.chunks_exact(8) {
        for k in 0..8 {
            acc[k] = acc[k].max(c[k].abs());
        }
    }
    acc.iter().fold(0f32, |m, &a| m.max(a))
}

/// The value of largest magnitude, first occurrence (ggml:
/// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`); +0.0 when all are zero.
#[inline(always)]
fn first_absmax(x: &[f32; QK], amax: f32) -> f32 {
    if amax == 0.0 {
        return 0.0;
    }
    let (mut pos, mut neg) = (false, false);
    for &v in x {
        pos |= v == amax;
        neg |= v == -amax;
    }
    match (pos, neg) {
        (true, false) => amax,
        (false, true) => -amax,
        _ => first_of_either_sign(x, amax),
    }
}

#[cold]
fn first_of_either_sign(x: &[f32; QK], amax: f32) -> f32 {
    x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0)
}

/// `min`/`max` as ggml's q4_1/q5_1 loop finds them: start at ±FLT_MAX, replace on strict
/// inequality. Equal values have equal bits except ±0.0, where the first one wins.
#[inline(always)]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let mut lo = [f32::MAX; 8];
    let mut hi = [-f32::MAX; 8];
    for c in x.chunks_exact(8) {
        for k in 0..8 {
            let v = c[k];
            lo[k] = if v < lo[k] { v } else { lo[k] };
            hi[k] = if v > hi[k] { v } else { hi[k] };
        }
    }
    let mut min = lo.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
    let mut max = hi.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    if min == 0.0 {
        min = first_zero(x);
    }
    if max == 0.0 {
        max = first_zero(x);
    }
    (min, max)
}

#[cold]
fn first_zero(x: &[f32; QK]) -> f32 {
    x.iter().copied().find(|v| *v == 0.0).unwrap_or(0.0)
}

#[inline(always)]
fn put_f16(out: &mut [u8], v: f32) {
    out.copy_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Block encoders (one 32-element block each; layouts from ggml-common.h).

/// `block_q8_0 { f16 d; int8 qs[32]; }`
fn q8_0_block(x: &[f32; QK], out: &mut [u8; 34]) {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut out[0..2], d);
    let qs: &mut [u8; QK] = (&mut out[2..34]).try_into().unwrap();
    if amax < f32::INFINITY && id.abs() < f32::INFINITY {
        for i in 0..QK {
            qs[i] = round_int(x[i] * id) as u8;
        }
    } else {
        for i in 0..QK {
            qs[i] = round_cvtt(x[i] * id) as u8;
        }
    }
}

/// The q4/q5 quants: t = `cvtt(fl(fl((x - sub) * id) + bias))` (llama.cpp 2026's
/// `x0 = (x - min)*id; (int8_t)(x0 + bias)` in ggml-base, built without FMA: two roundings), then
/// `MIN(hi, (int8_t)t)` when `hi` is given, the low byte of t otherwise. `sub` is 0.0 for
/// q4_0/q5_0 (x - 0.0 == x exactly).
///
/// Fast path (inputs and `id` finite, see above): the arguments are in (0, 34), so floor == trunc,
/// computed with the exact float trick below, which vectorizes.
#[inline(always)]
fn quants(x: &[f32; QK], sub: f32, id: f32, bias: f32, hi: Option<u8>, fast: bool) -> [u8; QK] {
    let mut q = [0u8; QK];
    if !fast {
        for i in 0..QK {
            let t = cvtt((x[i] - sub) * id + bias);
            q[i] = match hi {
                Some(h) => (t as i8).min(h as i8) as u8,
                None => t as u8,
            };
        }
        return q;
    }
    for i in 0..QK {
        let r = (x[i] - sub) * id + bias; // two roundings: Rust never contracts
        let t = r + MAGIC;
        let n = t - MAGIC; // r rounded to nearest
        let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32) - (n > r) as i32;
        q[i] = k as u8;
    }
    if let Some(h) = hi {
        // Values are 0..=33 here, so the unsigned minimum equals ggml's signed one.
        for v in q.iter_mut() {
            *v = (*v).min(h);
        }
    }
    q
}

/// `block_q4_0 { f16 d; u8 qs[16]; }`, element j in the low nibble of qs[j], j+16 in the high.
fn q4_0_block(x: &[f32; QK], out: &mut [u8; 18]) {
    let amax = abs_max(x);
    let d = first_absmax(x, amax) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = quants(
        x,
        0.0,
        id,
        8.5,
        Some(15),
        amax < f32::INFINITY && id.abs() < f32::INFINITY,
    );
    put_f16(&mut out[0..2], d);
    pack4(&q, &mut out[2..18]);
}

/// `block_q4_1 { f16 d; f16 m; u8 qs[16]; }`
fn q4_1_block(x: &[f32; QK], out: &mut [u8; 20]) {
    let (min, max) = min_max(x);
    let range = max - min;
    let d = range / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = quants(
        x,
        min,
        id,
        0.5,
        Some(15),
        range < f32::INFINITY && id < f32::INFINITY,
    );
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], min);
    pack4(&q, &mut out[4..20]);
}

/// `block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }`; bit 4 of element j goes to bit j of qh (LE).
fn q5_0_block(x: &[f32; QK], out: &mut [u8; 22]) {
    let amax = abs_max(x);
    let d = first_absmax(x, amax) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = quants(
        x,
        0.0,
        id,
        16.5,
        Some(31),
        amax < f32::INFINITY && id.abs() < f32::INFINITY,
    );
    put_f16(&mut out[0..2], d);
    pack5(&q, &mut out[2..22]);
}

/// `block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }`
fn q5_1_block(x: &[f32; QK], out: &mut [u8; 24]) {
    let (min, max) = min_max(x);
    let range = max - min;
    let d = range / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = quants(
        x,
        min,
        id,
        0.5,
        None,
        range < f32::INFINITY && id < f32::INFINITY,
    );
    put_f16(&mut out[0..2], d);
    put_f16(&mut out[2..4], min);
    pack5(&q, &mut out[4..24]);
}

/// `qs[j] = q[j] | q[j+16] << 4`. ggml does not mask the low nibble (q4 values are 0..=15
/// except the low byte of a NaN/overflow truncation, which is 0).
#[inline(always)]
fn pack4(q: &[u8; QK], out: &mut [u8]) {
    for (j, o) in out[..QK / 2].iter_mut().enumerate() {
        *o = q[j] | (q[j + QK / 2] << 4);
    }
}

/// qh (4 bytes, LE u32: bit 4 of q[j] at bit j) then qs (16 bytes: low nibbles of q[j], q[j+16]).
#[inline(always)]
fn pack5(q: &[u8; QK], out: &mut [u8]) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= (((v & 0x10) >> 4) as u32) << j;
    }
    out[0..4].copy_from_slice(&qh.to_le_bytes());
    for (j, o) in out[4..20].iter_mut().enumerate() {
        *o = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantization.

/// x86's default NaN (what an invalid operation such as `0 * inf` returns).
const DEFAULT_NAN: u32 = 0xFFC0_0000;

/// `q * d` as ggml's `x0*d`, including the NaN x86 returns.
#[inline(always)]
fn mul_x86(q: f32, d: f32) -> f32 {
    let r = q * d;
    if r.is_nan() {
        f32::from_bits(if d.is_nan() {
            d.to_bits() | 0x0040_0000
        } else {
            DEFAULT_NAN
        })
    } else {
        r
    }
}

/// `vfmadd(q, d, m)` as ggml's `x0*d + m`: q*d is exact (|q| < 32, d an f16), so one rounding of
/// the sum is the fused result. NaNs: d's first (a multiplicand), then m's, else the default NaN.
#[inline(always)]
fn mul_add_x86(q: f32, d: f32, m: f32) -> f32 {
    let r = q * d + m;
    if r.is_nan() {
        f32::from_bits(if d.is_nan() {
            d.to_bits() | 0x0040_0000
        } else if m.is_nan() {
            m.to_bits() | 0x0040_0000
        } else {
            DEFAULT_NAN
        })
    } else {
        r
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// ggml's `to_float` for the classic types; `src` is exactly whole blocks (checked by the caller).
pub(super) fn decode(ty: GgmlType, src: &[u8], dst: &mut Vec<f32>) {
    match ty {
        GgmlType::F32 => dst.extend(
            src.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => dst.extend(
            src.chunks_exact(2)
                .map(|b| f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        ),
        GgmlType::BF16 => dst.extend(
            src.chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        ),
        GgmlType::Q8_0 => dequant_blocks::<34>(src, dst, |b, y| {
            let d = f16_at(b, 0);
            for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                *y = mul_x86(q as i8 as f32, d);
            }
        }),
        GgmlType::Q4_0 => dequant_blocks::<18>(src, dst, |b, y| {
            let d = f16_at(b, 0);
            let (lo, hi) = y.split_at_mut(QK / 2);
            for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[2..18]) {
                *l = mul_x86(((q & 0x0F) as i32 - 8) as f32, d);
                *h = mul_x86(((q >> 4) as i32 - 8) as f32, d);
            }
        }),
        GgmlType::Q4_1 => dequant_blocks::<20>(src, dst, |b, y| {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let (lo, hi) = y.split_at_mut(QK / 2);
            for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[4..20]) {
                *l = mul_add_x86((q & 0x0F) as f32, d, m);
                *h = mul_add_x86((q >> 4) as f32, d, m);
            }
        }),
        GgmlType::Q5_0 => dequant_blocks::<22>(src, dst, |b, y| {
            let d = f16_at(b, 0);
            let q = unpack5(&b[2..22]);
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = mul_x86((q as i32 - 16) as f32, d);
            }
        }),
        GgmlType::Q5_1 => dequant_blocks::<24>(src, dst, |b, y| {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let q = unpack5(&b[4..24]);
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = mul_add_x86(q as f32, d, m);
            }
        }),
        _ => unreachable!("checked by can_dequantize"),
    }
}

#[inline(always)]
fn dequant_blocks<const B: usize>(
    src: &[u8],
    dst: &mut Vec<f32>,
    f: impl Fn(&[u8; B], &mut [f32; QK]),
) {
    for b in src.chunks_exact(B) {
        let mut y = [0f32; QK];
        f(b.try_into().unwrap(), &mut y);
        dst.extend_from_slice(&y);
    }
}

/// Inverse of [`pack5`]: the 5-bit values 0..=31.
#[inline(always)]
fn unpack5(b: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        let s = b[4 + j];
        q[j] = (s & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (s >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general (cvtt-emulating, f64-fused) path and the fast path must agree wherever the
    /// fast one is taken; the ggml comparison tests only reach the general one on non-finite
    /// blocks, where both give 0.
    #[test]
    fn general_and_fast_paths_agree() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for n in 0..20_000 {
            let mut x = [0f32; QK];
            let scale = f32::from_bits(((next() % 200 + 27) as u32) << 23);
            for v in x.iter_mut() {
                let r = next();
                *v = if n % 3 == 0 {
                    // halves and quarters: exact ties for many scales
                    ((r % 65) as f32 - 32.0) * 0.25 * scale
                } else {
                    ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                };
            }
            let amax = abs_max(&x);
            for (div, bias, hi) in [(-8.0f32, 8.5f32, Some(15u8)), (-16.0, 16.5, Some(31))] {
                let d = first_absmax(&x, amax) / div;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                if id.is_finite() && amax.is_finite() {
                    assert_eq!(
                        quants(&x, 0.0, id, bias, hi, true),
                        quants(&x, 0.0, id, bias, hi, false),
                        "{x:?}"
                    );
                }
            }
            let (min, max) = min_max(&x);
            for (levels, hi) in [(15.0f32, Some(15u8)), (31.0, None)] {
                let d = (max - min) / levels;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                if id.is_finite() && (max - min).is_finite() {
                    assert_eq!(
                        quants(&x, min, id, 0.5, hi, true),
                        quants(&x, min, id, 0.5, hi, false),
                        "{x:?}"
                    );
                }
            }
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            if id.is_finite() && amax.is_finite() {
                for &v in &x {
                    assert_eq!(
                        round_int(v * id) as u8,
                        round_cvtt(v * id) as u8,
                        "{v:e} * {id:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_round_trip_of_every_half() {
        for h in 0..=u16::MAX {
            let f = f16_bits_to_f32(h);
            assert_eq!(
                f.to_bits(),
                half::f16::from_bits(h).to_f32().to_bits(),
                "{h:#06x}"
            );
            if !f.is_nan() {
                assert_eq!(f32_to_f16_bits(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounding_matches_half() {
        // Every exponent, every f16 mantissa, and the low-bit patterns that decide rounding.
        for e in 0..256u32 {
            for hi in (0..1024u32).step_by(7).chain([0, 1, 1022, 1023]) {
                for lo in [0u32, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x0800, 0x17FF] {
                    for s in [0u32, 1] {
                        let f = f32::from_bits(s << 31 | e << 23 | hi << 13 | lo);
                        if f.is_nan() {
                            continue;
                        }
                        assert_eq!(
                            f32_to_f16_bits(f),
                            half::f16::from_f32(f).to_bits(),
                            "{f:e}"
                        );
                    }
                }
            }
        }
    }
}
