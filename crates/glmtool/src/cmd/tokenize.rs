//! `glmtool tokenize -m MODEL [--chat FILE.json | TEXT | -p TEXT | < stdin] [--show-pieces]`:
//! token ids as a JSON array, or one `id piece` line per token.

use anyhow::{bail, Context, Result};
use glm_runtime::chat::{build_chat_ids, Message};
use glm_runtime::{CacheType, LoadOptions, Model, PlanShape};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file, or a Hugging Face checkpoint folder (converted once into the cache and
    /// reused). Default: $GLMTOOL_MODEL, else the bundled tiny demo model. Only its vocabulary
    /// is used
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// File type to convert a checkpoint given to -m to (as `convert --type`) [default: Q4_0]
    #[arg(long = "type", value_parser = crate::args::parse_file_type)]
    pub convert_type: Option<glm_convert::FileType>,
    /// A JSON array of ChatGLM3 messages {role, content, metadata?, tools?}; prints the prompt ids
    #[arg(long, conflicts_with_all = ["text", "prompt"])]
    pub chat: Option<PathBuf>,
    /// Text to encode as plain SentencePiece ids (no special tokens); '-' or none reads
    /// standard input
    pub text: Option<String>,
    /// The text to encode, as llama-tokenize's -p (the same as giving TEXT)
    #[arg(short = 'p', long = "prompt", conflicts_with = "text")]
    pub prompt: Option<String>,
    /// Print one line per token: its id and its piece (as JSON strings, so spaces and control
    /// characters show)
    #[arg(long)]
    pub show_pieces: bool,
}

/// Loads the model on the CPU with ggml's kernels (no repacking): only its tokenizer is used.
fn load(a: &Args) -> Result<Model> {
    let path = crate::models::resolve(
        a.model.as_deref(),
        a.convert_type.unwrap_or(glm_convert::FileType::Q4_0),
        false,
    )?;
    let shape = PlanShape {
        n_ctx: 0,
        n_batch: 512,
        cache_type: CacheType::F16,
        logits_rows: 1,
        ..Default::default()
    };
    let opts = LoadOptions {
        cpu_kernels: None,
        ..LoadOptions::cpu(shape)
    };
    Model::load_with(&path, &opts).with_context(|| format!("loading {}", path.display()))
}

pub fn run(mut a: Args) -> Result<()> {
    if a.prompt.is_some() {
        a.text = a.prompt.take();
    }
    let model = load(&a)?;
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
