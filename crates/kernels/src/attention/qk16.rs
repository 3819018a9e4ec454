//! Scores against quantized keys in 16-bit integers (AVX-512 VNNI's `vpdpwssd`, AVX2's
//! `vpmaddwd`).
//!
//! A q8_0 or q4_0 key is `d_b · k` with small integers `k` (|k| ≤ 127) and one f16 scale `d_b`
//! per block of 32. The f32 path turns each key tile into f32 (a multiply per element) and
//! spends one FMA per element and query row. Here each query row `x = scale · q` is rounded once
//! per item to 16-bit integers with a scale of its own, `x ≈ σ · q̂`, `σ = max|x| / 32767`,
//! `q̂ = round(x / σ)`, the key tile is widened to 16-bit integers, and a block's dot product is
//! exact integer arithmetic: `vpdpwssd` multiplies two pairs of 16-bit integers and adds both
//! products to a 32-bit lane, so one instruction does the work of two FMAs (AVX2: `vpmaddwd`
//! and `vpaddd`, the add on a port the FMAs do not use). Per block and key the integer sum
//! becomes f32 once: `s += f32(Σ q̂·k) · (d_b · σ)`. Written once against `Vector`'s integer
//! methods (simd.rs); a vector takes this path where `Vector::INT_SCORES` says so.
//!
//! Layout as the f32 scores (rows in lanes): `QI[pair][rows][2]` (a vector holds the two
//! elements of one pair for `W` rows) times one broadcast pair of a key, `S[key][rows]` out.
//!
//! Error: the rounding of `x` moves a score by at most `0.502 · σ · Σ|k_i|` (half a step, plus
//! the division's rounding); the integer sums are exact (|Σ| ≤ 32 · 32767 · 127 < 2³¹); the
//! conversion, the scale product and the sum over blocks round `d/32 + 3` times, fewer than the
//! f32 path's `2d + 1`. llama.cpp rounds the query to q8_0 (8 bits) for quantized keys; 16 bits
//! keep the result within the f32 path's bounds (tests/attention.rs counts the rounding).

use super::simd::Vector;
use super::{score_blocks, wide, KvType, Tile};

/// Elements per quantized block (q8_0, q4_0).
const BLOCK: usize = 32;
/// The largest |q̂|.
const QMAX: f32 = 32767.0;

/// An item's working memory: its rows in 16 bits (`QI[d/2][r][2]`) and their steps, a key
/// tile widened to 16 bits (`[key][d]`) and the tile's block scales (`[key][d/32]`, and the
/// f16s as read).
pub(super) struct Work {
    qi: Vec<i16>,
    sigma: Vec<f32>,
    ki: Vec<i16>,
    ks: Vec<f32>,
    raw: Vec<u16>,
}

impl Work {
    pub(super) fn new(d: usize, r: usize, key_tile: usize) -> Work {
        // the scales padded to whole vectors of 16
        let scales = (key_tile * d / BLOCK).div_ceil(16) * 16;
        Work {
            qi: vec![0; d * r],
            sigma: vec![0.0; r],
            ki: vec![0; key_tile * d],
            ks: vec![0.0; scales],
            raw: vec![0; scales],
        }
    }

    /// Takes the item's rows, `qt` = `QT[d][r]` (f32, scale folded in).
    pub(super) fn set_rows(&mut self, qt: &[f32], d: usize, r: usize) {
        quantize_rows(qt, d, r, &mut self.qi, &mut self.sigma);
    }

    /// `st[key][i]` for a tile of quantized keys: [`widen_tile`], then [`scores`].
    ///
    /// # Safety
    /// `V`'s instruction set must be available.
    #[inline(always)]
    pub(super) unsafe fn tile<V: Vector>(
        &mut self,
        keys: &Tile<'_>,
        r: usize,
        st: &mut [f32],
        after: impl Fn(usize, usize),
    ) {
        widen_tile::<V>(keys, &mut self.ki, &mut self.ks, &mut self.raw);
        let (qi, sigma, ki, ks) = (&self.qi, &self.sigma, &self.ki, &self.ks);
        scores::<V>(qi, sigma, r, ki, ks, keys.nk, keys.d, st, after);
    }
}

