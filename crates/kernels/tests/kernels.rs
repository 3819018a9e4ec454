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
