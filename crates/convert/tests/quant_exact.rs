//! The pure-Rust quantizers in `glm_convert::quant` against the ggml this workspace links
//! (llama.cpp b2757, through `glm-ggml`), for the classic types both ggmls have: bytes must be
//! identical on random and adversarial rows, the parallel path must equal the serial one, and
//! dequantization must equal ggml's `to_float` bit for bit.
//!
//! One deliberate difference: at the exact rounding points of q4_0/q5_0/q4_1/q5_1, b2757
//! (built with `-march=native`) fuses `x*id + 8.5` into one FMA, while llama.cpp 2026 (whose
//! quantizers live in ggml-base, built without `-march`) rounds twice. We follow 2026, as
//! llama-quantize 2026 does; `rounding_boundaries_*` shows both facts. Byte-exactness with 2026
//! for every type, k- and i-quants and importance matrices included, is `quant_golden.rs`.

use gguf::GgmlType;
use glm_convert::quant::{self, QuantError, WRITABLE};

/// The writable types b2757 also has (its k-quant quantizers predate 2026's; it has no iq4_xs).
const CLASSIC: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

const QUANTIZED: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

// ------------------------------------------------------------------------------------------------
// Deterministic RNG (SplitMix64).

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unit()) as f32
    }
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
    /// Any finite, non-NaN f32 (uniform over bit patterns).
    fn any_finite(&mut self) -> f32 {
        loop {
            let f = f32::from_bits(self.next_u64() as u32);
            if f.is_finite() {
                return f;
            }
        }
    }
    /// Any finite f16 value, as f32.
    fn any_f16(&mut self) -> f32 {
        loop {
            let h = half::f16::from_bits(self.next_u64() as u16);
            if h.is_finite() {
                return h.to_f32();
            }
        }
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        x
    } else if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// `x` and its neighbours up to `k` ulps either side.
fn around(x: f32, k: usize) -> Vec<f32> {
    let mut v = vec![x];
    let (mut up, mut dn) = (x, x);
    for _ in 0..k {
        up = next_up(up);
        dn = next_down(dn);
        v.push(up);
        v.push(dn);
    }
    v
}

// ------------------------------------------------------------------------------------------------
// Comparison helpers.

fn ours(ty: GgmlType, src: &[f32], ncols: usize) -> Vec<u8> {
    let mut out = Vec::new();
    quant::quantize_rows(ty, src, ncols, &mut out).expect("quantize_rows");
    out
}

fn ggml(ty: GgmlType, src: &[f32], ncols: usize) -> Vec<u8> {
    if ty == GgmlType::F32 {
        // ggml_quantize_chunk's F32 case is a memcpy (the wrapper refuses to call it for F32).
        return src.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    glm_ggml::quant::quantize_chunk(ty.id(), src, src.len() / ncols, ncols)
        .expect("ggml quantize_chunk")
}

/// Whether some element of a q4_0/q5_0/q4_1/q5_1 block gets another code from one fused
/// rounding of `(x - min)*id + bias` (b2757) than from two (llama.cpp 2026). Scales as ggml's
/// reference quantizers compute them.
fn fma_sensitive(ty: GgmlType, x: &[f32]) -> bool {
    let (min, id, bias) = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / if ty == GgmlType::Q4_0 { -8.0 } else { -16.0 };
            let bias = if ty == GgmlType::Q4_0 { 8.5 } else { 16.5 };
            (0.0, if d != 0.0 { 1.0 / d } else { 0.0 }, bias)
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / if ty == GgmlType::Q4_1 { 15.0 } else { 31.0 };
            (min, if d != 0.0 { 1.0 / d } else { 0.0 }, 0.5)
        }
        _ => return false,
    };
    x.iter().any(|&v| {
        let two = std::hint::black_box((v - min) * id) + bias;
        let one = ((v - min) as f64 * id as f64 + bias as f64) as f32;
        two.trunc() != one.trunc() && !(two.is_nan() && one.is_nan())
    })
}

