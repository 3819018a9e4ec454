//! An inference session: a backend, a KV cache and a compute-buffer allocator over a loaded
//! model. `eval` feeds tokens (in batches) and returns logits.

use crate::chatglm::{build_graph, step_inputs, LayerCache, Step};
use crate::model::Model;
use crate::RuntimeError;
use glm_ggml::{Allocator, Backend, TensorSpec, TensorStore, TYPE_F16, TYPE_F32};

/// KV cache element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheType {
    #[default]
    F16,
    F32,
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context size in tokens (0 = the model's training context).
    pub n_ctx: usize,
    /// Prompt tokens per graph.
    pub n_batch: usize,
    pub n_threads: usize,
    pub cache_type: CacheType,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 0,
            n_batch: 512,
            n_threads: crate::default_threads(),
            cache_type: CacheType::F16,
        }
    }
}

pub struct Session<'m> {
    model: &'m Model,
    backend: Backend,
    alloc: Allocator,
    cache: TensorStore,
    n_ctx: usize,
    n_batch: usize,
    /// The tokens whose K/V are in the cache, in order.
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, opts: &SessionOptions) -> Result<Self, RuntimeError> {
        let hp = &model.hparams;
        let n_ctx = if opts.n_ctx == 0 {
            hp.n_ctx_train
        } else {
            opts.n_ctx
        };
        if n_ctx > hp.n_ctx_train {
            return Err(RuntimeError::Input(format!(
                "context {n_ctx} exceeds the model's training context {}",
                hp.n_ctx_train
            )));
        }
        let backend = Backend::cpu(opts.n_threads)?;
        let ty = match opts.cache_type {
            CacheType::F16 => TYPE_F16,
            CacheType::F32 => TYPE_F32,
        };
        let n = (hp.kv_width() * n_ctx) as i64;
        let specs: Vec<TensorSpec> = (0..hp.n_layer)
            .flat_map(|il| {
                [
                    TensorSpec {
                        name: format!("cache_k_l{il}"),
                        ty,
                        ne: vec![n],
                    },
                    TensorSpec {
                        name: format!("cache_v_l{il}"),
                        ty,
                        ne: vec![n],
                    },
                ]
            })
            .collect();
        let cache = TensorStore::allocate(&backend, &specs)?;
        let alloc = Allocator::new(&backend)?;
        Ok(Session {
            model,
            backend,
            alloc,
            cache,
            n_ctx,
            n_batch: opts.n_batch.max(1),
            tokens: Vec::new(),
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }
    /// The tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    /// Bytes of KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.size_bytes()
    }
    /// Bytes of the compute buffer so far.
    pub fn compute_bytes(&self) -> usize {
        self.alloc.buffer_size()
    }

    /// Forgets all cached tokens.
    pub fn reset(&mut self) {
        self.tokens.clear();
    }

    /// Keeps only the first `n` cached tokens (later positions are overwritten by the next eval).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// Makes the cache hold exactly `ids` and returns the logits after its last token,
    /// re-using the longest cached prefix (multi-turn chat re-evaluates only the new turn).
    pub fn eval_prompt(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        if ids.is_empty() {
            return Err(RuntimeError::Input("empty prompt".into()));
        }
        let common = self
            .tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        self.truncate(common.min(ids.len() - 1));
        let start = self.tokens.len();
        self.eval(&ids[start..], false)
    }

    /// Feeds `tokens` after the cached ones. Returns the logits of the last token, or with
    /// `all_logits` of every token (row-major, `tokens.len() × n_vocab`).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::Input("no tokens to evaluate".into()));
        }
        if self.tokens.len() + tokens.len() > self.n_ctx {
            return Err(RuntimeError::Input(format!(
                "{} tokens do not fit in the context: {} already used of {}",
                tokens.len(),
                self.tokens.len(),
                self.n_ctx
            )));
        }
        let n_vocab = self.model.hparams.n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(RuntimeError::Input(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        let mut out = Vec::with_capacity(if all_logits {
            tokens.len() * n_vocab
        } else {
            n_vocab
        });
        for chunk in tokens.chunks(self.n_batch) {
            let step = Step {
                n_past: self.tokens.len(),
                n_tokens: chunk.len(),
                n_ctx: self.n_ctx,
                all_logits,
            };
            let logits = self.run_step(chunk, step)?;
            if all_logits {
                out.extend_from_slice(&logits);
            } else {
                out = logits;
            }
            self.tokens.extend_from_slice(chunk);
        }
        Ok(out)
    }

    fn run_step(&mut self, tokens: &[u32], step: Step) -> Result<Vec<f32>, RuntimeError> {
        let model = self.model;
        let hp = &model.hparams;
        let weights = model.weights();
        let cache: Vec<LayerCache> = (0..hp.n_layer)
            .map(|il| LayerCache {
                k: self.cache.at(2 * il).expect("k"),
                v: self.cache.at(2 * il + 1).expect("v"),
            })
            .collect();
        let backend = &self.backend;
        let max_nodes = 64 + 48 * hp.n_layer;
        self.alloc
            .with_graph(max_nodes, |g| -> Result<Vec<f32>, RuntimeError> {
                let io = build_graph(g, hp, &weights, &cache, step)?;
                g.allocate()?;
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                let (pos, mask) = step_inputs(step);
                g.set_i32(io.tokens, &ids)?;
                g.set_i32(io.rope_pos, &pos)?;
                g.set_f32(io.mask, &mask)?;
                g.compute(backend)?;
                Ok(g.read_f32(io.logits)?)
            })
    }
}
