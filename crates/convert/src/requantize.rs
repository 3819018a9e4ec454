//! `quantize`: GGUF -> GGUF with other tensor types, keeping all metadata: only
//! `general.file_type` and `general.quantization_version` change, and with an importance matrix
//! llama-quantize's `quantize.imatrix.*` keys are added. Keys and tensors are laid out as
//! llama-quantize lays them out (layout.rs), so the whole file is byte-identical to its output.
//! Works on files from our converter and from llama.cpp's.

use crate::layout;
use crate::policy::TypePolicy;
use crate::quant::imatrix::{ImatrixSpec, ImatrixUse};
use crate::{quant, ConvertError, Progress, Summary};
use gguf::{names, AtomicFile, GgmlType, GgufFile, GgufWriter, TensorDecl};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub struct RequantizeOptions<'a> {
    pub policy: TypePolicy,
    /// Allow quantized inputs (quality loss: quantization errors compound).
    pub allow_requantize: bool,
    pub overwrite: bool,
    pub cancel: Option<&'a AtomicBool>,
    pub progress: &'a dyn Fn(Progress),
}

/// The input, the policy and imatrix as they apply to it, and each tensor's output type (input
/// order): everything checked, nothing written.
struct Prepared {
    src: GgufFile,
    policy: TypePolicy,
    im: ImatrixUse,
    decls: Vec<TensorDecl>,
}

fn prepare(
    input: &Path,
    opts: &RequantizeOptions,
    imatrix: Option<&ImatrixSpec>,
) -> Result<Prepared, ConvertError> {
    let src = GgufFile::open(input)?;
    let bad = |what: String| ConvertError::Input {
        path: input.to_path_buf(),
        what,
    };

    let im = match imatrix {
        Some(spec) => spec.prepare(input, |name| {
            src.tensor(name)
                .map(|t| t.dims[0] * t.dims.get(2).copied().unwrap_or(1))
        })?,
        None => ImatrixUse::default(),
    };
    let md_u64 = |key: &str| src.get_u64(key).ok();
    let mut policy = opts.policy.for_model(
        md_u64(names::BLOCK_COUNT).unwrap_or(1),
        md_u64(names::HEAD_COUNT).unwrap_or(1),
        md_u64(names::HEAD_COUNT_KV).unwrap_or(1),
    );
    if imatrix.is_some() {
        policy.has_imatrix = im.is_used();
    }

    let mut decls = Vec::with_capacity(src.tensors.len());
    let mut problems = Vec::new();
    // already-quantized tensors: counted by type, reported in one line
    let mut quantized: Vec<(GgmlType, usize)> = Vec::new();
    for t in &src.tensors {
        // what llama-quantize does not quantize keeps its type
        let ty = if crate::policy::allows_quantization(&t.name, &t.dims) {
            policy.tensor_type(&t.name, &t.dims)
        } else {
            t.ty
        };
        if policy.requires_imatrix(&t.name, ty) {
            if !policy.has_imatrix {
                problems.push(format!(
                    "{} needs an importance matrix: tensor {} would be {ty} without one \
                     (llama-quantize refuses it too); pass --imatrix FILE",
                    policy.ftype, t.name
                ));
            } else if ty != t.ty && im.get(&t.name).is_none() {
                problems.push(format!(
                    "the importance matrix has no entry for tensor {}, which {} makes {ty}: \
                     missing importance matrix in a very low-bit quantization (llama-quantize \
                     refuses it too)",
                    t.name, policy.ftype
                ));
            }
        }
        if ty != t.ty {
            if !quant::can_dequantize(t.ty) {
                problems.push(format!(
                    "tensor {} is {}; converting from that type is not supported",
                    t.name, t.ty
                ));
            } else if t.ty.is_quantized() && !opts.allow_requantize {
                match quantized.iter_mut().find(|(q, _)| *q == t.ty) {
                    Some((_, n)) => *n += 1,
                    None => quantized.push((t.ty, 1)),
                }
            }
        }
        decls.push(TensorDecl {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty,
        });
    }
    if !quantized.is_empty() {
        let list: Vec<String> = quantized.iter().map(|(t, n)| format!("{n} {t}")).collect();
        problems.insert(
            0,
            format!(
                "already quantized ({} tensors); requantizing loses quality — pass \
                 --allow-requantize to do it anyway, or start from an f16/f32 file",
                list.join(", ")
            ),
        );
    }
    if !problems.is_empty() {
        const SHOWN: usize = 3;
        let more = problems.len().saturating_sub(SHOWN);
        let mut text = problems[..problems.len().min(SHOWN)].join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        return Err(bad(text));
    }
    Ok(Prepared {
        src,
        policy,
        im,
        decls,
    })
}

/// One tensor of a [`QuantizePlan`].
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order: the row length first.
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
}

