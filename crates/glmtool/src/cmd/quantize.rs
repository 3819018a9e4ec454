//! `glmtool quantize IN.gguf OUT.gguf --type T`

use crate::args::TypeArgs;
use crate::progress;
use anyhow::Result;
use glm_convert::{Progress, RequantizeOptions};
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
    let pb = progress::bar(
        0,
        a.types.quiet,
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    );
    let on_progress = |p: Progress| match p {
        Progress::Start { total_bytes, .. } => pb.set_length(total_bytes),
        Progress::Tensor { name, ty, bytes_in } => {
            pb.inc(bytes_in);
            pb.set_message(format!("{name} -> {ty}"));
        }
    };
    let opts = RequantizeOptions {
        policy: a.types.policy(),
        allow_requantize: a.allow_requantize,
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    let s = glm_convert::requantize(&a.input, &a.output, &opts)?;
    pb.finish_and_clear();
    eprintln!(
        "wrote {}: {} tensors, {}, {:.2} bits per weight, {:.1} s",
        a.output.display(),
        s.n_tensors,
        progress::size(s.bytes_written),
        s.bits_per_weight(),
        s.seconds
    );
    Ok(())
}
