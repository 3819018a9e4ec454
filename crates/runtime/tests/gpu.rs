//! The GPU path against the CPU path on the fixture: logits (prompt batches big enough for
//! CUDA's cuBLAS/MMQ kernels and the scheduler's weight offload, then single-token decoding),
//! whole-run perplexity, and the planner's compute-buffer estimate against ggml's measurement,
//! at full offload and with one layer on the GPU, for f16, q8_0 and q4_0.
//!
//! Built in every configuration; without a GPU backend (the default build) or without a device
//! each test prints that it is skipped. Run on a GPU with
//! `cargo test --release -p glm-runtime --features cuda --test gpu -- --nocapture`
//! (tools/device-check.sh does).

use gguf::GgmlType;
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::sampler::argmax;
use glm_runtime::{CacheType, GpuLayers, LoadOptions, Model, PlanShape, Session, SessionOptions};
use std::path::Path;

mod common;
use common::{gguf, FIXTURE};

const N_CTX: usize = 128;

/// The first GPU, or `None` (and a message) when there is none.
fn gpu() -> Option<(glm_runtime::DeviceKind, usize)> {
    let d = glm_runtime::gpu_devices().into_iter().next();
    match &d {
        Some(d) => eprintln!("GPU: {}:{} {}", d.kind.name(), d.index, d.description),
        None => eprintln!(
            "skipped: no GPU ({})",
            if glm_runtime::gpu_kinds().is_empty() {
                "built without --features cuda/metal"
            } else {
                "no device found"
            }
        ),
    }
    d.map(|d| (d.kind, d.index))
}

fn shape(n_batch: usize) -> PlanShape {
    PlanShape {
        n_ctx: N_CTX,
        n_batch,
        cache_type: CacheType::F16,
        logits_rows: n_batch,
        ..Default::default()
    }
}

fn load(
    ty: GgmlType,
    device: Option<(glm_runtime::DeviceKind, usize)>,
    layers: GpuLayers,
) -> Model {
    let opts = LoadOptions {
        device,
        layers,
        budget: None,
        shape: shape(64),
        // ggml's kernels on the CPU side too: GPU against ggml's CPU path, op for op
        cpu_kernels: None,
    };
    Model::load_with(&gguf(ty), &opts).unwrap()
}

fn session(m: &Model, n_batch: usize) -> Session<'_> {
    Session::new(
        m,
        &SessionOptions {
            n_ctx: N_CTX,
            n_batch,
            n_threads: 2,
            cache_type: CacheType::F16,
            ..Default::default()
        },
    )
    .unwrap()
}

fn heldout(m: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    m.tokenizer.encode(&text).unwrap()
}

/// Prompt logits (batches of 64 then 36 tokens) followed by 4 single-token steps.
fn run_logits(m: &Model) -> Vec<f32> {
    let tokens = heldout(m);
    let mut s = session(m, 64);
    let mut out = s.eval(&tokens[..100], true).unwrap();
    for &t in &tokens[100..104] {
        out.extend(s.eval(&[t], false).unwrap());
    }
    out
}

const PLACEMENTS: [(GpuLayers, &str); 2] = [
    (GpuLayers::Count(99), "all layers + output head"),
    (
        GpuLayers::Count(1),
        "last layer only, output head on the CPU",
    ),
];

#[test]
fn gpu_logits_match_cpu() {
    let Some(dev) = gpu() else { return };
    for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let cpu = load(ty, None, GpuLayers::Auto);
        let want = run_logits(&cpu);
        let n_vocab = cpu.hparams.n_vocab;
        for (layers, what) in PLACEMENTS {
            let m = load(ty, Some(dev), layers);
            assert!(m.plan.uses_gpu(), "{}", m.plan.describe());
            // Full offload takes the head; one layer leaves it on the CPU (both paths tested).
            assert_eq!(
                m.plan.output_on_gpu,
                layers == GpuLayers::Count(99),
                "{}",
                m.plan.describe()
            );
            let got = run_logits(&m);
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            let mean = got
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .sum::<f32>()
                / got.len() as f32;
            let rows = got.len() / n_vocab;
            let same_top = (0..rows)
                .filter(|&r| {
                    argmax(&got[r * n_vocab..(r + 1) * n_vocab])
                        == argmax(&want[r * n_vocab..(r + 1) * n_vocab])
                })
                .count();
            eprintln!(
                "{ty} {what}: max |GPU-CPU| {err:.3e} (max |logit| {scale:.2}), mean {mean:.3e}, same argmax {same_top}/{rows}"
            );
            assert!(
                err <= 2e-2 * scale,
                "{ty} {what}: max error {err} vs scale {scale}"
            );
            assert!(
                same_top * 100 >= rows * 95,
                "{ty} {what}: argmax differs in {} of {rows} rows",
                rows - same_top
            );
        }
    }
}

#[test]
fn gpu_perplexity_matches_cpu() {
    let Some(dev) = gpu() else { return };
    for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let ppl = |m: &Model| {
            let mut s = session(m, 64);
            let tokens = heldout(m);
            perplexity(&mut s, &tokens, N_CTX, None, KlMode::None, |_, _| {})
                .unwrap()
                .ppl
        };
        let want = ppl(&load(ty, None, GpuLayers::Auto));
        for (layers, what) in PLACEMENTS {
            let got = ppl(&load(ty, Some(dev), layers));
            let rel = (got - want).abs() / want;
            eprintln!("{ty} {what}: PPL GPU {got:.4} CPU {want:.4} (rel {rel:.2e})");
            assert!(rel < 5e-3, "{ty} {what}: PPL {got} vs CPU {want}");
        }
    }
}

#[test]
fn gpu_buffers_within_plan() {
    let Some(dev) = gpu() else { return };
    for (layers, what) in PLACEMENTS {
        let m = load(GgmlType::Q4_0, Some(dev), layers);
        let mut s = session(&m, 64);
        let tokens = heldout(&m);
        s.eval(&tokens[..N_CTX], true).unwrap();
        let (cpu, gpu) = s.compute_bytes_split();
        eprintln!(
            "{what}: compute buffers GPU {gpu} (plan {}), CPU {cpu} (plan {})",
            m.plan.gpu.compute, m.plan.cpu.compute
        );
        assert!(
            gpu as u64 <= m.plan.gpu.compute,
            "{what}: GPU compute {gpu} over the plan"
        );
        assert!(
            cpu as u64 <= m.plan.cpu.compute,
            "{what}: CPU compute {cpu} over the plan"
        );
    }
}
