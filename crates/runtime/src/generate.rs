//! The generation loop shared by `run`, `bench` and (later) the server: evaluate a prompt,
//! then sample one token at a time until a stop token, the length limit, or the caller says stop.

use crate::sampler::Sampler;
use crate::session::Session;
use crate::RuntimeError;
use std::time::Instant;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token was sampled (it is not part of the output).
    Stop(u32),
    /// `max_new` tokens were generated, or the context is full.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

/// Timings, llama.cpp style.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (the rest came from the cache).
    pub prompt_evaluated: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub generate_seconds: f64,
}

impl GenerateStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_evaluated as f64 / self.prompt_seconds.max(1e-9)
    }
    pub fn generate_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generate_seconds.max(1e-9)
    }
}

/// Output of one generation.
pub struct Generated {
    pub ids: Vec<u32>,
    pub stop: StopReason,
    pub stats: GenerateStats,
}

/// Generates after `prompt` (which replaces the cache contents, re-using a common prefix).
/// `on_token` sees each new token and returns false to stop.
pub fn generate(
    session: &mut Session,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generated, RuntimeError> {
    if prompt.len() >= session.n_ctx() {
        return Err(RuntimeError::Input(format!(
            "the prompt has {} tokens but the context holds {} (use a larger -c, up to the model's {})",
            prompt.len(),
            session.n_ctx(),
            session.model().hparams.n_ctx_train
        )));
    }
    let t0 = Instant::now();
    let cached = session
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len() - 1);
    let mut logits = session.eval_prompt(prompt)?;
    let mut stats = GenerateStats {
        prompt_tokens: prompt.len(),
        prompt_evaluated: prompt.len() - cached,
        prompt_seconds: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let t1 = Instant::now();
    let mut history = prompt.to_vec();
    let mut ids = Vec::new();
    let mut stop = StopReason::Length;
    while ids.len() < max_new {
        let next = sampler.sample(&logits, &history);
        if stop_ids.contains(&next) {
            stop = StopReason::Stop(next);
            break;
        }
        ids.push(next);
        history.push(next);
        if !on_token(next) {
            stop = StopReason::Cancelled;
            break;
        }
        if session.n_past() + 1 > session.n_ctx() || ids.len() == max_new {
            break;
        }
        logits = session.eval(&[next], false)?;
    }
    stats.generated_tokens = ids.len();
    stats.generate_seconds = t1.elapsed().as_secs_f64();
    Ok(Generated { ids, stop, stats })
}
