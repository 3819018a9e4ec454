//! The k-quants q2_K, q3_K, q4_K, q5_K and q6_K (256-element super-blocks), byte-identical to
//! llama.cpp 2026's `quantize_q*_K` and `dequantize_row_q*_K` (ggml/src/ggml-quants.c).
//!
//! Without an importance matrix llama.cpp runs the `quantize_row_q*_K_ref` paths
//! (`make_qkx2_quants` for q2_K/q4_K/q5_K, `make_q3_quants` for q3_K, `make_qx_quants` for q6_K);
//! with one, the `quantize_row_q*_K_impl` paths (`make_qkx3_quants` + `make_qp_quants` for
//! q2_K/q4_K/q5_K, `make_qx_quants` with weights for q3_K/q6_K). This file is our own Rust
//! rendering of those algorithms; the float details that decide the bytes:
//!
//! * llama.cpp compiles these functions into ggml-base, which gets no `-march` flag even in a
//!   `GGML_NATIVE` build: plain x86-64 SSE2, so GCC has no FMA to contract `a*b + c` into and
//!   every operation rounds once, in source order (`w*x*l` is `(w*x)*l`). Rust never contracts,
//!   so writing each expression in the same order gives the same bits.
//! * `nearest_int` is the `fval + 12582912.f` bit trick (round to nearest even), reproduced on
//!   the bits, so even out-of-range values give what ggml gives.
//! * quants and scales pass through `uint8_t`/`int8_t` variables in ggml; those truncations are
//!   kept (`as u8`, `as i8`).
//! * f16 conversions are ggml-base's software ones (`ggml_compute_fp32_to_fp16`, round to nearest
//!   even), ported literally.
//! * maxima are first occurrences (`if (ax > amax)`), minima/maxima of the qkx searches strict.

#![allow(clippy::needless_range_loop)] // index loops mirror ggml-quants.c line by line

use gguf::GgmlType;

/// Elements per super-block.
pub(super) const QK_K: usize = 256;

/// ggml's `GROUP_MAX_EPS`: a group whose largest |x| is below this is all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Whether `ty` is one of the k-quants handled here.
pub(super) fn is_k(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K
    )
}

/// Quantizes one row (a whole number of super-blocks) into `out` (exactly its size), with the
/// row's importance weights if given (`imatrix.len() == x.len()`, checked by the caller).
pub(super) fn encode_row(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>, out: &mut [u8]) {
    let bs = ty.type_size();
    for (i, (xb, ob)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(bs))
        .enumerate()
    {
        let xb: &[f32; QK_K] = xb.try_into().unwrap(); // chunks_exact: always QK_K
        let qw: Option<&[f32; QK_K]> =
            imatrix.map(|w| w[i * QK_K..(i + 1) * QK_K].try_into().unwrap());
        match (ty, qw) {
            (GgmlType::Q2K, None) => q2_k_ref(xb, ob),
            (GgmlType::Q2K, Some(w)) => q2_k_impl(xb, w, ob),
            (GgmlType::Q3K, None) => q3_k_ref(xb, ob),
            (GgmlType::Q3K, Some(w)) => q3_k_impl(xb, w, ob),
            (GgmlType::Q4K, None) => q45_k_ref::<15>(xb, ob),
            (GgmlType::Q4K, Some(w)) => q45_k_impl::<15>(xb, w, ob),
            (GgmlType::Q5K, None) => q45_k_ref::<31>(xb, ob),
            (GgmlType::Q5K, Some(w)) => q45_k_impl::<31>(xb, w, ob),
            (GgmlType::Q6K, w) => q6_k(xb, w, ob),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar helpers.

/// ggml's `nearest_int`: `fval + 12582912.f`, then the low 23 bits of the sum minus 2^22.
#[inline(always)]
pub(super) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// ggml-base's `ggml_compute_fp32_to_fp16` (the FP16 library's algorithm), literally.
#[inline(always)]
pub(super) fn fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112f
    let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110f
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1) + 0x0780_0000); // IEEE addition commutes exactly
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// ggml-base's `ggml_compute_fp16_to_fp32`, literally.
#[inline(always)]
pub(super) fn fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 0x1.0p-112f
    let normalized_value = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let magic_bias = 0.5f32;
    let denormalized_value = f32::from_bits((two_w >> 17) | magic_mask) - magic_bias;
    let denormalized_cutoff = 1u32 << 27;
    let result = sign
        | if two_w < denormalized_cutoff {
            denormalized_value.to_bits()
        } else {
            normalized_value.to_bits()
        };
    f32::from_bits(result)
}

