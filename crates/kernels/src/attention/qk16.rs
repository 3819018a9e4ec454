//! Scores against quantized keys in 16-bit integers (AVX-512 VNNI's `vpdpwssd`).
//!
//! A q8_0 or q4_0 key is `d_b · k` with small integers `k` (|k| ≤ 127) and one f16 scale `d_b`
//! per block of 32. The f32 path turns each key tile into f32 (a multiply per element) and
//! spends one FMA per element and query row. Here each query row `x = scale · q` is rounded once
//! per item to 16-bit integers with a scale of its own, `x ≈ σ · q̂`, `σ = max|x| / 32767`,
//! `q̂ = round(x / σ)`, the key tile is widened to 16-bit integers, and a block's dot product is
//! exact integer arithmetic: `vpdpwssd` multiplies two pairs of 16-bit integers and adds both
//! products to a 32-bit lane, so one instruction does the work of two FMAs. Per block and key
//! the integer sum becomes f32 once: `s += f32(Σ q̂·k) · (d_b · σ)`.
//!
//! Layout as the f32 scores (rows in lanes): `QI[pair][rows][2]` (a vector holds the two
//! elements of one pair for 16 rows) times one broadcast pair of a key, `S[key][rows]` out.
//!
//! Error: the rounding of `x` moves a score by at most `0.502 · σ · Σ|k_i|` (half a step, plus
//! the division's rounding); the integer sums are exact (|Σ| ≤ 32 · 32767 · 127 < 2³¹); the
//! conversion, the scale product and the sum over blocks round `d/32 + 3` times, fewer than the
//! f32 path's `2d + 1`. llama.cpp rounds the query to q8_0 (8 bits) for quantized keys; 16 bits
//! keep the result within the f32 path's bounds (tests/attention.rs counts the rounding).

use super::{KvType, Tile};
use std::arch::x86_64::*;

/// Elements per quantized block (q8_0, q4_0).
const BLOCK: usize = 32;
/// The largest |q̂|.
const QMAX: f32 = 32767.0;

/// An item's working memory: its rows in 16 bits (`QI[d/2][r][2]`) and their steps, a key
/// tile widened to 16 bits (`[key][d]`) and the tile's block scales (`[key][d/32]`).
pub(super) struct Work {
    qi: Vec<i16>,
    sigma: Vec<f32>,
    ki: Vec<i16>,
    ks: Vec<f32>,
}

impl Work {
    pub(super) fn new(d: usize, r: usize, key_tile: usize) -> Work {
        Work {
            qi: vec![0; d * r],
            sigma: vec![0.0; r],
            ki: vec![0; key_tile * d],
            ks: vec![0.0; key_tile * d / BLOCK],
        }
    }

    /// Takes the item's rows, `qt` = `QT[d][r]` (f32, scale folded in).
    pub(super) fn set_rows(&mut self, qt: &[f32], d: usize, r: usize) {
        quantize_rows(qt, d, r, &mut self.qi, &mut self.sigma);
    }

    /// `st[key][i]` for a tile of quantized keys: [`widen_tile`], then [`scores`].
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(
        &mut self,
        keys: &Tile<'_>,
        r: usize,
        st: &mut [f32],
        after: &impl Fn(usize, usize),
    ) {
        let (ki, ks) = (&mut self.ki, &mut self.ks);
        widen_tile(keys, ki, ks);
        scores(&self.qi, &self.sigma, r, ki, ks, keys.nk, keys.d, st, after);
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
        *sg = if nan { f32::NAN } else { mx / QMAX };
        let inv = if mx > 0.0 { QMAX / mx } else { 0.0 };
        for k in 0..d {
            // |x · inv| ≤ 32767 (+ a rounding): the clamp only guards the last ulp
            let q = (qt[k * r + i] * inv).round().clamp(-QMAX, QMAX);
            qi[((k / 2) * r + i) * 2 + k % 2] = q as i16;
        }
    }
}

