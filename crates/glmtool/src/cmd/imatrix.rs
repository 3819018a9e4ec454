//! `glmtool imatrix -m MODEL -f TEXT -o OUT.gguf [-c 512] [--chunks N] [--process-output]
//! [--in-file FILE]...`: an importance matrix by llama.cpp 2026's llama-imatrix method
//! (glm_runtime::imatrix), written in its GGUF format (glm_convert::quant::imatrix). Without
//! `-f`, combines the `--in-file`s only.

use crate::args::{Device, ModelArgs};
use crate::progress;
use anyhow::{bail, Context, Result};
use glm_convert::quant::imatrix::{Entry, Imatrix};
use glm_runtime::imatrix::{chunk_bos, collect, CollectOptions, Observers, LAYER_MATRICES};
use glm_runtime::{LoadOptions, Model, RuntimeError, Session};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Calibration text (UTF-8); one trailing newline is dropped, as llama.cpp's -f does
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output file (GGUF imatrix)
    #[arg(short = 'o', long = "output", default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Use at most N chunks of the text
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Also collect statistics for output.weight
    #[arg(long)]
    pub process_output: bool,
    /// Start from these imatrix files (GGUF or legacy .dat; repeatable or comma-separated):
    /// their sums and counts are added to what the text gives, their datasets listed first
    #[arg(long = "in-file", value_delimiter = ',')]
    pub in_files: Vec<PathBuf>,
    /// Do not compute perplexity on the way
    #[arg(long)]
    pub no_ppl: bool,
    /// Also write the output every N chunks (each write complete and atomic), so that a long
    /// run can be stopped and its statistics kept (default: only at the end)
    #[arg(long = "output-frequency", value_name = "N")]
    pub output_frequency: Option<usize>,
    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.file.is_none() && a.in_files.is_empty() {
        bail!("nothing to do: give a calibration text (-f FILE) and/or imatrix files to combine (--in-file FILE)");
    }
    if a.output_frequency == Some(0) {
        bail!("--output-frequency 0: give a number of chunks of at least 1");
    }
    if matches!(a.model.gpu.device, Some(Device::Gpu(..)))
        || a.model.gpu.gpu_layers.is_some_and(|n| n > 0)
    {
        bail!("imatrix runs on the CPU only (its statistics are gathered by CPU ops): leave out --device and --gpu-layers");
    }
    crate::output::prepare(&a.output);
    let chunk = a.model.shape.ctx.unwrap_or(512);
    let mut base = Imatrix::new(chunk as u32);
    for p in &a.in_files {
        let im = Imatrix::load(p)?;
        base.add(&im, p)?;
    }
    base.update_chunk_count();
    let Some(text_path) = &a.file else {
        eprintln!(
            "imatrix: no text given: combining {} files",
            a.in_files.len()
        );
        let inputs: Vec<&Path> = a.in_files.iter().map(PathBuf::as_path).collect();
        return save_to(&base, &a.output, a.force, &inputs);
    };

    let bytes =
        std::fs::read(text_path).with_context(|| format!("reading {}", text_path.display()))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 (byte {})",
            text_path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.ends_with('\n') {
        text.pop();
    }
    if text.trim().is_empty() {
        bail!("{}: the text is empty", text_path.display());
    }

    let model_path = a.model.path()?;
    let opts = LoadOptions {
        cpu_kernels: a.model.cpu_kernels.0,
        ..LoadOptions::cpu(a.model.shape.plan_shape(a.model.shape.batch.min(chunk)))
    };
    let model = Model::load_with(&model_path, &opts)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let hp = &model.hparams;
    if chunk == 0 || chunk > hp.n_ctx_train {
        bail!(
            "-c {chunk}: the chunk size must be between 1 and the model's context {}",
            hp.n_ctx_train
        );
    }
    check_in_files(&base, &a.in_files, &model)?;

    let mut tokens = model.tokenizer.encode(&text)?;
    let bos = chunk_bos(&gguf::GgufFile::open(&model_path)?);
    if let Some(b) = bos {
        tokens.insert(0, b);
    }
    let n_chunks = (tokens.len() / chunk).min(a.chunks.unwrap_or(usize::MAX));
    if tokens.len() < 2 * chunk {
        bail!(
            "{}: {} tokens is too short for -c {chunk}: an importance matrix needs at least {} (2 chunks)",
            text_path.display(),
            tokens.len(),
            2 * chunk
        );
    }
    let batch = a.model.shape.batch.min(chunk);
    let mut sopts = a.model.session_options(&model)?;
    sopts.n_ctx = chunk;
    sopts.n_batch = batch;
    let mut session = Session::new(&model, &sopts)?;
    let mut obs = Observers::new(hp, a.process_output, |name| {
        let e = base.entries.get(name)?;
        Some((e.sums.clone(), e.counts.first().copied()?))
    });
    eprintln!(
        "imatrix: {} tokens, {n_chunks} chunks of {chunk}, batches of {batch}{}",
        tokens.len(),
        if bos.is_some() {
            ", BOS first in each chunk"
        } else {
            ""
        }
    );

    let pb = progress::bar(
        n_chunks as u64,
        a.quiet,
        "[{elapsed_precise}] {wide_bar} {pos}/{len} chunks {per_sec} ETA {eta} {msg}",
    );
    let dataset = text_path.to_string_lossy().into_owned();
    let inputs: Vec<&Path> = std::iter::once(model_path.as_path())
        .chain(std::iter::once(text_path.as_path()))
        .chain(a.in_files.iter().map(PathBuf::as_path))
        .collect();
    let mut saved = false;
    let mut line = String::new();
    let copts = CollectOptions {
        chunk,
        batch,
        max_chunks: a.chunks,
        bos,
        ppl: !a.no_ppl,
    };
    let r = collect(&mut session, &tokens, &copts, &mut obs, |done, obs| {
        if crate::INTERRUPTED.load(Ordering::Relaxed) {
            return Err(RuntimeError::Input("interrupted".into()));
        }
        pb.inc(1);
        if let Some(p) = done.ppl {
            pb.set_message(format!("ppl {p:.4}"));
            line.push_str(&format!("[{}]{p:.4},", done.index));
        }
        if a.output_frequency.is_some_and(|f| done.index % f == 0) && done.index < done.n_chunks {
            let im = gathered(&base, obs, &dataset);
            im.save(&a.output, a.force || saved, &inputs)
                .map_err(|e| RuntimeError::Input(e.to_string()))?;
            saved = true;
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    if !line.is_empty() {
        eprintln!("{line}");
    }
    if let Some((ppl, err)) = r.ppl {
        eprintln!("Final estimate: PPL = {ppl:.4} +/- {err:.5}");
    }
    let im = gathered(&base, &mut obs, &dataset);
    let overwrite = a.force || saved;
    save_to(&im, &a.output, overwrite, &inputs)
}

/// The in-files' data plus what the observers gathered; `dataset` is appended to the list.
fn gathered(base: &Imatrix, obs: &mut Observers, dataset: &str) -> Imatrix {
    let mut im = base.clone();
    for (name, sums, rows) in obs.read() {
        if rows > 0 {
            im.entries.insert(
                name,
                Entry {
                    sums: sums.to_vec(),
                    counts: vec![rows],
                },
            );
        }
    }
    im.datasets.push(dataset.to_string());
    im.update_chunk_count();
    im
}

/// Every entry of the in-files must be one of the model's matrices, of the model's width, with
/// one count (a dense matrix).
fn check_in_files(base: &Imatrix, files: &[PathBuf], model: &Model) -> Result<()> {
    let hp = &model.hparams;
    let width = |name: &str| -> Option<usize> {
        if name == gguf::names::OUTPUT {
            return Some(hp.n_embd);
        }
        (0..hp.n_layer).find_map(|il| {
            LAYER_MATRICES.iter().find(|t| t.name(il) == name).map(|t| {
                if *t == gguf::names::LayerTensor::FfnDown {
                    hp.n_ff
                } else {
                    hp.n_embd
                }
            })
        })
    };
    let files = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for (name, e) in &base.entries {
        match width(name) {
            None => bail!("{files}: tensor {name} is not a matrix of this model"),
            Some(w) if w != e.sums.len() || e.counts.iter().any(|&c| c != e.counts[0]) => bail!(
                "{files}: tensor {name} has {} values in {} counts; this model's has {w} columns",
                e.sums.len(),
                e.counts.len()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

fn save_to(im: &Imatrix, out: &Path, overwrite: bool, inputs: &[&Path]) -> Result<()> {
    if im.entries.is_empty() {
        bail!(
            "no statistics were collected: nothing to write to {}",
            out.display()
        );
    }
    let n = im.save(out, overwrite, inputs)?;
    eprintln!(
        "wrote {}: {} matrices, {} chunks of {} tokens, {}",
        out.display(),
        im.entries.len(),
        im.chunk_count,
        im.chunk_size,
        progress::size(n)
    );
    Ok(())
}