#[inline(always)]
pub(super) fn put_f16(out: &mut [u8], at: usize, v: f32) -> f32 {
    let h = fp16(v);
    out[at..at + 2].copy_from_slice(&h.to_le_bytes());
    fp32(h)
}

#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    fp32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The value of largest magnitude, first occurrence (`if (ax > amax) { amax = ax; max = x; }`),
/// and that magnitude.
#[inline(always)]
pub(super) fn first_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (amax, max)
}

/// ggml's `make_qx_quants` with `rmse_type == 1` (the only one the k-quants use): symmetric
/// quants `L[i] = l + nmax`, l in [-nmax, nmax-1], weights `qw` or x², and a search over 18
/// nearby scales. Returns the scale.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let (amax, max) = first_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) as f32;
            let w = weight(i);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants(n, nmax, x, L, do_rmse = true)`: x²-weighted quants with up to five
/// passes of coordinate descent. `L[i]` in [0, 2*nmax-1]; returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let (amax, max) = first_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l = [0i32; 32];
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = li;
        let w = x[i] * x[i];
        sumlx += w * x[i] * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for i in 0..n {
        l_out[i] = (l[i] + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of ggml's `make_qkx2_quants` / `make_qkx3_quants` scale search.
pub(super) struct Qkx {
    pub(super) nmax: i32,
    pub(super) rmin: f32,
    pub(super) rdelta: f32,
    pub(super) nstep: i32,
    pub(super) use_mad: bool,
}

/// ggml's `make_qkx2_quants` / `make_qkx3_quants` (identical for the non-null weights the
/// k-quants pass them; their degenerate tests `max == min` / `max <= min` agree once min has
/// been clamped to <= 0): asymmetric quants `L[i]` in [0, nmax] with a minimum, the weighted
/// least-squares scale and min over `nstep + 1` candidate scales. Returns (scale, -min).
pub(super) fn make_qkx_quants(p: &Qkx, x: &[f32], weights: &[f32], l_out: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let nmax = p.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        l_out[i] = l;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qp_quants`: non-negative quants `L[i]` in [0, nmax] (stored as `uint8_t`) of
/// the non-negative `x` (sub-block scales or mins) with weights `qw`. Returns the scale.
fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Sum of squares in index order.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of q4_K/q5_K.
#[inline(always)]
fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse: eight 6-bit scales and mins into the 12 bytes (ggml's loop, full bytes kept
/// as `uint8_t` arithmetic keeps them).
#[inline(always)]
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], s: &mut [u8]) {
    s[..12].fill(0);
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
}

/// 2-bit quants `L[j + l + 32k]` into `qs[j/4 + l]` bits 2k (q2_K and q3_K).
#[inline(always)]
fn pack2(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// q2_K: block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin; } = 84 bytes, 2.625 bpw.
// Sixteen 16-element sub-blocks, x = d*(sc&15)*q - dmin*(sc>>4), q in 0..=3.

const Q2K_QS: usize = 16;
const Q2K_D: usize = 80;

/// Final 2-bit quants from the stored scales (`if (!d) continue;` keeps the search's quants).
fn q2_k_finish(x: &[f32; QK_K], l: &mut [u8; QK_K], out: &mut [u8], d: f32, dmin: f32) {
    for j in 0..QK_K / 16 {
        let sc = out[j];
        let dj = d * (sc & 0xF) as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * (sc >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / dj).clamp(0, 3) as u8;
        }
    }
    pack2(l, &mut out[Q2K_QS..Q2K_D]);
}

