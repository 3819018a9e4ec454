//! Importance-matrix collection (glm_runtime::imatrix) against llama.cpp 2026's llama-imatrix on
//! the tiny fixture model (tests/fixtures/imatrix/llama.imatrix.gguf, from
//! tools/make_imatrix_golden.sh: f32 model and KV cache, -c 128 -b 128, 24 chunks,
//! --process-output), and the two matrix-product paths (our packed kernels, ggml's mul_mat).

use gguf::GgmlType;
use glm_convert::quant::imatrix::{Entry, Imatrix};
use glm_runtime::imatrix::{chunk_bos, collect, CollectOptions, Observers};
use glm_runtime::{CacheType, Isa, LoadOptions, Model, PlanShape, Session, SessionOptions};
use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::gguf;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/imatrix");
const CHUNK: usize = 128;

fn load(ty: GgmlType, kernels: Option<Isa>) -> Model {
    let shape = PlanShape {
        n_ctx: CHUNK,
        n_batch: CHUNK,
        cache_type: CacheType::F32,
        logits_rows: CHUNK,
        ..Default::default()
    };
    let opts = LoadOptions {
        cpu_kernels: kernels,
        ..LoadOptions::cpu(shape)
    };
    Model::load_with(&gguf(ty), &opts).unwrap()
}

/// `glmtool imatrix -c 128 -b 128 --cache-type f32 -t 1 --process-output` on the golden's
/// calibration text, as (name -> entry), plus the perplexity.
fn collect_tiny(model: &Model, max_chunks: Option<usize>) -> (BTreeMap<String, Entry>, f64) {
    let mut text = std::fs::read_to_string(Path::new(GOLDEN).join("calibration.txt")).unwrap();
    if text.ends_with('\n') {
        text.pop(); // as llama.cpp's -f
    }
    let tokens = model.tokenizer.encode(&text).unwrap();
    let bos = chunk_bos(&gguf::GgufFile::open(gguf(GgmlType::F32)).unwrap());
    assert_eq!(bos, None, "glmtool's files say add_bos_token = false");
    let sopts = SessionOptions {
        n_ctx: CHUNK,
        n_batch: CHUNK,
        n_threads: 1, // tests run in parallel on 2 cores; ggml threads spin
        cache_type: CacheType::F32,
        ..Default::default()
    };
    let mut session = Session::new(model, &sopts).unwrap();
    let mut obs = Observers::new(&model.hparams, true, |_| None);
    let opts = CollectOptions {
        chunk: CHUNK,
        batch: CHUNK,
        max_chunks,
        bos,
        ppl: true,
    };
    let r = collect(&mut session, &tokens, &opts, &mut obs, |_, _| Ok(())).unwrap();
    let entries = obs
        .read()
        .into_iter()
        .map(|(name, sums, rows)| {
            (
                name,
                Entry {
                    sums: sums.to_vec(),
                    counts: vec![rows],
                },
            )
        })
        .collect();
    (entries, r.ppl.unwrap().0)
}

/// How far our sums may be from another f32 implementation of the same forward pass over
/// `n` tokens (docs/quantization.md, "Importance matrices"). The activations differ only by the
/// order of f32 additions inside dot products, norms and softmaxes: a few ulps of their scale
/// (64 ε covers that through two layers). The sums of squares are accumulated token by token
/// in f32 by both, in the same order, so equal activations give equal sums (the first layer's
/// `attn_qkv` input, which no reordered operation touches, is bit-identical); where the terms
/// differ by an ulp, the roundings of the running sum differ too, which behaves like a random
/// walk of n steps of at most ½ ulp: 6 standard deviations are 6·√n·ε/2.
fn tolerance(n: u64) -> f64 {
    let eps = f32::EPSILON as f64;
    64.0 * eps + 6.0 * (n as f64).sqrt() * eps / 2.0
}

/// The largest |a − b| / max(b, mean(b) / 100) over every column of every matrix (b the
/// reference): relative per column, except that columns a hundred times below their matrix's
/// mean are measured against that (their activations' errors scale with the whole row).
fn max_difference(ours: &BTreeMap<String, Entry>, reference: &BTreeMap<String, Entry>) -> f64 {
    let mut worst = 0f64;
    for (name, r) in reference {
        let o = &ours[name];
        let mean = r.sums.iter().map(|&x| x as f64).sum::<f64>() / r.sums.len() as f64;
        for (&a, &b) in o.sums.iter().zip(&r.sums) {
            let d = (a as f64 - b as f64).abs();
            worst = worst.max(d / (b as f64).max(mean / 100.0));
        }
    }
    worst
}

fn check_against(ours: &BTreeMap<String, Entry>, reference: &Imatrix, what: &str) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.entries.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, r) in &reference.entries {
        // the same tokens were counted: same tokenization, chunking and 16-token rule
        assert_eq!(ours[name].counts, r.counts, "{what}: {name}");
        assert_eq!(ours[name].sums.len(), r.sums.len(), "{what}: {name}");
    }
    let n = reference
        .entries
        .values()
        .map(|e| e.counts[0])
        .max()
        .unwrap();
    let d = max_difference(ours, &reference.entries);
    eprintln!(
        "vs {what}: max relative difference {d:.3e} (tolerance {:.3e})",
        tolerance(n)
    );
    assert!(d <= tolerance(n), "{what}: max relative difference {d:.3e}");
}

