//! Every kernel this CPU can run against the scalar reference on ggml's own blocks, on odd
//! shapes: rows not a multiple of the 16-row group (1, 7, 17, 33, 100), one block of columns,
//! 1–7 and 511 tokens, thread-style splits of the groups, both weight types, and adversarial
//! values (q8 −128, zero scales, all-zero activation blocks).

use glm_kernels::*;
use half::f16;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn weights(ty: WeightType, rows: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..rows * k / QK {
        let d = if i % 29 == 5 { 0.0 } else { rng.f32() * 0.05 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..ty.ggml_block_bytes() - 2 {
            let b = rng.next() as u8;
            // q8: −128 appears (not written by ggml's quantizer, but legal in a file)
            out.push(if ty == WeightType::Q8_0 && j == 3 && i % 7 == 0 {
                0x80
            } else {
                b
            });
        }
    }
    out
}

fn activations(k: usize, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0u8; n * act_row_bytes(k)];
    for (t, row) in out.chunks_exact_mut(act_row_bytes(k)).enumerate() {
        let x: Vec<f32> = (0..k)
            .map(|i| {
                if t % 5 == 2 && i < QK {
                    0.0
                } else {
                    rng.f32() * 3.0
                }
            })
            .collect();
        quantize_activations(&x, row).unwrap();
    }
    out
}

