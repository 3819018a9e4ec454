//! An inference session: the CPU backend (and the model's GPU, if it has one), a KV cache split
//! the way the model's plan splits the layers, and ggml's scheduler over a loaded model. `eval`
//! feeds tokens (in batches) and returns logits.

use crate::chatglm::{build_graph, step_inputs, LayerCache, Step};
use crate::model::Model;
use crate::RuntimeError;
use glm_ggml::{Backend, Scheduler, TensorSpec, TensorStore, TYPE_F16, TYPE_F32};

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
    sched: Scheduler,
    /// KV cache of the CPU's layers and of the GPU's layers; `cache_at[il]` = (on GPU, index of
    /// the layer's K in its store; V follows).
    cache_cpu: Option<TensorStore>,
    cache_gpu: Option<TensorStore>,
    cache_at: Vec<(bool, usize)>,
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
        let cpu = Backend::cpu(opts.n_threads)?;
        let gpu = model.gpu_backend();
        let ty = match opts.cache_type {
            CacheType::F16 => TYPE_F16,
            CacheType::F32 => TYPE_F32,
        };
        let n = (hp.kv_width() * n_ctx) as i64;
        let (mut cpu_specs, mut gpu_specs) = (Vec::new(), Vec::new());
        let mut cache_at = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let on_gpu = gpu.is_some() && model.plan.layer_on_gpu(il);
            let specs = if on_gpu {
                &mut gpu_specs
            } else {
                &mut cpu_specs
            };
            cache_at.push((on_gpu, specs.len()));
            for kv in ["k", "v"] {
                specs.push(TensorSpec {
                    name: format!("cache_{kv}_l{il}"),
                    ty,
                    ne: vec![n],
                });
            }
        }
        let alloc = |b: &Backend, specs: &[TensorSpec]| -> Result<_, RuntimeError> {
            if specs.is_empty() {
                return Ok(None);
            }
            Ok(Some(TensorStore::allocate(b, specs)?))
        };
        let cache_cpu = alloc(&cpu, &cpu_specs)?;
        let cache_gpu = match gpu {
            Some(g) => alloc(g, &gpu_specs)?,
            None => None,
        };
        let sched = Scheduler::new(gpu, &cpu, max_nodes(hp.n_layer))?;
        Ok(Session {
            model,
            sched,
            cache_cpu,
            cache_gpu,
            cache_at,
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
    /// Bytes of KV cache (CPU and GPU).
    pub fn cache_bytes(&self) -> usize {
        self.cache_cpu.as_ref().map_or(0, |c| c.size_bytes())
            + self.cache_gpu.as_ref().map_or(0, |c| c.size_bytes())
    }
    /// Bytes of the compute buffers so far (CPU and GPU).
    pub fn compute_bytes(&self) -> usize {
        self.sched.cpu_buffer_size() + self.sched.gpu_buffer_size()
    }
    /// Bytes of the compute buffers so far: (CPU, GPU).
    pub fn compute_bytes_split(&self) -> (usize, usize) {
        (self.sched.cpu_buffer_size(), self.sched.gpu_buffer_size())
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
        let cache: Vec<LayerCache> = self
            .cache_at
            .iter()
            .map(|&(on_gpu, i)| {
                let store = if on_gpu {
                    &self.cache_gpu
                } else {
                    &self.cache_cpu
                };
                let store = store.as_ref().expect("a store for every placed layer");
                LayerCache {
                    k: store.at(i).expect("k"),
                    v: store.at(i + 1).expect("v"),
                }
            })
            .collect();
        let on_gpu = model.plan.uses_gpu();
        self.sched
            .with_graph(|g| -> Result<Vec<f32>, RuntimeError> {
                let io = build_graph(g, hp, &weights, &cache, step)?;
                g.allocate().map_err(|e| match on_gpu {
                    true => RuntimeError::Input(format!(
                        "{e} ({} tokens per batch over a context of {}): out of GPU memory? \
                         use fewer GPU layers (-ngl), a smaller --vram-budget or a smaller batch (-b)",
                        step.n_tokens, step.n_ctx
                    )),
                    false => e.into(),
                })?;
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                let (pos, mask) = step_inputs(step);
                g.set_i32(io.tokens, &ids)?;
                g.set_i32(io.rope_pos, &pos)?;
                g.set_f32(io.mask, &mask)?;
                g.compute()?;
                Ok(g.read_f32(io.logits)?)
            })
    }
}

/// Graph nodes for `n_layer` layers, with room to spare (ggml aborts past the limit; the graph
/// builder checks it first).
fn max_nodes(n_layer: usize) -> usize {
    128 + 64 * n_layer
}
