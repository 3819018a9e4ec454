//! The activations, quantized once per op exactly as ggml quantizes them for the weight type's
//! `vec_dot` (its `vec_dot_type`), so every integer dot product is ggml's:
//!
//! | weight types | ggml's activations | here, per block |
//! | --- | --- | --- |
//! | q4_0, q8_0, q5_0, iq4_nl | q8_0 (32 values) | 40 bytes: f32 d, i32 Σq, 32 × i8 |
//! | q5_1 | q8_1 (32 values) | 40 bytes: f32 d, f32 s, 32 × i8 |
//! | q3_K, q4_K, q5_K, q6_K, iq4_xs | q8_K (256 values) | 320 bytes: f32 d, 16 × i16 sums of 16, 8 × i16 sums of 32, padding, 256 × i8 at 64 |
//!
//! q8_0 and q8_1 are ggml's x86 `quantize_row_q8_0/1` (AVX2 code, the same in b2757 and
//! llama.cpp 2026): `d = amax/127` stored as f16, `q = round_ties_even(x · 127/amax)`; q8_1 also
//! stores `s = f16(d · Σq)` with the unrounded f32 `d`. Both are kept here as the f32 values of
//! those f16s. q8_K is `quantize_row_q8_K_ref` (what x86 uses in both versions): per 256 values
//! `iscale = −127/max` (max: the value of largest |x|, the first on ties),
//! `q = min(127, round_ties_even(x · iscale))`, `d = 1/iscale`, and the sums of each 16 quants.
//! The i32 sum of a q8_0 block is ours (ggml recomputes it inside its dot products): the kernels
//! use it for the weights' offsets (`Σ (q − 8)·a = Σ q·a − 8·Σa`).

use crate::{check, ShapeError};
use half::f16;

/// ggml's activation types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Q8_0,
    Q8_1,
    Q8K,
}

/// Columns of a q8_0 / q8_1 block.
pub const QK: usize = 32;
/// Bytes of one q8_0 / q8_1 activation block.
pub const ACT_BLOCK: usize = 40;
/// Columns of a q8_K super-block.
pub const QK_K: usize = 256;
/// Bytes of one q8_K activation super-block.
pub const Q8K_BLOCK: usize = 320;

// q8_K block offsets
pub(crate) const A_BS16: usize = 4;
pub(crate) const A_BS32: usize = 36;
pub(crate) const A_QS: usize = 64;
// q8_0 / q8_1 block offset of the quants
pub(crate) const A8_QS: usize = 8;

impl Activation {
    /// Columns per block.
    pub fn block_cols(self) -> usize {
        match self {
            Activation::Q8_0 | Activation::Q8_1 => QK,
            Activation::Q8K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Activation::Q8_0 | Activation::Q8_1 => ACT_BLOCK,
            Activation::Q8K => Q8K_BLOCK,
        }
    }

    /// Bytes of one token's activations (`k` columns, whole blocks).
    pub fn row_bytes(self, k: usize) -> usize {
        k / self.block_cols() * self.block_bytes()
    }

    /// Quantizes one token's activations (`x.len()` whole blocks) into `out`
    /// (`row_bytes(x.len())` bytes).
    pub fn quantize(self, x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
        let qk = self.block_cols();
        check(x.len().is_multiple_of(qk), || {
            format!(
                "{} activations are not whole {self:?} blocks of {qk}",
                x.len()
            )
        })?;
        check(out.len() == self.row_bytes(x.len()), || {
            format!("{} bytes for {} {self:?} activations", out.len(), x.len())
        })?;
        let bb = self.block_bytes();
        for (xb, ob) in x.chunks_exact(qk).zip(out.chunks_exact_mut(bb)) {
            match self {
                Activation::Q8_0 => q8_block(xb, ob, false),
                Activation::Q8_1 => q8_block(xb, ob, true),
                Activation::Q8K => q8k_block(xb, ob),
            }
        }
        Ok(())
    }
}

/// `x.round_ties_even()` for |x| ≤ 2²²: adding and taking away 1.5 · 2²³ leaves no fraction bits,
/// and IEEE addition rounds to nearest, ties to even, exactly as `rintf`. Written out so that the
/// quantizers' loops vectorize; without SSE4.1 in the target `round_ties_even` is a call to libm
/// per value (it was 1.6 % of a decoding step, on one thread while the others waited).
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (x + MAGIC) - MAGIC
}

/// ggml's x86 q8_0 (`with_s` false: the i32 sum follows d) or q8_1 (`with_s`: f16(d·Σq)).
fn q8_block(xb: &[f32], ob: &mut [u8], with_s: bool) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (o, &v) in ob[A8_QS..].iter_mut().zip(xb) {
        // |v · id| ≤ 127 (a NaN activation stays NaN and casts to 0, as before)
        let q = round_small(v * id) as i8;
        sum += q as i32;
        *o = q as u8;
    }
    ob[..4].copy_from_slice(&f16::from_f32(d).to_f32().to_le_bytes());
    if with_s {
        let s = f16::from_f32(d * sum as f32).to_f32();
        ob[4..8].copy_from_slice(&s.to_le_bytes());
    } else {
        ob[4..8].copy_from_slice(&sum.to_le_bytes());
    }
}

/// ggml's `quantize_row_q8_K_ref` for one super-block, plus the sums of 16 and 32 quants.
fn q8k_block(xb: &[f32], ob: &mut [u8]) {
    ob.fill(0);
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return; // d = 0, quants and sums 0
    }
    let iscale = -127.0f32 / max;
    for (o, &v) in ob[A_QS..].iter_mut().zip(xb) {
        // ggml's nearest_int (round half to even) then MIN(127, ·); |iscale · v| ≤ 127
        *o = (round_small(iscale * v) as i32).min(127) as i8 as u8;
    }
    ob[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for j in 0..16 {
        let s: i32 = ob[A_QS + 16 * j..][..16]
            .iter()
            .map(|&q| q as i8 as i32)
            .sum();
        ob[A_BS16 + 2 * j..][..2].copy_from_slice(&(s as i16).to_le_bytes());
    }
    for j in 0..8 {
        let s = bsum16(ob, 2 * j) + bsum16(ob, 2 * j + 1);
        ob[A_BS32 + 2 * j..][..2].copy_from_slice(&(s as i16).to_le_bytes());
    }
}

/// f32 at byte `i`.
#[inline(always)]
pub(crate) fn f32_le(a: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// A q8_0 block's scale and sum of quants.
#[inline(always)]
pub(crate) fn q8_0_scale_sum(a: &[u8]) -> (f32, i32) {
    (f32_le(a, 0), i32::from_le_bytes([a[4], a[5], a[6], a[7]]))
}

/// Quant `i` of a q8_0 / q8_1 block.
#[inline(always)]
pub(crate) fn q8(a: &[u8], i: usize) -> i32 {
    a[A8_QS + i] as i8 as i32
}

/// Quant `i` of a q8_K block.
#[inline(always)]
pub(crate) fn q8k(a: &[u8], i: usize) -> i32 {
    a[A_QS + i] as i8 as i32
}

/// Sum of the 16 quants of sub-block `j` of a q8_K block.
#[inline(always)]
pub(crate) fn bsum16(a: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([a[A_BS16 + 2 * j], a[A_BS16 + 2 * j + 1]]) as i32
}

/// Sum of the 32 quants of sub-block `j` of a q8_K block.
#[inline(always)]
pub(crate) fn bsum32(a: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([a[A_BS32 + 2 * j], a[A_BS32 + 2 * j + 1]]) as i32
}
