//! The converter on synthetic checkpoints (every output type, shards, dtypes) and on every bad
//! input the issue lists; each error must name the file/tensor and leave no output file.

use gguf::{names, GgmlType, GgufFile};
use glm_convert::{convert, requantize, ConvertOptions, RequantizeOptions, TypePolicy};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOKENIZER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-chatglm3/tokenizer.model"
);

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn sp_pieces() -> usize {
    glm_convert::spm::SpmModel::from_file(Path::new(TOKENIZER))
        .unwrap()
        .pieces
        .len()
}

fn config(vocab: usize) -> serde_json::Value {
    serde_json::json!({
        "_name_or_path": "test/tiny-glm",
        "model_type": "chatglm",
        "add_qkv_bias": true,
        "hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "kv_channels": 16,
        "multi_query_attention": true, "multi_query_group_num": 2, "ffn_hidden_size": 96,
        "layernorm_epsilon": 1e-5, "padded_vocab_size": vocab, "seq_length": 128, "rmsnorm": true,
        "rope_ratio": 2.0, "eos_token_id": 2, "pad_token_id": 0,
    })
}

/// name -> (shape, f32 values)
fn weights(vocab: usize) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = Rng(7);
    let mut w = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.f() * 0.5).collect();
        w.insert(name, (shape, v));
    };
    add(
        "transformer.embedding.word_embeddings.weight".into(),
        vec![vocab, 64],
    );
    for l in 0..2 {
        let p = format!("transformer.encoder.layers.{l}.");
        add(format!("{p}input_layernorm.weight"), vec![64]);
        add(
            format!("{p}self_attention.query_key_value.weight"),
            vec![128, 64],
        );
        add(format!("{p}self_attention.query_key_value.bias"), vec![128]);
        add(format!("{p}self_attention.dense.weight"), vec![64, 64]);
        add(format!("{p}post_attention_layernorm.weight"), vec![64]);
        add(format!("{p}mlp.dense_h_to_4h.weight"), vec![192, 64]);
        add(format!("{p}mlp.dense_4h_to_h.weight"), vec![64, 96]);
    }
    add(
        "transformer.encoder.final_layernorm.weight".into(),
        vec![64],
    );
    add("transformer.output_layer.weight".into(), vec![vocab, 64]);
    add("transformer.rotary_pos_emb.inv_freq".into(), vec![4]);
    w
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    }
}

/// Writes a checkpoint; `shards` > 1 writes model-0000i-of-0000n.safetensors plus the index.
fn make_checkpoint(
    dir: &Path,
    dtype: Dtype,
    shards: usize,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let vocab = (sp_pieces() + 9).div_ceil(64) * 64;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config(vocab).to_string()).unwrap();
    std::fs::copy(TOKENIZER, dir.join("tokenizer.model")).unwrap();
    let w = weights(vocab);
    let bytes: BTreeMap<&String, Vec<u8>> =
        w.iter().map(|(k, (_, v))| (k, encode(v, dtype))).collect();
    let names: Vec<&String> = w.keys().collect();
    let mut index = serde_json::Map::new();
    for s in 0..shards {
        let part: Vec<(&String, TensorView)> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, n)| {
                (
                    *n,
                    TensorView::new(dtype, w[*n].0.clone(), &bytes[*n]).unwrap(),
                )
            })
            .collect();
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, shards)
        };
        for (n, _) in &part {
            index.insert((*n).clone(), file.clone().into());
        }
        safetensors::serialize_to_file(part, &None, &dir.join(&file)).unwrap();
    }
    if shards > 1 {
        let idx = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": index});
        std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    }
    w
}

fn opts(policy: TypePolicy) -> ConvertOptions<'static> {
    ConvertOptions {
        family: None,
        policy,
        overwrite: false,
        cancel: None,
        progress: &|_| {},
    }
}

fn run(dir: &Path, out: &Path, ty: GgmlType) -> Result<glm_convert::Summary, String> {
    convert(dir, out, &opts(TypePolicy::new(ty))).map_err(|e| e.to_string())
}

