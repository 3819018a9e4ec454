//! Every weight type × every kernel this CPU can run against the reference on ggml's own blocks,
//! on odd shapes: rows not a multiple of the 16-row group (1, 7, 17, 33, 100), one to several
//! blocks of columns, 1–9 tokens (every tile size) and long runs of tiles, thread-style splits of the groups, adversarial
//! values (q8 −128, zero scales, q6_K scale −128, all-zero activation blocks).
//!
//! Two bounds: with random scales the results must agree within f32 rounding, derived from the
//! magnitudes of the terms (`reference_terms`); with scales 1 and integer activations every sum
//! is an exact integer below 2^24, so the results must be bit-equal (a dropped lane, a saturated
//! i16 or a wrong bit would show). The reference itself is checked against ggml's dequantization
//! (glm-convert's, golden-tested against llama.cpp 2026) in `reference_is_ggml_dequantization`.

use gguf::GgmlType;
use glm_kernels::*;
use half::f16;

mod common;
use common::Rng;

/// Random rows of ggml blocks of `ty`: any bytes for quants, bits and packed scales, finite f16
/// scales (some zero), plus a few extreme values. `exact`: every f16 is 1 (q5_1's min −2) and
/// the integer scales are small, so that every sum stays an integer below 2^24.
fn weights(ty: WeightType, rows: usize, k: usize, rng: &mut Rng, exact: bool) -> Vec<u8> {
    let bb = ty.ggml_block_bytes();
    let mut out: Vec<u8> = (0..rows * k / ty.block_cols() * bb)
        .map(|_| rng.next() as u8)
        .collect();
    for (i, blk) in out.chunks_exact_mut(bb).enumerate() {
        for (j, &off) in ty.f16_offsets().iter().enumerate() {
            let v = match (exact, ty, j) {
                (true, WeightType::Q5_1, 1) => -2.0,
                (true, ..) => 1.0,
                _ if i % 13 == 4 => 0.0,
                _ => rng.f32() * 0.01,
            };
            blk[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        match ty {
            // q8: −128 appears (not written by ggml's quantizer, but legal in a file)
            WeightType::Q8_0 if i % 7 == 0 => blk[5] = 0x80,
            WeightType::Q4K | WeightType::Q5K if exact => {
                // 6-bit scales and mins ≤ 7
                blk[4..16].iter_mut().for_each(|b| *b &= 0x07);
            }
            WeightType::Q6K if exact => {
                blk[192..208]
                    .iter_mut()
                    .for_each(|b| *b = ((*b as i8) % 8) as u8);
            }
            WeightType::Q6K if i % 5 == 1 => blk[192] = 0x80, // scale −128
            WeightType::IQ4XS if exact => {
                // ls = 32 + (0..3): scales 0..3
                blk[2..4].copy_from_slice(&0xaaaau16.to_le_bytes());
                blk[4..8].iter_mut().for_each(|b| *b &= 0x33);
            }
            _ => {}
        }
    }
    out
}

/// `n` tokens of `k` activations quantized for `ty`. `exact`: integers in −127..=127 with a
/// ±127 in every block, so the activation scale is exactly 1 and the quants are the values.
fn activations(ty: WeightType, k: usize, n: usize, rng: &mut Rng, exact: bool) -> Vec<u8> {
    let qk = ty.activation().block_cols();
    let arb = ty.act_row_bytes(k);
    let mut out = vec![0u8; n * arb];
    for (t, row) in out.chunks_exact_mut(arb).enumerate() {
        let x: Vec<f32> = (0..k)
            .map(|i| {
                if exact {
                    // q8_K's scale is −127/max: a −127 first makes it 1
                    if i % qk == 0 {
                        -127.0
                    } else {
                        ((rng.next() % 255) as i32 - 127) as f32
                    }
                } else if t % 5 == 2 && i < qk {
                    0.0 // an all-zero block
                } else {
                    rng.f32() * 3.0
                }
            })
            .collect();
        ty.quantize_activations(&x, row).unwrap();
    }
    out
}

/// Every kernel against the reference. The bound is f32 rounding: each side rounds each block's
/// float terms (≤ 3 roundings, and the conversion of an integer sum above 2^24) and each of the
/// additions along k, so both are within (terms + 4)·ε·Σ|terms| of the exact value; twice that.
fn check(ty: WeightType, rows: usize, k: usize, n: usize, seed: u64, exact: bool) {
    let mut rng = Rng(seed);
    let src = weights(ty, rows, k, &mut rng, exact);
    let acts = activations(ty, k, n, &mut rng, exact);
    let (want, mag) = reference_terms(ty, &src, rows, k, &acts, n);
    let mut packed = vec![0u8; packed_len(ty, rows, k)];
    repack(ty, &src, rows, k, &mut packed).unwrap();
    let m = MatMul {
        ty,
        rows,
        k,
        n_tokens: n,
    };
    // float terms per output: one per block, two where a min/offset term is separate
    let terms = (k / ty.block_cols() * 2) as f32;
    for isa in Isa::available() {
        // as threads would: the groups in two uneven parts
        let g = n_groups(rows);
        let mut got = vec![f32::NAN; rows * n];
        for part in [0..g / 3, g / 3..g] {
            // SAFETY: `got` holds n × rows floats, the stride is rows.
            let out = unsafe { Out::new(got.as_mut_ptr(), rows) };
            matmul(isa, m, &packed, &acts, part, out).unwrap();
        }
        for (i, ((a, b), mg)) in got.iter().zip(&want).zip(&mag).enumerate() {
            let tol = if exact {
                0.0
            } else {
                2.0 * (terms + 4.0) * f32::EPSILON * mg
            };
            assert!(
                (a - b).abs() <= tol,
                "{} {} {rows}×{k}, {n} tokens: [{}][{}] = {a}, reference {b} (bound {tol})",
                isa.name(),
                ty.name(),
                i / rows,
                i % rows
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_reference_on_odd_shapes() {
    for ty in WeightType::ALL {
        let qk = ty.block_cols();
        for (rows, blocks) in [(1, 1), (7, 2), (16, 1), (17, 3), (33, 1), (100, 5)] {
            for n in 1..=9 {
                // every tile size of AVX-512 (8) and AVX2 (8; 4 for q4_0/q8_0), and a tile plus one
                let k = blocks * qk;
                check(ty, rows, k, n, (rows * 1000 + k + n) as u64, false);
            }
        }
        check(ty, 33, 2 * qk, 37, 99, false); // many tiles of tokens
        check(ty, 48, 4096, 3, 7, false); // float accumulation over many blocks
    }
}

#[test]
fn integer_sums_are_exact() {
    for ty in WeightType::ALL {
        // at most 512 columns: every sum stays below 2^24 with the exact-mode values
        for (rows, k, n) in [(17, 512, 5), (32, 256, 4), (5, 256, 1)] {
            check(ty, rows, k, n, (rows + k + n) as u64, true);
        }
    }
}

/// The GGUF type of a weight type (for glm-convert's dequantizer).
fn gguf_type(ty: WeightType) -> GgmlType {
    match ty {
        WeightType::Q4_0 => GgmlType::Q4_0,
        WeightType::Q8_0 => GgmlType::Q8_0,
        WeightType::Q5_0 => GgmlType::Q5_0,
        WeightType::Q5_1 => GgmlType::Q5_1,
        WeightType::IQ4NL => GgmlType::IQ4NL,
        WeightType::Q3K => GgmlType::Q3K,
        WeightType::Q4K => GgmlType::Q4K,
        WeightType::Q5K => GgmlType::Q5K,
        WeightType::Q6K => GgmlType::Q6K,
        WeightType::IQ4XS => GgmlType::IQ4XS,
    }
}

/// The activations as the f32 values their quants stand for (d·q), and for q8_1 the f16 `s`
/// of each block.
fn dequantized_activations(ty: WeightType, a: &[u8], k: usize) -> (Vec<f32>, Vec<f32>) {
    let act = ty.activation();
    let (qk, bb) = (act.block_cols(), act.block_bytes());
    let qs = if act == Activation::Q8K { 64 } else { 8 };
    let mut x = Vec::with_capacity(k);
    let mut s = Vec::new();
    for blk in a.chunks_exact(bb) {
        let d = f32::from_le_bytes(blk[..4].try_into().unwrap());
        x.extend(blk[qs..qs + qk].iter().map(|&q| d * q as i8 as f32));
        s.push(f32::from_le_bytes(blk[4..8].try_into().unwrap()));
    }
    (x, s)
}

/// The reference (and so every kernel) computes Σ w·x with ggml's values: compared with the
/// f64 dot product of glm-convert's dequantized weights (bit-identical to llama.cpp 2026's
/// `to_float`, crates/convert/tests/quant_golden.rs) and the dequantized activations. The
/// dequantized weights carry ≤ 2 f32 roundings each and the reference's float terms a few, so
/// 1e-5 of Σ|w·x| is far above rounding and far below any misread bit or nibble. q5_1 with
/// q8_1 uses ggml's `s = f16(d·Σq)` for the min term: its f16 rounding (2^-11, and d's) is
/// added to the bound.
#[test]
fn reference_is_ggml_dequantization() {
    for ty in WeightType::ALL {
        let (rows, k) = (9, 4 * ty.block_cols());
        let mut rng = Rng(5 + k as u64);
        let src = weights(ty, rows, k, &mut rng, false);
        let acts = activations(ty, k, 2, &mut rng, false);
        let got = reference(ty, &src, rows, k, &acts, 2);
        let mut w = Vec::new();
        glm_convert::quant::dequantize(gguf_type(ty), &src, rows * k, &mut w).unwrap();
        let arb = ty.act_row_bytes(k);
        for t in 0..2 {
            let (x, s) = dequantized_activations(ty, &acts[t * arb..][..arb], k);
            for r in 0..rows {
                let row = &w[r * k..][..k];
                let exact: f64 = row.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
                let mag: f64 = row
                    .iter()
                    .zip(&x)
                    .map(|(&w, &x)| (w as f64 * x as f64).abs())
                    .sum();
                let mut tol = 1e-5 * mag + 1e-30;
                if ty.activation() == Activation::Q8_1 {
                    // |m · s| of each block, times f16's relative rounding twice
                    let bb = ty.ggml_block_bytes();
                    for (b, &s) in s.iter().enumerate() {
                        let blk = &src[(r * k / 32 + b) * bb..];
                        let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                        tol += (m as f64 * s as f64).abs() * 2.0 * 2f64.powi(-11);
                    }
                }
                let v = got[t * rows + r] as f64;
                assert!(
                    (v - exact).abs() <= tol,
                    "{} row {r} token {t}: reference {v}, dequantized dot {exact} (bound {tol})",
                    ty.name()
                );
            }
        }
    }
}

#[test]
fn activations_are_ggml_q8_0() {
    // ggml's x86 quantize_row_q8_0: d = f16(amax/127), q = round-half-even(x · 127/amax)
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5; // ties to even: 0
    x[2] = 1.5; // 2
    x[3] = -2.5; // -2
    x[4] = -127.0;
    let mut out = vec![0u8; ACT_BLOCK];
    Activation::Q8_0.quantize(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), 1.0);
    let q: Vec<i8> = out[8..13].iter().map(|&b| b as i8).collect();
    assert_eq!(q, [127, 0, 2, -2, -127]);
    assert_eq!(i32::from_le_bytes(out[4..8].try_into().unwrap()), 0);
    // all zeros: scale 0, quants 0
    let mut out = vec![1u8; ACT_BLOCK];
    Activation::Q8_0.quantize(&[0.0; 32], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn activations_are_ggml_q8_1() {
    // ggml's x86 quantize_row_q8_1: as q8_0, and s = f16(d · Σq) with the f32 d = amax/127,
    // not the f16 one: take a sum of quants where the two differ
    let d = 3.0f32 / 127.0;
    let dh = f16::from_f32(d).to_f32();
    let sum = (127..=127 * 32)
        .find(|&s| f16::from_f32(d * s as f32) != f16::from_f32(dh * s as f32))
        .expect("some sum tells the two apart");
    let mut x = vec![0f32; 32];
    let mut left = sum;
    for v in x.iter_mut() {
        let q = left.min(127);
        *v = 3.0 * q as f32 / 127.0; // quantizes back to q
        left -= q;
    }
    let mut out = vec![0u8; ACT_BLOCK];
    Activation::Q8_1.quantize(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), dh);
    let q: i32 = out[8..].iter().map(|&b| b as i8 as i32).sum();
    assert_eq!(q, sum);
    let s = f32::from_le_bytes(out[4..8].try_into().unwrap());
    assert_eq!(s, f16::from_f32(d * sum as f32).to_f32());
    // and the rounding of x · 127/amax: ties to even, as q8_0
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = -2.5;
    Activation::Q8_1.quantize(&x, &mut out).unwrap();
    assert_eq!(out[8..11], [127, 0, (-2i8) as u8]);
    assert!(Activation::Q8_1.quantize(&[0.0; 33], &mut out).is_err());
}

#[test]
fn bad_shapes_are_errors() {
    let ty = WeightType::Q4_0;
    let mut dst = vec![0u8; packed_len(ty, 16, 64)];
    assert!(repack(ty, &[0u8; 10], 16, 64, &mut dst).is_err());
    assert!(repack(ty, &vec![0u8; 16 * 2 * 18], 16, 60, &mut dst).is_err());
    assert!(Activation::Q8_0
        .quantize(&[0.0; 31], &mut [0u8; 40])
        .is_err());
    let m = MatMul {
        ty,
        rows: 16,
        k: 64,
        n_tokens: 2,
    };
    let acts = vec![0u8; ty.act_row_bytes(64)]; // one token, two promised
    let mut out = vec![0f32; 32];
    // SAFETY: out holds 2 × 16 floats.
    let o = unsafe { Out::new(out.as_mut_ptr(), 16) };
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..1, o).is_err());
    let acts = vec![0u8; 2 * ty.act_row_bytes(64)];
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..2, o).is_err()); // one group only
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..1, o).is_ok());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_best_kernel_of_this_cpu_is_chosen_and_tested() {
    let want = if std::env::var("GLM_KERNELS_MAX_ISA").is_ok() {
        *Isa::available().last().unwrap()
    } else if std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512bw")
    {
        Isa::Avx512Vnni
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni") {
        Isa::AvxVnni
    } else if std::is_x86_feature_detected!("avx2") {
        Isa::Avx2
    } else {
        Isa::Scalar
    };
    assert_eq!(Isa::detect(), want);
    println!("kernels tested here: {:?}", Isa::available());
}

#[test]
fn activations_are_ggml_q8_k() {
    // quantize_row_q8_K_reference: max = the value of largest |x| (first one on ties),
    // iscale = −127/max, q = min(127, nearest_int(iscale·x)), d = 1/iscale, sums of 16
    let act = Activation::Q8K;
    let mut x = vec![0f32; 256];
    x[0] = 2.0;
    x[1] = -254.0; // max: iscale = −127/−254 = 0.5
    x[2] = 1.0; // 0.5 → 0 (ties to even)
    x[3] = 3.0; // 1.5 → 2
    x[4] = 254.0; // 127 (a later equal |x| is not the max)
    x[17] = -5.0; // −2.5 → −2
    let mut out = vec![0u8; act.row_bytes(256)];
    act.quantize(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), 2.0);
    let q: Vec<i8> = out[64..69].iter().map(|&b| b as i8).collect();
    assert_eq!(q, [1, -127, 0, 2, 127]);
    let bs = |o: &[u8], j: usize| i16::from_le_bytes([o[4 + 2 * j], o[5 + 2 * j]]);
    assert_eq!((bs(&out, 0), bs(&out, 1)), (3, -2));
    assert_eq!(i16::from_le_bytes([out[36], out[37]]), 1); // sum of 32
    x[1] = 254.0; // a positive max: negative scale
    act.quantize(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), -2.0);
    assert_eq!(out[64..66], [(-1i8) as u8, (-127i8) as u8]);
    let mut out = vec![1u8; act.row_bytes(256)];
    act.quantize(&[0.0; 256], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
    assert!(act.quantize(&[0.0; 255], &mut out).is_err());
}