/// What `quantize` would write (llama-quantize's `--dry-run`): every tensor's type, in the
/// output's order, after every check `quantize` makes.
#[derive(Clone, Debug)]
pub struct QuantizePlan {
    pub tensors: Vec<PlannedTensor>,
}

impl QuantizePlan {
    /// Parameters of all tensors.
    pub fn n_params(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum()
    }
    /// Bytes of tensor data in the input and in the output.
    pub fn data_bytes(&self) -> (u64, u64) {
        let size = |ty: GgmlType, dims: &[u64]| {
            let row = ty.row_bytes(dims[0]).unwrap_or(0);
            row * dims[1..].iter().product::<u64>()
        };
        self.tensors.iter().fold((0, 0), |(a, b), t| {
            (a + size(t.from, &t.dims), b + size(t.to, &t.dims))
        })
    }
}

/// The plan of [`requantize_with`] without writing anything.
pub fn plan_requantize(
    input: &Path,
    opts: &RequantizeOptions,
    imatrix: Option<&ImatrixSpec>,
) -> Result<QuantizePlan, ConvertError> {
    let p = prepare(input, opts, imatrix)?;
    let order = layout::quantized_tensor_order(p.src.tensors.iter().map(|t| t.name.as_str()));
    let tensors = order
        .iter()
        .map(|&i| PlannedTensor {
            name: p.decls[i].name.clone(),
            dims: p.decls[i].dims.clone(),
            from: p.src.tensors[i].ty,
            to: p.decls[i].ty,
        })
        .collect();
    Ok(QuantizePlan { tensors })
}

/// Rewrites `input` as `out` with the types chosen by `opts.policy`.
pub fn requantize(
    input: &Path,
    out: &Path,
    opts: &RequantizeOptions,
) -> Result<Summary, ConvertError> {
    requantize_with(input, out, opts, None)
}

/// [`requantize`] with an importance matrix (llama-quantize's `--imatrix`, with its
/// `--include-weights` / `--exclude-weights`): checked against the model before anything is
/// written, it sets the policy's `has_imatrix` and weights the quantization of every tensor it
/// has an entry for.
pub fn requantize_with(
    input: &Path,
    out: &Path,
    opts: &RequantizeOptions,
    imatrix: Option<&ImatrixSpec>,
) -> Result<Summary, ConvertError> {
    let t0 = Instant::now();
    let Prepared {
        src,
        policy,
        im,
        decls,
    } = prepare(input, opts, imatrix)?;

    // llama-quantize's layout (layout.rs): file type keys last, tensors in its weight-map order
    let metadata =
        layout::quantized_metadata(src.metadata.clone(), policy.file_type(), &im.metadata);
    let order = layout::quantized_tensor_order(src.tensors.iter().map(|t| t.name.as_str()));
    let decls: Vec<TensorDecl> = order.iter().map(|&i| decls[i].clone()).collect();

    let mut file = AtomicFile::create_from(out, opts.overwrite, &[input])?;
    let mut w = GgufWriter::new(file.writer(), &metadata, decls.clone())?;
    let total: u64 = src.tensors.iter().map(|t| t.n_bytes()).sum();
    (opts.progress)(Progress::Start {
        n_tensors: decls.len(),
        total_bytes: total,
    });
    let (mut deq, mut q) = (Vec::new(), Vec::new());
    let mut n_params = 0u64;
    for (t, d) in order.iter().map(|&i| &src.tensors[i]).zip(&decls) {
        let data = src.tensor_data(t);
        w.start_tensor(&t.name)?;
        if d.ty == t.ty {
            w.write_data(data)?;
        } else {
            let ncols = t.dims[0] as usize;
            let row_bytes = t.ty.row_bytes(t.dims[0]).expect("validated by the reader") as usize;
            let rows_per_chunk = ((1usize << 22) / ncols).max(1);
            for chunk in data.chunks(rows_per_chunk * row_bytes) {
                crate::convert::check_cancel(opts.cancel)?;
                let n = chunk.len() / row_bytes * ncols;
                deq.clear();
                quant::dequantize(t.ty, chunk, n, &mut deq)
                    .map_err(|e| ConvertError::from(e).in_tensor(&t.name))?;
                q.clear();
                quant::quantize_rows_par_weighted(d.ty, &deq, ncols, im.get(&t.name), &mut q)
                    .map_err(|e| ConvertError::from(e).in_tensor(&t.name))?;
                w.write_data(&q)?;
            }
        }
        w.end_tensor()?;
        n_params += t.n_elements();
        (opts.progress)(Progress::Tensor {
            name: t.name.clone(),
            ty: d.ty,
            bytes_in: data.len() as u64,
        });
    }
    w.finish()?;
    let bytes_written = file.commit()?;
    Ok(Summary {
        n_tensors: decls.len(),
        n_params,
        bytes_written,
        seconds: t0.elapsed().as_secs_f64(),
        family: None,
    })
}
