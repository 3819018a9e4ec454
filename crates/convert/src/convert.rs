//! `convert`: HF checkpoint directory -> GGUF file, streaming tensor by tensor from the
//! memory-mapped shards, with every input problem reported before any output is written.

use crate::checkpoint::{Checkpoint, SrcDtype, SrcTensor};
use crate::config::GlmConfig;
use crate::family::Family;
use crate::layout;
use crate::policy::TypePolicy;
use crate::quant::imatrix::{ImatrixSpec, ImatrixUse};
use crate::spm::{spm_vocab, GgufVocab, SpmModel};
use crate::tiktoken::{glm4_vocab, BpeVocab, TiktokenModel};
use crate::{quant, ConvertError, Progress, Summary};
use gguf::{names, AtomicFile, GgmlType, GgufWriter, TensorDecl, Value};
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};
use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How to convert.
pub struct ConvertOptions<'a> {
    pub policy: TypePolicy,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Set (e.g. by a Ctrl-C handler) to abandon the conversion; the output is then not created.
    pub cancel: Option<&'a AtomicBool>,
    pub progress: &'a dyn Fn(Progress),
    /// The model family; `None` detects it from the checkpoint ([`Family::detect`]).
    pub family: Option<Family>,
}

/// A model's vocabulary in GGUF form.
pub enum Vocab {
    /// ChatGLM2/3: SentencePiece pieces, scores and types.
    Spm(GgufVocab),
    /// GLM-4: byte-level BPE tokens, types and merges.
    Bpe(BpeVocab),
}

impl Vocab {
    pub fn tokens(&self) -> &[String] {
        match self {
            Vocab::Spm(v) => &v.tokens,
            Vocab::Bpe(v) => &v.tokens,
        }
    }
}

/// The GGUF metadata of a model, in llama.cpp's order. ChatGLM3's is byte for byte what
/// llama.cpp writes; GLM-4's has llama.cpp's keys and values (tokenizer `gpt2`/`chatglm-bpe`,
/// merges, eos/eot/unk/pad ids). [`names::GLMTOOL_CHAT_FORMAT`] is added only when the
/// vocabulary and name do not already imply the family's prompt format.
pub fn model_metadata(
    cfg: &GlmConfig,
    family: Family,
    vocab: &Vocab,
    policy: &TypePolicy,
) -> Vec<(String, Value)> {
    let mut md = vec![
        (
            names::GENERAL_ARCHITECTURE.to_string(),
            Value::String(names::ARCH.into()),
        ),
        (names::GENERAL_NAME.into(), Value::String(cfg.name.clone())),
    ];
    md.extend(cfg.hparams_metadata());
    md.extend([
        (
            names::GENERAL_FILE_TYPE.into(),
            Value::U32(policy.file_type()),
        ),
        (
            names::GENERAL_QUANTIZATION_VERSION.into(),
            Value::U32(names::QUANTIZATION_VERSION),
        ),
    ]);
    let tokenizer_model = match vocab {
        Vocab::Spm(v) => {
            md.extend([
                (
                    names::TOKENIZER_MODEL.into(),
                    Value::String(names::TOKENIZER_MODEL_LLAMA.into()),
                ),
                (
                    names::TOKENIZER_PRE.into(),
                    Value::String(names::TOKENIZER_PRE_CHATGLM.into()),
                ),
                (
                    names::TOKENIZER_TOKENS.into(),
                    Value::strings(v.tokens.clone()),
                ),
                (names::TOKENIZER_SCORES.into(), Value::f32s(&v.scores)),
                (
                    names::TOKENIZER_TOKEN_TYPE.into(),
                    Value::i32s(&v.token_types),
                ),
                (names::TOKENIZER_ADD_BOS.into(), Value::Bool(false)),
                (names::TOKENIZER_EOS_ID.into(), Value::U32(cfg.eos_token_id)),
                (names::TOKENIZER_PAD_ID.into(), Value::U32(cfg.pad_token_id)),
            ]);
            if !v.add_space_prefix {
                md.push((names::TOKENIZER_ADD_SPACE_PREFIX.into(), Value::Bool(false)));
            }
            names::TOKENIZER_MODEL_LLAMA
        }
        Vocab::Bpe(v) => {
            let id_of = |name: &str| {
                v.tokens
                    .iter()
                    .position(|t| t == name)
                    .map_or(cfg.eos_token_id, |i| i as u32)
            };
            let eos = id_of("<|endoftext|>");
            md.extend([
                (
                    names::TOKENIZER_MODEL.into(),
                    Value::String(names::TOKENIZER_MODEL_GPT2.into()),
                ),
                (
                    names::TOKENIZER_PRE.into(),
                    Value::String(names::TOKENIZER_PRE_CHATGLM_BPE.into()),
                ),
                (
                    names::TOKENIZER_TOKENS.into(),
                    Value::strings(v.tokens.clone()),
                ),
                (
                    names::TOKENIZER_TOKEN_TYPE.into(),
                    Value::i32s(&v.token_types),
                ),
                (
                    names::TOKENIZER_MERGES.into(),
                    Value::strings(v.merges.clone()),
                ),
                (names::TOKENIZER_ADD_BOS.into(), Value::Bool(false)),
                (names::TOKENIZER_EOS_ID.into(), Value::U32(eos)),
                (names::TOKENIZER_PAD_ID.into(), Value::U32(cfg.pad_token_id)),
                (
                    names::TOKENIZER_EOT_ID.into(),
                    Value::U32(id_of("<|user|>")),
                ),
                (names::TOKENIZER_UNK_ID.into(), Value::U32(eos)),
            ]);
            names::TOKENIZER_MODEL_GPT2
        }
    };
    if let Some(t) = &cfg.chat_template {
        md.push((
            names::TOKENIZER_CHAT_TEMPLATE.into(),
            Value::String(t.clone()),
        ));
    }
    let has_roles = vocab.tokens().iter().any(|t| t == "<|user|>");
    let format = family.chat_format();
    if names::ChatFormat::implied(tokenizer_model, has_roles, &cfg.name) != format {
        md.push((
            names::GLMTOOL_CHAT_FORMAT.into(),
            Value::String(format.as_str().into()),
        ));
    }
    md
}

