//! `glmtool tokenize -m MODEL [--chat FILE.json | TEXT | < stdin] [--show-pieces]`: token ids
//! as a JSON array, or one `id piece` line per token.

use crate::args::ModelArgs;
use anyhow::{bail, Context, Result};
use glm_runtime::chat::{build_chat_ids, Message};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A JSON array of ChatGLM3 messages {role, content, metadata?, tools?}; prints the prompt ids
    #[arg(long, conflicts_with = "text")]
    pub chat: Option<PathBuf>,
    /// Text to encode as plain SentencePiece ids (no special tokens); '-' or none reads
    /// standard input
    pub text: Option<String>,
    /// Print one line per token: its id and its piece (as JSON strings, so spaces and control
    /// characters show)
    #[arg(long)]
    pub show_pieces: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load_cpu()?;
    let ids = match (&a.chat, &a.text) {
        (Some(path), _) => {
            let messages = read_messages(path)?;
            build_chat_ids(&model.tokenizer, &messages)?
        }
        (None, Some(text)) if text != "-" => model.tokenizer.encode(text)?,
        (None, _) => {
            if std::io::stdin().is_terminal() && a.text.is_none() {
                bail!(
                    "give a TEXT to encode, --chat FILE.json, or pipe the text into standard input"
                );
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input (expected UTF-8 text)")?;
            model.tokenizer.encode(&text)?
        }
    };
    if a.show_pieces {
        let mut out = std::io::stdout().lock();
        for &id in &ids {
            let piece = model.tokenizer.token(id).unwrap_or("?");
            writeln!(out, "{id:>6} {}", serde_json::to_string(piece)?)?;
        }
        return Ok(());
    }
    crate::outln!("{}", serde_json::to_string(&ids)?)?;
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
