//! `glmtool convert HF_DIR -o OUT.gguf --type T`

use crate::args::TypeArgs;
use crate::progress;
use anyhow::Result;
use glm_convert::{ConvertOptions, Progress};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.model)
    pub input: PathBuf,
    /// Output GGUF file
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub types: TypeArgs,
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
    let opts = ConvertOptions {
        policy: a.types.policy(),
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    let s = glm_convert::convert(&a.input, &a.output, &opts)?;
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