fn dir_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_type_converts_with_llama_cpp_metadata_and_ggml_exact_data() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let w = make_checkpoint(&ck, Dtype::F32, 1);
    for ty in glm_convert::quant::WRITABLE {
        let out = tmp.path().join(format!("m-{ty}.gguf"));
        let s = run(&ck, &out, ty).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(s.n_tensors, 2 + 7 * 2 + 1);
        assert_eq!(f.get_str(names::GENERAL_ARCHITECTURE).unwrap(), "chatglm");
        assert_eq!(f.get_str(names::GENERAL_NAME).unwrap(), "tiny-glm");
        assert_eq!(
            f.get_u64(names::GENERAL_FILE_TYPE).unwrap() as u32,
            glm_convert::policy::file_type(ty)
        );
        assert_eq!(f.get_u64(names::GENERAL_QUANTIZATION_VERSION).unwrap(), 2);
        assert_eq!(f.get_u64(names::CONTEXT_LENGTH).unwrap(), 128);
        assert_eq!(f.get_u64(names::EMBEDDING_LENGTH).unwrap(), 64);
        assert_eq!(f.get_u64(names::FEED_FORWARD_LENGTH).unwrap(), 96);
        assert_eq!(f.get_u64(names::BLOCK_COUNT).unwrap(), 2);
        assert_eq!(f.get_u64(names::HEAD_COUNT).unwrap(), 4);
        assert_eq!(f.get_u64(names::HEAD_COUNT_KV).unwrap(), 2);
        assert_eq!(f.get_u64(names::ROPE_DIMENSION_COUNT).unwrap(), 8);
        assert_eq!(f.get_f64(names::ROPE_FREQ_BASE).unwrap(), 20000.0);
        assert!((f.get_f64(names::LAYER_NORM_RMS_EPS).unwrap() - 1e-5).abs() < 1e-10);
        assert_eq!(f.get_str(names::TOKENIZER_MODEL).unwrap(), "llama");
        assert_eq!(f.get_str(names::TOKENIZER_PRE).unwrap(), "chatglm-spm");
        assert_eq!(
            f.get(names::TOKENIZER_ADD_BOS).unwrap().as_bool(),
            Some(false)
        );
        assert_eq!(f.get_u64(names::TOKENIZER_EOS_ID).unwrap(), 2);
        assert_eq!(f.get_u64(names::TOKENIZER_PAD_ID).unwrap(), 0);
        let vocab = f.get_str_array(names::TOKENIZER_TOKENS).unwrap();
        assert_eq!(vocab.len(), w["transformer.output_layer.weight"].0[0]);
        assert_eq!(
            f.get_f32_array(names::TOKENIZER_SCORES).unwrap().len(),
            vocab.len()
        );
        assert_eq!(
            f.get_i32_array(names::TOKENIZER_TOKEN_TYPE).unwrap().len(),
            vocab.len()
        );
        assert!(f.tensor("rotary_pos_emb.inv_freq").is_none());
        for t in &f.tensors {
            let hf = w
                .iter()
                .find(|(k, _)| names::hf_to_gguf(k).as_deref() == Some(t.name.as_str()))
                .unwrap();
            let (shape, vals) = hf.1;
            assert_eq!(
                t.shape_torch(),
                shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
                "{}",
                t.name
            );
            let want_ty = TypePolicy::new(ty)
                .for_model(2, 4, 2)
                .tensor_type(&t.name, &t.dims);
            assert_eq!(t.ty, want_ty, "{}", t.name);
            if t.dims.len() == 1 {
                assert_eq!(t.ty, GgmlType::F32);
            }
            // the bytes equal what ggml's own quantizer makes of the same floats (the linked
            // b2757 for the classic types; for the others, which b2757 lacks or quantizes the
            // older way, our quantizer, held to llama.cpp 2026's bytes by quant_golden.rs)
            let ncols = shape[shape.len() - 1];
            let ggml = match t.ty {
                GgmlType::F32 => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
                GgmlType::F16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1 => {
                    glm_ggml::quant::quantize_chunk(t.ty.id(), vals, vals.len() / ncols, ncols)
                        .unwrap()
                }
                other => glm_convert::quant::quantize(other, vals, ncols, None).unwrap(),
            };
            assert!(
                f.tensor_data(t) == &ggml[..],
                "{} ({}) differs from ggml",
                t.name,
                t.ty
            );
        }
        if matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_1) {
            assert_eq!(f.tensor(names::OUTPUT).unwrap().ty, GgmlType::Q8_0);
            assert_eq!(f.tensor(names::TOKEN_EMBD).unwrap().ty, ty);
        }
    }
}

