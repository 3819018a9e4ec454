//! GLM-4 end to end against HF transformers' `GlmForCausalLM` (tests/fixtures/tiny-glm4,
//! reference outputs by tools/make_tiny_glm4.py): the checkpoint (THUDM's format, bf16, with
//! the real GLM-4 tokenizer copied from ../shared/reference; skipped when absent) is converted
//! like `glmtool convert` does, then per-position logits, perplexity (llama.cpp's method) and
//! greedy continuations are compared.

use gguf::{names, GgmlType, GgufFile};
use glm_convert::{convert, ConvertOptions, TypePolicy};
use glm_runtime::chat::{build_chat_ids, completion_ids, Message};
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::sampler::argmax;
use glm_runtime::tokenizer::ChatFormat;
use glm_runtime::{CacheType, Model, Session, SessionOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[allow(dead_code)] // only shared_dir
mod common;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-glm4"
);

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        serde_json::from_str(
            &std::fs::read_to_string(Path::new(FIXTURE).join("reference.json")).unwrap(),
        )
        .unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The fixture converted to `ty` (None when the GLM-4 tokenizer is not available).
fn gguf(ty: GgmlType) -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/glm-4-9b-chat/tokenizer.model");
        if !tok.exists() {
            eprintln!("skipping: {} not found", tok.display());
            return None;
        }
        let d = common::shared_dir("glm4");
        let ckpt = d.join("tiny-glm4");
        std::fs::create_dir(&ckpt).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(Path::new(FIXTURE).join(f), ckpt.join(f)).unwrap();
        }
        std::fs::copy(tok, ckpt.join("tokenizer.model")).unwrap();
        Some(d)
    });
    let dir = dir.as_ref()?;
    let out = dir.join(format!("tiny-glm4-{ty}.gguf"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    if !out.exists() {
        let opts = ConvertOptions {
            policy: TypePolicy::new(ty),
            overwrite: false,
            cancel: None,
            progress: &|_| {},
            family: None,
        };
        let s = convert(&dir.join("tiny-glm4"), &out, &opts).unwrap();
        assert_eq!(s.family, Some(glm_convert::Family::Glm4));
    }
    Some(out)
}

fn session(model: &Model, cache: CacheType, n_ctx: usize) -> Session<'_> {
    let opts = SessionOptions {
        n_ctx,
        n_batch: 512,
        n_threads: 1,
        cache_type: cache,
        ..Default::default()
    };
    Session::new(model, &opts).unwrap()
}

#[test]
fn gguf_metadata_is_llama_cpps_glm4_layout() {
    let Some(p) = gguf(GgmlType::F32) else { return };
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.get_str(names::TOKENIZER_MODEL).unwrap(), "gpt2");
    assert_eq!(f.get_str(names::TOKENIZER_PRE).unwrap(), "chatglm-bpe");
    assert_eq!(f.get_u64(names::TOKENIZER_EOS_ID).unwrap(), 151_329);
    assert_eq!(f.get_u64(names::TOKENIZER_EOT_ID).unwrap(), 151_336);
    assert_eq!(f.get_u64(names::TOKENIZER_UNK_ID).unwrap(), 151_329);
    assert_eq!(f.get_u64(names::TOKENIZER_PAD_ID).unwrap(), 151_329);
    assert_eq!(
        f.get_str_array(names::TOKENIZER_TOKENS).unwrap().len(),
        151_552
    );
    assert!(f.get(names::TOKENIZER_SCORES).is_none());
    assert_eq!(
        f.get_str_array(names::TOKENIZER_MERGES).unwrap().len(),
        151_329 - 256
    );
    // the rope base and epsilon come from config.json, not from constants
    assert_eq!(f.get_f64(names::ROPE_FREQ_BASE).unwrap(), 5e6);
    assert_eq!(
        f.get_f64(names::LAYER_NORM_RMS_EPS).unwrap() as f32,
        1.5625e-7
    );
    assert_eq!(f.get_u64(names::CONTEXT_LENGTH).unwrap(), 131_072);
    // GLM-4's format is implied by the tokenizer: no key of ours (as llama.cpp's files)
    assert!(f.get(names::GLMTOOL_CHAT_FORMAT).is_none());
}

