//! The flash-attention kernel against the definition computed in f64 (`attention_reference`):
//! every KV cache type × every instruction set this CPU has, on odd shapes — one query, a key
//! tile plus one, key counts from 1 to over 1,000, head sizes that are not a multiple of the
//! vector width, 1, 2 and as many KV groups as heads — with the causal mask and explicit masks
//! (random finite values, masked keys, a row that sees no key at all).
//!
//! The tolerance of each output comes from an error analysis of the kernel's f32 arithmetic
//! (`bound` below), computed from the data, not from what some machine produced. Results must
//! also be bit-identical whatever the thread count (rows are independent lanes).

use glm_kernels::attention::*;
use glm_kernels::Isa;

mod common;
use common::Rng;

/// `n` cache rows of `width` values of `ty`, from values of magnitude up to `amp`.
fn cache_rows(ty: KvType, n: usize, width: usize, amp: f32, rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0u8; n * ty.row_bytes(width)];
    for row in out.chunks_exact_mut(ty.row_bytes(width)) {
        let x: Vec<f32> = (0..width).map(|_| rng.f32() * amp).collect();
        ty.quantize_row(&x, row).unwrap();
    }
    out
}

const U: f64 = f32::EPSILON as f64 / 2.0;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// The bound on |kernel − exact| for every output, from the kernel's arithmetic in f32:
///
/// - a score `s_j = scale·q·k_j (+ mask)` is a chain of `d` multiply-adds after the scaling of
///   q: |ŝ − s| ≤ Δ = γ(2d+1)·Σ_i|scale·q_i·k_ji| + u·|s| (two roundings per step where there is
///   no FMA, one for the mask); with quantized keys the kernel may round each scaled query row
///   to 16-bit integers (`x ≈ σ·q̂`, σ = max|x| / 32767, attention/qk16.rs), which adds at most
///   half a step (and the division's rounding), 0.502·σ·Σ_i|k_ji|;
/// - a weight `p_j = exp(s_j − m)` then has relative error at most
///   ε_j = 2Δ + E + 2u·|s_j − M| + T·(E + 3u), with E = `EXP_ULPS`·u the error of exp, M the
///   row's maximum and T the number of key tiles: every tile's rescaling `exp(m − m')` costs an
///   exp and a multiplication of O and l, and the arguments of those rescalings, rounded
///   relatively, add up to at most `M − s_j`;
/// - perturbed weights move a convex combination by at most Σ_j w_j·ε_j·|v_j − o| / (1 − max ε);
/// - O and l are sums of `n + T` terms (each product rounded once or twice): γ(2n+2T)·Σ w_j|v_j|
///   and γ(n+2T)·|o|, and the final division another 2u·|o|.
fn bound(s: &AttnShape, q: &[f32], k: &[u8], v: &[u8], mask: Mask<'_>) -> Vec<f64> {
    let d = s.head_dim;
    let kv_w = s.n_head_kv * d;
    let deq = |ty: KvType, data: &[u8]| {
        let mut out = vec![0f32; s.n_kv * kv_w];
        for (j, o) in out.chunks_exact_mut(kv_w).enumerate() {
            let rb = ty.row_bytes(kv_w);
            ty.dequantize_row(&data[j * rb..][..rb], o).unwrap();
        }
        out
    };
    let (kf, vf) = (deq(s.k_type, k), deq(s.v_type, v));
    let hg = s.n_head / s.n_head_kv;
    let e = EXP_ULPS as f64 * U;
    let t_tiles = s.n_kv.div_ceil(KEY_TILE) as f64;
    let mut out = vec![0f64; s.q_len()];
    for t in 0..s.n_tokens {
        for h in 0..s.n_head {
            let g = h / hg;
            let qv = &q[(t * s.n_head + h) * d..][..d];
            // the 16-bit step of the row (quantized keys), 0 otherwise
            let sigma = if s.k_type.is_quantized() {
                qv.iter()
                    .fold(0f64, |m, &x| m.max((x * s.scale).abs() as f64))
                    / 32767.0
            } else {
                0.0
            };
            let mut keys = Vec::new(); // (s_j, Σ|terms|, Σ|k|)
            for j in 0..s.n_kv {
                let add = match mask {
                    Mask::Causal if j > s.n_kv - s.n_tokens + t => continue,
                    Mask::Causal => 0.0,
                    Mask::Additive(m) if m[t * s.n_kv + j] == f32::NEG_INFINITY => continue,
                    Mask::Additive(m) => m[t * s.n_kv + j] as f64,
                };
                let kr = &kf[j * kv_w + g * d..][..d];
                let (mut dot, mut abs, mut abs_k) = (0f64, 0f64, 0f64);
                for (&a, &b) in qv.iter().zip(kr) {
                    dot += a as f64 * b as f64;
                    abs += (a as f64 * s.scale as f64 * b as f64).abs();
                    abs_k += (b as f64).abs();
                }
                keys.push((j, dot * s.scale as f64 + add, abs, abs_k));
            }
            if keys.is_empty() {
                continue; // exactly 0 expected
            }
            let mx = keys.iter().fold(f64::NEG_INFINITY, |m, k| m.max(k.1));
            let w: Vec<f64> = keys.iter().map(|k| (k.1 - mx).exp()).collect();
            let sum: f64 = w.iter().sum();
            let n = keys.len();
            let eps: Vec<f64> = keys
                .iter()
                .map(|&(_, sj, abs, abs_k)| {
                    let delta = gamma(2 * d + 1) * abs + U * sj.abs() + 0.502 * sigma * abs_k;
                    2.0 * delta + e + 2.0 * U * (mx - sj) + t_tiles * (e + 3.0 * U)
                })
                .collect();
            let eps_max = eps.iter().fold(0f64, |m, &x| m.max(x)).min(0.5);
            for kk in 0..d {
                let vj = |i: usize| vf[keys[i].0 * kv_w + g * d + kk] as f64;
                let o: f64 = (0..n).map(|i| w[i] * vj(i)).sum::<f64>() / sum;
                let weights: f64 = (0..n)
                    .map(|i| w[i] / sum * eps[i] * (vj(i) - o).abs())
                    .sum::<f64>()
                    / (1.0 - eps_max);
                let abs_v: f64 = (0..n).map(|i| w[i] / sum * vj(i).abs()).sum();
                let tiles = t_tiles as usize;
                let acc =
                    gamma(2 * n + 2 * tiles) * abs_v + (gamma(n + 2 * tiles) + 2.0 * U) * o.abs();
                // second-order terms of the products of (1 + ε) factors
                out[(t * s.n_head + h) * d + kk] = (weights + acc) * 1.01 + 1e-30;
            }
        }
    }
    out
}

