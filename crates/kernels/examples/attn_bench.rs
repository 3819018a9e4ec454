//! Micro benchmark of the flash-attention kernel on ChatGLM3-6B's attention shapes (32 heads of
//! 128 in 2 KV groups), one layer.
//!
//! ```text
//! cargo run --release -p glm-kernels --example attn_bench -- [--threads 2] [--isa avx2]
//!     [--depth 4096] [--tokens 1,512] [--layers 28] [--huge] [TYPE ...]
//!     (TYPE: f32 f16 q8_0 q4_0; default f16 q8_0)
//! ```
//!
//! For each cache type and kernel it times one layer's attention of `tokens` queries after
//! `depth` cached tokens (causal), the best of 5 passes of ≥ 0.3 s, and reports the time per
//! call and GFLOP/s counting 4·d flops per (query head, visible key): a multiply and an add for
//! the score and for the value. `--layers N` gives each of N layers a cache of its own and the
//! calls go round them, so that (with N · the cache > the last-level cache) K and V come from
//! memory as in a whole model, where the weights push them out between layers; `--huge` asks
//! for 2 MiB pages for those caches, as the runtime does.

#[path = "../tests/common/mod.rs"]
mod common;
use common::{copy, Rng};
use glm_kernels::attention::*;
use glm_kernels::Isa;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2;
    let mut isas = Isa::available();
    isas.retain(|i| *i != Isa::Scalar);
    let mut depth = 4096;
    let mut tokens = vec![1usize, 512];
    let mut types = Vec::new();
    let (mut layers, mut huge) = (1usize, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => threads = it.next().and_then(|v| v.parse().ok()).expect("--threads N"),
            "--layers" => layers = it.next().and_then(|v| v.parse().ok()).expect("--layers N"),
            "--huge" => huge = true,
            "--depth" => depth = it.next().and_then(|v| v.parse().ok()).expect("--depth N"),
            "--tokens" => {
                tokens = it
                    .next()
                    .expect("--tokens LIST")
                    .split(',')
                    .map(|v| v.parse().expect("a number"))
                    .collect()
            }
            "--isa" => {
                let name = it.next().expect("--isa NAME");
                isas = Isa::available()
                    .into_iter()
                    .filter(|i| i.name().starts_with(name.as_str()))
                    .collect();
            }
            t => types.push(KvType::from_name(t).unwrap_or_else(|| panic!("unknown type {t}"))),
        }
    }
    if types.is_empty() {
        types = vec![KvType::F16, KvType::Q8_0];
    }
    let (d, nh, nkv) = (128usize, 32usize, 2usize);
    println!("| cache | isa | threads | queries | depth | layers | ms / layer | GFLOP/s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &ty in &types {
        for &t in &tokens {
            let n_kv = depth + t;
            let s = AttnShape {
                head_dim: d,
                n_head: nh,
                n_head_kv: nkv,
                n_tokens: t,
                n_kv,
                k_type: ty,
                v_type: ty,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut rng = Rng(1);
            let mut rnd = || rng.f32();
            let q: Vec<f32> = (0..s.q_len()).map(|_| rnd()).collect();
            let row = |rnd: &mut dyn FnMut() -> f32| {
                let x: Vec<f32> = (0..nkv * d).map(|_| rnd()).collect();
                let mut b = vec![0u8; s.row_bytes(ty)];
                ty.quantize_row(&x, &mut b).unwrap();
                b
            };
            let k1: Vec<u8> = (0..n_kv).flat_map(|_| row(&mut rnd)).collect();
            let v1: Vec<u8> = (0..n_kv).flat_map(|_| row(&mut rnd)).collect();
            let kv: Vec<(Vec<u8>, Vec<u8>)> = (0..layers.max(1))
                .map(|_| (copy(&k1, huge), copy(&v1, huge)))
                .collect();
            let mut layer = 0;
            let mut out = vec![0f32; s.q_len()];
            // visible keys summed over the queries (causal)
            let pairs: f64 = (0..t).map(|i| (depth + i + 1) as f64).sum::<f64>() * nh as f64;
            let flops = 4.0 * d as f64 * pairs;
            for &isa in &isas {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t0 = Instant::now();
                    let mut n = 0;
                    while t0.elapsed().as_secs_f64() < 0.3 || n == 0 {
                        let (k, v) = &kv[layer];
                        layer = (layer + 1) % kv.len();
                        flash_attention_into(isa, &s, &q, k, v, Mask::Causal, &mut out, threads)
                            .unwrap();
                        n += 1;
                    }
                    best = best.min(t0.elapsed().as_secs_f64() / n as f64);
                }
                println!(
                    "| {} | {} | {threads} | {t} | {depth} | {layers}{} | {:.3} | {:.1} |",
                    ty.name(),
                    isa.name(),
                    if huge { ", 2 MiB pages" } else { "" },
                    best * 1e3,
                    flops / best / 1e9
                );
            }
        }
    }
}