/// `quantize_row_q2_K_ref`.
fn q2_k_ref(x: &[f32; QK_K], out: &mut [u8]) {
    let p = Qkx {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let q4scale = 15f32;
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx_quants(&p, xs, &weights, &mut l[16 * j..16 * j + 16]);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let d = if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            out[j] = nearest_int(iscale * scales[j]) as u8;
        }
        put_f16(out, Q2K_D, max_scale / q4scale)
    } else {
        out[..16].fill(0);
        put_f16(out, Q2K_D, 0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            out[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        put_f16(out, Q2K_D + 2, max_min / q4scale)
    } else {
        put_f16(out, Q2K_D + 2, 0.0)
    };
    q2_k_finish(x, &mut l, out, d, dmin);
}

/// `quantize_row_q2_K_impl` (with importance weights).
fn q2_k_impl(x: &[f32; QK_K], qw: &[f32; QK_K], out: &mut [u8]) {
    let p = Qkx {
        nmax: 3,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let mut weight = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = sum_sq(x) / QK_K as f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for k in 0..16 {
            weight[k] = qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        for &w in &weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx_quants(&p, xs, &weight, &mut l[16 * j..16 * j + 16]);
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let d = put_f16(out, Q2K_D, dm);
    let dmin = put_f16(out, Q2K_D + 2, mm);
    for j in 0..16 {
        out[j] = ls[j] | (lm[j] << 4);
    }
    q2_k_finish(x, &mut l, out, d, dmin);
}

// ---------------------------------------------------------------------------------------------
// q3_K: block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; } = 110 bytes, 3.4375 bpw.
// Sixteen 16-element sub-blocks with 6-bit signed scales, x = d*(sc-32)*(q-4), q in 0..=7
// (low 2 bits in qs, the high bit in hmask).

const Q3K_QS: usize = 32;
const Q3K_SC: usize = 96;
const Q3K_D: usize = 108;

/// Stores the 6-bit scale `l` (0..=63) of sub-block `j`.
#[inline(always)]
fn q3_put_scale(s: &mut [u8], j: usize, l: i32) {
    if j < 8 {
        s[j] = (l & 0xF) as u8;
    } else {
        s[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let h = l >> 4;
    s[j % 4 + 8] |= (h << (2 * (j / 4))) as u8;
}

/// The signed scale of sub-block `j` (ggml's `int8_t sc` computation).
#[inline(always)]
fn q3_scale(s: &[u8], j: usize) -> i8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 } as i8;
    ((lo as i32 | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) as i32) << 4) - 32) as i8
}

fn q3_k_finish(x: &[f32; QK_K], l: &mut [i8; QK_K], out: &mut [u8]) {
    let d_all = f16_at(out, Q3K_D);
    for j in 0..QK_K / 16 {
        let sc = q3_scale(&out[Q3K_SC..Q3K_SC + 12], j);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    let hmask = &mut out[..32];
    hmask.fill(0);
    let mut m = 0usize;
    let mut hm = 1u8;
    for lj in l.iter_mut() {
        if *lj > 3 {
            hmask[m] |= hm;
            *lj -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    let lu: [u8; QK_K] = std::array::from_fn(|i| l[i] as u8);
    pack2(&lu, &mut out[Q3K_QS..Q3K_SC]);
}

/// `quantize_row_q3_K_ref`.
fn q3_k_ref(x: &[f32; QK_K], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut amax = 0f32;
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let s = &mut out[Q3K_SC..Q3K_SC + 12];
    s.fill(0);
    if max_scale != 0.0 {
        let iscale = -32f32 / max_scale;
        for j in 0..16 {
            let l8 = nearest_int(iscale * scales[j]) as i8 as i32;
            q3_put_scale(s, j, l8.clamp(-32, 31) + 32);
        }
        put_f16(out, Q3K_D, 1.0 / iscale);
    } else {
        put_f16(out, Q3K_D, 0.0);
    }
    q3_k_finish(x, &mut l, out);
}

/// `quantize_row_q3_K_impl` (with importance weights).
fn q3_k_impl(x: &[f32; QK_K], qw: &[f32; QK_K], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut weight = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for k in 0..16 {
            weight[k] = qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0f32;
        for &w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], Some(&weight));
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
    let s = &mut out[Q3K_SC..Q3K_SC + 12];
    s.fill(0);
    for j in 0..16 {
        q3_put_scale(s, j, ls[j] as i32);
    }
    put_f16(out, Q3K_D, d_block);
    q3_k_finish(x, &mut l, out);
}

// ---------------------------------------------------------------------------------------------
// q4_K: block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; } = 144 bytes, 4.5 bpw.
// q5_K: block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } = 176, 5.5 bpw.
// Eight 32-element sub-blocks with 6-bit scales and mins, x = d*sc*q - dmin*m, q in 0..=NMAX
// (15: 4 bits; 31: 4 bits in qs + the fifth in qh).

/// Final quants from the stored scales, then the q4_K or q5_K packing.
fn q45_k_finish<const NMAX: i32>(x: &[f32; QK_K], l: &mut [u8; QK_K], out: &mut [u8]) {
    let d = f16_at(out, 0);
    let dmin = f16_at(out, 2);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &out[4..16]);
        let dj = d * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, NMAX) as u8;
        }
    }
    if NMAX == 15 {
        let q = &mut out[16..144];
        for (k, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                q[32 * k + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    } else {
        let (qh, ql) = out[16..176].split_at_mut(32);
        qh.fill(0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for (k, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * k + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/// `quantize_row_q4_K_ref` (NMAX 15) and `quantize_row_q5_K_ref` (NMAX 31).
fn q45_k_ref<const NMAX: i32>(x: &[f32; QK_K], out: &mut [u8]) {
    let p = if NMAX == 15 {
        Qkx {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        }
    } else {
        Qkx {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        }
    };
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (sum_sq(xs) / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx_quants(&p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    pack_scale_min_k4(&ls, &lm, &mut out[4..16]);
    put_f16(out, 0, max_scale / 63.0);
    put_f16(out, 2, max_min / 63.0);
    q45_k_finish::<NMAX>(x, &mut l, out);
}

/// `quantize_row_q4_K_impl` / `quantize_row_q5_K_impl` (with importance weights).
fn q45_k_impl<const NMAX: i32>(x: &[f32; QK_K], qw: &[f32; QK_K], out: &mut [u8]) {
    let p = Qkx {
        nmax: NMAX,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        for k in 0..32 {
            weights[k] = qw[32 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx_quants(&p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if NMAX == 31 {
        // q5_K's impl clamps (q4_K's does not; make_qp_quants already keeps them <= 63).
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    pack_scale_min_k4(&ls, &lm, &mut out[4..16]);
    put_f16(out, 0, d_block);
    put_f16(out, 2, m_block);
    q45_k_finish::<NMAX>(x, &mut l, out);
}

// ---------------------------------------------------------------------------------------------
// q6_K: block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; } = 210 bytes, 6.5625 bpw.
// Sixteen 16-element sub-blocks with 8-bit signed scales, x = d*sc*(q-32), q in 0..=63.

/// `quantize_row_q6_K_ref` (`qw == None`) and `quantize_row_q6_K_impl`.
fn q6_k(x: &[f32; QK_K], qw: Option<&[f32; QK_K]>, out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for ib in 0..QK_K / 16 {
        let r = 16 * ib..16 * ib + 16;
        let scale = make_qx_quants(
            32,
            &x[r.clone()],
            &mut l[r.clone()],
            qw.map(|w| &w[r.clone()]),
        );
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out[..210].fill(0);
        put_f16(out, 208, 0.0);
        return;
    }
    let iscale = -128f32 / max_scale;
    let d_all = put_f16(out, 208, 1.0 / iscale);
    for ib in 0..16 {
        out[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..QK_K / 16 {
        let d = d_all * (out[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, qh) = out[..192].split_at_mut(128);
    for (k, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut ql[64 * k..64 * k + 64];
        let qh = &mut qh[32 * k..32 * k + 32];
        for i in 0..32 {
            let q1 = l[j + i] as u8 & 0xF;
            let q2 = l[j + i + 32] as u8 & 0xF;
            let q3 = l[j + i + 64] as u8 & 0xF;
            let q4 = l[j + i + 96] as u8 & 0xF;
            ql[i] = q1 | (q3 << 4);
            ql[i + 32] = q2 | (q4 << 4);
            qh[i] = ((l[j + i] >> 4) as u8)
                | (((l[j + i + 32] >> 4) as u8) << 2)
                | (((l[j + i + 64] >> 4) as u8) << 4)
                | (((l[j + i + 96] >> 4) as u8) << 6);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantization (ggml-base's `dequantize_row_q*_K`, unfused like the quantizers).

/// Decodes whole super-blocks of `ty` (`src` is exactly whole blocks, checked by the caller).
pub(super) fn decode(ty: GgmlType, src: &[u8], dst: &mut Vec<f32>) {
    let bs = ty.type_size();
    for b in src.chunks_exact(bs) {
        let mut y = [0f32; QK_K];
        match ty {
            GgmlType::Q2K => {
                let d = f16_at(b, Q2K_D);
                let min = f16_at(b, Q2K_D + 2);
                let mut is = 0;
                for (n, q) in b[Q2K_QS..Q2K_D].chunks_exact(32).enumerate() {
                    for (j, shift) in [0u32, 2, 4, 6].into_iter().enumerate() {
                        for half in 0..2 {
                            let sc = b[is];
                            is += 1;
                            let dl = d * (sc & 0xF) as f32;
                            let ml = min * (sc >> 4) as f32;
                            let base = 128 * n + 32 * j + 16 * half;
                            for k in 0..16 {
                                let qv = ((q[16 * half + k] >> shift) & 3) as f32;
                                y[base + k] = dl * qv - ml;
                            }
                        }
                    }
                }
            }
            GgmlType::Q3K => {
                let d_all = f16_at(b, Q3K_D);
                let hm = &b[..32];
                let mut m = 1u8;
                let mut is = 0;
                for (n, q) in b[Q3K_QS..Q3K_SC].chunks_exact(32).enumerate() {
                    for (j, shift) in [0u32, 2, 4, 6].into_iter().enumerate() {
                        for half in 0..2 {
                            let dl = d_all * q3_scale(&b[Q3K_SC..Q3K_SC + 12], is) as f32;
                            is += 1;
                            let base = 128 * n + 32 * j + 16 * half;
                            for k in 0..16 {
                                let i = 16 * half + k;
                                let lo = ((q[i] >> shift) & 3) as i32;
                                let hi = if hm[i] & m != 0 { 0 } else { 4 };
                                y[base + k] = dl * (lo - hi) as f32;
                            }
                        }
                        m <<= 1;
                    }
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let d = f16_at(b, 0);
                let min = f16_at(b, 2);
                let sc = &b[4..16];
                let five = ty == GgmlType::Q5K;
                let (qh, ql) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for (k, q) in ql.chunks_exact(32).enumerate() {
                    let (s1, m1) = get_scale_min_k4(2 * k, sc);
                    let (s2, m2) = get_scale_min_k4(2 * k + 1, sc);
                    let (d1, m1) = (d * s1 as f32, min * m1 as f32);
                    let (d2, m2) = (d * s2 as f32, min * m2 as f32);
                    for l in 0..32 {
                        let (mut a, mut c) = ((q[l] & 0xF) as i32, (q[l] >> 4) as i32);
                        if five {
                            a += if qh[l] & u1 != 0 { 16 } else { 0 };
                            c += if qh[l] & u2 != 0 { 16 } else { 0 };
                        }
                        y[64 * k + l] = d1 * a as f32 - m1;
                        y[64 * k + 32 + l] = d2 * c as f32 - m2;
                    }
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
            GgmlType::Q6K => {
                let d = f16_at(b, 208);
                for n in 0..2 {
                    let ql = &b[64 * n..64 * n + 64];
                    let qh = &b[128 + 32 * n..128 + 32 * n + 32];
                    let sc = &b[192 + 8 * n..192 + 8 * n + 8];
                    let y = &mut y[128 * n..128 * n + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
            _ => {}
        }
        dst.extend_from_slice(&y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (f, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ] {
            assert_eq!(nearest_int(f), want, "{f}");
        }
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn software_f16_matches_round_to_nearest_even() {
        for h in 0..=u16::MAX {
            let f = half::f16::from_bits(h).to_f32();
            assert_eq!(fp32(h).to_bits(), f.to_bits(), "{h:#06x}");
            if !f.is_nan() {
                assert_eq!(fp16(f), h, "{h:#06x}");
            }
        }
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let f = f32::from_bits(s);
            if !f.is_nan() {
                assert_eq!(fp16(f), half::f16::from_f32(f).to_bits(), "{f:e}");
            }
        }
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0u8, 1, 62, 63, 17, 33, 48, 5];
        let lm = [63u8, 2, 0, 31, 40, 1, 63, 22];
        let mut s = [0u8; 12];
        pack_scale_min_k4(&ls, &lm, &mut s);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &s), (ls[j], lm[j]), "{j}");
        }
        let mut s = [0u8; 12];
        for j in 0..16 {
            q3_put_scale(&mut s, j, (j * 4 + 1) as i32);
        }
        for j in 0..16 {
            assert_eq!(q3_scale(&s, j), (j * 4 + 1) as i8 - 32, "{j}");
        }
    }
}
