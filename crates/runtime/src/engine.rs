//! The scheduler every generating command drives (`run` and the REPL through
//! [`crate::generate`], `serve` directly): **slots**, each one sequence of the session's KV
//! cache holding one request, and a **step loop** in which every step is one graph made of
//! one new token of each decoding slot plus a chunk of the prompts being read (`n_batch`
//! tokens at most), so that a long prompt never stalls the other slots for its whole length and
//! a new request joins at the next step. Sampling, stop tokens, length limits, log-probabilities
//! and cancellation are per slot; the caller sees each request through its [`Client`].
//!
//! ```text
//! start(slot, request, client)          cache prefix reused (the slot keeps its last tokens)
//! loop: step()
//!     inputs = [pending token of each decoding slot] + [prompt chunks, oldest request first]
//!     logits = session.eval_batch(inputs)            one pass over the weights for all rows
//!     for each slot with logits: sample → client.token → stop? length? → finish
//! ```
//!
//! A request's tokens do not depend on what shares its steps: the matrix kernels accumulate each
//! token's column alike whatever else is in the batch, attention is per sequence, and each
//! request has its own sampler (tested bit for bit in `tests/engine.rs` for q8_0, q4_0, q4_1 and
//! q5_0 weights; f16/f32 weights go through ggml's products, which this does not promise).

use crate::generate::{token_logprob, GenerateStats, Generated, StopReason, TokenLogprob};
use crate::sampler::Sampler;
use crate::session::{SeqInput, Session};
use crate::RuntimeError;
use std::time::Instant;

/// What a request sees of its generation.
pub trait Client {
    /// The request's sampler (owned by the client, which may keep it across requests).
    fn sampler(&mut self) -> &mut Sampler;
    /// The next token (with its log-probabilities when asked for); false stops the request
    /// (`StopReason::Cancelled`).
    fn token(&mut self, id: u32, logprob: Option<&TokenLogprob>) -> bool;
    /// `done` of `total` prompt tokens are in the cache (after each chunk); false cancels.
    fn progress(&mut self, _done: usize, _total: usize) -> bool {
        true
    }
    /// Whether the request should end now (a client that disconnected), asked before each step.
    fn cancelled(&mut self) -> bool {
        false
    }
    /// The end of the request: what was generated, or the error that ended it.
    fn finish(&mut self, result: Result<Generated, RuntimeError>);
}

/// One generation request.
pub struct Request {
    /// The whole prompt (the slot's cached prefix of it is reused).
    pub prompt: Vec<u32>,
    pub max_new: usize,
    /// Tokens that end the generation (not part of the output).
    pub stop_ids: Vec<u32>,
    /// Record log-probabilities, with this many alternatives per token.
    pub top_logprobs: Option<usize>,
}

/// Where a slot's request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for slot `src`, which reads the same prompt, to share its cache.
    Shared { src: usize },
    /// Reading the prompt: `next` tokens of it are in the cache.
    Prompt { next: usize },
    /// Generating: `pending` was sampled and goes into the cache at the next step.
    Decode { pending: u32 },
}

struct Active<'c> {
    req: Request,
    client: Box<dyn Client + 'c>,
    phase: Phase,
    history: Vec<u32>,
    ids: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    stats: GenerateStats,
    /// Prompt tokens that came from the cache (not evaluated by this request).
    reused: usize,
    /// Order of arrival (prompts are read oldest first).
    order: u64,
    t_start: Instant,
    t_first: Option<Instant>,
}

/// A slot as `/slots` and the metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub id: usize,
    /// `None` when idle.
    pub phase: Option<Phase>,
    /// Tokens in the slot's cache region.
    pub n_cached: usize,
    pub prompt_tokens: usize,
    pub generated: usize,
}

/// Slots over a session, run a step at a time.
pub struct Engine<'s, 'm, 'c> {
    session: &'s mut Session<'m>,
    slots: Vec<Option<Active<'c>>>,
    /// When each slot was last given a request (least recently used wins ties).
    last_used: Vec<u64>,
    clock: u64,
    n_batch: usize,
    /// Without batching (unfused attention), the slot whose turn it is.
    turn: usize,
}

impl<'s, 'm, 'c> Engine<'s, 'm, 'c> {
    /// One slot per sequence of `session`; steps of at most `n_batch` tokens.
    pub fn new(session: &'s mut Session<'m>, n_batch: usize) -> Self {
        let n = session.n_seq();
        Engine {
            session,
            slots: (0..n).map(|_| None).collect(),
            last_used: vec![0; n],
            clock: 0,
            n_batch: n_batch.max(1),
            turn: 0,
        }
    }