/// A checkpoint read and checked, ready to be written: nothing in it can fail the conversion
/// except I/O.
pub struct Prepared {
    pub cfg: GlmConfig,
    pub family: Family,
    pub vocab: Vocab,
    pub ckpt: Checkpoint,
    /// (GGUF name, HF name, PyTorch shape) of every tensor, in GGUF order.
    pub expected: Vec<(String, String, Vec<u64>)>,
}

/// What an HF checkpoint folder must hold, for error messages.
pub const CHECKPOINT_FILES: &str = "config.json, tokenizer.model and model.safetensors (or \
     model-*.safetensors shards with model.safetensors.index.json)";

/// Reads and validates everything `convert` needs from `dir`, writing nothing.
pub fn prepare(dir: &Path) -> Result<Prepared, ConvertError> {
    prepare_as(dir, None)
}

/// [`prepare`] for the given family (`None`: detected).
pub fn prepare_as(dir: &Path, family: Option<Family>) -> Result<Prepared, ConvertError> {
    let problem = |what: String| ConvertError::Checkpoint {
        path: dir.to_path_buf(),
        what,
    };
    if !dir.exists() {
        return Err(problem("does not exist".into()));
    }
    if !dir.is_dir() {
        return Err(problem(format!(
            "is a file, not a Hugging Face checkpoint folder (one holding {CHECKPOINT_FILES})"
        )));
    }
    if !dir.join("config.json").exists() {
        return Err(problem(format!(
            "has no config.json: a Hugging Face checkpoint folder holds {CHECKPOINT_FILES}"
        )));
    }
    let cfg = GlmConfig::from_file(&dir.join("config.json"))?;
    let ckpt = Checkpoint::open(dir)?;

    // Validate everything before writing anything.
    let expected = cfg.expected_tensors();
    let mut problems = Vec::new();
    for (_, hf, shape) in &expected {
        match ckpt.get(hf) {
            None => problems.push(format!("tensor {hf} is missing (expected shape {shape:?})")),
            Some(t) => {
                if &t.shape != shape {
                    problems.push(format!(
                        "tensor {hf} in {} has shape {:?}, expected {shape:?}",
                        file_name(t.shard),
                        t.shape
                    ));
                }
                if let Err(d) = &t.dtype {
                    problems.push(format!(
                        "tensor {hf} in {} has dtype {d}, expected F32, F16 or BF16",
                        file_name(t.shard)
                    ));
                }
            }
        }
    }
    let mut skipped = Vec::new();
    for name in ckpt.names() {
        if !expected.iter().any(|(_, hf, _)| hf == name) {
            if names::HF_IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            skipped.push(name.to_string());
        }
    }
    if !skipped.is_empty() {
        problems.push(format!(
            "unexpected tensors for a {}-layer ChatGLM model: {}",
            cfg.n_layer,
            skipped.join(", ")
        ));
    }
    // The tokenizer is read after the cheap checks (a fuzzer runs this) but its errors come
    // first: a vocabulary that disagrees with config.json also explains wrong tensor shapes.
    let family = match family {
        Some(f) => f,
        None => Family::detect(dir, &cfg.json),
    };
    let mut cfg = cfg;
    cfg.chat_template = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| {
            j.get("chat_template")
                .and_then(|t| t.as_str())
                .map(String::from)
        });
    let tok_path = dir.join("tokenizer.model");
    let vocab = if family.uses_tiktoken() {
        let m = TiktokenModel::from_file(&tok_path)?;
        Vocab::Bpe(glm4_vocab(&m, cfg.vocab_size as usize)?)
    } else {
        let spm = SpmModel::from_file(&tok_path)?;
        spm.check_chatglm3_normalizer()?;
        Vocab::Spm(spm_vocab(
            &spm,
            cfg.vocab_size as usize,
            family.spm_specials(),
        )?)
    };
    if !problems.is_empty() {
        return Err(problem(problems.join("; ")));
    }
    Ok(Prepared {
        cfg,
        family,
        vocab,
        ckpt,
        expected,
    })
}