struct Case {
    d: usize,
    n_head: usize,
    n_head_kv: usize,
    n_tokens: usize,
    n_kv: usize,
}

/// Runs one case on every ISA and thread count, for the given types and mask kind.
fn check_case(c: &Case, kt: KvType, vt: KvType, masked: bool, rng: &mut Rng) {
    let s = AttnShape {
        head_dim: c.d,
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        n_tokens: c.n_tokens,
        n_kv: c.n_kv,
        k_type: kt,
        v_type: vt,
        scale: 1.0 / (c.d as f32).sqrt(),
    };
    let kv_w = c.n_head_kv * c.d;
    let q: Vec<f32> = (0..s.q_len()).map(|_| rng.f32() * 2.0).collect();
    let k = cache_rows(kt, c.n_kv, kv_w, 2.0, rng);
    let v = cache_rows(vt, c.n_kv, kv_w, 1.0, rng);
    let mask_vals: Vec<f32> = (0..c.n_tokens * c.n_kv)
        .map(|i| {
            let (t, j) = (i / c.n_kv, i % c.n_kv);
            if t == 1 || rng.next().is_multiple_of(4) {
                f32::NEG_INFINITY // token 1 sees nothing; a quarter of the rest masked
            } else if j % 5 == 0 {
                -3.0 * rng.f32().abs()
            } else {
                0.0
            }
        })
        .collect();
    let mask = if masked {
        Mask::Additive(&mask_vals)
    } else {
        Mask::Causal
    };
    let want = attention_reference(&s, &q, &k, &v, mask).unwrap();
    let tol = bound(&s, &q, &k, &v, mask);
    for isa in Isa::available() {
        let mut first: Option<Vec<f32>> = None;
        for nth in [1, 2, 3, 5] {
            let mut got = vec![f32::NAN; s.q_len()];
            flash_attention_into(isa, &s, &q, &k, &v, mask, &mut got, nth).unwrap();
            for (i, ((&g, &w), &b)) in got.iter().zip(&want).zip(&tol).enumerate() {
                let err = (g as f64 - w).abs();
                assert!(
                    err <= b,
                    "{} d{} heads {}/{} T{} kv{} K {} V {} mask {masked} threads {nth}: \
                     out[{i}] = {g}, want {w}, error {err:.3e} > bound {b:.3e}",
                    isa.name(),
                    c.d,
                    c.n_head,
                    c.n_head_kv,
                    c.n_tokens,
                    c.n_kv,
                    kt.name(),
                    vt.name()
                );
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}: {nth} threads differ from 1",
                    isa.name()
                ),
            }
        }
    }
}