#[test]
fn statistics_match_llama_imatrix() {
    let (ours, ppl) = collect_tiny(&load(GgmlType::F32, None), None);
    let llama = Imatrix::load(&Path::new(GOLDEN).join("llama.imatrix.gguf")).unwrap();
    check_against(&ours, &llama, "llama-imatrix");
    // the first layer's QKV input comes straight from the embeddings: no reordered sums
    assert_eq!(
        ours["blk.0.attn_qkv.weight"].sums,
        llama.entries["blk.0.attn_qkv.weight"].sums
    );
    // glmtool's own file, made on another machine (other instruction sets, other orders)
    let committed = Imatrix::load(&Path::new(GOLDEN).join("glmtool.imatrix.gguf")).unwrap();
    check_against(&ours, &committed, "the committed glmtool imatrix");
    // llama-imatrix printed 77.8021 for these chunks (tools/make_imatrix_golden.sh)
    assert!((ppl - 77.8021).abs() < 1e-3, "perplexity {ppl}");
}

/// The observation sits before either product: our repacked q4_0 kernels (two custom ops) and
/// ggml's `mul_mat` see the same activations up to the products' own rounding.
#[test]
fn packed_kernels_and_ggml_mul_mat_are_observed_alike() {
    let packed = load(GgmlType::Q4_0, Some(Isa::detect()));
    assert!(
        packed.packed_bytes() > 0,
        "the q4_0 matrices run on our kernels"
    );
    let (a, _) = collect_tiny(&packed, Some(4));
    let (b, _) = collect_tiny(&load(GgmlType::Q4_0, None), Some(4));
    for (name, e) in &b {
        assert_eq!(a[name].counts, e.counts, "{name}");
        assert_eq!(e.counts, [4 * CHUNK as u64], "{name}");
    }
    // nothing before the first product differs
    assert_eq!(
        a["blk.0.attn_qkv.weight"].sums,
        b["blk.0.attn_qkv.weight"].sums
    );
    // Both multiply q4_0 weights by activations quantized to q8_0, but may round an activation
    // to a different q8_0 step (one step is 1/127 of its block's largest value): an output, and
    // so the next matrix's input, can move by up to ~1/127 of its scale, its square by 2/127.
    let d = max_difference(&a, &b);
    eprintln!("packed vs ggml: max relative difference {d:.3e}");
    assert!(d < 2.0 / 127.0, "packed kernels vs ggml: {d:.3e}");
}

#[test]
fn too_short_a_text_and_too_small_batches_are_errors() {
    let model = load(GgmlType::F32, None);
    let sopts = SessionOptions {
        n_ctx: CHUNK,
        n_batch: CHUNK,
        n_threads: 1,
        cache_type: CacheType::F32,
        ..Default::default()
    };
    let mut session = Session::new(&model, &sopts).unwrap();
    let mut obs = Observers::new(&model.hparams, false, |_| None);
    let opts = CollectOptions {
        chunk: CHUNK,
        batch: CHUNK,
        max_chunks: None,
        bos: None,
        ppl: false,
    };
    let short = vec![5u32; 2 * CHUNK - 1];
    let e = collect(&mut session, &short, &opts, &mut obs, |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("255 tokens") && e.contains("at least 256"),
        "{e}"
    );
    let tiny_batches = CollectOptions { batch: 8, ..opts };
    let e = collect(
        &mut session,
        &[5; 4 * CHUNK],
        &tiny_batches,
        &mut obs,
        |_, _| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("-b 8") && e.contains("16"), "{e}");
    // pieces under 16 tokens are not observed, as in llama-imatrix: -b 120 leaves 8 of 128
    let ragged = CollectOptions {
        batch: 120,
        max_chunks: Some(2),
        ..opts
    };
    collect(&mut session, &[5; 4 * CHUNK], &ragged, &mut obs, |_, _| {
        Ok(())
    })
    .unwrap();
    for (name, _, rows) in obs.read() {
        assert_eq!(rows, 2 * 120, "{name}");
    }
}

#[test]
fn bos_follows_the_vocabulary() {
    use gguf::{GgufWriter, Value};
    let dir = tempfile::tempdir().unwrap();
    let bos_of = |md: Vec<(&str, Value)>| {
        let p = dir.path().join("v.gguf");
        let md: Vec<(String, Value)> = md.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let w = GgufWriter::new(Vec::new(), &md, vec![]).unwrap();
        std::fs::write(&p, w.finish().unwrap()).unwrap();
        chunk_bos(&gguf::GgufFile::open(&p).unwrap())
    };
    use gguf::names::*;
    let llama = || (TOKENIZER_MODEL, Value::String(TOKENIZER_MODEL_LLAMA.into()));
    let gpt2 = || (TOKENIZER_MODEL, Value::String(TOKENIZER_MODEL_GPT2.into()));
    assert_eq!(
        bos_of(vec![llama(), (TOKENIZER_ADD_BOS, Value::Bool(false))]),
        None
    );
    assert_eq!(bos_of(vec![llama()]), Some(1)); // llama.cpp's SentencePiece default
    assert_eq!(
        bos_of(vec![llama(), (TOKENIZER_BOS_ID, Value::U32(7))]),
        Some(7)
    );
    assert_eq!(bos_of(vec![gpt2()]), None);
    assert_eq!(
        bos_of(vec![
            gpt2(),
            (TOKENIZER_ADD_BOS, Value::Bool(true)),
            (TOKENIZER_BOS_ID, Value::U32(9))
        ]),
        Some(9)
    );
}