/// Rounds the item's rows to 16 bits: `qt` is `QT[d][r]` (f32, scale folded in), `qi` becomes
/// `QI[d/2][r][2]` and `sigma[i]` row `i`'s step (0 for a row of zeros: padding).
fn quantize_rows(qt: &[f32], d: usize, r: usize, qi: &mut [i16], sigma: &mut [f32]) {
    assert!(qt.len() >= d * r && qi.len() >= d * r && sigma.len() >= r && d.is_multiple_of(2));
    for (i, sg) in sigma[..r].iter_mut().enumerate() {
        let mx = (0..d).fold(0f32, |m, k| m.max(qt[k * r + i].abs()));
        // a NaN in the row makes every score of it NaN, as in the f32 path (`max` skips NaNs)
        let nan = (0..d).any(|k| qt[k * r + i].is_nan());
        let step = mx / QMAX;
        *sg = if nan { f32::NAN } else { step };
        for k in 0..d {
            // x / σ, rounded once (|x / σ| ≤ 32767 up to that rounding: the clamp guards the
            // last ulp); a row of zeros has σ = 0 and q̂ = 0
            let q = if step > 0.0 {
                qt[k * r + i] / step
            } else {
                0.0
            };
            // to the nearest integer (ties to even) by adding and removing 1.5·2^23
            let q = ((q + 12_582_912.0) - 12_582_912.0).clamp(-QMAX, QMAX);
            qi[((k / 2) * r + i) * 2 + k % 2] = q as i16;
        }
    }
}

/// Widens a tile of quantized keys into `ki[key][d]` (16-bit integers) and their block scales
/// `ks[key][d/32]` (gathered into `raw` as f16s, then turned into f32 a vector at a time).
#[inline(always)]
unsafe fn widen_tile<V: Vector>(keys: &Tile<'_>, ki: &mut [i16], ks: &mut [f32], raw: &mut [u16]) {
    let (ty, d, nk) = (keys.ty, keys.d, keys.nk);
    let (bb, nb) = (ty.block_bytes(), d / BLOCK);
    let n = (nk * nb).div_ceil(V::W) * V::W;
    assert!(ty.is_quantized() && d.is_multiple_of(BLOCK));
    assert!(ki.len() >= nk * d && ks.len() >= n && raw.len() >= n);
    for key in 0..nk {
        let row = keys.row(key); // nb blocks of bb bytes
        let out = ki[key * d..][..d].as_mut_ptr();
        for b in 0..nb {
            let blk = &row[b * bb..][..bb];
            raw[key * nb + b] = u16::from_le_bytes([blk[0], blk[1]]);
            match ty {
                KvType::Q4_0 => V::widen_nibbles32(blk[2..].as_ptr(), out.add(b * BLOCK)),
                _ => V::widen_i8x32(blk[2..].as_ptr(), out.add(b * BLOCK)),
            }
        }
    }
    raw[nk * nb..n].fill(0);
    for i in (0..n).step_by(V::W) {
        V::from_f16(raw.as_ptr().add(i).cast()).store(ks.as_mut_ptr().add(i));
    }
}

/// `st[key][i] = σ_i · Σ_b ks[key][b] · Σ_{k in b} qi[k][i] · ki[key][k]` for `nk` keys, rows
/// in vectors of `W`; `after(key, n)` is called after each step of `n` keys of the first rows
/// (the caller's prefetches), as in the f32 scores.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn scores<V: Vector>(
    qi: &[i16],
    sigma: &[f32],
    r: usize,
    ki: &[i16],
    ks: &[f32],
    nk: usize,
    d: usize,
    st: &mut [f32],
    after: impl Fn(usize, usize),
) {
    let nb = d / BLOCK;
    assert!(r.is_multiple_of(V::W) && d.is_multiple_of(BLOCK));
    assert!(qi.len() >= d * r && sigma.len() >= r && st.len() >= nk * r);
    assert!(ki.len() >= nk * d && ks.len() >= nk * nb);
    let (qp, kp, sp) = (qi.as_ptr(), ki.as_ptr(), st.as_mut_ptr());
    score_blocks::<V>(r, nk, after, |rb, v0, key| {
        let (q, sg, kb) = (
            qp.add(v0 * 2 * V::W),
            sigma.as_ptr().add(v0 * V::W),
            nk - key,
        );
        let (kpk, ksk) = (kp.add(key * d), ks.as_ptr().add(key * nb));
        let spk = sp.add(v0 * V::W + key * r);
        match (rb, wide::<V>()) {
            (4, _) if kb >= 4 => block::<V, 4, 4>(q, sg, r, kpk, ksk, d, spk),
            (4, _) => block::<V, 4, 1>(q, sg, r, kpk, ksk, d, spk),
            (2, true) if kb >= 8 => block::<V, 2, 8>(q, sg, r, kpk, ksk, d, spk),
            (2, _) if kb >= 4 => block::<V, 2, 4>(q, sg, r, kpk, ksk, d, spk),
            (2, _) => block::<V, 2, 1>(q, sg, r, kpk, ksk, d, spk),
            (_, true) if kb >= 8 => block::<V, 1, 8>(q, sg, r, kpk, ksk, d, spk),
            (_, false) if kb >= 4 => block::<V, 1, 4>(q, sg, r, kpk, ksk, d, spk),
            _ => block::<V, 1, 1>(q, sg, r, kpk, ksk, d, spk),
        }
    });
}

