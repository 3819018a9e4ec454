//! An inference session: the CPU backend (and the model's GPU, if it has one), a KV cache split
//! the way the model's plan splits the layers, and ggml's scheduler over a loaded model. `eval`
//! feeds tokens (in batches) and returns logits.

use crate::chatglm::{build_graph, step_mask, step_positions, Attention, LayerCache, Step};
use crate::model::Model;
use crate::RuntimeError;
use glm_ggml::{Backend, Isa, KvType, Scheduler, TensorSpec, TensorStore};

pub use crate::plan::{CacheType, FlashAttn};

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context size in tokens (0 = the model's training context).
    pub n_ctx: usize,
    /// Prompt tokens per graph.
    pub n_batch: usize,
    pub n_threads: usize,
    pub cache_type: CacheType,
    /// `-fa`; `Auto` is on for a model wholly on the CPU.
    pub flash_attn: FlashAttn,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 0,
            n_batch: 512,
            n_threads: crate::default_threads(),
            cache_type: CacheType::F16,
            flash_attn: FlashAttn::Auto,
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
    /// With a GPU: the compute buffers are sized for the largest graphs up front (`reserve`),
    /// for single-row logits, and for all-row logits once asked for.
    reserved_all_logits: bool,
    n_ctx: usize,
    n_batch: usize,
    attention: Attention,
    cache_type: CacheType,
    /// The tokens whose K/V are in the cache, in order.
    tokens: Vec<u32>,
}

