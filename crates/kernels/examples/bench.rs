//! Micro benchmark of the matmul kernels on ChatGLM3-6B shapes.
//!
//! ```text
//! cargo run --release -p glm-kernels --example bench -- [--threads 2] [--isa avx2]
//!     [--tokens 1,512] [--shapes qkv,up,down,small] [--resident] [--probe] [TYPE ...]
//! ```
//!
//! For each weight type and kernel it times `out = W · x` for 1 token (decoding: the weights
//! stream from memory, so it reports GB/s of packed weights; several copies of the matrix are
//! cycled through so that they do not sit in the last-level cache) and 512 tokens (a prompt:
//! compute-bound, reported as GFLOP-equivalents, 2·rows·k·tokens per second). Shapes: qkv
//! 4096 → 4608, ffn_up 4096 → 27392 and, for the 32-column types, ffn_down 13696 → 4096 (13696 is
//! not a multiple of 256). The activations are quantized outside the timed loop.
//!
//! Two times are reported, the best of 5 passes of ≥ 0.3 s each: `wall`, and `cpu`, the on-CPU
//! time of the slowest thread (from /proc/thread-self/schedstat; Linux only). GB/s and GFLOP/s
//! are from the wall time; `cpu GF/s` from the CPU time, which on a machine shared with other
//! jobs is what the kernels would do on idle cores (for compute-bound prompts; decoding shares
//! the memory bus, so only its wall time means something).
//!
//! The weights sit on 2 MiB pages where the kernel grants them, as the runtime's.
//!
//! `--probe` (decoding only): 31 alternations of one pass of the read probe of `glmtool bench
//! --bandwidth` (`ReadProbe`: the same threads summing a 512 MiB buffer) and one pass of the
//! product over the copies, each product's GB/s divided by the probe just before it; the columns
//! `probe` and `share` are the medians. This tells how close a format's kernel comes to streaming
//! at the memory's pace on a machine whose bandwidth drifts within seconds.

use glm_kernels::*;
use half::f16;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;
use common::Rng;

/// Random ggml blocks with finite, small f16 scales (random bytes elsewhere).
fn weights(ty: WeightType, rows: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let bb = ty.ggml_block_bytes();
    let n = rows * k / ty.block_cols();
    let mut out: Vec<u8> = (0..n * bb).map(|_| rng.next() as u8).collect();
    for blk in out.chunks_exact_mut(bb) {
        for &off in ty.f16_offsets() {
            blk[off..off + 2].copy_from_slice(&f16::from_f32(rng.f32() * 0.01).to_le_bytes());
        }
    }
    out
}

/// Nanoseconds this thread has run on a CPU (0 where /proc is not there).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parse_type(s: &str) -> Option<WeightType> {
    WeightType::ALL.iter().copied().find(|t| t.name() == s)
}

