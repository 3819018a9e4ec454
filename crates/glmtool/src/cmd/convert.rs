//! `glmtool convert HF_DIR -o OUT.gguf --type T [--imatrix FILE]`

use crate::args::{ImatrixArgs, TypeArgs};
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
    #[command(flatten)]
    pub imatrix: ImatrixArgs,
    /// The model family, when the checkpoint's name does not tell: chatglm3, chatglm3-base,
    /// chatglm2, codegeex2, glm4, glm4-base (default: detected from the tokenizer and
    /// config.json)
    #[arg(long, value_parser = parse_family)]
    pub family: Option<glm_convert::Family>,
}

fn parse_family(s: &str) -> Result<glm_convert::Family, String> {
    glm_convert::Family::from_name(s).ok_or_else(|| {
        format!(
            "unknown family {s:?}; expected one of: {}",
            glm_convert::Family::ALL.map(|f| f.as_str()).join(", ")
        )
    })
}

pub fn run(a: Args) -> Result<()> {
    crate::output::prepare(&a.output);
    let pb = progress::conversion_bar(a.types.quiet);
    let on_progress = progress::on_conversion(&pb);
    let opts = ConvertOptions {
        policy: a
            .types
            .policy(a.types.ty.unwrap_or(glm_convert::FileType::F16)),
        overwrite: a.types.force,
        cancel: Some(&crate::INTERRUPTED),
        progress: &on_progress,
        family: a.family,
    };
    let s = glm_convert::convert_with(&a.input, &a.output, &opts, a.imatrix.spec().as_ref())?;
    pb.finish_and_clear();
    progress::print_summary(&a.output, &s);
    Ok(())
}
