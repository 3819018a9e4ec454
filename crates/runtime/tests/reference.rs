//! The runtime against HF transformers' GlmForCausalLM (reference outputs written by
//! tools/make_tiny_model.py into tests/fixtures/tiny-chatglm3): per-position logits, perplexity
//! by llama.cpp's method, and greedy continuations, for f32/f16/q8_0/q4_0 GGUF conversions.

use gguf::GgmlType;
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::sampler::argmax;
use glm_runtime::{CacheType, Model, Session, SessionOptions};
use std::path::Path;
use std::sync::OnceLock;

mod common;
use common::{gguf, FIXTURE};

fn reference() -> &'static serde_json::Value {
    static R: OnceLock<serde_json::Value> = OnceLock::new();
    R.get_or_init(|| {
        serde_json::from_str(
            &std::fs::read_to_string(Path::new(FIXTURE).join("reference.json")).unwrap(),
        )
        .unwrap()
    })
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn session_opts(cache: CacheType, n_ctx: usize) -> SessionOptions {
    SessionOptions {
        n_ctx,
        n_batch: 512,
        n_threads: 1, // tests run in parallel on 2 cores; ggml threads spin
        cache_type: cache,
        ..Default::default()
    }
}

fn ppl(ty: GgmlType, cache: CacheType) -> f64 {
    let model = Model::load(&gguf(ty)).unwrap();
    let r = &reference()["perplexity"];
    let n_ctx = r["ctx"].as_u64().unwrap() as usize;
    let mut s = Session::new(&model, &session_opts(cache, n_ctx)).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    let tokens = model.tokenizer.encode(&text).unwrap();
    assert_eq!(
        tokens,
        ids(&reference()["heldout_ids"]),
        "held-out text tokenizes differently from sentencepiece"
    );
    let res = perplexity(&mut s, &tokens, n_ctx, None, KlMode::None, |_, _| {}).unwrap();
    assert_eq!(res.n_chunks as u64, r["n_chunks"].as_u64().unwrap());
    assert_eq!(res.n_scored as u64, r["n_scored"].as_u64().unwrap());
    if ty == GgmlType::F32 {
        for (c, want) in res.chunks.iter().zip(r["ppl_running"].as_array().unwrap()) {
            let want = want.as_f64().unwrap();
            assert!(
                rel(c.ppl_running, want) < 5e-5,
                "chunk {}: {} vs {want}",
                c.index,
                c.ppl_running
            );
        }
        let want_err = r["ppl_stderr"].as_f64().unwrap();
        assert!(
            rel(res.ppl_stderr, want_err) < 1e-4,
            "stderr {} vs {want_err}",
            res.ppl_stderr
        );
    }
    res.ppl
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn f32_logits_match_transformers() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    let prompt = ids(&reference()["prompt_ids"]);
    let bytes = std::fs::read(Path::new(FIXTURE).join("reference_logits.bin")).unwrap();
    let want: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n_vocab = model.hparams.n_vocab;
    assert_eq!(want.len(), prompt.len() * n_vocab);
    for batch in [512, 5] {
        // one batch, and several batches of 5 (exercises the KV cache across graphs)
        let mut s = Session::new(
            &model,
            &SessionOptions {
                n_batch: batch,
                ..session_opts(CacheType::F32, 64)
            },
        )
        .unwrap();
        let got = s.eval(&prompt, true).unwrap();
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("f32 logits, batch {batch}: max abs error {err:.3e} (max |logit| {scale:.2})");
        // With ggml's CPU SiLU and softmax (f16 lookup tables) this was ~1e-4 of the logit
        // range; with exact exp (exact.rs) it is f32 rounding: 7e-7 measured.
        assert!(err <= 5e-6 * scale, "max abs error {err} vs scale {scale}");
        for p in 0..prompt.len() {
            assert_eq!(
                argmax(&got[p * n_vocab..(p + 1) * n_vocab]),
                argmax(&want[p * n_vocab..(p + 1) * n_vocab]),
                "position {p}"
            );
        }
    }
}

#[test]
fn perplexity_matches_transformers() {
    let want = reference()["perplexity"]["ppl"].as_f64().unwrap();
    let f32_ppl = ppl(GgmlType::F32, CacheType::F32);
    let f16_ppl = ppl(GgmlType::F16, CacheType::F16);
    let q8 = ppl(GgmlType::Q8_0, CacheType::F16);
    let q4 = ppl(GgmlType::Q4_0, CacheType::F16);
    eprintln!("perplexity: reference {want:.6}, f32 {f32_ppl:.6} (rel {:.2e}), f16 {f16_ppl:.6} (rel {:.2e}), q8_0 {q8:.4}, q4_0 {q4:.4}",
        rel(f32_ppl, want), rel(f16_ppl, want));
    assert!(rel(f32_ppl, want) < 1e-6, "f32: {f32_ppl} vs {want}"); // 1.05e-8 measured
    assert!(rel(f16_ppl, want) < 1e-3, "f16: {f16_ppl} vs {want}");
    assert!(rel(q8, want) < 5e-3, "q8_0: {q8} vs {want}");
    assert!(rel(q4, want) < 5e-2, "q4_0: {q4} vs {want}");
}