#[test]
fn float_caches_on_odd_shapes() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let cases = [
        // one query, one key
        Case {
            d: 8,
            n_head: 1,
            n_head_kv: 1,
            n_tokens: 1,
            n_kv: 1,
        },
        // one query over a long cache (decoding), 16 heads per group as ChatGLM3/GLM-4
        Case {
            d: 128,
            n_head: 32,
            n_head_kv: 2,
            n_tokens: 1,
            n_kv: 1031,
        },
        // a key tile plus one, and a row count past one item (ROWS + 1 rows per group)
        Case {
            d: 24,
            n_head: 4,
            n_head_kv: 2,
            n_tokens: ROWS / 2 + 1,
            n_kv: KEY_TILE + 1,
        },
        // head size not a multiple of any vector width, multi-head (a group per head)
        Case {
            d: 13,
            n_head: 3,
            n_head_kv: 3,
            n_tokens: 7,
            n_kv: 200,
        },
        // multi-query (one group), prompt after a prefix
        Case {
            d: 40,
            n_head: 6,
            n_head_kv: 1,
            n_tokens: 17,
            n_kv: 130,
        },
        // the fixture's shape
        Case {
            d: 32,
            n_head: 4,
            n_head_kv: 2,
            n_tokens: 100,
            n_kv: 100,
        },
    ];
    for c in &cases {
        for ty in [KvType::F32, KvType::F16] {
            check_case(c, ty, ty, false, &mut rng);
            if c.n_tokens >= 2 {
                check_case(c, ty, ty, true, &mut rng);
            }
        }
    }
}

#[test]
fn quantized_caches() {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let cases = [
        Case {
            d: 32,
            n_head: 2,
            n_head_kv: 1,
            n_tokens: 1,
            n_kv: 1,
        },
        Case {
            d: 128,
            n_head: 32,
            n_head_kv: 2,
            n_tokens: 1,
            n_kv: 1100,
        },
        Case {
            d: 64,
            n_head: 8,
            n_head_kv: 2,
            n_tokens: 9,
            n_kv: KEY_TILE + 1,
        },
        Case {
            d: 32,
            n_head: 4,
            n_head_kv: 4,
            n_tokens: 5,
            n_kv: 77,
        },
    ];
    for c in &cases {
        for (kt, vt) in [
            (KvType::Q8_0, KvType::Q8_0),
            (KvType::Q4_0, KvType::Q4_0),
            (KvType::Q8_0, KvType::F16),
            (KvType::F16, KvType::Q4_0),
        ] {
            check_case(c, kt, vt, false, &mut rng);
            if c.n_tokens >= 2 {
                check_case(c, kt, vt, true, &mut rng);
            }
        }
    }
}