/// Widens a tile of quantized keys into `ki[key][d]` (16-bit integers) and their block scales
/// `ks[key][d/32]`.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen_tile(keys: &Tile<'_>, ki: &mut [i16], ks: &mut [f32]) {
    let (ty, d) = (keys.ty, keys.d);
    let (bb, nb) = (ty.block_bytes(), d / BLOCK);
    assert!(ty.is_quantized() && d.is_multiple_of(BLOCK));
    assert!(ki.len() >= keys.nk * d && ks.len() >= keys.nk * nb);
    for key in 0..keys.nk {
        let src = keys.row(key).as_ptr(); // nb blocks of bb bytes
        for b in 0..nb {
            let blk = src.add(b * bb);
            let dst = ki.as_mut_ptr().add(key * d + b * BLOCK);
            let scale = _mm256_castsi128_si256(_mm_cvtsi32_si128(
                blk.cast::<u16>().read_unaligned() as i32,
            ));
            ks[key * nb + b] = _mm512_cvtss_f32(_mm512_cvtph_ps(scale));
            let w = match ty {
                KvType::Q4_0 => {
                    // elements 0..16: the low nibbles, 16..32: the high ones
                    let x = _mm_loadu_si128(blk.add(2).cast());
                    let m = _mm_set1_epi8(0x0f);
                    let lo = _mm_and_si128(x, m);
                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m);
                    let w = _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo));
                    _mm512_sub_epi16(w, _mm512_set1_epi16(8))
                }
                _ => _mm512_cvtepi8_epi16(_mm256_loadu_si256(blk.add(2).cast())),
            };
            _mm512_storeu_si512(dst.cast(), w);
        }
    }
}

/// `st[key][i] = σ_i · Σ_b ks[key][b] · Σ_{k in b} qi[k][i] · ki[key][k]` for `nk` keys, rows
/// in vectors of 16; `after(key, n)` is called after each step of `n` keys of the first rows
/// (the caller's prefetches), as in the f32 scores.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn scores(
    qi: &[i16],
    sigma: &[f32],
    r: usize,
    ki: &[i16],
    ks: &[f32],
    nk: usize,
    d: usize,
    st: &mut [f32],
    after: &impl Fn(usize, usize),
) {
    let nb = d / BLOCK;
    assert!(r.is_multiple_of(16) && d.is_multiple_of(BLOCK));
    assert!(qi.len() >= d * r && sigma.len() >= r && st.len() >= nk * r);
    assert!(ki.len() >= nk * d && ks.len() >= nk * nb);
    let nv = r / 16;
    let (qp, kp, sp) = (qi.as_ptr(), ki.as_ptr(), st.as_mut_ptr());
    let mut v0 = 0;
    while v0 < nv {
        let rb = match nv - v0 {
            4.. => 4,
            2.. => 2,
            _ => 1,
        };
        let (q, sg, s) = (
            qp.add(v0 * 32),
            sigma.as_ptr().add(v0 * 16),
            sp.add(v0 * 16),
        );
        let mut key = 0;
        while key < nk {
            let (kb, kpk, ksk, spk) = (
                nk - key,
                kp.add(key * d),
                ks.as_ptr().add(key * nb),
                s.add(key * r),
            );
            let step = match rb {
                4 if kb >= 4 => block::<4, 4>(q, sg, r, kpk, ksk, d, spk),
                4 => block::<4, 1>(q, sg, r, kpk, ksk, d, spk),
                2 if kb >= 8 => block::<2, 8>(q, sg, r, kpk, ksk, d, spk),
                2 => block::<2, 1>(q, sg, r, kpk, ksk, d, spk),
                _ if kb >= 8 => block::<1, 8>(q, sg, r, kpk, ksk, d, spk),
                _ => block::<1, 1>(q, sg, r, kpk, ksk, d, spk),
            };
            if v0 == 0 {
                after(key, step);
            }
            key += step;
        }
        v0 += rb;
    }
}

