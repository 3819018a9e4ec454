//! Flash attention (`-fa`) and quantized KV caches (`-ctk`, `-ctv`) on the fixture model, over
//! its whole training context (512 tokens: perplexity in 6 chunks of the held-out text):
//!
//! - flash attention against ggml's unfused attention with an f32 cache: perplexity within 1e-4
//!   relative (issue 22's target; the kernel's own error, bounded per output in glm-kernels'
//!   tests/attention.rs, is f32 rounding of a few 1e-6 at this head size);
//! - a q8_0 cache against an f16 cache: within 1e-3 relative (issue 22's target: q8_0 keeps
//!   8 bits a value, half a step of amax/127 ≈ 0.4 % of the block's largest value); q4_0 within
//!   5e-2 (a step of amax/8: the bound reference.rs gives q4_0 weights);
//! - every cache type loads, runs and reports its size, which is the plan's;
//! - combinations that cannot run are one-line errors naming the flag.

use gguf::GgmlType;
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::plan::{FlashAttn, KvType};
use glm_runtime::{CacheType, Model, PlanShape, Session, SessionOptions};
use std::path::Path;

mod common;
use common::{gguf, FIXTURE};

const CTX: usize = 512;

fn opts(cache: CacheType, fa: FlashAttn) -> SessionOptions {
    SessionOptions {
        n_ctx: CTX,
        n_batch: 512,
        n_threads: 1, // tests run in parallel on 2 cores; ggml threads spin
        cache_type: cache,
        flash_attn: fa,
        n_seq: 1,
    }
}

fn ppl(model: &Model, cache: CacheType, fa: FlashAttn) -> f64 {
    let mut s = Session::new(model, &opts(cache, fa)).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    let tokens = model.tokenizer.encode(&text).unwrap();
    let r = perplexity(&mut s, &tokens, CTX, None, KlMode::None, |_, _| {}).unwrap();
    assert_eq!(r.n_chunks, 6);
    r.ppl
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn cache(k: KvType, v: KvType) -> CacheType {
    CacheType { k, v }
}

#[test]
fn flash_attention_matches_the_unfused_path() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    let off = ppl(&model, CacheType::F32, FlashAttn::Off);
    let on = ppl(&model, CacheType::F32, FlashAttn::On);
    let auto = ppl(&model, CacheType::F32, FlashAttn::Auto);
    eprintln!(
        "f32 cache, -c {CTX}: unfused {off:.6}, flash {on:.6} (rel {:.2e})",
        rel(on, off)
    );
    assert!(rel(on, off) < 1e-4, "flash {on} vs unfused {off}");
    assert_eq!(on, auto, "-fa auto is flash attention on the CPU");
    // an f16 cache too (the unfused path rounds q to f16 for ggml's f16 product; flash
    // attention keeps it in f32): within the f16 cache's own error, 1e-3 as reference.rs
    let off16 = ppl(&model, CacheType::F16, FlashAttn::Off);
    let on16 = ppl(&model, CacheType::F16, FlashAttn::On);
    eprintln!(
        "f16 cache: unfused {off16:.6}, flash {on16:.6} (rel {:.2e})",
        rel(on16, off16)
    );
    assert!(rel(on16, off16) < 1e-3, "flash {on16} vs unfused {off16}");
}

#[test]
fn quantized_caches_stay_close_to_f16() {
    let model = Model::load(&gguf(GgmlType::F16)).unwrap();
    let f16 = ppl(&model, CacheType::F16, FlashAttn::On);
    let q8 = ppl(&model, CacheType::both(KvType::Q8_0), FlashAttn::On);
    let q4 = ppl(&model, CacheType::both(KvType::Q4_0), FlashAttn::On);
    let k8 = ppl(&model, cache(KvType::Q8_0, KvType::F16), FlashAttn::On);
    // a q8_0 K cache also runs unfused (ggml multiplies q8_0 keys itself)
    let k8_unfused = ppl(&model, cache(KvType::Q8_0, KvType::F16), FlashAttn::Off);
    eprintln!(
        "-c {CTX}: f16 {f16:.6}, q8_0 {q8:.6} (rel {:.2e}), q4_0 {q4:.6} (rel {:.2e}), \
         K q8_0 {k8:.6} (rel {:.2e}), unfused {k8_unfused:.6} (rel {:.2e})",
        rel(q8, f16),
        rel(q4, f16),
        rel(k8, f16),
        rel(k8_unfused, f16)
    );
    assert!(rel(q8, f16) < 1e-3, "q8_0 {q8} vs f16 {f16}");
    assert!(rel(k8, f16) < 1e-3, "K q8_0 {k8} vs f16 {f16}");
    assert!(
        rel(k8_unfused, f16) < 1e-3,
        "unfused K q8_0 {k8_unfused} vs f16 {f16}"
    );
    assert!(rel(q4, f16) < 5e-2, "q4_0 {q4} vs f16 {f16}");
}

#[test]
fn every_cache_type_loads_runs_and_reports_its_size() {
    let model = Model::load(&gguf(GgmlType::Q8_0)).unwrap();
    let hp = &model.hparams;
    let prompt: Vec<u32> = (0..40).map(|i| 5 + i * 13 % 900).collect();
    for k in KvType::ALL {
        for v in KvType::ALL {
            let c = cache(k, v);
            let mut s = Session::new(&model, &opts(c, FlashAttn::Auto)).unwrap();
            let want = hp.n_layer * CTX * (k.row_bytes(hp.kv_width()) + v.row_bytes(hp.kv_width()));
            // the buffer holds the 2 tensors a layer, each aligned to at most 64 bytes
            let got = s.cache_bytes();
            assert!(
                got >= want && got - want <= 2 * hp.n_layer * 64,
                "{}: {got} bytes, {want} expected",
                c.describe()
            );
            let shape = PlanShape {
                n_ctx: CTX,
                cache_type: c,
                ..Default::default()
            };
            assert_eq!(
                shape.layer_kv_bytes(hp) * hp.n_layer as u64,
                want as u64,
                "plan of {}",
                c.describe()
            );
            let logits = s.eval(&prompt, false).unwrap();
            assert!(logits.iter().all(|x| x.is_finite()), "{}", c.describe());
            // and token by token after it (the decoding path)
            for t in [7u32, 8, 9] {
                let l = s.eval(&[t], false).unwrap();
                assert!(l.iter().all(|x| x.is_finite()), "{}", c.describe());
            }
        }
    }
    // q8_0 takes 34/64 of f16's bytes, q4_0 18/64
    let size = |t: KvType| {
        let s = PlanShape {
            n_ctx: CTX,
            cache_type: CacheType::both(t),
            ..Default::default()
        };
        s.layer_kv_bytes(hp)
    };
    assert_eq!(size(KvType::Q8_0) * 64, size(KvType::F16) * 34);
    assert_eq!(size(KvType::Q4_0) * 64, size(KvType::F16) * 18);
}

#[test]
fn combinations_that_cannot_run_are_one_line_errors() {
    let model = Model::load(&gguf(GgmlType::F32)).unwrap();
    for v in [KvType::Q8_0, KvType::Q4_0] {
        let e = Session::new(&model, &opts(cache(KvType::F16, v), FlashAttn::Off))
            .err()
            .expect("a quantized V cache without flash attention")
            .to_string();
        assert!(
            e.contains(&format!("-ctv {}", v.name()))
                && e.contains("flash attention")
                && e.contains("-fa off")
                && !e.contains('\n'),
            "{e}"
        );
    }
}
