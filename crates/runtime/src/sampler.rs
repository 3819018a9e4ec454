//! Token sampling, one step after another on the model's logits:
//!
//! 1. `logit_bias` (OpenAI's: added to a token's logit; -100 or less bans it);
//! 2. the grammar ([`Constraint`]): tokens it does not allow next get `-inf`;
//! 3. penalties: the repetition penalty over the last `repeat_last_n` tokens (llama.cpp's:
//!    positive logits divided, negative ones multiplied), then OpenAI's frequency and presence
//!    penalties over the tokens generated so far (`logit -= count * frequency + presence`);
//! 4. greedy argmax at temperature 0; otherwise temperature, top-k, softmax, top-p, min-p
//!    (tokens below `min_p` times the best token's probability dropped), and a draw.
//!
//! The sampler remembers the tokens it picked since [`Sampler::begin`] (for the frequency and
//! presence penalties) and feeds each one to the constraint.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::constraint::{Constraint, ConstraintError};

#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = disabled.
    pub top_k: usize,
    /// 1 = disabled.
    pub top_p: f32,
    /// 0 = disabled.
    pub min_p: f32,
    /// 1 = disabled.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// OpenAI's, -2..2 (0 = disabled): subtracted once per earlier occurrence in the output.
    pub frequency_penalty: f32,
    /// OpenAI's, -2..2 (0 = disabled): subtracted once if the token occurred in the output.
    pub presence_penalty: f32,
    /// Added to a token's logit; -100 or less bans the token.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerOptions {
    /// ChatGLM3's own chat defaults (temperature 0.8, top-p 0.8).
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.8,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// Why no token could be picked.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("no token can be picked: the grammar and logit_bias together allow none")]
    NothingAllowed,
}

/// A bias of this or less bans a token (OpenAI: "-100 should result in a ban").
pub const BAN: f32 = -100.0;

pub struct Sampler {
    opts: SamplerOptions,
    rng: StdRng,
    constraint: Option<Constraint>,
    /// How often each token was picked since `begin`.
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(opts: SamplerOptions) -> Self {
        let rng = StdRng::seed_from_u64(opts.seed);
        Sampler {
            opts,
            rng,
            constraint: None,
            counts: HashMap::new(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &SamplerOptions {
        &self.opts
    }

    /// Changes the options; the random stream starts again only when the seed changes.
    pub fn set_options(&mut self, opts: SamplerOptions) {
        if opts.seed != self.opts.seed {
            self.rng = StdRng::seed_from_u64(opts.seed);
        }
        self.opts = opts;
    }

    /// Constrains what follows to a grammar (None: free text).
    pub fn set_constraint(&mut self, constraint: Option<Constraint>) {
        self.constraint = constraint;
    }

    /// The grammar in use, if any.
    pub fn constraint_mut(&mut self) -> Option<&mut Constraint> {
        self.constraint.as_mut()
    }

    /// Takes the grammar out (at the end of a generation).
    pub fn take_constraint(&mut self) -> Option<Constraint> {
        self.constraint.take()
    }

    /// A new output starts: the frequency and presence penalties count from here.
    pub fn begin(&mut self) {
        self.counts.clear();
    }

    /// Picks the next token from `logits` given the `history` of tokens so far, and records it.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SampleError> {
        let mut logits = logits.to_vec();
        self.apply_logit_bias(&mut logits);
        if let Some(c) = &mut self.constraint {
            c.apply(&mut logits)?;
        }
        if logits.iter().all(|l| *l == f32::NEG_INFINITY) {
            return Err(SampleError::NothingAllowed);
        }
        self.apply_penalties(&mut logits, history);
        let id = self.draw(&logits);
        if let Some(c) = &mut self.constraint {
            c.accept(id)?;
        }
        *self.counts.entry(id).or_default() += 1;
        Ok(id)
    }

    fn apply_logit_bias(&self, logits: &mut [f32]) {
        for &(id, bias) in &self.opts.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if bias <= BAN {
                    f32::NEG_INFINITY
                } else {
                    *l + bias
                };
            }
        }
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let o = &self.opts;
        if o.repeat_penalty != 1.0 && o.repeat_last_n > 0 {
            let start = history.len().saturating_sub(o.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if seen.insert(t) {
                    if let Some(l) = logits.get_mut(t as usize) {
                        *l = if *l > 0.0 {
                            *l / o.repeat_penalty
                        } else {
                            *l * o.repeat_penalty
                        };
                    }
                }
            }
        }
        if o.frequency_penalty != 0.0 || o.presence_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= n as f32 * o.frequency_penalty + o.presence_penalty;
                }
            }
        }
    }

    /// Greedy, or temperature / top-k / top-p / min-p and a random draw.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let o = &self.opts;
        if o.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > f32::NEG_INFINITY)
            .map(|(i, &l)| (i as u32, l / o.temperature))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if o.top_k > 0 {
            cand.truncate(o.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|&(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        // A temperature so small that logit/temperature overflows is greedy decoding: all the
        // probability is on the top token (the division made it infinite, or NaN after `- max`).
        if !max.is_finite() || !sum.is_finite() || sum <= 0.0 {
            return argmax(logits);
        }
        probs.iter_mut().for_each(|p| *p /= sum);
        if o.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= o.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
        }
        if o.min_p > 0.0 {
            // probs are sorted: the first is the best
            let floor = probs[0] * o.min_p;
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return cand[i].0;
            }
            r -= p;
        }
        cand[probs.len() - 1].0
    }
}

