//! `glmtool tokenize -m MODEL [--chat FILE.json | TEXT]`: token ids as a JSON array.

use crate::args::ModelArgs;
use anyhow::{bail, Context, Result};
use glm_runtime::chat::{build_chat_ids, Message};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A JSON array of ChatGLM3 messages {role, content, metadata?, tools?}; prints the prompt ids
    #[arg(long, conflicts_with = "text")]
    pub chat: Option<PathBuf>,
    /// Text to encode as plain SentencePiece ids (no special tokens)
    pub text: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load_cpu()?;
    let ids = match (&a.chat, &a.text) {
        (Some(path), _) => {
            let messages = read_messages(path)?;
            build_chat_ids(&model.tokenizer, &messages)?
        }
        (None, Some(text)) => model.tokenizer.encode(text)?,
        (None, None) => bail!("give a TEXT to encode or --chat FILE.json"),
    };
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

/// Reads a ChatGLM3 message list (the golden_chat.json / `--chat` format).
pub fn read_messages(path: &PathBuf) -> Result<Vec<Message>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{}: expected a JSON array of messages {{\"role\", \"content\", \"metadata\"?, \"tools\"?}}", path.display())
    })
}