/// Masked keys carry scores and values a million times larger than the rest: a single leaked
/// one would move the output by orders of magnitude more than the bound.
#[test]
fn masked_keys_do_not_leak() {
    let s = AttnShape {
        head_dim: 32,
        n_head: 4,
        n_head_kv: 2,
        n_tokens: 70,
        n_kv: 200,
        k_type: KvType::F32,
        v_type: KvType::F32,
        scale: 0.25,
    };
    let mut rng = Rng(7);
    let kv_w = s.n_head_kv * s.head_dim;
    let q: Vec<f32> = (0..s.q_len()).map(|_| 1.0 + rng.f32().abs()).collect();
    let mut kf = vec![0f32; s.n_kv * kv_w];
    let mut vf = vec![0f32; s.n_kv * kv_w];
    let first_pos = s.n_kv - s.n_tokens;
    for j in 0..s.n_kv {
        // keys after the prefix grow: each query's last visible key has the largest score it
        // sees, and every later (masked) key a larger one
        let big = if j > first_pos { 1e6 } else { 1.0 };
        for x in 0..kv_w {
            kf[j * kv_w + x] = j as f32 * 1e-3 * if j > first_pos { 10.0 } else { 1.0 };
            vf[j * kv_w + x] = big * rng.f32();
        }
    }
    let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (k, v) = (bytes(&kf), bytes(&vf));
    let want = attention_reference(&s, &q, &k, &v, Mask::Causal).unwrap();
    let tol = bound(&s, &q, &k, &v, Mask::Causal);
    for isa in Isa::available() {
        let mut got = vec![0f32; s.q_len()];
        flash_attention_into(isa, &s, &q, &k, &v, Mask::Causal, &mut got, 2).unwrap();
        for (i, ((&g, &w), &b)) in got.iter().zip(&want).zip(&tol).enumerate() {
            assert!(
                (g as f64 - w).abs() <= b,
                "{} out[{i}] = {g}, want {w}",
                isa.name()
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let s = AttnShape {
        head_dim: 48,
        n_head: 4,
        n_head_kv: 2,
        n_tokens: 2,
        n_kv: 3,
        k_type: KvType::Q8_0,
        v_type: KvType::F16,
        scale: 1.0,
    };
    let q = vec![0f32; s.q_len()];
    let k = vec![0u8; 3 * 2 * 48 / 32 * 34];
    let v = vec![0u8; 3 * 2 * 48 * 2];
    let mut out = vec![0f32; s.q_len()];
    let e = flash_attention_into(Isa::Scalar, &s, &q, &k, &v, Mask::Causal, &mut out, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q8_0 cache needs a head size that is a multiple of 32"),
        "{e}"
    );
    let s = AttnShape {
        head_dim: 32,
        k_type: KvType::F16,
        n_tokens: 4,
        ..s
    };
    let k = vec![0u8; 3 * 2 * 32 * 2];
    let q = vec![0f32; s.q_len()];
    let v = vec![0u8; 3 * 2 * 32 * 2];
    let mut out = vec![0f32; s.q_len()];
    let e = flash_attention_into(Isa::Scalar, &s, &q, &k, &v, Mask::Causal, &mut out, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 queries after only 3 keys"), "{e}");
    let s = AttnShape { n_tokens: 3, ..s };
    let (q, mut out) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
    let e = flash_attention_into(Isa::Scalar, &s, &q, &k[1..], &v, Mask::Causal, &mut out, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("K of 383 bytes"), "{e}");
}

/// The cache formats are ggml's blocks: sizes per 32 values, and a round trip within the
/// format's step.
#[test]
fn kv_formats() {
    assert_eq!(
        KvType::ALL.map(|t| (t.name(), t.row_bytes(32))),
        [("f32", 128), ("f16", 64), ("q8_0", 34), ("q4_0", 18)]
    );
    for t in KvType::ALL {
        assert_eq!(KvType::from_name(t.name()), Some(t));
    }
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..64).map(|_| rng.f32()).collect();
    for t in KvType::ALL {
        let mut b = vec![0u8; t.row_bytes(64)];
        t.quantize_row(&x, &mut b).unwrap();
        let mut y = vec![0f32; 64];
        t.dequantize_row(&b, &mut y).unwrap();
        for (blk_x, blk_y) in x.chunks(32).zip(y.chunks(32)) {
            let amax = blk_x.iter().fold(0f32, |m, v| m.max(v.abs()));
            // half a quantization step (q8_0: amax/127, q4_0: amax/8) plus the f16 scale's rounding
            let step = match t {
                KvType::F32 => 0.0,
                KvType::F16 => amax * 1e-3,
                KvType::Q8_0 => amax / 127.0 * 0.51 + amax * 1e-3,
                KvType::Q4_0 => amax / 8.0 * 1.01 + amax * 1e-3,
            };
            for (a, b) in blk_x.iter().zip(blk_y) {
                assert!((a - b).abs() <= step, "{}: {a} -> {b}", t.name());
            }
        }
    }
    assert!(KvType::Q8_0.quantize_row(&x[..40], &mut [0u8; 34]).is_err());
}