#[test]
fn k_quant_bad_shapes_are_errors() {
    let ty = WeightType::Q4K;
    let mut dst = vec![0u8; packed_len(ty, 16, 512)];
    assert!(repack(ty, &vec![0u8; 16 * 2 * 144 - 1], 16, 512, &mut dst).is_err());
    assert!(repack(ty, &vec![0u8; 16 * 144], 16, 288, &mut dst).is_err()); // not 256-aligned
    assert!(repack(ty, &vec![0u8; 16 * 2 * 144], 16, 512, &mut dst).is_ok());
    let m = MatMul {
        ty,
        rows: 16,
        k: 512,
        n_tokens: 1,
    };
    let acts = vec![0u8; ty.act_row_bytes(512) - 1];
    let mut out = vec![0f32; 16];
    // SAFETY: out holds 16 floats.
    let o = unsafe { Out::new(out.as_mut_ptr(), 16) };
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..1, o).is_err());
}

#[cfg(target_arch = "aarch64")]
#[test]
fn neon_is_tested_on_aarch64() {
    assert_eq!(Isa::detect(), Isa::Neon);
}

/// Every instruction set has its own code and name, and a code names it back: the ggml ops carry
/// the kernel in their user data as this code.
#[test]
fn isa_codes_and_names_are_distinct_and_round_trip() {
    let mut names = std::collections::HashSet::new();
    for (i, isa) in Isa::ALL.into_iter().enumerate() {
        assert_eq!(isa.code() as usize, i);
        assert_eq!(Isa::from_code(isa.code()), isa);
        assert!(names.insert(isa.name()), "{} twice", isa.name());
    }
    assert_eq!(Isa::from_code(200), Isa::Scalar);
    // available() lists the kernels slowest first, AVX-VNNI between AVX2 and AVX-512
    let avail = Isa::available();
    let rank = |i: &Isa| Isa::ALL.iter().position(|x| x == i);
    assert!(avail.windows(2).all(|w| rank(&w[0]) < rank(&w[1])));
}