fn main() {
    let mut threads = 2usize;
    let mut isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| *i != Isa::Scalar)
        .collect();
    let mut types = Vec::new();
    let mut tokens = vec![1usize, 512];
    let mut only_shapes: Vec<String> = Vec::new();
    // --resident: one copy of the weights (they stay in the caches if small enough), to tell
    // memory-bound from compute-bound
    let mut resident = false;
    let mut probe: Option<ReadProbe> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--threads N")
            }
            "--isa" => {
                let name = args.next().expect("--isa NAME");
                isas = Isa::available()
                    .into_iter()
                    .filter(|i| i.name() == name)
                    .collect();
                assert!(!isas.is_empty(), "{name}: not available here");
            }
            "--resident" => resident = true,
            "--probe" => probe = Some(ReadProbe::new(512 << 20)),
            "--shapes" => {
                only_shapes = args
                    .next()
                    .expect("--shapes qkv,up,down")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--tokens" => {
                tokens = args
                    .next()
                    .expect("--tokens N,N")
                    .split(',')
                    .map(|v| v.parse().expect("a number"))
                    .collect()
            }
            t => types.push(parse_type(t).unwrap_or_else(|| panic!("unknown type {t}"))),
        }
    }
    assert!(
        !(resident && probe.is_some()),
        "--probe measures streaming from memory; --resident keeps the weights in the caches"
    );
    if types.is_empty() {
        types = WeightType::ALL.to_vec();
    }
    println!("threads {threads}");
    println!(
        "{:<8} {:<12} {:<16} {:>6} {:>9} {:>9} {:>7} {:>8} {:>8} {:>7} {:>6}",
        "type",
        "isa",
        "shape",
        "tokens",
        "wall ms",
        "cpu ms",
        "GB/s",
        "GFLOP/s",
        "cpu GF/s",
        "probe",
        "share"
    );
    for &ty in &types {
        let shapes: &[(&str, usize, usize)] = &[
            ("small 512x4096", 512, 4096),
            ("qkv 4608x4096", 4608, 4096),
            ("up 27392x4096", 27392, 4096),
            ("down 4096x13696", 4096, 13696),
        ];
        for &(name, rows, k) in shapes {
            let short = name.split(' ').next().unwrap_or(name);
            let wanted = if only_shapes.is_empty() {
                short != "small"
            } else {
                only_shapes.iter().any(|s| s == short)
            };
            if k % ty.block_cols() != 0 || !wanted {
                continue;
            }
            let mut rng = Rng(7);
            let src = weights(ty, rows, k, &mut rng);
            let plen = packed_len(ty, rows, k);
            // enough copies to leave the 32 MiB L3 behind for decoding
            let copies = if resident { 1 } else { (256 << 20) / plen + 1 };
            let mut first = vec![0u8; plen];
            repack(ty, &src, rows, k, &mut first).unwrap();
            drop(src);
            let packed: Vec<Vec<u8>> = (0..copies.max(1))
                .map(|_| common::copy(&first, true))
                .collect();
            drop(first);
            for &n in &tokens {
                let x: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
                let arb = ty.act_row_bytes(k);
                let mut acts = vec![0u8; n * arb];
                for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(arb)) {
                    ty.quantize_activations(xr, ar).unwrap();
                }
                let out = vec![0f32; n * rows];
                let m = MatMul {
                    ty,
                    rows,
                    k,
                    n_tokens: n,
                };
                for &isa in &isas {
                    let g = n_groups(rows);
                    // `reps` products (cycling through the copies) on every thread: the wall
                    // time of one product and the slowest thread's on-CPU time of one product
                    let pass = |reps: usize| -> (f64, f64) {
                        // SAFETY: `out` holds n × rows floats (stride rows); the threads get
                        // disjoint group ranges.
                        let o = unsafe { Out::new(out.as_ptr() as *mut f32, rows) };
                        let t = Instant::now();
                        let cpu = std::thread::scope(|s| {
                            let jobs: Vec<_> = (0..threads)
                                .map(|th| {
                                    let part = g * th / threads..g * (th + 1) / threads;
                                    let (acts, packed) = (&acts, &packed);
                                    s.spawn(move || {
                                        let c0 = thread_cpu_ns();
                                        for i in 0..reps {
                                            let w = &packed[i % packed.len()];
                                            matmul(isa, m, w, acts, part.clone(), o).unwrap();
                                        }
                                        thread_cpu_ns() - c0
                                    })
                                })
                                .collect();
                            jobs.into_iter()
                                .map(|j| j.join().unwrap())
                                .max()
                                .unwrap_or(0)
                        });
                        let r = reps as f64;
                        (t.elapsed().as_secs_f64() / r, cpu as f64 * 1e-9 / r)
                    };
                    // 31 alternations of one probe pass and one pass over the copies, each
                    // product against the probe just before it: the medians of both
                    let (bw, share) = match &probe {
                        Some(p) if n == 1 => {
                            let (mut bws, mut shares) = (Vec::new(), Vec::new());
                            for _ in 0..31 {
                                let b = p.measure(threads, 1);
                                let (w, _) = pass(packed.len());
                                bws.push(b);
                                shares.push(plen as f64 / w / b);
                            }
                            (median(&mut bws), median(&mut shares))
                        }
                        _ => (f64::NAN, f64::NAN),
                    };
                    // passes of ≥ 0.3 s (the CPU clock ticks every few ms); the best of 5. The
                    // length is timed on passes of growing length after a first one: a single
                    // product would count the cold caches and the threads' start-up, and leave
                    // the passes far too short
                    let first = if n == 1 { packed.len() } else { 1 };
                    pass(first);
                    let mut reps = first;
                    let w0 = loop {
                        let (w, _) = pass(reps);
                        if w * reps as f64 >= 0.03 {
                            break w;
                        }
                        reps *= 4;
                    };
                    let reps = ((0.3 / w0) as usize).max(first);
                    let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
                    for _ in 0..5 {
                        let (w, c) = pass(reps);
                        best = best.min(w);
                        best_cpu = best_cpu.min(c);
                    }
                    let t = if best_cpu > 0.0 { best_cpu } else { best };
                    let flop = 2.0 * (rows * k * n) as f64;
                    let gbs = plen as f64 / best / 1e9;
                    println!(
                        "{:<8} {:<12} {:<16} {:>6} {:>9.3} {:>9.3} {:>7.1} {:>8.1} {:>8.1} {:>7.1} {:>5.1}%",
                        ty.name(),
                        isa.name(),
                        name,
                        n,
                        best * 1e3,
                        best_cpu * 1e3,
                        gbs,
                        flop / best / 1e9,
                        flop / t / 1e9,
                        bw / 1e9,
                        100.0 * share
                    );
                }
            }
        }
    }
}
