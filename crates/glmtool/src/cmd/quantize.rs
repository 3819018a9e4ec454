//! `glmtool quantize IN.gguf OUT.gguf --type T`

use crate::args::TypeArgs;
use crate::progress;
use anyhow::Result;
use glm_convert::RequantizeOptions;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (f32/f16, or quantized with --allow-requantize)
    pub input: PathBuf,
    /// Output GGUF
    pub output: PathBuf,
    #[command(flatten)]
    pub types: TypeArgs,
    /// Accept already-quantized input tensors
    #[arg(long)]
    pub allow_requantize: bool,
}

pub fn run(a: Args) -> Result<()> {
    crate::output::prepare(&a.output);
    let pb = progress::conversion_bar(a.types.quiet);
    let on_progress = progress::on_conversion(&pb);
    let opts = RequantizeOptions {
        policy: a.types.policy(),
        allow_requantize: a.allow_requantize,
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    let s = glm_convert::requantize(&a.input, &a.output, &opts)?;
    pb.finish_and_clear();
    progress::print_summary(&a.output, &s);
    Ok(())
}
