//! `glmtool`: convert, quantize and run ChatGLM models through GGUF and ggml.
//!
//! One module per subcommand under `cmd/`; flags shared by several subcommands live in `args`.

mod args;
mod busy;
mod cmd;
mod compat;
mod models;
mod output;
mod progress;
mod sandbox;
#[cfg(feature = "server")]
mod server;
mod term;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C; long operations poll it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser)]
#[command(
    name = "glmtool",
    version = env!("GLMTOOL_LONG_VERSION"),
    about = "Convert, quantize and run ChatGLM models (GGUF + ggml)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face ChatGLM checkpoint to GGUF
    Convert(cmd::convert::Args),
    /// Requantize a GGUF file to another type
    Quantize(cmd::quantize::Args),
    /// Compute an importance matrix for the quantizers (llama-imatrix's method and format)
    Imatrix(cmd::imatrix::Args),
    /// Show a GGUF file's metadata and tensors
    Info(cmd::info::Args),
    /// Print the token ids of a text or a chat
    Tokenize(cmd::tokenize::Args),
    /// Chat with a model, or complete a prompt
    Run(cmd::run::Args),
    /// Measure perplexity (llama.cpp's method) and KL divergence between models
    Perplexity(cmd::perplexity::Args),
    /// Measure prompt and generation speed (like llama-bench)
    Bench(cmd::bench::Args),
    /// Serve the model over an OpenAI-compatible HTTP API
    #[cfg(feature = "server")]
    Serve(cmd::serve::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(cmd::completions::Args),
    /// Print the man page (roff): `glmtool man > glmtool.1`
    Man,
}

fn main() -> ExitCode {
    // llama.cpp's flags: renamed to glmtool's, or refused in one line (compat.rs)
    let args = match compat::rewrite(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: give up at once (temporary files are removed by the first one's unwinding).
            term::restore();
            std::process::exit(130);
        }
    });
    let result = match cli.command {
        Command::Convert(a) => cmd::convert::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Imatrix(a) => cmd::imatrix::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => cmd::serve::run(a),
        Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        Command::Man => cmd::completions::man(Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