#[test]
fn f32_logits_match_transformers() {
    let Some(p) = gguf(GgmlType::F32) else { return };
    let model = Model::load(&p).unwrap();
    assert_eq!(model.tokenizer.chat_format(), ChatFormat::Glm4);
    let r = reference();
    let text = r["prompt_text"].as_str().unwrap();
    let prompt = ids(&r["prompt_ids"]);
    assert_eq!(completion_ids(&model.tokenizer, text).unwrap(), prompt);
    let pl = &r["prompt_logits"];
    let probe_ids = ids(&pl["probe_ids"]);
    let n_vocab = model.hparams.n_vocab;
    for batch in [512, 4] {
        let mut s = Session::new(
            &model,
            &SessionOptions {
                n_ctx: 64,
                n_batch: batch,
                n_threads: 1,
                cache_type: CacheType::F32,
                ..Default::default()
            },
        )
        .unwrap();
        let got = s.eval(&prompt, true).unwrap();
        let mut worst = 0f64;
        for (pos, want_row) in pl["probe"].as_array().unwrap().iter().enumerate() {
            let row = &got[pos * n_vocab..(pos + 1) * n_vocab];
            for (k, want) in want_row.as_array().unwrap().iter().enumerate() {
                let w = want.as_f64().unwrap();
                let g = row[probe_ids[k] as usize] as f64;
                worst = worst.max((g - w).abs());
            }
            let top5: Vec<u32> = ids(&pl["top5_ids"][pos]);
            assert_eq!(argmax(row), top5[0], "batch {batch}, position {pos}");
            let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let want_lse = pl["logsumexp"][pos].as_f64().unwrap();
            assert!(
                (lse - want_lse).abs() < 1e-4 * want_lse.abs(),
                "lse {lse} vs {want_lse}"
            );
        }
        eprintln!("GLM-4 f32 logits, batch {batch}: max abs error {worst:.3e}");
        // logits reach ~25; f32 reference vs f32 here
        assert!(worst < 5e-5, "max abs error {worst}");
    }
}

#[test]
fn perplexity_matches_transformers() {
    let Some(p) = gguf(GgmlType::F32) else { return };
    let model = Model::load(&p).unwrap();
    let r = &reference()["perplexity"];
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("heldout.txt")).unwrap();
    let tokens = model.tokenizer.encode(&text).unwrap();
    assert_eq!(
        tokens,
        ids(&reference()["heldout_ids"]),
        "tiktoken ids differ"
    );
    let n_ctx = r["ctx"].as_u64().unwrap() as usize;
    let mut s = session(&model, CacheType::F32, n_ctx);
    let res = perplexity(&mut s, &tokens, n_ctx, None, KlMode::None, |_, _| {}).unwrap();
    assert_eq!(res.n_chunks as u64, r["n_chunks"].as_u64().unwrap());
    assert_eq!(res.n_scored as u64, r["n_scored"].as_u64().unwrap());
    for (c, want) in res.chunks.iter().zip(r["ppl_running"].as_array().unwrap()) {
        let want = want.as_f64().unwrap();
        let rel = (c.ppl_running - want).abs() / want;
        // a perplexity of 1e9 is exp(21): 1e-5 relative is 1e-5 absolute in the mean NLL
        assert!(
            rel < 1e-5,
            "chunk {}: {} vs {want} (rel {rel:.2e})",
            c.index,
            c.ppl_running
        );
    }
    eprintln!(
        "GLM-4 perplexity {:.6e} vs reference {:.6e}",
        res.ppl,
        r["ppl"].as_f64().unwrap()
    );
}

#[test]
fn greedy_continuations_match_transformers() {
    for ty in [GgmlType::F32, GgmlType::F16] {
        let Some(p) = gguf(ty) else { return };
        let model = Model::load(&p).unwrap();
        let cache = if ty == GgmlType::F32 {
            CacheType::F32
        } else {
            CacheType::F16
        };
        for case in reference()["greedy"].as_array().unwrap() {
            let prompt = ids(&case["prompt_ids"]);
            if case["name"] == "chat_one_turn" {
                // the same prompt from the chat builder
                let text = model
                    .tokenizer
                    .decode(&prompt[4..prompt.len() - 1])
                    .unwrap();
                let built = build_chat_ids(&model.tokenizer, &[Message::user(text)]).unwrap();
                assert_eq!(built, prompt);
            }
            let want = ids(&case["new_ids"]);
            let margins: Vec<f64> =
                serde_json::from_value(case["top1_top2_margin"].clone()).unwrap();
            let mut s = session(&model, cache, 64);
            let mut logits = s.eval(&prompt, false).unwrap();
            let mut got = vec![];
            for _ in 0..want.len() {
                let t = argmax(&logits);
                got.push(t);
                logits = s.eval(&[t], false).unwrap();
            }
            let tie = if ty == GgmlType::F32 { 0.0 } else { 0.05 };
            let n = margins.iter().position(|&m| m < tie).unwrap_or(want.len());
            assert_eq!(&got[..n], &want[..n], "{ty} {}", case["name"]);
            if ty == GgmlType::F32 {
                assert_eq!(
                    model.tokenizer.decode(&got).unwrap(),
                    case["new_text"].as_str().unwrap()
                );
            }
        }
    }
}
