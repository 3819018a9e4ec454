//! Small batches: every batch size 1–8 over prompt lengths around each batch boundary gives the
//! logits of one whole-prompt batch, and perplexity-style runs (all-row logits, a growing cache,
//! resets between chunks) work at batch sizes 1–3.
//!
//! Regression test for the heap corruption of ggml b2757's CPU compute buffers (they reported 32
//! bytes of alignment padding as usable, so a graph needing up to 16 bytes more than the buffer
//! held ran in it and wrote past its end; small batches grow the need by a few bytes per token
//! and hit that window on most runs — `perplexity -b 1` aborted every time). See
//! crates/ggml/src/host_buffer.rs.

use gguf::GgmlType;
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::{CacheType, Model, Session, SessionOptions};
use std::path::Path;

mod common;
use common::{gguf, FIXTURE};

fn opts(n_ctx: usize, n_batch: usize) -> SessionOptions {
    SessionOptions {
        n_ctx,
        n_batch,
        // one thread: the test binary runs its tests in parallel on a 2-core machine
        n_threads: 1,
        cache_type: CacheType::F32,
        ..Default::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batch_sizes_1_to_8_around_each_boundary_match_one_batch() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    let all = model.tokenizer.encode(&text).unwrap();
    for b in 1..=8usize {
        // lengths just below, at and above 1, 2 and 3 batches, and one long prompt
        let mut lens: Vec<usize> = (1..=3)
            .flat_map(|k| [k * b - 1, k * b, k * b + 1])
            .filter(|&n| n > 0)
            .collect();
        lens.push(97);
        lens.dedup();
        for n in lens {
            let prompt = &all[..n];
            let mut one = Session::new(&model, &opts(128, 512)).unwrap();
            let want = one.eval(prompt, true).unwrap();
            let mut small = Session::new(&model, &opts(128, b)).unwrap();
            let got = small.eval(prompt, true).unwrap();
            let d = max_diff(&want, &got);
            assert!(d < 2e-3, "batch {b}, {n} tokens: logits differ by {d}");
            // then a few single-token steps on top, as generation does
            for (i, &t) in all[n..n + 3].iter().enumerate() {
                let want = one.eval(&[t], false).unwrap();
                let got = small.eval(&[t], false).unwrap();
                let d = max_diff(&want, &got);
                assert!(
                    d < 2e-3,
                    "batch {b}, {n} tokens, step {i}: logits differ by {d}"
                );
            }
        }
    }
}

#[test]
fn perplexity_with_batches_of_1_to_3_matches_one_batch() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    let tokens = model.tokenizer.encode(&text).unwrap();
    let tokens = &tokens[..128 * 6];
    let run = |b: usize| {
        let mut s = Session::new(&model, &opts(128, b)).unwrap();
        perplexity(&mut s, tokens, 128, None, KlMode::None, |_, _| {})
            .unwrap()
            .ppl
    };
    let want = run(512);
    for b in 1..=3 {
        let got = run(b);
        assert!(
            (got - want).abs() / want < 1e-5,
            "batch {b}: perplexity {got} vs {want}"
        );
    }
}