fn check(ty: WeightType, rows: usize, k: usize, n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let src = weights(ty, rows, k, &mut rng);
    let acts = activations(k, n, &mut rng);
    let want = reference(ty, &src, rows, k, &acts, n);
    let mut packed = vec![0u8; packed_len(ty, rows, k)];
    repack(ty, &src, rows, k, &mut packed).unwrap();
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let m = MatMul {
        ty,
        rows,
        k,
        n_tokens: n,
    };
    for isa in Isa::available() {
        // as threads would: the groups in two uneven parts
        let g = n_groups(rows);
        let mut got = vec![f32::NAN; rows * n];
        for part in [0..g / 3, g / 3..g] {
            // SAFETY: `got` holds n × rows floats, the stride is rows.
            let out = unsafe { Out::new(got.as_mut_ptr(), rows) };
            matmul(isa, m, &packed, &acts, part, out).unwrap();
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 2e-5 * scale,
                "{} {ty:?} {rows}×{k}, {n} tokens: [{}][{}] = {a}, reference {b}",
                isa.name(),
                i / rows,
                i % rows
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_reference_on_odd_shapes() {
    for ty in [WeightType::Q4_0, WeightType::Q8_0] {
        for (rows, k) in [(1, 32), (7, 64), (16, 32), (17, 96), (33, 256), (100, 128)] {
            for n in [1, 2, 3, 4, 5, 7] {
                check(ty, rows, k, n, (rows * 1000 + k + n) as u64);
            }
        }
        check(ty, 33, 64, 511, 99);
        check(ty, 48, 4096, 3, 7); // many blocks: float accumulation over 128 blocks
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
    quantize_activations(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), 1.0);
    let q: Vec<i8> = out[8..13].iter().map(|&b| b as i8).collect();
    assert_eq!(q, [127, 0, 2, -2, -127]);
    assert_eq!(i32::from_le_bytes(out[4..8].try_into().unwrap()), 0);
    // all zeros: scale 0, quants 0
    let mut out = vec![1u8; ACT_BLOCK];
    quantize_activations(&[0.0; 32], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn bad_shapes_are_errors() {
    let ty = WeightType::Q4_0;
    let mut dst = vec![0u8; packed_len(ty, 16, 64)];
    assert!(repack(ty, &[0u8; 10], 16, 64, &mut dst).is_err());
    assert!(repack(ty, &vec![0u8; 16 * 2 * 18], 16, 60, &mut dst).is_err());
    assert!(quantize_activations(&[0.0; 31], &mut [0u8; 40]).is_err());
    let m = MatMul {
        ty,
        rows: 16,
        k: 64,
        n_tokens: 2,
    };
    let acts = vec![0u8; act_row_bytes(64)]; // one token, two promised
    let mut out = vec![0f32; 32];
    // SAFETY: out holds 2 × 16 floats.
    let o = unsafe { Out::new(out.as_mut_ptr(), 16) };
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..1, o).is_err());
    let acts = vec![0u8; 2 * act_row_bytes(64)];
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..2, o).is_err()); // one group only
    assert!(matmul(Isa::Scalar, m, &dst, &acts, 0..1, o).is_ok());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_best_kernel_of_this_cpu_is_chosen_and_tested() {
    let want = if std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512bw")
    {
        Isa::Avx512Vnni
    } else if std::is_x86_feature_detected!("avx2") {
        Isa::Avx2
    } else {
        Isa::Scalar
    };
    assert_eq!(Isa::detect(), want);
    println!("kernels tested here: {:?}", Isa::available());
}

/// Random q4_K / q6_K rows as ggml stores them: any bytes for quants, scales and mins (6-bit
/// scales, q6_K scales including −128), finite f16 d/dmin (some zero).
fn k_weights(ty: WeightType, rows: usize, k: usize, rng: &mut Rng, small: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..rows * k / 256 {
        let mut blk: Vec<u8> = (0..ty.ggml_block_bytes())
            .map(|_| rng.next() as u8)
            .collect();
        let d = |rng: &mut Rng| {
            if small {
                1.0
            } else if i % 13 == 4 {
                0.0
            } else {
                rng.f32() * 0.01
            }
        };
        match ty {
            WeightType::Q4K => {
                blk[0..2].copy_from_slice(&f16::from_f32(d(rng)).to_le_bytes());
                blk[2..4].copy_from_slice(&f16::from_f32(d(rng)).to_le_bytes());
                if small {
                    // scales and mins ≤ 7: every sum stays below 2^24
                    for b in &mut blk[4..16] {
                        *b &= 0x07;
                    }
                }
            }
            _ => {
                blk[208..210].copy_from_slice(&f16::from_f32(d(rng)).to_le_bytes());
                if small {
                    for b in &mut blk[192..208] {
                        *b = ((*b as i8) % 8) as u8;
                    }
                } else if i % 5 == 1 {
                    blk[192] = 0x80; // −128
                }
            }
        }
        out.extend_from_slice(&blk);
    }
    out
}

fn k_activations(k: usize, n: usize, rng: &mut Rng, integers: bool) -> Vec<u8> {
    let ty = WeightType::Q4K;
    let mut out = vec![0u8; n * ty.act_row_bytes(k)];
    for (t, row) in out.chunks_exact_mut(ty.act_row_bytes(k)).enumerate() {
        let x: Vec<f32> = (0..k)
            .map(|i| {
                if integers {
                    // max −127 first: scale exactly 1, quants = x
                    if i % 256 == 0 {
                        -127.0
                    } else {
                        ((rng.next() % 255) as i32 - 127) as f32
                    }
                } else if t % 5 == 2 && i < 256 {
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

/// Every kernel against the reference on ggml's blocks; the bound is f32 rounding: each side
/// rounds each block's terms (≤ 3 roundings) and each addition of 2·nb terms, so both are within
/// (2·nb + 3)·ε·Σ|terms| of the exact value.
fn check_k(ty: WeightType, rows: usize, k: usize, n: usize, seed: u64, exact: bool) {
    let mut rng = Rng(seed);
    let src = k_weights(ty, rows, k, &mut rng, exact);
    let acts = k_activations(k, n, &mut rng, exact);
    let (want, mag) = reference_terms(ty, &src, rows, k, &acts, n);
    let mut packed = vec![0u8; packed_len(ty, rows, k)];
    repack(ty, &src, rows, k, &mut packed).unwrap();
    let m = MatMul {
        ty,
        rows,
        k,
        n_tokens: n,
    };
    let nb = (k / 256) as f32;
    for isa in Isa::available() {
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
                2.0 * (2.0 * nb + 3.0) * f32::EPSILON * mg
            };
            assert!(
                (a - b).abs() <= tol,
                "{} {ty:?} {rows}×{k}, {n} tokens: [{}][{}] = {a}, reference {b} (bound {tol})",
                isa.name(),
                i / rows,
                i % rows
            );
        }
    }
}

#[test]
fn k_quant_kernels_match_the_reference_on_odd_shapes() {
    for ty in [WeightType::Q4K, WeightType::Q6K] {
        for (rows, k) in [
            (1, 256),
            (7, 512),
            (16, 256),
            (17, 768),
            (33, 256),
            (100, 1280),
        ] {
            for n in [1, 2, 3, 4, 5] {
                check_k(ty, rows, k, n, (rows * 1000 + k + n) as u64, false);
            }
        }
        check_k(ty, 33, 512, 37, 99, false);
        check_k(ty, 48, 4096, 3, 7, false); // 16 super-blocks of float accumulation
    }
}

#[test]
fn k_quant_integer_sums_are_exact() {
    // d = dmin = 1, scales ≤ 7, activation scale 1: every sum is an integer below 2^24, so any
    // difference in the integer arithmetic (a dropped lane, a saturation) would show
    for ty in [WeightType::Q4K, WeightType::Q6K] {
        for (rows, k, n) in [(17, 512, 5), (32, 256, 4), (5, 256, 1)] {
            check_k(ty, rows, k, n, (rows + k + n) as u64, true);
        }
    }
}

#[test]
fn activations_are_ggml_q8_k() {
    // quantize_row_q8_K_reference: max = the value of largest |x| (first one on ties),
    // iscale = −127/max, q = min(127, nearest_int(iscale·x)), d = 1/iscale, sums of 16
    let ty = WeightType::Q6K;
    let mut x = vec![0f32; 256];
    x[0] = 2.0;
    x[1] = -254.0; // max: iscale = −127/−254 = 0.5
    x[2] = 1.0; // 0.5 → 0 (ties to even)
    x[3] = 3.0; // 1.5 → 2
    x[4] = 254.0; // 127 (a later equal |x| is not the max)
    x[17] = -5.0; // −2.5 → −2
    let mut out = vec![0u8; ty.act_row_bytes(256)];
    ty.quantize_activations(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), 2.0);
    let q: Vec<i8> = out[64..69].iter().map(|&b| b as i8).collect();
    assert_eq!(q, [1, -127, 0, 2, 127]);
    let bs = |o: &[u8], j: usize| i16::from_le_bytes([o[4 + 2 * j], o[5 + 2 * j]]);
    assert_eq!((bs(&out, 0), bs(&out, 1)), (3, -2));
    assert_eq!(i16::from_le_bytes([out[36], out[37]]), 1); // sum of 32
                                                           // a positive max: negative scale
    x[1] = 254.0;
    ty.quantize_activations(&x, &mut out).unwrap();
    assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), -2.0);
    assert_eq!(out[64..66], [(-1i8) as u8, (-127i8) as u8]);
    let mut out = vec![1u8; ty.act_row_bytes(256)];
    ty.quantize_activations(&[0.0; 256], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
    assert!(ty.quantize_activations(&[0.0; 255], &mut out).is_err());
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