#[test]
fn greedy_continuations_match_transformers() {
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
        let model = Model::load(&gguf(ty)).unwrap();
        let cache = if ty == GgmlType::F32 {
            CacheType::F32
        } else {
            CacheType::F16
        };
        for case in reference()["greedy"].as_array().unwrap() {
            let mut s = Session::new(&model, &session_opts(cache, 128)).unwrap();
            let prompt = ids(&case["prompt_ids"]);
            let want = ids(&case["new_ids"]);
            let margins: Vec<f64> = case["top1_top2_margin"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap())
                .collect();
            let mut logits = s.eval(&prompt, false).unwrap();
            let mut got = Vec::new();
            for _ in 0..want.len() {
                let t = argmax(&logits);
                got.push(t);
                logits = s.eval(&[t], false).unwrap();
            }
            // Quantized weights may flip a near-tie; compare up to the first step whose
            // reference top-1/top-2 margin is below what the type's error can move.
            let tie = match ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 0.01,
                _ => 0.05,
            };
            let n = margins.iter().position(|&m| m < tie).unwrap_or(want.len());
            assert_eq!(&got[..n], &want[..n], "{ty} greedy case {}", case["name"]);
            if ty == GgmlType::F32 {
                assert_eq!(n, want.len());
                assert_eq!(
                    model.tokenizer.decode(&got).unwrap(),
                    case["new_text"].as_str().unwrap()
                );
            }
        }
    }
}

#[test]
fn sessions_reuse_the_cached_prefix_exactly() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    let prompt = ids(&reference()["prompt_ids"]);
    let mut a = Session::new(&model, &session_opts(CacheType::F32, 64)).unwrap();
    let full = a.eval_prompt(&prompt).unwrap();
    // evaluate a different suffix, then go back: only the changed tail is recomputed
    let mut other = prompt[..10].to_vec();
    other.extend([5, 6, 7]);
    a.eval_prompt(&other).unwrap();
    let again = a.eval_prompt(&prompt).unwrap();
    assert_eq!(full, again);
}

/// Files from llama.cpp's tools carry types our converter does not write (llama-quantize puts
/// `output.weight` in a k-quant): the runtime must run any type this ggml multiplies. The tiny
/// model's rows (128) are too short for 256-element k-quant blocks, so this uses the 32-element
/// non-linear iq4_nl for the output head and q5_1 for the embeddings, quantized by ggml itself.
#[test]
fn runs_types_the_converter_does_not_write() {
    let src = gguf::GgufFile::open(gguf(GgmlType::F32)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mixed.gguf");
    let retype = |name: &str| match name {
        "output.weight" => GgmlType::IQ4NL,
        "token_embd.weight" => GgmlType::Q5_1,
        _ => GgmlType::F32,
    };
    let decls: Vec<gguf::TensorDecl> = src
        .tensors
        .iter()
        .map(|t| gguf::TensorDecl {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: retype(&t.name),
        })
        .collect();
    let mut w = gguf::GgufWriter::new(
        std::fs::File::create(&out).unwrap(),
        &src.metadata,
        decls.clone(),
    )
    .unwrap();
    for (t, d) in src.tensors.iter().zip(&decls) {
        let data = src.tensor_data(t);
        if d.ty == GgmlType::F32 {
            w.write_tensor(&t.name, data).unwrap();
        } else {
            let floats: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let ncols = t.dims[0] as usize;
            let q =
                glm_ggml::quant::quantize_chunk(d.ty.id(), &floats, floats.len() / ncols, ncols)
                    .unwrap();
            w.write_tensor(&t.name, &q).unwrap();
        }
    }
    w.finish().unwrap();
    let model = Model::load(&out).unwrap();
    let mut s = Session::new(&model, &session_opts(CacheType::F16, 128)).unwrap();
    let tokens = ids(&reference()["heldout_ids"]);
    let res = perplexity(&mut s, &tokens, 128, Some(6), KlMode::None, |_, _| {}).unwrap();
    let want = reference()["perplexity"]["ppl_running"][5]
        .as_f64()
        .unwrap();
    eprintln!(
        "iq4_nl output + q5_1 embeddings: 6-chunk PPL {:.4} vs f32 reference {want:.4}",
        res.ppl
    );
    assert!(rel(res.ppl, want) < 0.05, "{} vs {want}", res.ppl);
}
