//! The KV cache's row formats: what one token's keys (or values) look like in the cache, and how
//! the attention kernel turns a tile of them back into f32.
//!
//! | type | block | bytes | value |
//! | --- | ---: | ---: | --- |
//! | f32 | 1 | 4 | the f32 |
//! | f16 | 1 | 2 | the f16 |
//! | q8_0 | 32 | 34 | f16 `d`, 32 × i8 `q`: `d · q` |
//! | q4_0 | 32 | 18 | f16 `d`, 16 bytes: element `i < 16` is the low nibble of byte `i`, element `16 + i` its high nibble: `d · (nibble − 8)` |
//!
//! These are ggml's blocks (the cache is written by ggml's own copy op, which quantizes with
//! ggml's CPU quantizer), so a cache's size is llama.cpp's for the same type. A block never
//! straddles two heads: quantized types need a head size that is a multiple of 32.

use crate::{check, ShapeError};
use half::f16;

/// Element types of the KV cache (llama.cpp's `--cache-type-k/-v` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

struct KvSpec {
    ty: KvType,
    name: &'static str,
    /// Elements per block.
    block: usize,
    /// Bytes per block.
    bytes: usize,
}

/// One row per type, in the enum's order.
#[rustfmt::skip]
const KV_SPECS: [KvSpec; 4] = [
    //       type           name    block  bytes
    KvSpec { ty: KvType::F32,  name: "f32",   block: 1,  bytes: 4 },
    KvSpec { ty: KvType::F16,  name: "f16",   block: 1,  bytes: 2 },
    KvSpec { ty: KvType::Q8_0, name: "q8_0",  block: 32, bytes: 34 },
    KvSpec { ty: KvType::Q4_0, name: "q4_0",  block: 32, bytes: 18 },
];

impl KvType {
    /// Every type, in the table's order.
    pub const ALL: [KvType; 4] = [KvType::F32, KvType::F16, KvType::Q8_0, KvType::Q4_0];

    fn spec(self) -> &'static KvSpec {
        let s = &KV_SPECS[self as usize];
        debug_assert_eq!(s.ty, self);
        s
    }

    /// llama.cpp's name (`f16`, `q8_0`, ...).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The type called `name`.
    pub fn from_name(name: &str) -> Option<KvType> {
        KV_SPECS.iter().find(|s| s.name == name).map(|s| s.ty)
    }

    /// Elements per block (1 for f32 and f16).
    pub fn block_elems(self) -> usize {
        self.spec().block
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.spec().bytes
    }

    /// Whether the type is a block quantization.
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes of `n` elements (`n` a multiple of the block).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    /// Writes `x` in this format into `out` (`row_bytes(x.len())` bytes). Quantizes as ggml's
    /// reference quantizers do (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`); the cache
    /// itself is written by ggml, whose vectorized q8_0 rounds ties to even instead of away from
    /// zero, so the two can differ by one step on exact ties. For tests and tools.
    pub fn quantize_row(self, x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
        self.check_row(x.len(), out.len())?;
        match self {
            KvType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            KvType::F16 => {
                for (o, v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            KvType::Q8_0 => {
                for (o, xb) in out.chunks_exact_mut(34).zip(x.chunks_exact(32)) {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                    for (q, v) in o[2..].iter_mut().zip(xb) {
                        *q = (v * id).round() as i8 as u8;
                    }
                }
            }
            KvType::Q4_0 => {
                for (o, xb) in out.chunks_exact_mut(18).zip(x.chunks_exact(32)) {
                    // the value of largest magnitude (the first on ties), sign kept
                    let max = xb
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                    for i in 0..16 {
                        o[2 + i] = q(xb[i]) | q(xb[16 + i]) << 4;
                    }
                }
            }
        }
        Ok(())
    }

    /// The f32 values of a row of `out.len()` elements.
    pub fn dequantize_row(self, src: &[u8], out: &mut [f32]) -> Result<(), ShapeError> {
        self.check_row(out.len(), src.len())?;
        dequant_scalar(self, src, out);
        Ok(())
    }

    fn check_row(self, n: usize, bytes: usize) -> Result<(), ShapeError> {
        check(n.is_multiple_of(self.block_elems()), || {
            format!(
                "{n} values are not whole {} blocks of {}",
                self.name(),
                self.block_elems()
            )
        })?;
        check(bytes == self.row_bytes(n), || {
            format!(
                "{bytes} bytes for {n} {} values, expected {}",
                self.name(),
                self.row_bytes(n)
            )
        })
    }
}

/// f32 of the f16 at byte `i`.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The portable dequantization of one head's row (`out.len()` elements; sizes checked by the
/// caller).
pub(crate) fn dequant_scalar(ty: KvType, src: &[u8], out: &mut [f32]) {
    match ty {
        KvType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        KvType::F16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        KvType::Q8_0 => {
            for (ob, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (o, &q) in ob.iter_mut().zip(&b[2..]) {
                    *o = d * q as i8 as f32;
                }
            }
        }
        KvType::Q4_0 => {
            for (ob, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for i in 0..16 {
                    ob[i] = d * ((b[2 + i] & 0x0f) as i32 - 8) as f32;
                    ob[16 + i] = d * ((b[2 + i] >> 4) as i32 - 8) as f32;
                }
            }
        }
    }
}