    pub fn session(&self) -> &Session<'m> {
        self.session
    }
    /// Slots holding a request.
    pub fn n_active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
    pub fn is_idle(&self) -> bool {
        self.n_active() == 0
    }

    /// Each slot's state.
    pub fn slot_states(&self) -> Vec<SlotState> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, s)| SlotState {
                id,
                phase: s.as_ref().map(|a| a.phase),
                n_cached: self.session.seq_tokens(id).len(),
                prompt_tokens: s.as_ref().map_or(0, |a| a.req.prompt.len()),
                generated: s.as_ref().map_or(0, |a| a.ids.len()),
            })
            .collect()
    }

    /// The free slot for `prompt`: the one whose cache shares the longest prefix with it
    /// (llama-server's prompt similarity), the least recently used among equals.
    pub fn pick_slot(&self, prompt: &[u32]) -> Option<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_none())
            .max_by_key(|&i| {
                let shared = self.session.reusable_prefix_seq(i, prompt);
                (shared, std::cmp::Reverse(self.last_used[i]))
            })
    }

    /// Starts `req` in the free slot `slot`. A prompt the context cannot hold with room for one
    /// token is an error (returned, not sent to the client). When another slot reads (or has
    /// read) the same prompt and `slot` does not hold it, `slot` copies that slot's cache of it
    /// once read instead of reading it again: the choices of one request, or several clients
    /// sending one prompt.
    pub fn start(
        &mut self,
        slot: usize,
        req: Request,
        mut client: Box<dyn Client + 'c>,
    ) -> Result<(), RuntimeError> {
        let n_ctx = self.session.n_ctx();
        if slot >= self.slots.len() || self.slots[slot].is_some() {
            return Err(RuntimeError::Input(format!("slot {slot} is not free")));
        }
        if req.prompt.is_empty() {
            return Err(RuntimeError::Input("empty prompt".into()));
        }
        if req.prompt.len() >= n_ctx {
            return Err(RuntimeError::Input(format!(
                "the prompt has {} tokens but the context holds {n_ctx} (use a larger -c, up to \
                 the model's {})",
                req.prompt.len(),
                self.session.model().hparams.n_ctx_train
            )));
        }
        let n_vocab = self.session.model().hparams.n_vocab;
        if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(RuntimeError::Input(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        let cached = self.session.reusable_prefix_seq(slot, &req.prompt);
        let src = (cached + 1 < req.prompt.len())
            .then(|| self.prompt_source(slot, &req.prompt))
            .flatten();
        let (phase, reused) = match src {
            Some(src) => (Phase::Shared { src }, 0),
            None => {
                self.session.truncate_seq(slot, cached);
                (Phase::Prompt { next: cached }, cached)
            }
        };
        client.sampler().begin();
        self.clock += 1;
        self.last_used[slot] = self.clock;
        let prompt_tokens = req.prompt.len();
        let history = req.prompt.clone();
        self.slots[slot] = Some(Active {
            req,
            client,
            phase,
            history,
            ids: Vec::new(),
            logprobs: Vec::new(),
            stats: GenerateStats {
                prompt_tokens,
                ..Default::default()
            },
            reused,
            order: self.clock,
            t_start: Instant::now(),
            t_first: None,
        });
        Ok(())
    }

    /// A busy slot other than `slot` whose cache holds `prompt` but its last token, or that is
    /// reading the very same prompt.
    fn prompt_source(&self, slot: usize, prompt: &[u32]) -> Option<usize> {
        let need = prompt.len().saturating_sub(1);
        (0..self.slots.len()).find(|&i| {
            i != slot
                && self.slots[i].as_ref().is_some_and(|a| {
                    self.session.reusable_prefix_seq(i, prompt) >= need
                        || matches!(a.phase, Phase::Prompt { .. } | Phase::Shared { .. })
                            && a.req.prompt == prompt
                })
        })
    }

    /// Ends slot `slot`'s request as cancelled (no-op when it is free).
    pub fn cancel(&mut self, slot: usize) {
        self.finish(slot, Ok(StopReason::Cancelled));
    }

    /// Runs one step: one graph over every active slot's next tokens. Errors of the model end
    /// the requests of the step (their clients get the error), not the engine.
    pub fn step(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_mut().is_some_and(|a| a.client.cancelled()) {
                self.cancel(i);
            }
        }
        self.resolve_shared();
        let plan = self.plan_step();
        if plan.is_empty() {
            return;
        }
        let inputs: Vec<SeqInput> = plan
            .iter()
            .map(|&(slot, ref tokens, logits)| SeqInput {
                seq: slot,
                tokens,
                logits,
            })
            .collect();
        let result = self.session.eval_batch(&inputs);
        let mut logits = match result {
            Ok(l) => l.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                for &(slot, _, _) in &plan {
                    self.finish(slot, Err(RuntimeError::Input(msg.clone())));
                }
                return;
            }
        };
        for (slot, tokens, wants) in plan {
            let row = if wants { logits.next() } else { None };
            let Some(a) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Phase::Prompt { next } = a.phase {
                let done = next + tokens.len();
                a.phase = Phase::Prompt { next: done };
                if !a.client.progress(done, a.req.prompt.len()) {
                    self.cancel(slot);
                    continue;
                }
                if row.is_some() {
                    a.stats.prompt_seconds = a.t_start.elapsed().as_secs_f64();
                    a.t_first = Some(Instant::now());
                    if a.req.max_new == 0 {
                        self.finish(slot, Ok(StopReason::Length));
                        continue;
                    }
                }
            }
            if let Some(mut l) = row {
                self.sample(slot, &mut l);
            }
        }
    }

    /// Runs steps until every slot is free.
    pub fn run_to_end(&mut self) {
        while !self.is_idle() {
            self.step();
        }
    }

    /// Slots waiting for another slot's prompt: copy it once read, or read it themselves when
    /// the other slot no longer holds it.
    fn resolve_shared(&mut self) {
        for i in 0..self.slots.len() {
            let Some(Phase::Shared { src }) = self.slots[i].as_ref().map(|a| a.phase) else {
                continue;
            };
            let a = self.slots[i].as_ref().expect("checked");
            let need = a.req.prompt.len() - 1;
            let has = self.session.reusable_prefix_seq(src, &a.req.prompt);
            let src_reading = self.slots[src].as_ref().is_some_and(|s| {
                matches!(s.phase, Phase::Prompt { .. } | Phase::Shared { .. })
                    && s.req.prompt == a.req.prompt
            });
            let next = if has >= need {
                match self.session.copy_seq(src, i, need) {
                    Ok(()) => need,
                    Err(e) => {
                        self.finish(i, Err(e));
                        continue;
                    }
                }
            } else if src_reading {
                continue; // not read yet
            } else {
                let cached = self.session.reusable_prefix_seq(i, &a.req.prompt);
                self.session.truncate_seq(i, cached);
                cached
            };
            if let Some(a) = self.slots[i].as_mut() {
                a.phase = Phase::Prompt { next };
                a.reused = next;
            }
        }
    }

    /// This step's inputs: (slot, tokens, logits wanted).
    fn plan_step(&mut self) -> Vec<(usize, Vec<u32>, bool)> {
        let mut plan = Vec::new();
        let mut budget = self.n_batch;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(Active {
                phase: Phase::Decode { pending },
                ..
            }) = s
            {
                plan.push((i, vec![*pending], true));
                budget = budget.saturating_sub(1);
            }
        }
        let mut reading: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(a) if matches!(a.phase, Phase::Prompt { .. }) => Some((a.order, i)),
                _ => None,
            })
            .collect();
        reading.sort_unstable();
        for (_, i) in reading {
            if budget == 0 {
                break;
            }
            let a = self.slots[i].as_ref().expect("listed");
            let Phase::Prompt { next } = a.phase else {
                continue;
            };
            let end = a.req.prompt.len().min(next + budget);
            budget -= end - next;
            plan.push((
                i,
                a.req.prompt[next..end].to_vec(),
                end == a.req.prompt.len(),
            ));
        }
        if !self.session.batches_sequences() && plan.len() > 1 {
            // one sequence a step, in turn
            plan.sort_by_key(|&(i, _, _)| (i + self.slots.len() - self.turn) % self.slots.len());
            plan.truncate(1);
            self.turn = (plan[0].0 + 1) % self.slots.len();
        } else {
            plan.sort_by_key(|&(i, _, _)| i);
        }
        plan
    }

    /// Samples slot `slot`'s next token from `logits` and moves the request on.
    fn sample(&mut self, slot: usize, logits: &mut [f32]) {
        let n_ctx = self.session.n_ctx();
        let n_cached = self.session.seq_tokens(slot).len();
        let Some(a) = self.slots[slot].as_mut() else {
            return;
        };
        self.session.model().tokenizer.mask_unsampleable(logits);
        let next = match a.client.sampler().sample(logits, &a.history) {
            Ok(t) => t,
            Err(e) => {
                self.finish(slot, Err(e.into()));
                return;
            }
        };
        if a.req.stop_ids.contains(&next) {
            self.finish(slot, Ok(StopReason::Stop(next)));
            return;
        }
        if let Some(n) = a.req.top_logprobs {
            a.logprobs.push(token_logprob(logits, next, n));
        }
        a.ids.push(next);
        a.history.push(next);
        if !a.client.token(next, a.logprobs.last()) {
            self.finish(slot, Ok(StopReason::Cancelled));
            return;
        }
        if n_cached + 1 > n_ctx || a.ids.len() >= a.req.max_new {
            self.finish(slot, Ok(StopReason::Length));
            return;
        }
        a.phase = Phase::Decode { pending: next };
    }

    /// Frees `slot`, telling its client how the request ended.
    fn finish(&mut self, slot: usize, how: Result<StopReason, RuntimeError>) {
        let Some(mut a) = self.slots[slot].take() else {
            return;
        };
        if let Phase::Prompt { next } = a.phase {
            // a prompt read in part: the cache holds what was read
            self.session.truncate_seq(slot, next);
        }
        let result = how.map(|stop| {
            let mut stats = a.stats.clone();
            stats.prompt_evaluated = stats.prompt_tokens - a.reused;
            stats.generated_tokens = a.ids.len();
            stats.generate_seconds = a.t_first.map_or(0.0, |t| t.elapsed().as_secs_f64());
            if a.t_first.is_none() {
                stats.prompt_seconds = a.t_start.elapsed().as_secs_f64();
            }
            Generated {
                ids: std::mem::take(&mut a.ids),
                stop,
                stats,
                logprobs: std::mem::take(&mut a.logprobs),
            }
        });
        a.client.finish(result);
    }
}