#[test]
fn shards_and_dtypes_give_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let three = tmp.path().join("three");
    make_checkpoint(&one, Dtype::F16, 1);
    make_checkpoint(&three, Dtype::F16, 3);
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    run(&one, &a, GgmlType::Q4_0).unwrap();
    run(&three, &b, GgmlType::Q4_0).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "sharded checkpoint converts differently"
    );
    // bf16 input converts too
    let bf = tmp.path().join("bf");
    make_checkpoint(&bf, Dtype::BF16, 2);
    let c = tmp.path().join("c.gguf");
    run(&bf, &c, GgmlType::F16).unwrap();
    // f16 source -> f16 GGUF -> quantize q4_0 == f16 source -> q4_0 directly (f16 -> f32 is exact)
    let f16_gguf = tmp.path().join("f16.gguf");
    run(&one, &f16_gguf, GgmlType::F16).unwrap();
    let re = tmp.path().join("re.gguf");
    let ro = RequantizeOptions {
        policy: TypePolicy::new(GgmlType::Q4_0),
        allow_requantize: false,
        overwrite: false,
        cancel: None,
        progress: &|_| {},
    };
    requantize(&f16_gguf, &re, &ro).unwrap();
    assert!(
        std::fs::read(&re).unwrap() == std::fs::read(&a).unwrap(),
        "requantized file differs from a direct conversion"
    );
    // a quantized input needs --allow-requantize
    let again = tmp.path().join("again.gguf");
    let e = requantize(
        &a,
        &again,
        &RequantizeOptions {
            policy: TypePolicy::new(GgmlType::Q8_0),
            ..ro
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("already quantized") && e.contains("--allow-requantize"),
        "{e}"
    );
    assert!(!again.exists());
    requantize(
        &a,
        &again,
        &RequantizeOptions {
            policy: TypePolicy::new(GgmlType::Q8_0),
            allow_requantize: true,
            ..ro
        },
    )
    .unwrap();
    let f = GgufFile::open(&again).unwrap();
    assert_eq!(
        f.tensor("blk.0.attn_qkv.weight").unwrap().ty,
        GgmlType::Q8_0
    );
    assert_eq!(f.get_u64(names::GENERAL_FILE_TYPE).unwrap(), 7);
}

/// Converts a broken checkpoint: the error must contain every `needles`, and no output appears.
fn expect_error(dir: &Path, needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.gguf");
    let e = run(dir, &out, GgmlType::Q8_0).expect_err("a broken checkpoint converted");
    for n in needles {
        assert!(e.contains(n), "error {e:?} does not mention {n:?}");
    }
    assert!(
        dir_files(out_dir.path()).is_empty(),
        "output left behind: {:?}",
        dir_files(out_dir.path())
    );
}