/// Converts the checkpoint in `dir` to `out`.
pub fn convert(dir: &Path, out: &Path, opts: &ConvertOptions) -> Result<Summary, ConvertError> {
    convert_with(dir, out, opts, None)
}

/// [`convert`] with an importance matrix, used as `quantize --imatrix` uses it (same checks,
/// same weights, same `quantize.imatrix.*` keys, appended to the metadata).
pub fn convert_with(
    dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    imatrix: Option<&ImatrixSpec>,
) -> Result<Summary, ConvertError> {
    let t0 = Instant::now();
    let Prepared {
        cfg,
        family,
        vocab,
        ckpt,
        expected,
    } = prepare_as(dir, opts.family)?;

    let im = match imatrix {
        Some(spec) => spec.prepare(dir, |name| {
            let (_, _, shape) = expected.iter().find(|(n, _, _)| n == name)?;
            // PyTorch order: the row length is last, experts (if any) first
            let cols = *shape.last()?;
            Some(if shape.len() > 2 {
                cols * shape[0]
            } else {
                cols
            })
        })?,
        None => ImatrixUse::default(),
    };
    let mut policy = opts
        .policy
        .for_model(cfg.n_layer, cfg.n_head, cfg.n_head_kv);
    if imatrix.is_some() {
        policy.has_imatrix = im.is_used();
    }
    for (name, _, shape) in &expected {
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        let ty = policy.tensor_type(name, &dims);
        if !policy.requires_imatrix(name, ty) {
            continue;
        }
        let what = if !policy.has_imatrix {
            format!(
                "{} needs an importance matrix: tensor {name} would be {ty} without one \
                 (llama-quantize refuses it too); pass --imatrix FILE",
                policy.ftype
            )
        } else if im.get(name).is_none() {
            format!(
                "the importance matrix has no entry for tensor {name}, which {} makes {ty}: \
                 missing importance matrix in a very low-bit quantization (llama-quantize \
                 refuses it too)",
                policy.ftype
            )
        } else {
            continue;
        };
        return Err(ConvertError::Input {
            path: dir.to_path_buf(),
            what,
        });
    }
    let decls: Vec<TensorDecl> = expected
        .iter()
        .map(|(name, _, shape)| {
            let dims: Vec<u64> = shape.iter().rev().copied().collect();
            TensorDecl {
                ty: policy.tensor_type(name, &dims),
                name: name.clone(),
                dims,
            }
        })
        .collect();
    let mut metadata = model_metadata(&cfg, family, &vocab, &policy);
    // Types convert_hf_to_gguf.py does not write come from llama-quantize: its layout (layout.rs)
    let order: Vec<usize> = if layout::written_by_converter(policy.ftype) {
        metadata.extend(im.metadata.iter().cloned());
        (0..decls.len()).collect()
    } else {
        metadata = layout::quantized_metadata(metadata, policy.file_type(), &im.metadata);
        layout::quantized_tensor_order(decls.iter().map(|d| d.name.as_str()))
    };
    let expected: Vec<_> = order.iter().map(|&i| expected[i].clone()).collect();
    let decls: Vec<TensorDecl> = order.iter().map(|&i| decls[i].clone()).collect();

    // every file read is an input the output must not replace
    let side_files = [
        "config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    ]
    .map(|f| dir.join(f));
    let inputs: Vec<&Path> = ckpt
        .shard_paths()
        .chain(side_files.iter().map(|p| p.as_path()))
        .collect();
    let mut file = AtomicFile::create_from(out, opts.overwrite, &inputs)?;
    let mut w = GgufWriter::new(file.writer(), &metadata, decls.clone())?;
    (opts.progress)(Progress::Start {
        n_tensors: decls.len(),
        total_bytes: ckpt.total_bytes(),
    });
    let mut n_params = 0u64;
    let mut qbuf = Vec::new();
    for ((name, hf, _), decl) in expected.iter().zip(&decls) {
        let src = ckpt.get(hf).expect("validated above");
        let dtype = src.dtype.clone().expect("validated above");
        let ncols = decl.dims[0] as usize;
        w.start_tensor(name)?;
        let weights = im.get(name);
        write_converted(
            &mut w,
            &src,
            dtype,
            decl.ty,
            ncols,
            weights,
            opts.cancel,
            &mut qbuf,
        )
        .map_err(|e| e.in_tensor(name))?;
        w.end_tensor()?;
        n_params += decl.dims.iter().product::<u64>();
        (opts.progress)(Progress::Tensor {
            name: name.clone(),
            ty: decl.ty,
            bytes_in: src.len,
        });
    }
    w.finish()?;
    // a shard rewritten in place (same size) while it was read is caught here
    ckpt.check_unchanged()?;
    let bytes_written = file.commit()?;
    Ok(Summary {
        n_tensors: decls.len(),
        n_params,
        bytes_written,
        seconds: t0.elapsed().as_secs_f64(),
        family: Some(family),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Floats converted per chunk: bounds memory to a few tens of MB whatever the tensor size.
const CHUNK_ELEMS: usize = 1 << 22;

/// Converts `src` (rows of `ncols` elements of `dtype`) to `ty`, weighted by `imatrix` (one
/// weight per column) if given, and streams it into the writer, reading it a chunk at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_converted<W: std::io::Write>(
    w: &mut GgufWriter<W>,
    src: &SrcTensor,
    dtype: SrcDtype,
    ty: GgmlType,
    ncols: usize,
    imatrix: Option<&[f32]>,
    cancel: Option<&AtomicBool>,
    qbuf: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    // Same type in and out: copy the bytes.
    if (dtype == SrcDtype::F32 && ty == GgmlType::F32)
        || (dtype == SrcDtype::F16 && ty == GgmlType::F16)
    {
        let mut buf = Vec::new();
        for (pos, n) in chunks(src.len, CHUNK_ELEMS as u64 * 4) {
            check_cancel(cancel)?;
            buf.resize(n, 0);
            src.read_at(pos, &mut buf)?;
            w.write_data(&buf)?;
        }
        return Ok(());
    }
    // Decode and quantize in parallel, a few hundred KB of input per task, in output order.
    let es = dtype.size();
    let row_out = ty
        .row_bytes(ncols as u64)
        .expect("policy picks whole-block types") as usize;
    let rows_per_chunk = (CHUNK_ELEMS / ncols).max(1);
    let rows_per_task = ((1usize << 16) / ncols).max(1);
    let mut chunk = Vec::new();
    for (pos, n) in chunks(src.len, (rows_per_chunk * ncols * es) as u64) {
        check_cancel(cancel)?;
        chunk.resize(n, 0);
        src.read_at(pos, &mut chunk)?;
        let chunk = chunk.as_slice();
        let rows = chunk.len() / (ncols * es);
        qbuf.clear();
        qbuf.resize(rows * row_out, 0);
        qbuf.par_chunks_mut(rows_per_task * row_out)
            .zip(chunk.par_chunks(rows_per_task * ncols * es))
            .try_for_each_init(
                || (Vec::new(), Vec::new()),
                |(bits, floats), (out, inp)| {
                    to_f32(inp, dtype, bits, floats);
                    quant::quantize_rows_into_weighted(ty, floats, ncols, imatrix, out)
                },
            )?;
        w.write_data(qbuf)?;
    }
    Ok(())
}

/// (start, length) of the pieces of `len` bytes cut every `step`.
fn chunks(len: u64, step: u64) -> impl Iterator<Item = (u64, usize)> {
    (0..len)
        .step_by(step as usize)
        .map(move |pos| (pos, (len - pos).min(step) as usize))
}

pub(crate) fn check_cancel(cancel: Option<&AtomicBool>) -> Result<(), ConvertError> {
    match cancel {
        Some(c) if c.load(Ordering::Relaxed) => Err(ConvertError::Interrupted),
        _ => Ok(()),
    }
}

/// Decodes little-endian f32/f16/bf16 bytes into `out` (`bits` is scratch space). The f16 path
/// goes through `half`'s slice conversion, which uses the CPU's F16C instructions when present.
pub(crate) fn to_f32(bytes: &[u8], dtype: SrcDtype, bits: &mut Vec<u16>, out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        SrcDtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        SrcDtype::F16 | SrcDtype::BF16 => {
            bits.clear();
            bits.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]])),
            );
            out.resize(bits.len(), 0.0);
            if dtype == SrcDtype::F16 {
                bits.reinterpret_cast::<f16>().convert_to_f32_slice(out);
            } else {
                bits.reinterpret_cast::<bf16>().convert_to_f32_slice(out);
            }
        }
    }
}