/// `RB` row vectors × `KB` keys of [`scores`]: per block, `RB · KB` integer accumulators over
/// its 16 pairs, then one conversion and multiply-add into `st` each. Returns `KB`.
#[inline(always)]
unsafe fn block<const RB: usize, const KB: usize>(
    qi: *const i16,
    sigma: *const f32,
    r: usize,
    ki: *const i16,
    ks: *const f32,
    d: usize,
    st: *mut f32,
) -> usize {
    let nb = d / BLOCK;
    let sg: [__m512; RB] = std::array::from_fn(|v| _mm512_loadu_ps(sigma.add(16 * v)));
    for b in 0..nb {
        let mut acc = [[_mm512_setzero_si512(); RB]; KB];
        for p in b * BLOCK / 2..(b + 1) * BLOCK / 2 {
            let xs = qi.add(p * r * 2);
            let x: [__m512i; RB] =
                std::array::from_fn(|v| _mm512_loadu_si512(xs.add(32 * v).cast()));
            for (j, acc) in acc.iter_mut().enumerate() {
                // key j's elements 2p and 2p + 1, broadcast
                let y = _mm512_set1_epi32(ki.add(j * d + 2 * p).cast::<i32>().read_unaligned());
                for (a, &x) in acc.iter_mut().zip(&x) {
                    *a = _mm512_dpwssd_epi32(*a, x, y);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let kscale = _mm512_set1_ps(*ks.add(j * nb + b));
            for (v, &a) in acc.iter().enumerate() {
                let p = st.add(j * r + 16 * v);
                let fac = _mm512_mul_ps(kscale, sg[v]);
                let f = _mm512_cvtepi32_ps(a);
                let out = if b == 0 {
                    _mm512_mul_ps(f, fac)
                } else {
                    _mm512_fmadd_ps(f, fac, _mm512_loadu_ps(p))
                };
                _mm512_storeu_ps(p, out);
            }
        }
    }
    KB
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer scores against the same rounded queries in f64: only the conversion, the
    /// scale product and the sum over blocks round (`d/32 + 3` roundings of terms bounded by
    /// Σ|σ·q̂·k|), so a lost block, a wrong scale or a wrong pair shows at once. The rounding of
    /// the queries themselves is checked against its half step.
    #[test]
    fn integer_scores_are_exact_up_to_the_final_roundings() {
        if !crate::Isa::Avx512Vnni.runs_here() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut seed = 7u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
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
                // SAFETY: AVX-512 F, BW and VNNI checked above.
                unsafe { w.tile(&keys, r, &mut st, &|_, _| {}) };
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
                            "{ty:?} d{d} r{r} key {key} row {i}: {got} want {want} (tol {tol:e})"
                        );
                    }
                }
            }
        }
    }

    /// A NaN in a query row makes that row's scores NaN (as the f32 path would), and only its.
    #[test]
    fn a_nan_in_a_row_is_not_rounded_away() {
        if !crate::Isa::Avx512Vnni.runs_here() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let (d, r, nk, ty) = (32, 16, 3, KvType::Q8_0);
        let mut qt: Vec<f32> = (0..d * r).map(|i| (i % 7) as f32 - 3.0).collect();
        qt[5 * r + 2] = f32::NAN; // row 2
        let row_bytes = ty.row_bytes(d);
        let mut cache = vec![0u8; nk * row_bytes];
        for (j, row) in cache.chunks_exact_mut(row_bytes).enumerate() {
            let x: Vec<f32> = (0..d).map(|k| ((k + j) % 5) as f32 - 2.0).collect();
            ty.quantize_row(&x, row).unwrap();
        }
        let mut w = Work::new(d, r, nk);
        w.set_rows(&qt, d, r);
        let mut st = vec![0f32; nk * r];
        // SAFETY: AVX-512 F, BW and VNNI checked above.
        let keys = Tile {
            ty,
            data: &cache,
            row_bytes,
            head_off: 0,
            j0: 0,
            nk,
            d,
        };
        unsafe { w.tile(&keys, r, &mut st, &|_, _| {}) };
        for key in 0..nk {
            for i in 0..r {
                assert_eq!(st[key * r + i].is_nan(), i == 2, "key {key} row {i}");
            }
        }
    }
}