/// Asserts our bytes equal ggml's (but for [`fma_sensitive`] blocks), and the parallel path
/// equals the serial one.
fn assert_exact(ty: GgmlType, src: &[f32], ncols: usize, what: &str) {
    assert_eq!(src.len() % ncols, 0);
    let mine = ours(ty, src, ncols);
    let theirs = ggml(ty, src, ncols);
    assert_eq!(mine.len(), theirs.len(), "{ty} {what}: length");
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let differs = |b: usize| mine[b * ts..(b + 1) * ts] != theirs[b * ts..(b + 1) * ts];
    // a block where b2757's fused multiply-add and 2026's two roundings give other codes
    // may differ (module doc); any other difference is a bug
    if let Some(blk) =
        (0..mine.len() / ts).find(|&b| differs(b) && !fma_sensitive(ty, &src[b * bs..(b + 1) * bs]))
    {
        panic!(
            "{ty} {what}: block {blk} differs\n input: {:?}\n input bits: {:08x?}\n ours:  {:02x?}\n ggml:  {:02x?}",
            &src[blk * bs..(blk + 1) * bs],
            src[blk * bs..(blk + 1) * bs].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            &mine[blk * ts..(blk + 1) * ts],
            &theirs[blk * ts..(blk + 1) * ts],
        );
    }
    let mut par = Vec::new();
    quant::quantize_rows_par(ty, src, ncols, &mut par).expect("quantize_rows_par");
    assert!(
        par == mine,
        "{ty} {what}: quantize_rows_par differs from quantize_rows"
    );
}

fn assert_all_types(src: &[f32], ncols: usize, what: &str) {
    for ty in CLASSIC {
        assert_exact(ty, src, ncols, what);
    }
}

