//! The offload planner's compute-buffer estimate (`plan::compute_bytes`) against what ggml's
//! allocator really takes, and the session's up-front reservation against what running the
//! whole context takes, on a synthetic model wide enough for the activations to dominate
//! (512-dim, 8 heads, 2 KV groups, 1376 FFN), over several contexts, batches and logit rows.

use glm_convert::{convert, ConvertOptions, TypePolicy};
use glm_runtime::plan::{compute_bytes, FlashAttn};
use glm_runtime::{CacheType, Model, PlanShape, Session, SessionOptions};
use safetensors::{tensor::TensorView, Dtype};
use std::path::Path;

const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3/tokenizer.model"
);
const E: usize = 512;
const HEADS: usize = 8;
const GROUPS: usize = 2;
const FF: usize = 1376;
const VOCAB: usize = 3072;
const CTX: usize = 1024;

fn checkpoint(dir: &Path) {
    let d = E / HEADS;
    let qkv = (HEADS + 2 * GROUPS) * d;
    let config = serde_json::json!({
        "model_type": "chatglm", "add_qkv_bias": true, "hidden_size": E, "num_layers": 2,
        "num_attention_heads": HEADS, "kv_channels": d, "multi_query_attention": true,
        "multi_query_group_num": GROUPS, "ffn_hidden_size": FF, "layernorm_epsilon": 1e-5,
        "padded_vocab_size": VOCAB, "seq_length": CTX, "rmsnorm": true, "eos_token_id": 2,
        "pad_token_id": 0,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(TOKENIZER, dir.join("tokenizer.model")).unwrap();
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "transformer.embedding.word_embeddings.weight".into(),
            vec![VOCAB, E],
        ),
        ("transformer.encoder.final_layernorm.weight".into(), vec![E]),
        ("transformer.output_layer.weight".into(), vec![VOCAB, E]),
    ];
    for l in 0..2 {
        let p = format!("transformer.encoder.layers.{l}.");
        shapes.push((format!("{p}input_layernorm.weight"), vec![E]));
        shapes.push((
            format!("{p}self_attention.query_key_value.weight"),
            vec![qkv, E],
        ));
        shapes.push((format!("{p}self_attention.query_key_value.bias"), vec![qkv]));
        shapes.push((format!("{p}self_attention.dense.weight"), vec![E, E]));
        shapes.push((format!("{p}post_attention_layernorm.weight"), vec![E]));
        shapes.push((format!("{p}mlp.dense_h_to_4h.weight"), vec![2 * FF, E]));
        shapes.push((format!("{p}mlp.dense_4h_to_h.weight"), vec![E, FF]));
    }
    let mut seed = 1u32;
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, s)| {
            (0..s.iter().product::<usize>())
                .flat_map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    let x = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    half::f16::from_f32(x * 0.1).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(&str, TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((n, s), b)| {
            (
                n.as_str(),
                TensorView::new(Dtype::F16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn compute_estimate_covers_the_measured_buffer() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path());
    let gguf = dir.path().join("m.gguf");
    let opts = ConvertOptions {
        family: None,
        policy: TypePolicy::new(gguf::GgmlType::F16),
        overwrite: false,
        cancel: None,
        progress: &|_| {},
    };
    convert(dir.path(), &gguf, &opts).unwrap();
    let model = Model::load(&gguf).unwrap();
    let tokens: Vec<u32> = (0..CTX as u32).map(|i| 3 + i * 7 % 2900).collect();
    for (n_ctx, n_batch, all_logits, fa) in [
        (CTX, 512, false, FlashAttn::Off),
        (CTX, 256, true, FlashAttn::Off),
        (512, 64, false, FlashAttn::Off),
        (CTX, 32, true, FlashAttn::Off),
        (256, 256, true, FlashAttn::Off),
        (CTX, 512, false, FlashAttn::On),
        (CTX, 256, true, FlashAttn::On),
        (512, 64, false, FlashAttn::On),
        (256, 256, true, FlashAttn::On),
    ] {
        let mut s = Session::new(
            &model,
            &SessionOptions {
                n_ctx,
                n_batch,
                n_threads: 2,
                cache_type: CacheType::F16,
                flash_attn: fa,
                n_seq: 1,
            },
        )
        .unwrap();
        // What a GPU session reserves up front must be what the largest graph takes.
        s.reserve_compute(all_logits).unwrap();
        let reserved = s.compute_bytes() as u64;
        // The whole context: the last batch attends over all of it (the largest graph).
        s.eval(&tokens[..n_ctx], all_logits).unwrap();
        let measured = s.compute_bytes() as u64;
        assert_eq!(measured, reserved, "the buffers grew past the reservation");
        let shape = PlanShape {
            n_ctx,
            n_batch,
            cache_type: CacheType::F16,
            logits_rows: if all_logits { n_batch } else { 1 },
            flash_attn: fa,
            n_seq: 1,
        };
        let est = compute_bytes(&model.hparams, &shape, true, fa == FlashAttn::On);
        eprintln!(
            "ctx {n_ctx} batch {n_batch} all_logits {all_logits} {fa:?}: measured {:.1} MiB, estimate {:.1} MiB",
            measured as f64 / 1048576.0,
            est as f64 / 1048576.0
        );
        assert!(
            measured <= est,
            "estimate {est} below the measured {measured}"
        );
        assert!(
            est <= measured * 3 / 2 + (8 << 20),
            "estimate {est} far above the measured {measured}"
        );
    }
}