/// `RB` row vectors × `KB` keys of [`scores`]: per block, `RB · KB` integer accumulators over
/// its 16 pairs, then one conversion and multiply-add into `st` each. Returns `KB`.
#[inline(always)]
unsafe fn block<V: Vector, const RB: usize, const KB: usize>(
    qi: *const i16,
    sigma: *const f32,
    r: usize,
    ki: *const i16,
    ks: *const f32,
    d: usize,
    st: *mut f32,
) -> usize {
    let nb = d / BLOCK;
    let sg: [V; RB] = std::array::from_fn(|v| V::load(sigma.add(V::W * v)));
    for b in 0..nb {
        let mut acc = [[V::int_zero(); RB]; KB];
        for p in b * BLOCK / 2..(b + 1) * BLOCK / 2 {
            let xs = qi.add(p * r * 2);
            let x: [V::Int; RB] = std::array::from_fn(|v| V::int_load(xs.add(2 * V::W * v)));
            for (j, acc) in acc.iter_mut().enumerate() {
                // key j's elements 2p and 2p + 1, in every lane
                let y = V::int_splat_pair(ki.add(j * d + 2 * p));
                for (a, &x) in acc.iter_mut().zip(&x) {
                    *a = V::int_dot(*a, x, y);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let kscale = V::splat(*ks.add(j * nb + b));
            for (v, &a) in acc.iter().enumerate() {
                let p = st.add(j * r + V::W * v);
                let fac = V::mul(kscale, sg[v]);
                let f = V::int_to_f32(a);
                let out = if b == 0 {
                    V::mul(f, fac)
                } else {
                    V::fma(f, fac, V::load(p))
                };
                out.store(p);
            }
        }
    }
    KB
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::simd::Portable;
    use crate::Isa;

    /// `w.tile` with `isa`'s vector (the portable one for any other).
    fn tile_on(isa: Isa, w: &mut Work, keys: &Tile<'_>, r: usize, st: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::attention::simd::{Avx2, Avx512};
            #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
            unsafe fn avx512(w: &mut Work, keys: &Tile<'_>, r: usize, st: &mut [f32]) {
                w.tile::<Avx512>(keys, r, st, |_, _| {})
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn avx2(w: &mut Work, keys: &Tile<'_>, r: usize, st: &mut [f32]) {
                w.tile::<Avx2>(keys, r, st, |_, _| {})
            }
            assert!(isa.runs_here());
            match isa {
                // SAFETY: the instruction set was checked just above.
                Isa::Avx512Vnni => return unsafe { avx512(w, keys, r, st) },
                // SAFETY: as above.
                Isa::Avx2 | Isa::AvxVnni => return unsafe { avx2(w, keys, r, st) },
                _ => {}
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = isa;
        // SAFETY: the portable vector needs no CPU feature.
        unsafe { w.tile::<Portable>(keys, r, st, |_, _| {}) }
    }

    /// The integer scores against the same rounded queries in f64: only the conversion, the
    /// scale product and the sum over blocks round (`d/32 + 3` roundings of terms bounded by
    /// Σ|σ·q̂·k|), so a lost block, a wrong scale or a wrong pair shows at once. The rounding of
    /// the queries themselves is checked against its half step.
    #[test]
    fn integer_scores_are_exact_up_to_the_final_roundings() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for isa in Isa::available() {
            for ty in [KvType::Q8_0, KvType::Q4_0] {
                for (d, r, nk) in [(32, 16, 1), (64, 32, 9), (128, 16, 64), (96, 64, 13)] {
                    // rows of different sizes (the last all zero: padding), keys from −3 to 3
                    let mut qt = vec![0f32; d * r];
                    for i in 0..r - 1 {
                        let amp = 0.1 + i as f32;
                        for k in 0..d {
                            qt[k * r + i] = rnd() * amp;
                        }
                    }
                    let (head_off, row_bytes) = (ty.row_bytes(d), 3 * ty.row_bytes(d));
                    let mut cache = vec![0u8; nk * row_bytes];
                    for row in cache.chunks_exact_mut(row_bytes) {
                        let x: Vec<f32> = (0..d).map(|_| rnd() * 3.0).collect();
                        ty.quantize_row(&x, &mut row[head_off..][..head_off])
                            .unwrap();
                    }
                    let keys = Tile {
                        ty,
                        data: &cache,
                        row_bytes,
                        head_off,
                        j0: 0,
                        nk,
                        d,
                    };
                    let mut w = Work::new(d, r, nk);
                    w.set_rows(&qt, d, r);
                    let mut st = vec![f32::NAN; nk * r];
                    tile_on(isa, &mut w, &keys, r, &mut st);
                    let (qi, sigma) = (&w.qi, &w.sigma);
                    let mut kf = vec![0f32; d];
                    for key in 0..nk {
                        let row = &cache[key * row_bytes + head_off..][..head_off];
                        ty.dequantize_row(row, &mut kf).unwrap();
                        for i in 0..r {
                            let (mut want, mut abs) = (0f64, 0f64);
                            for (k, &kv) in kf.iter().enumerate() {
                                let x = qt[k * r + i];
                                let q = qi[((k / 2) * r + i) * 2 + k % 2] as f64;
                                let err = (x as f64 - sigma[i] as f64 * q).abs();
                                assert!(err <= 0.502 * sigma[i] as f64, "{ty:?} d{d} row {i}");
                                want += sigma[i] as f64 * q * kv as f64;
                                abs += (sigma[i] as f64 * q * kv as f64).abs();
                            }
                            let n = (d / 32 + 3) as f64;
                            let tol = n * f32::EPSILON as f64 * abs * 1.01;
                            let got = st[key * r + i] as f64;
                            assert!(
                            (got - want).abs() <= tol,
                            "{} {ty:?} d{d} r{r} key {key} row {i}: {got} want {want} (tol {tol:e})",
                            isa.name()
                        );
                        }
                    }
                }
            }
        }
    }

    /// A NaN in a query row makes that row's scores NaN (as the f32 path would), and only its.
    #[test]
    fn a_nan_in_a_row_is_not_rounded_away() {
        let (d, r, nk, ty) = (32, 16, 3, KvType::Q8_0);
        let mut qt: Vec<f32> = (0..d * r).map(|i| (i % 7) as f32 - 3.0).collect();
        qt[5 * r + 2] = f32::NAN; // row 2
        let row_bytes = ty.row_bytes(d);
        let mut cache = vec![0u8; nk * row_bytes];
        for (j, row) in cache.chunks_exact_mut(row_bytes).enumerate() {
            let x: Vec<f32> = (0..d).map(|k| ((k + j) % 5) as f32 - 2.0).collect();
            ty.quantize_row(&x, row).unwrap();
        }
        let keys = Tile {
            ty,
            data: &cache,
            row_bytes,
            head_off: 0,
            j0: 0,
            nk,
            d,
        };
        for isa in Isa::available() {
            let mut w = Work::new(d, r, nk);
            w.set_rows(&qt, d, r);
            let mut st = vec![0f32; nk * r];
            tile_on(isa, &mut w, &keys, r, &mut st);
            for key in 0..nk {
                for i in 0..r {
                    assert_eq!(
                        st[key * r + i].is_nan(),
                        i == 2,
                        "{} key {key} row {i}",
                        isa.name()
                    );
                }
            }
        }
    }
}
