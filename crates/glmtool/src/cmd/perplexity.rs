//! `glmtool perplexity -m MODEL -f TEXT [-c 512] [--chunks N]`, llama.cpp's method, plus
//! `--kl-divergence-base FILE` (save log-probs) and `--kl-divergence` (compare against FILE).

use crate::args::ModelArgs;
use crate::progress;
use anyhow::{bail, Context, Result};
use glm_runtime::perplexity::{perplexity, KlMode};
use glm_runtime::Session;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Score at most N chunks
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Log-probability file: written, or with --kl-divergence read as the base to compare against
    #[arg(long = "kl-divergence-base")]
    pub kl_base: Option<PathBuf>,
    /// Compare against --kl-divergence-base instead of writing it
    #[arg(long = "kl-divergence", requires = "kl_base")]
    pub kl: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(mut a: Args) -> Result<()> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 (byte {})",
            a.file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        bail!("{}: the text is empty", a.file.display());
    }
    if a.model.shape.ctx.is_none() {
        a.model.shape.ctx = Some(512);
    }
    let model = a.model.load(
        a.model.shape.batch.min(a.model.shape.ctx.unwrap_or(512)),
        false,
    )?;
    let n_ctx = a
        .model
        .shape
        .ctx
        .unwrap_or(512)
        .min(model.hparams.n_ctx_train);
    // Each chunk scores positions n_ctx/2 ..= n_ctx-2, so the smallest context is 4.
    if n_ctx < 4 {
        bail!("-c {n_ctx}: perplexity needs a context of at least 4 tokens");
    }
    let mut opts = a.model.session_options(&model)?;
    opts.n_ctx = n_ctx;
    let tokens = model.tokenizer.encode(&text)?;
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{}: {} tokens is too short for -c {n_ctx}: perplexity needs at least {} (2 chunks)",
            a.file.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let mut session = Session::new(&model, &opts)?;
    let mut out_file;
    let mut in_file;
    let kl = match (&a.kl_base, a.kl) {
        (None, _) => KlMode::None,
        (Some(p), false) => {
            out_file = BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            );
            KlMode::Save(&mut out_file)
        }
        (Some(p), true) => {
            in_file =
                BufReader::new(File::open(p).with_context(|| format!("opening {}", p.display()))?);
            KlMode::Compare(&mut in_file)
        }
    };
    eprintln!(
        "perplexity: {} tokens, {} chunks of {n_ctx} (scoring positions {}..{})",
        tokens.len(),
        a.chunks
            .map_or(tokens.len() / n_ctx, |c| c.min(tokens.len() / n_ctx)),
        n_ctx / 2,
        n_ctx - 2
    );
    let pb = progress::bar(
        0,
        a.quiet,
        "[{elapsed_precise}] {wide_bar} {pos}/{len} chunks {per_sec} ETA {eta} {msg}",
    );
    let mut line = String::new();
    let r = perplexity(&mut session, &tokens, n_ctx, a.chunks, kl, |c, n| {
        pb.set_length(n as u64);
        pb.inc(1);
        line.push_str(&format!("[{}]{:.4},", c.index, c.ppl_running));
        pb.set_message(format!("ppl {:.4}", c.ppl_running));
    })?;
    pb.finish_and_clear();
    if let (Some(p), false) = (&a.kl_base, a.kl) {
        drop(session);
        eprintln!("saved log-probs to {}", p.display());
    }
    eprintln!("{line}");
    eprintln!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_stderr);
    if let Some(k) = &r.kl {
        eprintln!(
            "KL divergence vs base: mean {:.6} ± {:.6}, max {:.6}; top-1 agreement {:.2}%; base PPL {:.4}",
            k.mean_kl,
            k.kl_stderr,
            k.max_kl,
            100.0 * k.top1_agreement,
            k.base_ppl
        );
    }
    if a.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
    }
    Ok(())
}