/// The attention a session of `model` runs for `fa` and `cache`, or why the combination cannot
/// run: flash attention and quantized caches are glm-kernels' CPU kernel's, and ggml's unfused
/// attention multiplies by a transposed V, which cannot be block-quantized.
pub fn choose_attention(
    model: &Model,
    fa: FlashAttn,
    cache: CacheType,
) -> Result<Attention, RuntimeError> {
    let hp = &model.hparams;
    let gpu = model.plan.uses_gpu();
    let gpu_layers = model.plan.n_gpu_layers;
    for (flag, t) in [("-ctk", cache.k), ("-ctv", cache.v)] {
        if t.is_quantized() && !hp.head_dim.is_multiple_of(t.block_elems()) {
            return Err(RuntimeError::Input(format!(
                "{flag} {}: a quantized cache needs a head size that is a multiple of {}; this \
                 model's is {} (use f16 or f32)",
                t.name(),
                t.block_elems(),
                hp.head_dim
            )));
        }
        if t.is_quantized() && gpu {
            return Err(RuntimeError::Input(format!(
                "{flag} {}: quantized caches are read by glmtool's CPU attention kernel, and this \
                 model runs {gpu_layers} layers on the GPU (use f16 there, or --device cpu)",
                t.name()
            )));
        }
    }
    if fa == FlashAttn::On && gpu {
        return Err(RuntimeError::Input(format!(
            "-fa on: glmtool's flash attention is a CPU kernel, and this model runs \
             {gpu_layers} layers on the GPU (use -fa auto or off, or --device cpu)"
        )));
    }
    if fa.on_cpu(gpu) {
        let isa = model.cpu_kernels().unwrap_or_else(Isa::detect);
        return Ok(Attention::Flash(isa));
    }
    if cache.v.is_quantized() {
        return Err(RuntimeError::Input(format!(
            "-ctv {}: a quantized V cache needs flash attention (-fa on or auto), which {}",
            cache.v.name(),
            if fa == FlashAttn::Off {
                "-fa off turns off"
            } else {
                "does not run with GPU layers"
            }
        )));
    }
    Ok(Attention::Unfused)
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
        let attention = choose_attention(model, opts.flash_attn, opts.cache_type)?;
        let cpu = Backend::cpu(opts.n_threads)?;
        let gpu = model.gpu_backend();
        let n = (hp.kv_width() * n_ctx) as i64;
        // The CPU's share of the cache is zero-filled at once: more than the machine has would
        // get the process killed by the OOM killer instead of an error.
        let cpu_layers = (0..hp.n_layer)
            .filter(|&il| gpu.is_none() || !model.plan.layer_on_gpu(il))
            .count() as u64;
        let bytes = |c: CacheType| cpu_layers * n_ctx as u64 * c.token_bytes(hp);
        let smaller: Vec<(CacheType, u64)> = match attention {
            Attention::Flash(_) if hp.head_dim.is_multiple_of(32) => [KvType::Q8_0, KvType::Q4_0]
                .into_iter()
                .map(CacheType::both)
                .filter(|c| bytes(*c) < bytes(opts.cache_type))
                .map(|c| (c, bytes(c)))
                .collect(),
            _ => Vec::new(),
        };
        check_cache_fits(
            bytes(opts.cache_type),
            n_ctx,
            cpu_layers * opts.cache_type.token_bytes(hp),
            &smaller,
            available_memory(),
        )?;
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
            for (kv, t) in [("k", opts.cache_type.k), ("v", opts.cache_type.v)] {
                specs.push(TensorSpec {
                    name: format!("cache_{kv}_l{il}"),
                    ty: glm_ggml::kv_ggml_type(t),
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
        let mut session = Session {
            model,
            sched,
            cache_cpu,
            cache_gpu,
            cache_at,
            reserved_all_logits: false,
            n_ctx,
            n_batch: opts.n_batch.max(1),
            attention,
            cache_type: opts.cache_type,
            tokens: Vec::new(),
        };
        if gpu.is_some() {
            session.reserve_compute(false)?;
        }
        Ok(session)
    }

    /// Sizes the compute buffers for the largest graphs the session can run: a full batch and
    /// a batch of 31 tokens (ggml's scheduler places big batches differently), each attending
    /// over the whole context. In this ggml a compute buffer that has to grow while a graph is
    /// allocated cannot report a failed allocation (it crashes); reserving first turns running
    /// out of GPU memory into an error at start. Done by `new` when the model uses a GPU (and
    /// by `eval` before its first all-row-logits batch); a CPU session's buffers grow as needed.
    pub fn reserve_compute(&mut self, all_logits: bool) -> Result<(), RuntimeError> {
        let model = self.model;
        let weights = model.weights();
        let cache = layer_caches(&self.cache_at, &self.cache_cpu, &self.cache_gpu);
        let full = self.n_batch.min(self.n_ctx);
        let mut sizes = vec![full];
        if full > SMALL_BATCH {
            sizes.push(SMALL_BATCH);
        }
        for t in sizes {
            let step = Step {
                n_past: self.n_ctx - t,
                n_tokens: t,
                n_ctx: self.n_ctx,
                all_logits,
            };
            self.sched.with_graph(|g| -> Result<(), RuntimeError> {
                build_graph(g, &model.hparams, &weights, &cache, step, self.attention)?;
                g.reserve().map_err(|e| oom(e, step, model.plan.uses_gpu()))
            })?;
        }
        Ok(())
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    /// How attention is computed (`-fa`).
    pub fn attention(&self) -> Attention {
        self.attention
    }
    /// The KV cache's element types.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
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
        self.truncate(self.reusable_prefix(ids));
        let start = self.tokens.len();
        self.eval(&ids[start..], false)
    }

    /// How many leading tokens of `ids` the cache already holds and a prompt of `ids` can keep:
    /// the common prefix, less the last token of `ids` (whose logits are needed).
    pub fn reusable_prefix(&self, ids: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1))
    }

    /// Feeds `tokens` after the cached ones. Returns the logits of the last token, or with
    /// `all_logits` of every token (row-major, `tokens.len() × n_vocab`).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>, RuntimeError> {
        self.eval_observed(tokens, all_logits, None)
    }

    /// [`Self::eval`], adding the statistics of every matrix's input to `observe` (importance
    /// matrices, CPU only).
    pub fn eval_observed(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        observe: Option<&crate::imatrix::Observers>,
    ) -> Result<Vec<f32>, RuntimeError> {
        if observe.is_some() && self.model.plan.uses_gpu() {
            return Err(RuntimeError::Input(
                "importance matrices are collected on the CPU only (--device cpu)".into(),
            ));
        }
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
            if all_logits && !self.reserved_all_logits && self.model.gpu_backend().is_some() {
                self.reserve_compute(true)?;
                self.reserved_all_logits = true;
            }
            let logits = self.run_step(chunk, step, observe)?;
            if all_logits {
                out.extend_from_slice(&logits);
            } else {
                out = logits;
            }
            self.tokens.extend_from_slice(chunk);
        }
        Ok(out)
    }

    fn run_step(
        &mut self,
        tokens: &[u32],
        step: Step,
        observe: Option<&crate::imatrix::Observers>,
    ) -> Result<Vec<f32>, RuntimeError> {
        let model = self.model;
        let hp = &model.hparams;
        let weights = match observe {
            Some(obs) => model.weights().observed(obs),
            None => model.weights(),
        };
        let cache = layer_caches(&self.cache_at, &self.cache_cpu, &self.cache_gpu);
        let on_gpu = model.plan.uses_gpu();
        let attention = self.attention;
        self.sched
            .with_graph(|g| -> Result<Vec<f32>, RuntimeError> {
                let io = build_graph(g, hp, &weights, &cache, step, attention)?;
                g.allocate().map_err(|e| oom(e, step, on_gpu))?;
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                g.set_i32(io.tokens, &ids)?;
                g.set_i32(io.rope_pos, &step_positions(step))?;
                if let Some(mask) = io.mask {
                    g.set_f32(mask, &step_mask(step))?;
                }
                g.compute()?;
                Ok(g.read_f32(io.logits)?)
            })
    }
}

