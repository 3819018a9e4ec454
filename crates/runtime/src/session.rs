//! An inference session: the CPU backend (and the model's GPU, if it has one), a KV cache split
//! the way the model's plan splits the layers, and ggml's scheduler over a loaded model. `eval`
//! feeds tokens (in batches) and returns logits.

use crate::chatglm::{
    build_graph, step_mask, step_positions, Attention, LayerCache, SeqStep, Step,
};
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
    /// Sequences (slots) with a cache region of `n_ctx` tokens each, evaluated together by
    /// [`Session::eval_batch`].
    pub n_seq: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 0,
            n_batch: 512,
            n_threads: crate::default_threads(),
            cache_type: CacheType::F16,
            flash_attn: FlashAttn::Auto,
            n_seq: 1,
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
    /// Per sequence, the tokens whose K/V are in its cache region, in order.
    tokens: Vec<Vec<u32>>,
}

/// One sequence's tokens in a batch of [`Session::eval_batch`].
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    pub seq: usize,
    /// Appended after the sequence's cached tokens.
    pub tokens: &'a [u32],
    /// Whether the logits after its last token are wanted.
    pub logits: bool,
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
        let n_seq = opts.n_seq.max(1);
        let cpu = Backend::cpu(opts.n_threads)?;
        let gpu = model.gpu_backend();
        let n = (hp.kv_width() * n_ctx * n_seq) as i64;
        // The CPU's share of the cache is zero-filled at once: more than the machine has would
        // get the process killed by the OOM killer instead of an error.
        let cpu_layers = (0..hp.n_layer)
            .filter(|&il| gpu.is_none() || !model.plan.layer_on_gpu(il))
            .count() as u64;
        let bytes = |c: CacheType| cpu_layers * (n_ctx * n_seq) as u64 * c.token_bytes(hp);
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
            n_ctx * n_seq,
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
        let sched = Scheduler::new(gpu, &cpu, max_nodes(hp.n_layer, n_seq))?;
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
            tokens: vec![Vec::new(); n_seq],
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
            let seqs = [SeqStep {
                seq: 0,
                n_past: self.n_ctx - t,
                n_tokens: t,
            }];
            let out_rows: Vec<usize> = if all_logits {
                (0..t).collect()
            } else {
                vec![t - 1]
            };
            let step = Step {
                seqs: &seqs,
                n_ctx: self.n_ctx,
                out_rows: &out_rows,
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
    /// Prompt tokens per graph.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }
    /// How attention is computed (`-fa`).
    pub fn attention(&self) -> Attention {
        self.attention
    }
    /// The KV cache's element types.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }
    /// Tokens in the cache (of sequence 0).
    pub fn n_past(&self) -> usize {
        self.tokens[0].len()
    }
    /// The tokens in the cache (of sequence 0).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[0]
    }
    /// Sequences (slots) this session holds a cache region for.
    pub fn n_seq(&self) -> usize {
        self.tokens.len()
    }
    /// The tokens in sequence `seq`'s cache region.
    pub fn seq_tokens(&self, seq: usize) -> &[u32] {
        &self.tokens[seq]
    }
    /// Whether one step can evaluate several sequences ([`Self::eval_batch`] with more than one
    /// input): with flash attention (CPU); otherwise one sequence per step.
    pub fn batches_sequences(&self) -> bool {
        matches!(self.attention, Attention::Flash(_))
    }
    /// Bytes of KV cache (CPU and GPU).
    pub fn cache_bytes(&self) -> usize {
        self.cache_cpu.as_ref().map_or(0, |c| c.size_bytes())
            + self.cache_gpu.as_ref().map_or(0, |c| c.size_bytes())
    }
    /// Bytes of the CPU's KV cache that one cached token of one sequence takes (its keys and
    /// values in every CPU layer): what attention reads per token of context.
    pub fn cpu_cache_bytes_per_token(&self) -> usize {
        self.cache_cpu.as_ref().map_or(0, |c| c.size_bytes()) / (self.n_ctx * self.n_seq()).max(1)
    }
    /// Bytes of the compute buffers so far (CPU and GPU).
    pub fn compute_bytes(&self) -> usize {
        self.sched.cpu_buffer_size() + self.sched.gpu_buffer_size()
    }
    /// Bytes of the compute buffers so far: (CPU, GPU).
    pub fn compute_bytes_split(&self) -> (usize, usize) {
        (self.sched.cpu_buffer_size(), self.sched.gpu_buffer_size())
    }

    /// Forgets all cached tokens (of every sequence).
    pub fn reset(&mut self) {
        self.tokens.iter_mut().for_each(Vec::clear);
    }

    /// Keeps only the first `n` cached tokens (later positions are overwritten by the next eval).
    pub fn truncate(&mut self, n: usize) {
        self.tokens[0].truncate(n);
    }

    /// [`Self::truncate`] for sequence `seq`.
    pub fn truncate_seq(&mut self, seq: usize, n: usize) {
        self.tokens[seq].truncate(n);
    }

    /// Makes sequence `dst` hold the first `n` cached tokens of sequence `src` (their K/V are
    /// copied): choices of one prompt share its evaluation.
    pub fn copy_seq(&mut self, src: usize, dst: usize, n: usize) -> Result<(), RuntimeError> {
        let n_seq = self.n_seq();
        if src >= n_seq || dst >= n_seq || n > self.tokens[src].len() {
            return Err(RuntimeError::Input(format!(
                "copy of {n} tokens from sequence {src} to {dst} ({n_seq} sequences, {} cached)",
                self.tokens.get(src).map_or(0, Vec::len)
            )));
        }
        if src == dst {
            self.tokens[dst].truncate(n);
            return Ok(());
        }
        let kv_w = self.model.hparams.kv_width();
        let n_ctx = self.n_ctx;
        let flash = matches!(self.attention, Attention::Flash(_));
        for &(on_gpu, i) in &self.cache_at {
            let store = if on_gpu {
                &self.cache_gpu
            } else {
                &self.cache_cpu
            };
            let store = store.as_ref().expect("a store for every placed layer");
            for (j, ty) in [(i, self.cache_type.k), (i + 1, self.cache_type.v)] {
                let elem_ty = glm_ggml::kv_ggml_type(ty);
                if j == i || flash {
                    // rows of kv_width by token
                    let row = glm_ggml::quant::row_size(elem_ty, kv_w)?;
                    store.copy_within(j, src * n_ctx * row, dst * n_ctx * row, n * row)?;
                } else {
                    // unfused V: kv_width rows of every region's tokens
                    let e = glm_ggml::quant::row_size(elem_ty, 1)?;
                    let stride = n_ctx * n_seq * e;
                    for r in 0..kv_w {
                        let at = r * stride;
                        store.copy_within(j, at + src * n_ctx * e, at + dst * n_ctx * e, n * e)?;
                    }
                }
            }
        }
        self.tokens[dst] = self.tokens[src][..n].to_vec();
        Ok(())
    }

    /// [`Self::reusable_prefix`] for sequence `seq`.
    pub fn reusable_prefix_seq(&self, seq: usize, ids: &[u32]) -> usize {
        self.tokens[seq]
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1))
    }

    /// Evaluates several sequences' tokens in one step: every matrix product runs once over
    /// all rows, attention per sequence. Returns, in order, the logits after the last token of
    /// each input that asks for them. Each sequence at most once; more than one input needs
    /// [`Self::batches_sequences`]. A token's logits do not depend on what else is in the
    /// batch (the kernels accumulate each column alike whatever shares its tile).
    pub fn eval_batch(&mut self, inputs: &[SeqInput]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let n_seq = self.n_seq();
        let n_vocab = self.model.hparams.n_vocab;
        if inputs.is_empty() {
            return Err(RuntimeError::Input("no tokens to evaluate".into()));
        }
        if inputs.len() > 1 && !self.batches_sequences() {
            return Err(RuntimeError::Input(
                "several sequences in one step need flash attention (-fa)".into(),
            ));
        }
        let mut seqs = Vec::with_capacity(inputs.len());
        let mut out_rows = Vec::new();
        let mut ids = Vec::new();
        for (i, x) in inputs.iter().enumerate() {
            if x.seq >= n_seq || inputs[..i].iter().any(|y| y.seq == x.seq) {
                return Err(RuntimeError::Input(format!(
                    "sequence {} is not one of {n_seq} or appears twice in a batch",
                    x.seq
                )));
            }
            let past = self.tokens[x.seq].len();
            if x.tokens.is_empty() || past + x.tokens.len() > self.n_ctx {
                return Err(RuntimeError::Input(format!(
                    "{} tokens do not fit in sequence {}'s context: {past} already used of {}",
                    x.tokens.len(),
                    x.seq,
                    self.n_ctx
                )));
            }
            if let Some(&bad) = x.tokens.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(RuntimeError::Input(format!(
                    "token id {bad} is outside the vocabulary of {n_vocab}"
                )));
            }
            ids.extend_from_slice(x.tokens);
            if x.logits {
                out_rows.push(ids.len() - 1);
            }
            seqs.push(SeqStep {
                seq: x.seq,
                n_past: past,
                n_tokens: x.tokens.len(),
            });
        }
        if out_rows.is_empty() {
            // the graph computes at least one row of logits
            out_rows.push(ids.len() - 1);
        }
        let step = Step {
            seqs: &seqs,
            n_ctx: self.n_ctx,
            out_rows: &out_rows,
        };
        let logits = self.run_step(&ids, step, None)?;
        for x in inputs {
            self.tokens[x.seq].extend_from_slice(x.tokens);
        }
        let mut rows = logits.chunks_exact(n_vocab).map(<[f32]>::to_vec);
        Ok(inputs
            .iter()
            .filter(|x| x.logits)
            .map(|_| rows.next().expect("a row per input asking for logits"))
            .collect())
    }

    /// Makes the cache hold exactly `ids` and returns the logits after its last token,
    /// re-using the longest cached prefix (multi-turn chat re-evaluates only the new turn).
    pub fn eval_prompt(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        if ids.is_empty() {
            return Err(RuntimeError::Input("empty prompt".into()));
        }
        self.truncate(self.reusable_prefix(ids));
        let start = self.n_past();
        self.eval(&ids[start..], false)
    }

    /// How many leading tokens of `ids` the cache already holds and a prompt of `ids` can keep:
    /// the common prefix, less the last token of `ids` (whose logits are needed).
    pub fn reusable_prefix(&self, ids: &[u32]) -> usize {
        self.reusable_prefix_seq(0, ids)
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
        if self.n_past() + tokens.len() > self.n_ctx {
            return Err(RuntimeError::Input(format!(
                "{} tokens do not fit in the context: {} already used of {}",
                tokens.len(),
                self.n_past(),
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
            let seqs = [SeqStep {
                seq: 0,
                n_past: self.n_past(),
                n_tokens: chunk.len(),
            }];
            let out_rows: Vec<usize> = if all_logits {
                (0..chunk.len()).collect()
            } else {
                vec![chunk.len() - 1]
            };
            let step = Step {
                seqs: &seqs,
                n_ctx: self.n_ctx,
                out_rows: &out_rows,
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
            self.tokens[0].extend_from_slice(chunk);
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
                if let Some(t) = io.out_rows {
                    let rows: Vec<i32> = step.out_rows.iter().map(|&r| r as i32).collect();
                    g.set_i32(t, &rows)?;
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
            Err(RuntimeError::CacheTooBig(format!(
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

/// Graph nodes for `n_layer` layers and up to `n_seq` sequences a step (each adds a dozen
/// views and ops of attention per layer), with room to spare (ggml aborts past the limit; the
/// graph builder checks it first).
fn max_nodes(n_layer: usize, n_seq: usize) -> usize {
    128 + (64 + 12 * n_seq) * n_layer
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
        step.n_tokens(),
        step.n_ctx
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
