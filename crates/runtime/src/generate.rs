//! One generation (`run`, the REPL): a prompt, then one token at a time until a stop
//! token, the length limit, or the caller says stop — one request of the [`crate::engine`] that
//! `serve` drives with many.

use crate::engine::{Client, Engine, Request};
use crate::sampler::Sampler;
use crate::session::Session;
use crate::RuntimeError;

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
    /// One per id when asked for ([`generate_with_progress`]), else empty.
    pub logprobs: Vec<TokenLogprob>,
}

/// A generated token's log-probability and the most likely tokens at its position (OpenAI's
/// `logprobs` / `top_logprobs`): the log-softmax of the model's logits, before temperature,
/// top-k/top-p and the repetition penalty (what the model itself predicts).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// The `n` most likely tokens, best first, with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `id` under `logits` and the `top_n` most likely tokens.
pub fn token_logprob(logits: &[f32], id: u32, top_n: usize) -> TokenLogprob {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(top_n + 1);
    if top_n > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if top.len() < top_n || x > logits[top[top.len() - 1].0 as usize] {
                let at = top
                    .iter()
                    .position(|&(j, _)| x > logits[j as usize])
                    .unwrap_or(top.len());
                top.insert(at, (i as u32, 0.0));
                top.truncate(top_n);
            }
        }
        for t in &mut top {
            t.1 = lp(t.0 as usize);
        }
    }
    TokenLogprob {
        id,
        logprob: logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |_| lp(id as usize)),
        top,
    }
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
    generate_with_progress(
        session,
        prompt,
        max_new,
        sampler,
        stop_ids,
        None,
        |_, _| true,
        |id, _| on_token(id),
    )
}

/// [`generate`], also recording each token's log-probability and, with `Some(n)`, the `n` most
/// likely tokens at each position (`Generated::logprobs`, which `on_token` sees too), and
/// calling `on_progress(done, total)` after each batch of the prompt (`done` of its `total`
/// tokens are in the cache, the reused prefix included); false stops there:
/// `StopReason::Cancelled` with no tokens (the part read stays cached).
#[allow(clippy::too_many_arguments)]
pub fn generate_with_progress(
    session: &mut Session,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop_ids: &[u32],
    top_logprobs: Option<usize>,
    mut on_progress: impl FnMut(usize, usize) -> bool,
    mut on_token: impl FnMut(u32, Option<&TokenLogprob>) -> bool,
) -> Result<Generated, RuntimeError> {
    if prompt.len() >= session.n_ctx() {
        return Err(RuntimeError::Input(format!(
            "the prompt has {} tokens but the context holds {} (use a larger -c, up to the model's {})",
            prompt.len(),
            session.n_ctx(),
            session.model().hparams.n_ctx_train
        )));
    }
    // One request in slot 0 of the engine that `serve` drives with many.
    struct Once<'f, P, F> {
        sampler: &'f mut Sampler,
        on_progress: &'f mut P,
        on_token: &'f mut F,
        result: &'f mut Option<Result<Generated, RuntimeError>>,
    }
    impl<P, F> Client for Once<'_, P, F>
    where
        P: FnMut(usize, usize) -> bool,
        F: FnMut(u32, Option<&TokenLogprob>) -> bool,
    {
        fn sampler(&mut self) -> &mut Sampler {
            self.sampler
        }
        fn token(&mut self, id: u32, lp: Option<&TokenLogprob>) -> bool {
            (self.on_token)(id, lp)
        }
        fn progress(&mut self, done: usize, total: usize) -> bool {
            (self.on_progress)(done, total)
        }
        fn finish(&mut self, result: Result<Generated, RuntimeError>) {
            *self.result = Some(result);
        }
    }
    let mut result = None;
    {
        let n_batch = session.n_batch();
        let mut engine = Engine::new(session, n_batch);
        let req = Request {
            prompt: prompt.to_vec(),
            max_new,
            stop_ids: stop_ids.to_vec(),
            top_logprobs,
        };
        let client = Once {
            sampler,
            on_progress: &mut on_progress,
            on_token: &mut on_token,
            result: &mut result,
        };
        engine.start(0, req, Box::new(client))?;
        engine.run_to_end();
    }
    result.unwrap_or_else(|| Err(RuntimeError::Input("the generation did not end".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let lp = token_logprob(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        assert!((lp.logprob as f64 - (2.0 - z.ln())).abs() < 1e-6);
        // ties keep the lower id first
        assert_eq!(
            lp.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        let total: f64 = logits
            .iter()
            .enumerate()
            .map(|(i, _)| (token_logprob(&logits, i as u32, 0).logprob as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }
}