/// Errs when a KV cache of `bytes` (`per_token` bytes a token) would not fit in the `available`
/// memory (when known), naming the largest context that would, and the first of the `smaller`
/// cache types (with their sizes) that would fit the whole context.
fn check_cache_fits(
    bytes: u64,
    n_ctx: usize,
    per_token: u64,
    smaller: &[(CacheType, u64)],
    available: Option<u64>,
) -> Result<(), RuntimeError> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match available {
        Some(avail) if bytes > avail => {
            let mut fix = format!(
                "use a smaller context (-c {} fits)",
                avail / per_token.max(1)
            );
            if let Some((c, b)) = smaller.iter().find(|(_, b)| *b <= avail) {
                fix.push_str(&format!(
                    " or a smaller cache type (-ctk {} -ctv {}: {:.1} GiB)",
                    c.k.name(),
                    c.v.name(),
                    gib(*b)
                ));
            }
            Err(RuntimeError::Input(format!(
                "the KV cache for a context of {n_ctx} tokens needs {:.1} GiB, more than the \
                 {:.1} GiB of memory available: {fix}",
                gib(bytes),
                gib(avail)
            )))
        }
        _ => Ok(()),
    }
}

/// MemAvailable from /proc/meminfo (Linux), in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Graph nodes for `n_layer` layers, with room to spare (ggml aborts past the limit; the graph
/// builder checks it first).
fn max_nodes(n_layer: usize) -> usize {
    128 + 64 * n_layer
}

/// The largest batch that ggml's scheduler places like a single token (CUDA's offload_op takes
/// batches of 32 and more to the GPU).
const SMALL_BATCH: usize = 31;

/// Each layer's K and V cache tensors, from the store of the device the layer is on.
fn layer_caches<'c>(
    cache_at: &[(bool, usize)],
    cpu: &'c Option<TensorStore>,
    gpu: &'c Option<TensorStore>,
) -> Vec<LayerCache<'c>> {
    cache_at
        .iter()
        .map(|&(on_gpu, i)| {
            let store = if on_gpu { gpu } else { cpu };
            let store = store.as_ref().expect("a store for every placed layer");
            LayerCache {
                k: store.at(i).expect("k"),
                v: store.at(i + 1).expect("v"),
            }
        })
        .collect()
}

/// A failed compute-buffer allocation, with what to change when it is the GPU's.
fn oom(e: glm_ggml::GgmlError, step: Step, on_gpu: bool) -> RuntimeError {
    if !on_gpu {
        return e.into();
    }
    RuntimeError::Input(format!(
        "{e} ({} tokens per batch over a context of {}): out of GPU memory? \
         use fewer GPU layers (-ngl), a smaller --vram-budget, context (-c) or batch (-b)",
        step.n_tokens, step.n_ctx
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_larger_than_the_memory_is_an_error() {
        let per = 1 << 17;
        assert!(check_cache_fits(1 << 30, 8192, per, &[], Some(2 << 30)).is_ok());
        assert!(check_cache_fits(1 << 30, 8192, per, &[], None).is_ok());
        let e = check_cache_fits(470 << 30, 1 << 24, 470 << 6, &[], Some(20 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("16777216 tokens")
                && e.contains("470.0 GiB")
                && e.contains("-c 713924 fits")
                && !e.contains("-ctk"),
            "{e}"
        );
        // ChatGLM3-6B at 131,072 tokens: 7 GiB of f16, 3.7 of q8_0, 2 of q4_0
        let q8 = CacheType::both(KvType::Q8_0);
        let q4 = CacheType::both(KvType::Q4_0);
        let smaller = [(q8, 3_808_428_032), (q4, 2_013_265_920)];
        let e = check_cache_fits(7 << 30, 131_072, 57_344, &smaller, Some(3 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("-c 56173 fits") && e.contains("-ctk q4_0 -ctv q4_0: 1.9 GiB"),
            "{e}"
        );
        let e = check_cache_fits(7 << 30, 131_072, 57_344, &smaller, Some(4 << 30))
            .unwrap_err()
            .to_string();
        assert!(e.contains("-ctk q8_0 -ctv q8_0: 3.5 GiB"), "{e}");
        assert!(available_memory().is_some() || !cfg!(target_os = "linux"));
    }
}
