//! glmtool's own CPU kernels (glm-kernels, `--cpu-kernels`) against ggml's `mul_mat` on the
//! whole model: the fixture converted to q4_0 and q8_0 (every matrix repacked), every
//! instruction set this CPU runs. Integer dot products are the same; the float accumulation
//! order differs, and activations are re-quantized to int8 in every layer, so an f32-noise
//! difference that lands on a rounding boundary flips one activation by a quantization step.
//! Measured here: logits of a 100-token prompt agree to 2e-7 of their range, but over
//! 4 × 128-token perplexity chunks such flips move perplexity by ~2.5e-4 relative (6e-5 over the
//! whole held-out file; the scalar kernel, with the same integers and a different float order,
//! differs from the vector ones by as much). So: logits to 1e-3 of their range, perplexity to
//! 1e-3 relative (the q8_0 tolerance against transformers is 5e-3), greedy ids up to the first
//! near-tie.

use gguf::GgmlType;
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::plan::PlanShape;
use glm_runtime::sampler::argmax;
use glm_runtime::{CacheType, Isa, LoadOptions, Model, Session, SessionOptions};
use std::path::Path;

mod common;
use common::{gguf, FIXTURE};

fn load(ty: GgmlType, kernels: Option<Isa>) -> Model {
    let shape = PlanShape {
        n_ctx: 128,
        n_batch: 64,
        cache_type: CacheType::F32,
        logits_rows: 1,
    };
    let opts = LoadOptions {
        cpu_kernels: kernels,
        ..LoadOptions::cpu(shape)
    };
    Model::load_with(&gguf(ty), &opts).unwrap()
}

fn opts() -> SessionOptions {
    SessionOptions {
        n_ctx: 128,
        n_batch: 64,
        n_threads: 1, // tests run in parallel on 2 cores
        cache_type: CacheType::F32,
    }
}

fn tokens(m: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    m.tokenizer.encode(&text).unwrap()
}

#[test]
fn matrices_are_repacked_only_when_asked() {
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let m = load(ty, Some(Isa::Scalar));
        assert_eq!(m.cpu_kernels(), Some(Isa::Scalar));
        assert!(m.packed_bytes() > 0);
        let m = load(ty, None);
        assert_eq!((m.cpu_kernels(), m.packed_bytes()), (None, 0));
    }
    // nothing to repack in an f16 model
    assert_eq!(load(GgmlType::F16, Some(Isa::detect())).cpu_kernels(), None);
}

#[test]
fn every_instruction_set_matches_ggml_on_the_whole_model() {
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let base = load(ty, None);
        let toks = tokens(&base);
        let prompt = &toks[..100];
        let want = Session::new(&base, &opts())
            .unwrap()
            .eval(prompt, true)
            .unwrap();
        let range = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let want_ppl = {
            let mut s = Session::new(&base, &opts()).unwrap();
            perplexity(&mut s, &toks[..128 * 4], 128, None, KlMode::None, |_, _| {})
                .unwrap()
                .ppl
        };
        for isa in Isa::available() {
            let m = load(ty, Some(isa));
            let got = Session::new(&m, &opts())
                .unwrap()
                .eval(prompt, true)
                .unwrap();
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                d < 1e-3 * range,
                "{ty} {}: logits differ by {d} (range {range})",
                isa.name()
            );
            let mut s = Session::new(&m, &opts()).unwrap();
            let ppl = perplexity(&mut s, &toks[..128 * 4], 128, None, KlMode::None, |_, _| {})
                .unwrap()
                .ppl;
            assert!(
                (ppl - want_ppl).abs() / want_ppl < 1e-3,
                "{ty} {}: perplexity {ppl} vs ggml's {want_ppl}",
                isa.name()
            );
        }
    }
}

#[test]
fn greedy_ids_match_ggml_up_to_a_near_tie() {
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let (base, native) = (load(ty, None), load(ty, Some(Isa::detect())));
        let prompt = &tokens(&base)[200..240];
        let run = |m: &Model| {
            let mut s = Session::new(m, &opts()).unwrap();
            let mut logits = s.eval(prompt, false).unwrap();
            let mut out = Vec::new();
            for _ in 0..40 {
                let mut sorted = logits.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let t = argmax(&logits);
                out.push((t, sorted[0] - sorted[1]));
                logits = s.eval(&[t], false).unwrap();
            }
            out
        };
        let (a, b) = (run(&base), run(&native));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x.0 != y.0 {
                assert!(
                    x.1 < 0.02,
                    "{ty}: step {i} differs ({} vs {}) with margin {}",
                    x.0,
                    y.0,
                    x.1
                );
                break;
            }
        }
    }
}
