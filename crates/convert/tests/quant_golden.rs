//! Our quantizers and dequantizers against llama.cpp 2026's: tests/fixtures/quant-golden/
//! digests.txt holds, for 240 awkward rows of 512 values (mixed scales, exact ties, zero,
//! constant, tiny, large, outlier, one-signed, sparse rows, values at the rounding points of
//! q4_0/q5_0/q4_1/q5_1) and an importance matrix with zero
//! and tiny weights, a per-row FNV-1a-64 digest of what llama.cpp's own `ggml_quantize_chunk`
//! wrote and of what its `to_float` read back (tools/quant-golden/oracle.c; regenerate with
//! `bash tools/quant-golden/make.sh`). The inputs are regenerated here by the same generator.

use gguf::GgmlType;
use glm_convert::quant;

const GOLDEN: &str = include_str!("../../../tests/fixtures/quant-golden/digests.txt");
const ROWS: usize = 240;
const COLS: usize = 512;

/// oracle.c's splitmix64 and uniform [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn uni(&mut self) -> f32 {
        (self.next() >> 40) as f32 / 16777216.0 * 2.0 - 1.0
    }
}

fn rows() -> Vec<f32> {
    let mut rng = Rng(20261202);
    let mut x = vec![0f32; ROWS * COLS];
    for r in 0..ROWS {
        let e = (r / 12) as i32 % 20 - 10;
        let scale = 2f32.powi(e);
        for j in 0..COLS {
            let u = rng.uni();
            x[r * COLS + j] = match r % 14 {
                0 => u,
                1 => u * scale,
                2 => (u * 16.0) as i32 as f32 * 0.25,
                3 => 0.0,
                4 => 0.37,
                5 => u * 1e-30,
                6 => u * 1e4,
                7 if j % 32 == 5 => 3.0,
                7 => u * 0.01,
                8 => -u.abs(),
                9 => u.abs(),
                // C evaluates `u + uni() + uni() + uni()` left to right
                10 => {
                    let (a, b, c) = (rng.uni(), rng.uni(), rng.uni());
                    u + a + b + c
                }
                11 => {
                    if rng.next().is_multiple_of(10) {
                        u
                    } else {
                        0.0
                    }
                }
                _ => u,
            };
        }
        if r % 14 >= 12 {
            near_ties(
                &mut rng,
                &mut x[r * COLS..(r + 1) * COLS],
                r % 14,
                (r / 14) % 2 == 1,
            );
        }
    }
    x
}

/// oracle.c's `near_ties`: values on or a few ulps off the rounding points of q4_0/q5_0 (kind
/// 12) or q4_1/q5_1 (kind 13), where a fused multiply-add would round differently.
fn near_ties(rng: &mut Rng, row: &mut [f32], kind: usize, five_bits: bool) {
    for x in row.chunks_exact_mut(32) {
        let m = 0.5f32 + (rng.uni() + 1.0);
        if kind == 12 {
            let d = -m / if five_bits { 16.0 } else { 8.0 };
            let bias = if five_bits { 16.5f32 } else { 8.5 };
            let top: u64 = if five_bits { 32 } else { 16 };
            x[0] = m;
            for xj in &mut x[1..] {
                let n = 1 + (rng.next() % (top - 1)) as i32;
                let k = (rng.next() % 5) as i32 - 2;
                *xj = (n as f32 - bias) * d * (1.0 + k as f32 * 1.1920929e-07);
            }
        } else {
            let nmax = if five_bits { 31.0f32 } else { 15.0 };
            let min = -(0.2f32 + (rng.uni() + 1.0) * 0.5);
            let d = m / nmax;
            x[0] = min;
            x[1] = min + nmax * d;
            for xj in &mut x[2..] {
                let n = 1 + (rng.next() % nmax as u64) as i32;
                let k = (rng.next() % 5) as i32 - 2;
                *xj = (min + (n as f32 - 0.5) * d) * (1.0 + k as f32 * 1.1920929e-07);
            }
        }
    }
}

fn weights() -> Vec<f32> {
    let mut rng = Rng(7);
    (0..COLS)
        .map(|j| {
            let u = rng.uni();
            if j % 7 == 0 {
                0.0
            } else if j % 11 == 0 {
                1e-6
            } else {
                (u + 1.0) * 1.5
            }
        })
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn every_type_and_path_is_byte_identical_to_llama_cpp_2026() {
    let x = rows();
    let w = weights();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    let mut last_bytes: Vec<u8> = Vec::new();
    // rows whose bytes matched: their dequantization is checked against llama.cpp's
    let mut matched = vec![false; ROWS];
    for line in GOLDEN.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ty = GgmlType::from_name(f[1]).unwrap_or_else(|| panic!("unknown type {}", f[1]));
        let imatrix = match f[2] {
            "plain" => None,
            "imatrix" => Some(&w[..]),
            other => panic!("unknown path {other}"),
        };
        match f[0] {
            "quant" => {
                let row_bytes: usize = f[3].parse().unwrap();
                let want = &f[4..];
                assert_eq!(want.len(), ROWS);
                checked.push(format!("{ty} {}", f[2]));
                let got = match quant::quantize(ty, &x, COLS, imatrix) {
                    Ok(got) => got,
                    Err(e) => {
                        failures.push(format!("{ty} {}: {e}", f[2]));
                        last_bytes.clear();
                        continue;
                    }
                };
                assert_eq!(got.len(), row_bytes * ROWS, "{ty}");
                let bad: Vec<usize> = (0..ROWS)
                    .filter(|&r| {
                        format!("{:016x}", fnv(&got[r * row_bytes..][..row_bytes])) != want[r]
                    })
                    .collect();
                matched = (0..ROWS).map(|r| !bad.contains(&r)).collect();
                if !bad.is_empty() {
                    failures.push(format!(
                        "{ty} {}: {} of {ROWS} rows differ from llama.cpp's (first: rows {:?}; row kind = row % 14)",
                        f[2],
                        bad.len(),
                        &bad[..bad.len().min(8)]
                    ));
                }
                last_bytes = got;
            }
            "dequant" => {
                // llama.cpp's to_float of llama.cpp's bytes: where our bytes matched, they are these
                if last_bytes.is_empty() {
                    continue;
                }
                let row_bytes = last_bytes.len() / ROWS;
                let want = &f[3..];
                let mut bad = Vec::new();
                for r in (0..ROWS).filter(|&r| matched[r]) {
                    let mut back = Vec::new();
                    quant::dequantize(
                        ty,
                        &last_bytes[r * row_bytes..][..row_bytes],
                        COLS,
                        &mut back,
                    )
                    .unwrap_or_else(|e| panic!("{ty}: {e}"));
                    let bytes: Vec<u8> = back.iter().flat_map(|v| v.to_le_bytes()).collect();
                    if format!("{:016x}", fnv(&bytes)) != want[r] {
                        bad.push(r);
                    }
                }
                if !bad.is_empty() {
                    failures.push(format!(
                        "{ty} {}: dequantized rows differ from llama.cpp's to_float (first: {:?})",
                        f[2],
                        &bad[..bad.len().min(8)]
                    ));
                }
            }
            other => panic!("unknown line kind {other}"),
        }
    }
    assert_eq!(checked.len(), 28, "14 types x 2 paths: {checked:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