fn rewrite_single(
    dir: &Path,
    f: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Dtype,
) {
    let vocab = (sp_pieces() + 9).div_ceil(64) * 64;
    let mut w = weights(vocab);
    let dtype = f(&mut w);
    let bytes: BTreeMap<&String, Vec<u8>> = w
        .iter()
        .map(|(k, (_, v))| {
            (
                k,
                match dtype {
                    Dtype::I8 => v.iter().map(|x| (*x * 100.0) as i8 as u8).collect(),
                    d => encode(v, d),
                },
            )
        })
        .collect();
    let part: Vec<(&String, TensorView)> = w
        .keys()
        .map(|n| {
            (
                n,
                TensorView::new(dtype, w[n].0.clone(), &bytes[n]).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(part, &None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    make_checkpoint(&base, Dtype::F16, 1);
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        make_checkpoint(&d, Dtype::F16, 1);
        d
    };

    // missing tensor
    let d = fresh("missing");
    rewrite_single(&d, |w| {
        w.remove("transformer.encoder.layers.1.mlp.dense_4h_to_h.weight");
        Dtype::F16
    });
    expect_error(
        &d,
        &[
            "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight is missing",
            "expected shape [64, 96]",
        ],
    );

    // wrong shape
    let d = fresh("shape");
    rewrite_single(&d, |w| {
        w.insert(
            "transformer.encoder.layers.0.self_attention.dense.weight".into(),
            (vec![64, 32], vec![0.0; 2048]),
        );
        Dtype::F16
    });
    expect_error(
        &d,
        &[
            "self_attention.dense.weight",
            "model.safetensors",
            "shape [64, 32], expected [64, 64]",
        ],
    );

    // unknown dtype
    let d = fresh("dtype");
    rewrite_single(&d, |_| Dtype::I8);
    expect_error(&d, &["dtype I8", "expected F32, F16 or BF16"]);

    // truncated shard
    let d = fresh("truncated");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    expect_error(&d, &["model.safetensors", "truncated"]);

    // bad tokenizer
    let d = fresh("tok");
    std::fs::write(
        d.join("tokenizer.model"),
        b"\x0a\xff\xff\xff\xff\x0fgarbage",
    )
    .unwrap();
    expect_error(&d, &["tokenizer.model"]);

    // missing tokenizer
    let d = fresh("notok");
    std::fs::remove_file(d.join("tokenizer.model")).unwrap();
    expect_error(&d, &["tokenizer.model"]);

    // PyTorch .bin only
    let d = tmp.path().join("bin");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(base.join("config.json"), d.join("config.json")).unwrap();
    std::fs::copy(base.join("tokenizer.model"), d.join("tokenizer.model")).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"not really").unwrap();
    expect_error(&d, &["PyTorch .bin", "safetensors"]);

    // config problems: every missing key at once, wrong model type
    let d = fresh("cfg");
    let mut c = config(64);
    c.as_object_mut().unwrap().remove("hidden_size");
    c.as_object_mut().unwrap().remove("num_layers");
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    expect_error(&d, &["config.json", "hidden_size", "num_layers"]);
    c["model_type"] = "llama".into();
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    expect_error(&d, &["config.json", "model_type is \"llama\""]);
    std::fs::write(d.join("config.json"), "{not json").unwrap();
    expect_error(&d, &["config.json", "invalid JSON"]);

    // vocabulary larger than padded_vocab_size
    let d = fresh("vocab");
    let mut c = config(64);
    c["padded_vocab_size"] = 64.into();
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    expect_error(&d, &["padded_vocab_size"]);

    // an index pointing at a missing shard
    let d = tmp.path().join("index");
    make_checkpoint(&d, Dtype::F16, 2);
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    expect_error(&d, &["model-00002-of-00002.safetensors"]);

    // existing output without --force; with it, replaced
    let out = tmp.path().join("exists.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let e = run(&base, &out, GgmlType::F16).unwrap_err();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    convert(
        &base,
        &out,
        &ConvertOptions {
            overwrite: true,
            ..opts(TypePolicy::new(GgmlType::F16))
        },
    )
    .unwrap();
    assert!(GgufFile::open(&out).is_ok());

    // cancellation (Ctrl-C) leaves nothing
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let out = tmp.path().join("cancelled.gguf");
    let e = convert(
        &base,
        &out,
        &ConvertOptions {
            cancel: Some(&cancel),
            ..opts(TypePolicy::new(GgmlType::Q4_0))
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "interrupted");
    assert!(!out.exists());
    assert!(dir_files(tmp.path())
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp")));
}

/// A shard truncated (or rewritten) while the converter reads it: the progress callback, which
/// runs after each tensor is written, shrinks the shard that holds the tensors still to come,
/// as a download still running or another program rewriting the file would.
#[test]
fn a_shard_truncated_during_conversion_is_a_clean_error_and_leaves_nothing() {
    for (how, shrink) in [("shorter", true), ("rewritten", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let ck = tmp.path().join("ck");
        make_checkpoint(&ck, Dtype::F32, 2);
        let shard = ck.join("model-00002-of-00002.safetensors");
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("out.gguf");
        let done = std::cell::Cell::new(false);
        let on_progress = |p: glm_convert::Progress| {
            if matches!(p, glm_convert::Progress::Tensor { .. }) && !done.replace(true) {
                let len = std::fs::metadata(&shard).unwrap().len();
                if shrink {
                    let f = std::fs::File::options().write(true).open(&shard).unwrap();
                    f.set_len(len / 3).unwrap();
                } else {
                    // same size, new modification time: the bytes are not the ones checked
                    let f = std::fs::File::options().write(true).open(&shard).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    f.set_modified(
                        std::time::SystemTime::now() + std::time::Duration::from_secs(5),
                    )
                    .unwrap();
                }
            }
        };
        let e = convert(
            &ck,
            &out,
            &ConvertOptions {
                progress: &on_progress,
                ..opts(TypePolicy::new(GgmlType::Q8_0))
            },
        )
        .expect_err(how)
        .to_string();
        assert!(done.get(), "{how}: the callback ran");
        assert!(
            e.contains("changed during conversion") && e.contains("model-00002-of-00002"),
            "{how}: {e}"
        );
        assert!(
            dir_files(out_dir.path()).is_empty(),
            "{how}: output left behind: {:?}",
            dir_files(out_dir.path())
        );
    }
}