/// Index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_penalty_demotes_repeats() {
        let mut s = Sampler::new(SamplerOptions {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[]).unwrap(), 1);
        let mut s = Sampler::new(SamplerOptions {
            temperature: 0.0,
            repeat_penalty: 1.1,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[1]).unwrap(), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_reproducible() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect();
        let mut s = Sampler::new(SamplerOptions {
            top_k: 1,
            temperature: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[]).unwrap(), argmax(&logits));
        let opts = SamplerOptions {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(opts.clone());
            (0..20).map(|_| s.sample(&logits, &[]).unwrap()).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(opts);
            (0..20).map(|_| s.sample(&logits, &[]).unwrap()).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature 1 should not be deterministic across draws"
        );
    }

    #[test]
    fn set_options_keeps_the_random_stream_unless_the_seed_changes() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect();
        let opts = SamplerOptions {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
            ..Default::default()
        };
        let draw = |s: &mut Sampler, n| -> Vec<u32> {
            (0..n).map(|_| s.sample(&logits, &[]).unwrap()).collect()
        };
        let whole = draw(&mut Sampler::new(opts.clone()), 20);
        // the same options set halfway: the stream goes on
        let mut s = Sampler::new(opts.clone());
        let mut halves = draw(&mut s, 10);
        s.set_options(opts.clone());
        halves.extend(draw(&mut s, 10));
        assert_eq!(halves, whole);
        // a new seed starts that seed's stream
        s.set_options(SamplerOptions {
            seed: 7,
            ..opts.clone()
        });
        let fresh = draw(&mut Sampler::new(SamplerOptions { seed: 7, ..opts }), 10);
        assert_eq!(draw(&mut s, 10), fresh);
        assert_eq!(s.options().seed, 7);
    }

    #[test]
    fn tiny_temperatures_are_greedy() {
        // logit / 1e-45 overflows to infinity: the top token takes all the probability
        let logits = [0.5f32, 2.0, 1.9, -3.0];
        for temperature in [1e-45f32, 1e-38, f32::MIN_POSITIVE, 1e-30] {
            let mut s = Sampler::new(SamplerOptions {
                temperature,
                seed: 7,
                ..Default::default()
            });
            for _ in 0..20 {
                assert_eq!(
                    s.sample(&logits, &[]).unwrap(),
                    1,
                    "temperature {temperature}"
                );
            }
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // one token holds ~88% of the mass: top_p 0.5 must always pick it
        let logits = [5.0f32, 3.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&logits, &[]).unwrap() == 0));
    }

    #[test]
    fn logit_bias_bans_at_minus_100_and_shifts_otherwise() {
        let logits = [1.0f32, 3.0, 2.0];
        let greedy = |bias: Vec<(u32, f32)>| {
            Sampler::new(SamplerOptions {
                temperature: 0.0,
                logit_bias: bias,
                ..Default::default()
            })
            .sample(&logits, &[])
            .unwrap()
        };
        assert_eq!(greedy(vec![]), 1);
        assert_eq!(greedy(vec![(1, -100.0)]), 2);
        assert_eq!(greedy(vec![(0, 2.5)]), 0);
        assert_eq!(greedy(vec![(1, -1.5)]), 2);
        // banned at any temperature; banning everything is an error, not a pick
        let mut s = Sampler::new(SamplerOptions {
            temperature: 2.0,
            top_p: 1.0,
            logit_bias: vec![(1, -100.0)],
            ..Default::default()
        });
        assert!((0..200).all(|_| s.sample(&logits, &[]).unwrap() != 1));
        let mut s = Sampler::new(SamplerOptions {
            logit_bias: (0..3).map(|i| (i, -100.0)).collect(),
            ..Default::default()
        });
        assert!(matches!(
            s.sample(&logits, &[]),
            Err(SampleError::NothingAllowed)
        ));
    }

    #[test]
    fn frequency_and_presence_penalties_count_the_output_since_begin() {
        // token 0 leads by 1.0; each pick of it costs frequency 0.6 (+ presence 0.1 once)
        let logits = [2.0f32, 1.0];
        let mut s = Sampler::new(SamplerOptions {
            temperature: 0.0,
            frequency_penalty: 0.6,
            presence_penalty: 0.1,
            ..Default::default()
        });
        s.begin();
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&logits, &[]).unwrap()).collect();
        // 0 (2.0 vs 1.0), 0 (1.3 vs 1.0), 1 (0.7 vs 1.0), 0 (0.7 vs 0.3)
        assert_eq!(picks, [0, 0, 1, 0]);
        // the history passed in does not count: only what was picked since begin()
        s.begin();
        assert_eq!(s.sample(&logits, &[0, 0, 0, 0]).unwrap(), 0);
    }

    #[test]
    fn min_p_drops_the_unlikely_tail() {
        // p ≈ [0.66, 0.24, 0.09, 0.00...]: min_p 0.2 keeps the first two only
        let logits = [3.0f32, 2.0, 1.0, -4.0];
        let mut s = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_p: 1.0,
            min_p: 0.2,
            seed: 3,
            ..Default::default()
        });
        let picks: std::collections::HashSet<u32> =
            (0..300).map(|_| s.sample(&logits, &[]).unwrap()).collect();
        assert_eq!(picks, [0, 1].into_iter().collect());
    }
}
