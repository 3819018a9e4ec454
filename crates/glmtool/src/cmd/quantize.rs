//! `glmtool quantize IN.gguf OUT.gguf TYPE` (llama-quantize's order) or `... --type TYPE`,
//! optionally `--imatrix FILE` with `--include-weights` / `--exclude-weights`

use crate::args::{ImatrixArgs, TypeArgs};
use crate::progress;
use anyhow::{bail, Result};
use glm_convert::RequantizeOptions;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (f32/f16, or quantized with --allow-requantize)
    pub input: PathBuf,
    /// Output GGUF
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
}

pub fn run(a: Args) -> Result<()> {
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
