//! `glmtool convert HF_DIR -o OUT.gguf --type T`

use crate::args::TypeArgs;
use crate::progress;
use anyhow::Result;
use glm_convert::ConvertOptions;
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
    crate::output::prepare(&a.output);
    let pb = progress::conversion_bar(a.types.quiet);
    let on_progress = progress::on_conversion(&pb);
    let opts = ConvertOptions {
        policy: a.types.policy(a.types.ty.unwrap_or(gguf::GgmlType::F16)),
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
    };
    let s = glm_convert::convert(&a.input, &a.output, &opts)?;
    pb.finish_and_clear();
    progress::print_summary(&a.output, &s);
    Ok(())
}
