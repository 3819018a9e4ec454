//! `glmtool quantize IN.gguf OUT.gguf TYPE` (llama-quantize's order) or `... --type TYPE`,
//! optionally `--imatrix FILE` with `--include-weights` / `--exclude-weights`;
//! `glmtool quantize --dry-run IN.gguf TYPE` lists what it would write (llama-quantize's flag).

use crate::args::{ImatrixArgs, TypeArgs};
use crate::progress;
use anyhow::{bail, Result};
use glm_convert::{FileType, RequantizeOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (f32/f16, or quantized with --allow-requantize)
    pub input: PathBuf,
    /// Output GGUF (with --dry-run: none, the type may come second as in llama-quantize)
    pub output: PathBuf,
    /// File type (as --type): Q4_K_M, q4_k_m, or llama-quantize's number (15)
    #[arg(value_parser = crate::args::parse_file_type, conflicts_with = "ty")]
    pub ty_positional: Option<glm_convert::FileType>,
    #[command(flatten)]
    pub types: TypeArgs,
    #[command(flatten)]
    pub imatrix: ImatrixArgs,
    /// Accept already-quantized input tensors
    #[arg(long)]
    pub allow_requantize: bool,
    /// Write nothing: list each tensor's type and the size the file would have
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.dry_run {
        return dry_run(a);
    }
    let Some(ty) = a.ty_positional.or(a.types.ty) else {
        bail!(
            "no target type: say which, e.g. `glmtool quantize {} {} Q4_K_M` (or --type Q4_K_M)",
            a.input.display(),
            a.output.display()
        );
    };
    crate::output::prepare(&a.output);
    let pb = progress::conversion_bar(a.types.quiet);
    let on_progress = progress::on_conversion(&pb);
    let opts = RequantizeOptions {
        policy: a.types.policy(ty),
        allow_requantize: a.allow_requantize,
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    let s = glm_convert::requantize_with(&a.input, &a.output, &opts, a.imatrix.spec().as_ref())?;
    pb.finish_and_clear();
    progress::print_summary(&a.output, &s);
    Ok(())
}

/// llama-quantize's `--dry-run`: every check `quantize` makes, each tensor's type, the size.
fn dry_run(a: Args) -> Result<()> {
    // `--dry-run IN TYPE` (llama-quantize's form): the second word is the type
    let ty = match a.ty_positional.or(a.types.ty) {
        Some(ty) => ty,
        None => crate::args::parse_file_type(&a.output.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("--dry-run: {e}"))?,
    };
    let opts = RequantizeOptions {
        policy: a.types.policy(ty),
        allow_requantize: a.allow_requantize,
        overwrite: false,
        cancel: None,
        progress: &|_| {},
    };
    let plan = glm_convert::plan_requantize(&a.input, &opts, a.imatrix.spec().as_ref())?;
    let width = plan.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &plan.tensors {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        let bytes = t.to.row_bytes(t.dims[0]).unwrap_or(0) * t.dims[1..].iter().product::<u64>();
        crate::outln!(
            "{:<width$}  [{:>13}]  {:>5} -> {:<5} {:>10.2} MiB",
            t.name,
            dims.join(", "),
            t.from.to_string(),
            t.to.to_string(),
            bytes as f64 / (1 << 20) as f64
        )?;
    }
    let (before, after) = plan.data_bytes();
    let n = plan.n_params().max(1) as f64;
    crate::outln!(
        "{}: {} tensors as {}: {:.2} MiB ({:.2} BPW), from {:.2} MiB ({:.2} BPW); nothing written",
        a.input.display(),
        plan.tensors.len(),
        FileType::name(ty),
        after as f64 / (1 << 20) as f64,
        after as f64 * 8.0 / n,
        before as f64 / (1 << 20) as f64,
        before as f64 * 8.0 / n,
    )?;
    Ok(())
}
