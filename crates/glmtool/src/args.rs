//! Flags shared by several subcommands, as flattened clap structs.

use anyhow::{bail, Context, Result};
use clap::Args;
use glm_runtime::{CacheType, Model, SessionOptions};
use std::path::PathBuf;

/// Model and context flags shared by `run`, `perplexity` and `bench`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file (default: the bundled tiny demo model)
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Context size in tokens (default and maximum: the model's)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Threads (default: physical cores)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Prompt tokens per batch
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch: usize,
    /// KV cache type: f16 or f32
    #[arg(long = "cache-type", default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type: CacheType,
}

fn parse_cache_type(s: &str) -> Result<CacheType, String> {
    match s {
        "f16" => Ok(CacheType::F16),
        "f32" => Ok(CacheType::F32),
        _ => Err(format!("unknown cache type {s:?} (expected f16 or f32)")),
    }
}

impl ModelArgs {
    /// Loads the model (or the demo model).
    pub fn load(&self) -> Result<Model> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => crate::demo::demo_model_path()?,
        };
        Model::load(&path).with_context(|| format!("loading {}", path.display()))
    }

    /// Session options for `model`.
    pub fn session_options(&self, model: &Model) -> Result<SessionOptions> {
        let n_ctx = self.ctx.unwrap_or(model.hparams.n_ctx_train);
        if n_ctx == 0 || n_ctx > model.hparams.n_ctx_train {
            bail!(
                "-c {n_ctx}: the context must be between 1 and the model's {}",
                model.hparams.n_ctx_train
            );
        }
        if self.batch == 0 {
            bail!("-b must be at least 1");
        }
        Ok(SessionOptions {
            n_ctx,
            n_batch: self.batch,
            n_threads: self
                .threads
                .unwrap_or_else(glm_runtime::default_threads)
                .max(1),
            cache_type: self.cache_type,
        })
    }
}

/// Sampling flags (llama.cpp names, ChatGLM3 defaults).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off)
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    /// Top-p (1 = off)
    #[arg(long = "top-p", default_value_t = 0.8)]
    pub top_p: f32,
    /// Repetition penalty (1 = off)
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back on
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: random; printed with --verbose)
    #[arg(long = "seed")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn options(&self) -> Result<glm_runtime::sampler::SamplerOptions> {
        let ok = self.temp >= 0.0 && (0.0..=1.0).contains(&self.top_p) && self.repeat_penalty > 0.0;
        if !ok {
            bail!("--temp must be >= 0, --top-p in [0, 1], --repeat-penalty > 0");
        }
        Ok(glm_runtime::sampler::SamplerOptions {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed.unwrap_or_else(rand::random),
        })
    }
}

/// Output type flags shared by `convert` and `quantize`.
#[derive(Args, Clone, Debug)]
pub struct TypeArgs {
    /// Tensor type: f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1
    #[arg(long = "type", default_value = "f16", value_parser = parse_writable)]
    pub ty: gguf::GgmlType,
    /// Type of output.weight (default: q8_0 for 4/5-bit types, else --type)
    #[arg(long = "output-type", value_parser = parse_writable)]
    pub output_type: Option<gguf::GgmlType>,
    /// Quantize output.weight with --type too
    #[arg(long)]
    pub pure: bool,
    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_writable(s: &str) -> Result<gguf::GgmlType, String> {
    match gguf::GgmlType::from_name(s) {
        Some(t) if glm_convert::quant::can_quantize(t) => Ok(t),
        _ => Err(format!(
            "unsupported type {s:?}; expected one of: {}",
            glm_convert::quant::WRITABLE
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl TypeArgs {
    pub fn policy(&self) -> glm_convert::TypePolicy {
        glm_convert::TypePolicy {
            target: self.ty,
            output_type: self.output_type,
            pure: self.pure,
        }
    }
}