fn assert_same_f32_bits(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{what}: element {i}: ours {a:e} ({:08x}) ggml {b:e} ({:08x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Random rows.

fn random_rows(rng: &mut Rng, kind: usize, n: usize) -> Vec<f32> {
    let scale = [1.0f64, 0.02, 1e-3, 7.5, 300.0][rng.below(5) as usize];
    (0..n)
        .map(|i| match kind {
            0 => rng.uniform(-1.0, 1.0),
            1 => (rng.normal() * scale) as f32,
            // Weights with rare large outliers.
            2 => {
                let v = rng.normal() * 0.02;
                (if rng.below(100) == 0 { v * 200.0 } else { v }) as f32
            }
            // Log-uniform magnitudes from subnormal to 1e38.
            3 => rng.sign() * 10f64.powf(rng.unit() * 83.0 - 45.0) as f32,
            4 => rng.any_finite(),
            5 => rng.any_f16(),
            // Multiples of 1/2 times a power of two: lots of exact ties.
            6 => (rng.below(41) as f64 - 20.0) as f32 * 0.5 * 2f32.powi(rng.below(20) as i32 - 10),
            // One-signed data (q4_1/q5_1 min/max at zero-ish).
            7 => rng.uniform(0.0, 1.0),
            8 => rng.uniform(-1.0, 0.0),
            // Nearly constant blocks.
            9 => (1.0 + rng.normal() * 1e-6) as f32 * if i % 64 < 32 { 3.0 } else { -0.25 },
            // f16-subnormal range.
            10 => rng.uniform(-1e-5, 1e-5),
            // Integers in [-16, 16] times an f16-exact scale.
            11 => (rng.below(33) as f32 - 16.0) * 0.125,
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn random_rows_match_ggml() {
    let mut rng = Rng::new(0x5eed_0001);
    for kind in 0..12 {
        for &ncols in &[32usize, 64, 256] {
            let nrows = 8;
            let src = random_rows(&mut rng, kind, nrows * ncols);
            assert_all_types(&src, ncols, &format!("random kind {kind}, ncols {ncols}"));
        }
    }
}

#[test]
fn big_random_tensor_serial_parallel_and_ggml_agree() {
    // Large enough that quantize_rows_par really splits (and an odd row count).
    let mut rng = Rng::new(0x5eed_0002);
    let (nrows, ncols) = (257, 2048);
    let src: Vec<f32> = (0..nrows * ncols)
        .map(|_| (rng.normal() * 0.02) as f32)
        .collect();
    for ty in CLASSIC {
        assert_exact(ty, &src, ncols, "big normal tensor");
    }
}

#[test]
fn quantize_appends_to_dst() {
    let mut rng = Rng::new(7);
    let src = random_rows(&mut rng, 1, 4 * 64);
    for ty in CLASSIC {
        let expect = ggml(ty, &src, 64);
        for par in [false, true] {
            let mut dst = vec![0xAB, 0xCD, 0xEF];
            if par {
                quant::quantize_rows_par(ty, &src, 64, &mut dst).unwrap();
            } else {
                quant::quantize_rows(ty, &src, 64, &mut dst).unwrap();
            }
            assert_eq!(&dst[..3], &[0xAB, 0xCD, 0xEF], "{ty}: prefix clobbered");
            assert!(
                dst[3..] == expect[..],
                "{ty}: appended bytes differ (par {par})"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Adversarial rows.

/// Rows of exactly 32 elements (one block) that stress the corner cases.
fn adversarial_blocks() -> Vec<[f32; 32]> {
    let mut out: Vec<[f32; 32]> = Vec::new();
    let fill = |v: f32| [v; 32];
    // Constants, zeros, signed zeros.
    for v in [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        3.3,
        -7.77,
        8.0,
        -8.0,
        16.0,
        127.0,
        65504.0,
        -65504.0,
        65519.0,
        65520.0,
        1e6,
        -1e6,
        1e-40,
        -1e-40,
        1.4e-45,
        1e-6,
        -1e-6,
        5.96e-8,
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        1e38,
        -1e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        out.push(fill(v));
    }
    // Mixed +0/-0 in both orders (decides the sign of q4_1's m and the first-max rule).
    let mut z = [0.0f32; 32];
    z[3] = -0.0;
    out.push(z);
    let mut z = [-0.0f32; 32];
    z[5] = 0.0;
    out.push(z);
    let mut z = [0.0f32; 32];
    for (i, v) in z.iter_mut().enumerate() {
        *v = if i % 2 == 0 { -0.0 } else { 0.0 };
    }
    out.push(z);
    // Zeros with one non-zero (positive, negative) at the first/middle/last position.
    for v in [1.0f32, -1.0, 1e-40, -65504.0, 1e6] {
        for pos in [0, 13, 31] {
            let mut b = [0.0f32; 32];
            b[pos] = v;
            out.push(b);
            let mut b = [-0.0f32; 32];
            b[pos] = v;
            out.push(b);
        }
    }
    // A single huge value among tiny ones, at several positions and signs.
    for huge in [1e4f32, -1e4, 65504.0, 1e6, -1e6, 1e30, f32::MAX, -f32::MAX] {
        for pos in [0, 7, 16, 31] {
            let mut b = [0.0f32; 32];
            for (i, v) in b.iter_mut().enumerate() {
                *v = (i as f32 - 15.5) * 1e-4;
            }
            b[pos] = huge;
            out.push(b);
        }
    }
    // Near and beyond the f16 maximum (scales that round to inf in f16).
    for base in [
        65504.0f32, 65519.0, 65520.0, 65536.0, 1e5, 1e6, 1e7, 2e9, 3e38,
    ] {
        for s in [1.0f32, -1.0] {
            let mut b = [0.0f32; 32];
            for (i, v) in b.iter_mut().enumerate() {
                *v = s * base * (1.0 - i as f32 / 64.0) * if i % 3 == 0 { -1.0 } else { 1.0 };
            }
            out.push(b);
        }
    }
    // q8_0 / q4_1 / q5_1 scales just around the f16 overflow threshold.
    for v in around(65519.0 * 127.0, 2)
        .into_iter()
        .chain(around(65520.0 * 15.0, 2))
        .chain(around(65520.0 * 31.0, 2))
    {
        let mut b = [1.0f32; 32];
        b[0] = v;
        b[1] = -v;
        out.push(b);
    }
    // Subnormals: f32 subnormals (1/d overflows to inf) and the f16-subnormal range.
    for base in [
        1e-40f32, 1.4e-45, 1e-38, 3e-39, 1e-37, 1e-6, 6e-5, 5.96e-8, 2.98e-8, 8.94e-8,
    ] {
        for pattern in 0..3 {
            let mut b = [0.0f32; 32];
            for (i, v) in b.iter_mut().enumerate() {
                *v = match pattern {
                    0 => base * (i as f32 + 1.0) / 32.0,
                    1 => base * if i % 2 == 0 { 1.0 } else { -1.0 },
                    _ => base * ((i * 7 % 32) as f32 - 16.0) / 16.0,
                };
            }
            out.push(b);
        }
    }
    // Alternating signs.
    for v in [1.0f32, 0.3, 1e-3, 1000.0] {
        let mut b = [0.0f32; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = if i % 2 == 0 { v } else { -v } * (1.0 + i as f32 / 32.0);
        }
        out.push(b);
        for x in b.iter_mut() {
            *x = -*x;
        }
        out.push(b);
    }
    // Max magnitude at the last element; at the first element of the high half (j + 16).
    for pos in [31, 15, 16] {
        for s in [1.0f32, -1.0] {
            let mut b = [0.0f32; 32];
            for (i, v) in b.iter_mut().enumerate() {
                *v = (i as f32 - 10.0) * 0.1;
            }
            b[pos] = s * 50.0;
            out.push(b);
        }
    }
    // Negative and positive max of equal magnitude, in both orders.
    for (a, c) in [(3, 20), (20, 3), (0, 31), (31, 0)] {
        let mut b = [0.0f32; 32];
        for (i, v) in b.iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.05;
        }
        b[a] = -2.5;
        b[c] = 2.5;
        out.push(b);
    }
    // Exact rounding midpoints: with max = -8 (q4_0: d = 1) every k + 0.5 lands on a tie; with
    // amax = 127 (q8_0: d = 1) likewise; with min 0 / max 15 or 31 (q4_1 / q5_1: d = 1) too.
    for (anchor, lo, hi) in [
        (-8.0f32, -8, 8),
        (127.0, -127, 127),
        (15.0, 0, 15),
        (31.0, 0, 31),
        (-16.0, -16, 16),
    ] {
        for scale in [1.0f32, 0.25, 4.0, 1.0 / 1024.0, 3.0, 0.1] {
            let mut vals: Vec<f32> = (lo..hi).map(|k| (k as f32 + 0.5) * scale).collect();
            vals.extend((lo..=hi).map(|k| k as f32 * scale));
            for chunk in vals.chunks(31) {
                let mut b = [0.0f32; 32];
                b[0] = anchor * scale;
                for (i, v) in chunk.iter().enumerate() {
                    b[i + 1] = *v;
                }
                out.push(b);
            }
        }
    }
    out
}

#[test]
fn adversarial_rows_match_ggml() {
    let blocks = adversarial_blocks();
    // One block per row, then the same data as longer rows.
    let flat: Vec<f32> = blocks.iter().flatten().copied().collect();
    assert_all_types(&flat, 32, "adversarial, 1 block per row");
    let n = flat.len() / 128 * 128;
    assert_all_types(&flat[..n], 128, "adversarial, 4 blocks per row");
    // Each block on its own so a failure names the smallest case.
    for (i, b) in blocks.iter().enumerate() {
        assert_all_types(b, 32, &format!("adversarial block #{i}"));
    }
}

/// Blocks whose elements sit within a few ulps of the points where ggml's rounding decision
/// flips, computed with ggml's own scale arithmetic. These separate a fused multiply-add from
/// separate rounding, truncation from rounding, and ties-away from ties-even.
fn boundary_blocks(ty: GgmlType, rng: &mut Rng, count: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for _ in 0..count {
        let mag = 10f32.powi(rng.below(9) as i32 - 6) * rng.uniform(0.5, 2.0);
        let mut b = [0.0f32; 32];
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let (div, bias, nq) = if ty == GgmlType::Q4_0 {
                    (-8.0f32, 8.5f32, 16)
                } else {
                    (-16.0, 16.5, 32)
                };
                let max = rng.sign() * mag;
                let d = max / div;
                let id = 1.0 / d;
                b[0] = max;
                let mut i = 1;
                while i < 32 {
                    // x*id + bias == t  <=>  x == (t - bias) / id
                    let t = 1 + rng.below(nq - 1) as i32;
                    let x = ((t as f64 - bias as f64) / id as f64) as f32;
                    for v in around(x, 2) {
                        if i < 32 && v.abs() <= max.abs() {
                            b[i] = v;
                            i += 1;
                        }
                    }
                }
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let levels = if ty == GgmlType::Q4_1 { 15.0f32 } else { 31.0 };
                let min = rng.uniform(-1.0, 1.0) * mag;
                let max = min + rng.uniform(0.1, 2.0) * mag;
                let d = (max - min) / levels;
                let id = 1.0 / d;
                b[0] = min;
                b[1] = max;
                let mut i = 2;
                while i < 32 {
                    let t = 1 + rng.below(levels as u64) as i32;
                    // (x - min)*id + 0.5 == t
                    let x = (min as f64 + (t as f64 - 0.5) / id as f64) as f32;
                    for v in around(x, 2) {
                        if i < 32 && v >= min && v <= max {
                            b[i] = v;
                            i += 1;
                        }
                    }
                }
            }
            GgmlType::Q8_0 => {
                let amax = mag;
                let d = amax / 127.0;
                let id = 1.0 / d;
                b[0] = amax * rng.sign();
                let mut i = 1;
                while i < 32 {
                    let t = rng.below(254) as i32 - 127;
                    let x = ((t as f64 + 0.5) / id as f64) as f32;
                    for v in around(x, 2) {
                        if i < 32 && v.abs() <= amax {
                            b[i] = v;
                            i += 1;
                        }
                    }
                }
            }
            _ => unreachable!(),
        }
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn rounding_boundaries_match_ggml_where_both_ggmls_agree() {
    // q8_0 rounds x*id with roundf in both; the 4/5-bit types differ by design (module doc)
    let mut rng = Rng::new(0x5eed_0003);
    let src = boundary_blocks(GgmlType::Q8_0, &mut rng, 400);
    assert_exact(GgmlType::Q8_0, &src, 32, "rounding boundaries");
    assert_exact(GgmlType::Q8_0, &src, 256, "rounding boundaries, long rows");
}

// Deliberately wrong quantizers: the boundary and tie data must tell them apart from ggml, which
// shows the exactness tests above would catch an unfused multiply-add or ties-to-even rounding.

fn q4_0_unfused(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks(32) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        for j in 0..16 {
            let p0 = std::hint::black_box(b[j] * id); // rounded separately: no fusion
            let p1 = std::hint::black_box(b[j + 16] * id);
            let q0 = ((p0 + 8.5) as i8).min(15) as u8;
            let q1 = ((p1 + 8.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

fn q8_0_ties_even(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks(32) {
        let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(b.iter().map(|v| (v * id).round_ties_even() as i8 as u8));
    }
    out
}

#[test]
fn test_data_detects_wrong_rounding() {
    let mut rng = Rng::new(0x5eed_0003);
    let q4 = boundary_blocks(GgmlType::Q4_0, &mut rng, 400);
    let ggml_q4 = ggml(GgmlType::Q4_0, &q4, 32);
    assert_ne!(
        q4_0_unfused(&q4),
        ggml_q4,
        "boundary data cannot tell an unfused q4_0 from b2757's fused one"
    );
    // ours rounds twice, as llama.cpp 2026 (quant_golden.rs holds that to 2026's own bytes)
    assert_eq!(ours(GgmlType::Q4_0, &q4, 32), q4_0_unfused(&q4));

    let flat: Vec<f32> = adversarial_blocks()
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let flat = &flat[..flat.len() / 32 * 32];
    assert_ne!(
        q8_0_ties_even(flat),
        ggml(GgmlType::Q8_0, flat, 32),
        "tie data cannot tell ties-even from ggml's roundf"
    );
}

// ------------------------------------------------------------------------------------------------
// f16 conversion.

#[test]
fn f16_conversion_matches_ggml_on_all_rounding_cases() {
    // Every exponent, a spread of f16 mantissas, and the low bits that decide the rounding, both
    // signs: the ggml side is F16C's vcvtps2ph.
    let mut src = Vec::new();
    for e in 0..255u32 {
        for hi in (0..1024u32).step_by(3).chain([1022, 1023]) {
            for lo in [
                0u32, 1, 0x7FF, 0x800, 0xFFF, 0x1000, 0x1001, 0x17FF, 0x1800, 0x1801, 0x1FFF,
            ] {
                for s in [0u32, 1] {
                    src.push(f32::from_bits(s << 31 | e << 23 | hi << 13 | lo));
                }
            }
        }
    }
    src.extend([f32::INFINITY, f32::NEG_INFINITY]);
    // f32 -> f16 alone is well defined for NaN too (quieted, top payload bits kept).
    for man in [
        1u32, 0x1FFF, 0x2000, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x55_5555, 0x7F_FFFF,
    ] {
        src.extend([
            f32::from_bits(0x7F80_0000 | man),
            f32::from_bits(0xFF80_0000 | man),
        ]);
    }
    while src.len() % 64 != 0 {
        src.push(0.0);
    }
    assert_exact(GgmlType::F16, &src, 64, "f16 rounding sweep");
    // Odd lengths exercise ggml's 8-wide, 4-wide and scalar tails.
    for n in [1usize, 3, 5, 7, 9, 13] {
        assert_exact(GgmlType::F16, &src[1000..1000 + n], n, "f16 short row");
    }
}

// ------------------------------------------------------------------------------------------------
// Dequantization.

fn ggml_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    glm_ggml::quant::dequantize(ty.id(), bytes, n).expect("ggml dequantize")
}

fn our_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::new();
    quant::dequantize(ty, bytes, n, &mut out).expect("dequantize");
    out
}

#[test]
fn dequantize_matches_ggml_on_random_bytes() {
    let mut rng = Rng::new(0x5eed_0004);
    for ty in QUANTIZED.into_iter().chain([GgmlType::F16]) {
        let n = 32 * 4096;
        let bytes: Vec<u8> = (0..n / ty.block_size() * ty.type_size())
            .map(|_| rng.next_u64() as u8)
            .collect();
        assert_same_f32_bits(
            &our_dequantize(ty, &bytes, n),
            &ggml_dequantize(ty, &bytes, n),
            &format!("{ty} random bytes"),
        );
    }
}

#[test]
fn dequantize_matches_ggml_on_special_scales() {
    // Every pairing of special f16 scales / mins (zeros, infinities, quiet and signalling NaNs of
    // both signs, subnormal, max) with every quant value.
    let specials: [u16; 12] = [
        0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0xFD55, 0x0001, 0x7BFF, 0x3C00,
        0xBC00,
    ];
    for ty in QUANTIZED {
        let mut bytes = Vec::new();
        for &d in &specials {
            for &m in &specials {
                for fill in [0x00u8, 0xFF, 0x88, 0x5A, 0x0F, 0xF0] {
                    let mut b = vec![fill; ty.type_size()];
                    b[..2].copy_from_slice(&d.to_le_bytes());
                    if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                        b[2..4].copy_from_slice(&m.to_le_bytes());
                    }
                    bytes.extend(b);
                }
            }
        }
        let n = bytes.len() / ty.type_size() * 32;
        assert_same_f32_bits(
            &our_dequantize(ty, &bytes, n),
            &ggml_dequantize(ty, &bytes, n),
            &format!("{ty} special scales"),
        );
    }
}

#[test]
fn dequantize_matches_ggml_on_quantized_data() {
    let mut rng = Rng::new(0x5eed_0005);
    let mut src = Vec::new();
    for kind in 0..12 {
        src.extend(random_rows(&mut rng, kind, 32 * 64));
    }
    src.extend(adversarial_blocks().iter().flatten());
    for ty in QUANTIZED.into_iter().chain([GgmlType::F16]) {
        let bytes = ours(ty, &src, 32);
        assert_same_f32_bits(
            &our_dequantize(ty, &bytes, src.len()),
            &ggml_dequantize(ty, &bytes, src.len()),
            &format!("{ty} quantized data"),
        );
    }
}

#[test]
fn dequantize_every_f16() {
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    assert_same_f32_bits(
        &our_dequantize(GgmlType::F16, &bytes, 65536),
        &ggml_dequantize(GgmlType::F16, &bytes, 65536),
        "every f16",
    );
}

#[test]
fn dequantize_f32_and_bf16() {
    // ggml b2757 has no BF16 and no F32 to_float: F32 is the LE bytes, BF16 the top half of an f32.
    let mut rng = Rng::new(9);
    let words: Vec<u32> = (0..4096)
        .map(|_| rng.next_u64() as u32)
        .chain([0x7F80_0001, 0xFFC0_0000, 0x8000_0000])
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let f = our_dequantize(GgmlType::F32, &bytes, words.len());
    assert!(f.iter().zip(&words).all(|(f, w)| f.to_bits() == *w));
    let halves: Vec<u16> = (0..=u16::MAX).collect();
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    let f = our_dequantize(GgmlType::BF16, &bytes, halves.len());
    assert!(f
        .iter()
        .zip(&halves)
        .all(|(f, h)| f.to_bits() == (*h as u32) << 16));
    // F32 round trip through quantize_rows.
    let src: Vec<f32> = (0..64).map(|i| i as f32 * -1.25e-3).collect();
    assert_eq!(
        our_dequantize(GgmlType::F32, &ours(GgmlType::F32, &src, 64), 64),
        src
    );
}

#[test]
fn dequantize_appends() {
    let mut rng = Rng::new(11);
    let src = random_rows(&mut rng, 0, 64);
    let bytes = ours(GgmlType::Q4_0, &src, 64);
    let mut out = vec![42.0f32];
    quant::dequantize(GgmlType::Q4_0, &bytes, 64, &mut out).unwrap();
    assert_eq!(out.len(), 65);
    assert_eq!(out[0], 42.0);
    assert_same_f32_bits(
        &out[1..],
        &ggml_dequantize(GgmlType::Q4_0, &bytes, 64),
        "append",
    );
}

// ------------------------------------------------------------------------------------------------
// Bad shapes and types: errors, never panics, and `dst` untouched.

#[test]
fn bad_shapes_are_errors() {
    let src = vec![0.5f32; 256];
    type Q = fn(GgmlType, &[f32], usize, &mut Vec<u8>) -> Result<(), QuantError>;
    for (name, f) in [
        ("quantize_rows", quant::quantize_rows as Q),
        ("quantize_rows_par", quant::quantize_rows_par as Q),
    ] {
        let mut dst = vec![1u8, 2, 3];
        let e = f(GgmlType::Q4_0, &src[..48], 48, &mut dst).unwrap_err();
        assert!(
            matches!(
                e,
                QuantError::RowNotBlockMultiple {
                    ncols: 48,
                    block: 32,
                    ..
                }
            ),
            "{name}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("q4_0") && msg.contains("32") && msg.contains("48"),
            "{name}: {msg}"
        );
        let e = f(GgmlType::Q8_0, &src[..100], 64, &mut dst).unwrap_err();
        assert!(
            matches!(
                e,
                QuantError::NotWholeRows {
                    len: 100,
                    ncols: 64,
                    ..
                }
            ),
            "{name}: {e}"
        );
        assert!(e.to_string().contains("q8_0"), "{name}: {e}");
        let e = f(GgmlType::F16, &src[..7], 3, &mut dst).unwrap_err();
        assert!(matches!(e, QuantError::NotWholeRows { .. }), "{name}: {e}");
        let e = f(GgmlType::Q5_1, &src[..64], 0, &mut dst).unwrap_err();
        assert!(matches!(e, QuantError::NotWholeRows { .. }), "{name}: {e}");
        for ty in [
            GgmlType::IQ2XXS,
            GgmlType::Q8K,
            GgmlType::Q8_1,
            GgmlType::I32,
        ] {
            let e = f(ty, &src, 256, &mut dst).unwrap_err();
            assert!(
                matches!(e, QuantError::CannotQuantize { .. }),
                "{name}: {e}"
            );
            assert!(e.to_string().contains(ty.name()), "{name}: {e}");
        }
        assert_eq!(dst, [1, 2, 3], "{name}: dst modified on error");
        // Empty input is fine (and appends nothing), even with zero columns.
        f(GgmlType::Q4_0, &[], 32, &mut dst).unwrap();
        f(GgmlType::Q4_0, &[], 0, &mut dst).unwrap();
        assert_eq!(dst, [1, 2, 3]);
    }
    assert!(WRITABLE.iter().all(|&t| quant::can_quantize(t)));
    assert!(quant::can_quantize(GgmlType::Q4K) && !quant::can_quantize(GgmlType::IQ2XXS));

    let mut out = vec![9.0f32];
    let q = vec![0u8; 18 * 2];
    let e = quant::dequantize(GgmlType::Q4_0, &q, 33, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::CountNotBlockMultiple {
                n: 33,
                block: 32,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("q4_0"), "{e}");
    let e = quant::dequantize(GgmlType::Q4_0, &q[..35], 64, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::ByteLength {
                expected: 36,
                got: 35,
                ..
            }
        ),
        "{e}"
    );
    let e = quant::dequantize(GgmlType::Q4_0, &q, 32, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::ByteLength {
                expected: 18,
                got: 36,
                ..
            }
        ),
        "{e}"
    );
    let e = quant::dequantize(GgmlType::F32, &q[..7], 2, &mut out).unwrap_err();
    assert!(matches!(e, QuantError::ByteLength { .. }), "{e}");
    let e = quant::dequantize(GgmlType::Q6K, &q, 256, &mut out).unwrap_err();
    assert!(matches!(e, QuantError::ByteLength { .. }), "{e}");
    let e = quant::dequantize(GgmlType::IQ2XXS, &q, 256, &mut out).unwrap_err();
    assert!(matches!(e, QuantError::CannotDequantize { .. }), "{e}");
    assert_eq!(out, [9.0], "dst modified on error");
}
