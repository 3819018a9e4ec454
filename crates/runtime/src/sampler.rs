//! Token sampling: repetition penalty, temperature, top-k, top-p (llama.cpp's semantics), or
//! greedy argmax at temperature 0.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = disabled.
    pub top_k: usize,
    /// 1 = disabled.
    pub top_p: f32,
    /// 1 = disabled.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerOptions {
    /// ChatGLM3's own chat defaults (temperature 0.8, top-p 0.8).
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.8,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

pub struct Sampler {
    opts: SamplerOptions,
    rng: StdRng,
}

impl Sampler {
    pub fn new(opts: SamplerOptions) -> Self {
        let rng = StdRng::seed_from_u64(opts.seed);
        Sampler { opts, rng }
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

    /// Picks the next token from `logits` given the `history` of tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
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
        if o.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
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
            return argmax(&logits);
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
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(SamplerOptions {
            temperature: 0.0,
            repeat_penalty: 1.1,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_reproducible() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect();
        let mut s = Sampler::new(SamplerOptions {
            top_k: 1,
            temperature: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        let opts = SamplerOptions {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(opts.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(opts);
            (0..20).map(|_| s.sample(&logits, &[])).collect()
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
        let draw =
            |s: &mut Sampler, n| -> Vec<u32> { (0..n).map(|_| s.sample(&logits, &[])).collect() };
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
                assert_eq!(s.sample(&logits, &[]), 1, "temperature {temperature}");
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
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 0));
    }
}
