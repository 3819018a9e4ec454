//! Where each part of the model lives: the offload planner.
//!
//! A plan puts the *last* `n_gpu_layers` transformer layers (their weights and KV cache) on the
//! GPU and the rest on the CPU; the token embeddings always stay on the CPU (a row lookup needs
//! no GPU), the output head goes wherever the budget says. ggml's scheduler then runs each op
//! where its weights live and copies activations across (see docs/gpu.md).
//!
//! The GPU memory of a plan is: weights of the offloaded layers (+ the output head) + their
//! KV cache + the GPU compute buffer + CUDA's scratch pool. The compute buffer and the scratch
//! are estimates from the shapes (`compute_bytes`, `scratch_bytes`), checked against ggml's own
//! allocator in the tests; the session prints the measured compute buffers after the first
//! graph.

use crate::chatglm::Hparams;
use crate::RuntimeError;
use gguf::{names, GgufFile};
pub use glm_ggml::KvType;

const MIB: u64 = 1 << 20;
/// Batches of more than this many tokens take CUDA's cuBLAS path, which converts each weight
/// matrix to f16 in a scratch buffer (ggml b2757's MMQ_MAX_BATCH_SIZE with tensor cores).
const CUBLAS_MIN_BATCH: usize = 33;
/// Batches of at least this many tokens make ggml's scheduler run CPU-resident weights on the
/// GPU (it copies the weight over), as llama.cpp does (ggml-cuda's offload_op).
const OFFLOAD_MIN_BATCH: usize = 32;

/// Byte sizes of the model's parts and of its per-token state.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSizes {
    /// Weights of each layer.
    pub layer_weights: Vec<u64>,
    /// The largest single matrix of a layer (bytes, elements).
    pub largest_layer_matrix: (u64, u64),
    /// output.weight + output_norm.weight.
    pub output_weights: u64,
    /// Elements of output.weight.
    pub output_elements: u64,
    pub embd_weights: u64,
    pub hparams: Hparams,
}

impl ModelSizes {
    /// Reads the sizes from a GGUF file's tensor table (no tensor data is touched).
    pub fn from_gguf(f: &GgufFile, hp: &Hparams) -> Result<Self, RuntimeError> {
        let size = |name: &str| {
            f.tensor(name)
                .map(|t| (t.n_bytes(), t.n_elements()))
                .ok_or_else(|| {
                    RuntimeError::Model(format!("{}: tensor {name} is missing", f.path().display()))
                })
        };
        let mut layer_weights = Vec::with_capacity(hp.n_layer);
        let mut largest = (0, 0);
        for il in 0..hp.n_layer {
            let mut sum = 0;
            for lt in names::LayerTensor::ALL {
                let (b, n) = size(&lt.name(il))?;
                sum += b;
                if b > largest.0 {
                    largest = (b, n);
                }
            }
            layer_weights.push(sum);
        }
        let (out_b, out_n) = size(names::OUTPUT)?;
        Ok(ModelSizes {
            layer_weights,
            largest_layer_matrix: largest,
            output_weights: out_b + size(names::OUTPUT_NORM)?.0,
            output_elements: out_n,
            embd_weights: size(names::TOKEN_EMBD)?.0,
            hparams: hp.clone(),
        })
    }
}

/// The KV cache's element types, for keys and for values (llama.cpp's `-ctk` / `-ctv`; a
/// shape of the plan: it sizes the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheType {
    pub k: KvType,
    pub v: KvType,
}

impl CacheType {
    pub const F16: CacheType = CacheType::both(KvType::F16);
    pub const F32: CacheType = CacheType::both(KvType::F32);

    /// The same type for keys and values.
    pub const fn both(t: KvType) -> CacheType {
        CacheType { k: t, v: t }
    }

    /// Whether either is a block quantization (read only by the flash-attention kernel, V at
    /// least; see `session`).
    pub fn is_quantized(&self) -> bool {
        self.k.is_quantized() || self.v.is_quantized()
    }

    /// `-ctk f16 -ctv q8_0`, or `q8_0` when both are the same.
    pub fn describe(&self) -> String {
        if self.k == self.v {
            self.k.name().to_string()
        } else {
            format!("K {} / V {}", self.k.name(), self.v.name())
        }
    }

    /// Bytes of one token's keys and values in one layer.
    pub fn token_bytes(&self, hp: &Hparams) -> u64 {
        (self.k.row_bytes(hp.kv_width()) + self.v.row_bytes(hp.kv_width())) as u64
    }
}

impl Default for CacheType {
    fn default() -> Self {
        CacheType::F16
    }
}

/// `-fa`: flash attention (glm-kernels' CPU kernel) or ggml's unfused attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlashAttn {
    On,
    Off,
    /// On where the kernel runs: a model wholly on the CPU.
    #[default]
    Auto,
}

impl FlashAttn {
    /// llama.cpp's value: `on`, `off`, `auto`.
    pub fn name(self) -> &'static str {
        match self {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        }
    }

    /// Whether a plan that does (not) use a GPU runs flash attention on its CPU layers (`On`
    /// with a GPU is refused when the session starts).
    pub fn on_cpu(self, uses_gpu: bool) -> bool {
        match self {
            FlashAttn::On => true,
            FlashAttn::Off => false,
            FlashAttn::Auto => !uses_gpu,
        }
    }
}

/// The session shape a plan is made for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanShape {
    pub n_ctx: usize,
    pub n_batch: usize,
    pub cache_type: CacheType,
    /// Logit rows per batch: 1 for generation, `n_batch` for perplexity, the slots for `serve`.
    pub logits_rows: usize,
    pub flash_attn: FlashAttn,
    /// Sequences with a cache of `n_ctx` tokens each (`serve --parallel`'s slots).
    pub n_seq: usize,
}

impl Default for PlanShape {
    fn default() -> Self {
        PlanShape {
            n_ctx: 0,
            n_batch: 512,
            cache_type: CacheType::F16,
            logits_rows: 1,
            flash_attn: FlashAttn::Auto,
            n_seq: 1,
        }
    }
}

impl PlanShape {
    /// KV cache bytes of one layer (every sequence's).
    pub fn layer_kv_bytes(&self, hp: &Hparams) -> u64 {
        (self.n_ctx * self.n_seq.max(1)) as u64 * self.cache_type.token_bytes(hp)
    }

    fn batch(&self) -> u64 {
        self.n_batch.min(self.n_ctx).max(1) as u64
    }
}

/// Estimated peak of a graph's intermediate tensors as ggml's allocator lays them out (it reuses
/// the memory of dead tensors; softmax and activations run in place): the larger of one layer's
/// peak — attention: QKV, two activations and, unfused, the scores (n_ctx × batch × heads), or
/// with `flash` the roped Q and K and the attention output instead; feed-forward: the 2·n_ff
/// up-projection, the gate, two activations — and the output head's (logits and the normed
/// rows), plus the batch's inputs (tokens, positions and, unfused, the causal mask). Checked
/// against the allocator's real size by `tests/plan_estimate.rs`.
pub fn compute_bytes(hp: &Hparams, shape: &PlanShape, with_logits: bool, flash: bool) -> u64 {
    let t = shape.batch();
    let (e, f, q) = (hp.n_embd as u64, hp.n_ff as u64, hp.qkv_rows() as u64);
    let n_kv = shape.n_ctx as u64;
    let attn = if flash {
        3 * e + 2 * q
    } else {
        n_kv * hp.n_head as u64 + 2 * e + q
    };
    let ffn = 3 * f + 2 * e;
    let inputs = if flash { 3 * t } else { n_kv * t + 3 * t };
    let logits = if with_logits {
        let rows = shape.logits_rows.clamp(1, t as usize) as u64;
        (hp.n_vocab as u64 + 2 * e) * rows
    } else {
        0
    };
    let floats = (t * attn.max(ffn)).max(logits) + inputs;
    // 10% and 2 MiB for alignment and the allocator's fragmentation.
    4 * floats * 11 / 10 + 2 * MIB
}

/// CUDA's scratch pool (ggml's pool of temporary device buffers; it keeps its peak). The peak is
/// the largest single op's need: a weight product converts its activations and result to f16,
/// and for batches over 32 tokens the weight matrix too (`max_elements`: the largest matrix the
/// GPU multiplies); attention's batched product converts the softmax output and Q to f16; the
/// output head on the GPU with over 32 logit rows converts its matrix, rows and logits.
pub fn scratch_bytes(hp: &Hparams, shape: &PlanShape, max_elements: u64, head: bool) -> u64 {
    let t = shape.batch();
    let (e, f, v) = (hp.n_embd as u64, hp.n_ff as u64, hp.n_vocab as u64);
    let big = t as usize >= CUBLAS_MIN_BATCH;
    let weights = if big { 2 * max_elements } else { 0 } + 2 * t * (e + 2 * f);
    let attn = 2 * t * hp.n_head as u64 * (shape.n_ctx as u64 + hp.head_dim as u64);
    let rows = shape.logits_rows.clamp(1, t as usize) as u64;
    let logits = if head && rows as usize >= CUBLAS_MIN_BATCH {
        2 * v * e + 2 * rows * (e + v)
    } else {
        0
    };
    weights.max(attn).max(logits) + 32 * MIB
}

/// Memory of one side of a plan, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub weights: u64,
    pub kv: u64,
    pub compute: u64,
    /// CUDA's scratch pool (GPU only).
    pub scratch: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.compute + self.scratch
    }
}

/// How the number of GPU layers is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GpuLayers {
    /// As many as fit the budget (the default with a GPU).
    Auto,
    /// `-ngl N`: the last N layers (above the layer count: all of them and the output head).
    Count(usize),
}

/// What the user asked for and what the device has.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRequest {
    /// The GPU's name, or `None` for a CPU-only run.
    pub device: Option<String>,
    pub layers: GpuLayers,
    /// `--vram-budget`.
    pub budget: Option<u64>,
    /// Free device memory (`None` when the backend cannot tell, or planning without a device).
    pub free: Option<u64>,
}

/// A placement of the model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    pub device: Option<String>,
    pub n_layer: usize,
    /// The last `n_gpu_layers` layers are on the GPU.
    pub n_gpu_layers: usize,
    pub output_on_gpu: bool,
    /// The memory the plan had to fit in, if known.
    pub limit: Option<u64>,
    pub gpu: Usage,
    pub cpu: Usage,
    /// How the plan was chosen, for the printout.
    pub why: String,
    /// The KV cache's types (`CacheType::describe`).
    pub cache_type: String,
    /// Whether the CPU's layers run flash attention (`FlashAttn::on_cpu`).
    pub flash_attn: bool,
}

/// Memory kept free on the device when the budget comes from its free memory: other programs
/// and the driver need some, and the estimates are estimates.
pub fn reserve_bytes(free: u64) -> u64 {
    384 * MIB + free / 20
}

impl Plan {
    /// Whether layer `il` runs on the GPU.
    pub fn layer_on_gpu(&self, il: usize) -> bool {
        il + self.n_gpu_layers >= self.n_layer
    }

    pub fn uses_gpu(&self) -> bool {
        self.n_gpu_layers > 0 || self.output_on_gpu
    }

    /// A CPU-only plan.
    pub fn cpu_only(sizes: &ModelSizes, shape: &PlanShape) -> Plan {
        let (gpu, cpu) = usage(sizes, shape, 0, false);
        Plan {
            device: None,
            n_layer: sizes.hparams.n_layer,
            n_gpu_layers: 0,
            output_on_gpu: false,
            limit: None,
            gpu,
            cpu,
            why: "no GPU".into(),
            cache_type: shape.cache_type.describe(),
            flash_attn: shape.flash_attn.on_cpu(false),
        }
    }

    /// The printout: where each part lives and how much memory it takes.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        match &self.device {
            None => s.push_str(&format!(
                "plan: all {} layers on the CPU ({})\n",
                self.n_layer, self.why
            )),
            Some(dev) => {
                s.push_str(&format!(
                    "plan: {}/{} layers on {dev}, output head on {}, token embeddings on the CPU ({})\n",
                    self.n_gpu_layers,
                    self.n_layer,
                    if self.output_on_gpu { "the GPU" } else { "the CPU" },
                    self.why
                ));
                s.push_str(&format!(
                    "  GPU: weights {} + KV {} + compute {} + scratch {} = {}{}\n",
                    fmt_bytes(self.gpu.weights),
                    fmt_bytes(self.gpu.kv),
                    fmt_bytes(self.gpu.compute),
                    fmt_bytes(self.gpu.scratch),
                    fmt_bytes(self.gpu.total()),
                    self.limit
                        .map(|l| format!(" of {} available", fmt_bytes(l)))
                        .unwrap_or_default()
                ));
            }
        }
        s.push_str(&format!(
            "  CPU: weights {} (memory-mapped) + KV {} ({}) + compute {} ({})",
            fmt_bytes(self.cpu.weights),
            fmt_bytes(self.cpu.kv),
            self.cache_type,
            fmt_bytes(self.cpu.compute),
            if self.flash_attn {
                "flash attention"
            } else {
                "unfused attention"
            }
        ));
        s
    }
}

/// GPU and CPU usage with the last `n` layers (and the output head if `head`) on the GPU.
fn usage(sizes: &ModelSizes, shape: &PlanShape, n: usize, head: bool) -> (Usage, Usage) {
    let hp = &sizes.hparams;
    let n_layer = hp.n_layer;
    let kv = shape.layer_kv_bytes(hp);
    let gpu_w: u64 = sizes.layer_weights[n_layer - n..].iter().sum::<u64>()
        + if head { sizes.output_weights } else { 0 };
    let cpu_w: u64 = sizes.layer_weights[..n_layer - n].iter().sum::<u64>()
        + sizes.embd_weights
        + if head { 0 } else { sizes.output_weights };
    let mut gpu = Usage::default();
    if n > 0 || head {
        let batch = shape.batch() as usize;
        // CPU-resident matrices that the scheduler runs on the GPU for big batches are copied
        // into the GPU's compute buffer, one at a time.
        let mut offloaded = (0, 0);
        if batch >= OFFLOAD_MIN_BATCH {
            if n < n_layer {
                offloaded = sizes.largest_layer_matrix;
            }
            if !head && shape.logits_rows >= OFFLOAD_MIN_BATCH && sizes.output_weights > offloaded.0
            {
                offloaded = (sizes.output_weights, sizes.output_elements);
            }
        }
        let max_elements = offloaded.1.max(sizes.largest_layer_matrix.1);
        gpu = Usage {
            weights: gpu_w,
            kv: kv * n as u64,
            compute: compute_bytes(hp, shape, head, false) + offloaded.0,
            scratch: scratch_bytes(hp, shape, max_elements, head),
        };
    }
    let cpu = Usage {
        weights: cpu_w,
        kv: kv * (n_layer - n) as u64,
        compute: compute_bytes(hp, shape, !head, shape.flash_attn.on_cpu(n > 0 || head)),
        scratch: 0,
    };
    (gpu, cpu)
}

/// Chooses a plan for `req`.
pub fn plan(
    sizes: &ModelSizes,
    shape: &PlanShape,
    req: &PlanRequest,
) -> Result<Plan, RuntimeError> {
    let Some(device) = req.device.clone() else {
        return Ok(Plan::cpu_only(sizes, shape));
    };
    let n_layer = sizes.hparams.n_layer;
    let limit = match (req.budget, req.free) {
        (Some(b), Some(f)) => Some(b.min(f.saturating_sub(reserve_bytes(f)))),
        (Some(b), None) => Some(b),
        (None, Some(f)) => Some(f.saturating_sub(reserve_bytes(f))),
        (None, None) => None,
    };
    let limit_why = match (req.budget, req.free) {
        (Some(b), Some(f)) if limit != Some(b) => format!(
            "budget {} capped by the device's {} free less {} reserve",
            fmt_bytes(b),
            fmt_bytes(f),
            fmt_bytes(reserve_bytes(f))
        ),
        (Some(b), _) => format!("budget {}", fmt_bytes(b)),
        (None, Some(f)) => format!(
            "{} free less {} reserve",
            fmt_bytes(f),
            fmt_bytes(reserve_bytes(f))
        ),
        (None, None) => "device memory unknown".into(),
    };
    let fits =
        |n: usize, head: bool| limit.is_none_or(|l| usage(sizes, shape, n, head).0.total() <= l);
    let make = |n: usize, head: bool, why: String| {
        let (gpu, cpu) = usage(sizes, shape, n, head);
        Plan {
            device: Some(device.clone()),
            n_layer,
            n_gpu_layers: n,
            output_on_gpu: head,
            limit,
            gpu,
            cpu,
            why,
            cache_type: shape.cache_type.describe(),
            flash_attn: shape.flash_attn.on_cpu(n > 0 || head),
        }
    };
    match req.layers {
        GpuLayers::Count(k) => {
            // llama.cpp's -ngl: the last k layers; above the layer count, the output head too.
            let n = k.min(n_layer);
            let head = k > n_layer;
            if !fits(n, head) {
                let need = usage(sizes, shape, n, head).0.total();
                let largest = (0..=n_layer).rev().find(|&m| fits(m, false)).unwrap_or(0);
                return Err(RuntimeError::Input(format!(
                    "-ngl {k} needs {} of GPU memory ({}), more than the {} available ({limit_why}); \
                     at most {largest} layers fit — use -ngl {largest} or leave -ngl out to choose automatically",
                    fmt_bytes(need),
                    usage_detail(&usage(sizes, shape, n, head).0),
                    fmt_bytes(limit.unwrap_or(0)),
                )));
            }
            Ok(make(n, head, format!("-ngl {k}; {limit_why}")))
        }
        GpuLayers::Auto => {
            if limit.is_none() {
                return Ok(make(
                    n_layer,
                    true,
                    format!("all ({limit_why}; set --vram-budget to limit)"),
                ));
            }
            // The most weight bytes on the GPU, with or without the output head.
            let best_n = |head: bool| (0..=n_layer).rev().find(|&m| fits(m, head));
            let offloaded = |n: usize, head: bool| usage(sizes, shape, n, head).0.weights;
            let mut choice = (best_n(false).unwrap_or(0), false);
            if let Some(n) = best_n(true) {
                if offloaded(n, true) > offloaded(choice.0, choice.1) {
                    choice = (n, true);
                }
            }
            if choice == (0, false) {
                return Ok(Plan {
                    why: format!("not even one layer fits: {limit_why}"),
                    device: Some(device.clone()),
                    ..Plan::cpu_only(sizes, shape)
                });
            }
            Ok(make(choice.0, choice.1, format!("automatic: {limit_why}")))
        }
    }
}

fn usage_detail(u: &Usage) -> String {
    format!(
        "weights {}, KV {}, compute {}, scratch {}",
        fmt_bytes(u.weights),
        fmt_bytes(u.kv),
        fmt_bytes(u.compute),
        fmt_bytes(u.scratch)
    )
}

/// `1.50 GiB`, `230 MiB`, `12 KiB`.
pub fn fmt_bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    if b >= GIB {
        format!("{:.2} GiB", b as f64 / GIB as f64)
    } else if b >= MIB {
        format!("{} MiB", (b + MIB / 2) / MIB)
    } else {
        format!("{} KiB", b.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ChatGLM3-6B's shapes with q4_0-sized layers.
    fn sizes_6b() -> ModelSizes {
        let hp = Hparams {
            n_ctx_train: 8192,
            n_embd: 4096,
            n_ff: 13696,
            n_layer: 28,
            n_head: 32,
            n_head_kv: 2,
            head_dim: 128,
            eps: 1e-5,
            rope_base: 10000.0,
            n_vocab: 65024,
        };
        let q4 = |n: u64| n / 32 * 18;
        let layer = q4(4096 * 4608)
            + q4(4096 * 4096)
            + q4(4096 * 27392)
            + q4(13696 * 4096)
            + 4 * (4608 + 2 * 4096);
        ModelSizes {
            layer_weights: vec![layer; 28],
            largest_layer_matrix: (q4(4096 * 27392), 4096 * 27392),
            output_weights: 65024 * 4096 / 32 * 34 + 4 * 4096,
            output_elements: 65024 * 4096,
            embd_weights: 65024 * 4096 / 32 * 18,
            hparams: hp,
        }
    }

    fn shape() -> PlanShape {
        PlanShape {
            n_ctx: 4096,
            n_batch: 512,
            cache_type: CacheType::F16,
            logits_rows: 1,
            flash_attn: FlashAttn::Auto,
            n_seq: 1,
        }
    }

    fn req(layers: GpuLayers, budget: Option<u64>, free: Option<u64>) -> PlanRequest {
        PlanRequest {
            device: Some("GPU".into()),
            layers,
            budget,
            free,
        }
    }

    #[test]
    fn auto_fills_the_budget_and_no_more() {
        let s = sizes_6b();
        for gib in [1u64, 2, 3, 4, 6] {
            let budget = gib << 30;
            let p = plan(&s, &shape(), &req(GpuLayers::Auto, Some(budget), None)).unwrap();
            assert!(p.gpu.total() <= budget, "{gib} GiB: {}", p.describe());
            // One more layer would not fit (unless everything is already on the GPU).
            if p.n_gpu_layers < 28 {
                let (more, _) = usage(&s, &shape(), p.n_gpu_layers + 1, p.output_on_gpu);
                assert!(more.total() > budget, "{gib} GiB: a layer more would fit");
            }
            assert!(p.layer_on_gpu(27) || p.n_gpu_layers == 0);
            assert!(!p.layer_on_gpu(27 - p.n_gpu_layers));
        }
        let p2 = plan(&s, &shape(), &req(GpuLayers::Auto, Some(2 << 30), None)).unwrap();
        assert!(
            p2.n_gpu_layers >= 6 && p2.n_gpu_layers < 28,
            "{}",
            p2.describe()
        );
        // A big card takes everything.
        let p = plan(&s, &shape(), &req(GpuLayers::Auto, None, Some(80 << 30))).unwrap();
        assert_eq!((p.n_gpu_layers, p.output_on_gpu), (28, true));
        // A tiny budget takes nothing.
        let p = plan(&s, &shape(), &req(GpuLayers::Auto, Some(100 << 20), None)).unwrap();
        assert!(!p.uses_gpu());
    }

    /// `serve --parallel N` holds N caches: the GPU's share of them counts against its budget.
    #[test]
    fn every_slot_cache_counts_on_the_gpu() {
        let s = sizes_6b();
        let slots = |n: usize| PlanShape {
            n_seq: n,
            ..shape()
        };
        let budget = Some(3 << 30);
        let one = plan(&s, &slots(1), &req(GpuLayers::Auto, budget, None)).unwrap();
        let four = plan(&s, &slots(4), &req(GpuLayers::Auto, budget, None)).unwrap();
        assert!(four.gpu.total() <= 3 << 30, "{}", four.describe());
        assert!(
            four.n_gpu_layers < one.n_gpu_layers,
            "{} vs {}",
            four.describe(),
            one.describe()
        );
        let per_layer = |p: &Plan| p.gpu.kv / p.n_gpu_layers as u64;
        assert_eq!(per_layer(&four), 4 * per_layer(&one));
    }

    #[test]
    fn free_memory_caps_the_budget() {
        let s = sizes_6b();
        let free = 3u64 << 30;
        let p = plan(
            &s,
            &shape(),
            &req(GpuLayers::Auto, Some(16 << 30), Some(free)),
        )
        .unwrap();
        assert_eq!(p.limit, Some(free - reserve_bytes(free)));
        assert!(p.why.contains("capped"), "{}", p.why);
        assert!(p.gpu.total() <= p.limit.unwrap());
    }

    #[test]
    fn explicit_layers() {
        let s = sizes_6b();
        let p = plan(&s, &shape(), &req(GpuLayers::Count(14), None, None)).unwrap();
        assert_eq!((p.n_gpu_layers, p.output_on_gpu), (14, false));
        assert!(p.layer_on_gpu(14) && !p.layer_on_gpu(13));
        assert_eq!(p.gpu.kv, 14 * shape().layer_kv_bytes(&s.hparams));
        assert_eq!(p.gpu.kv + p.cpu.kv, 28 * shape().layer_kv_bytes(&s.hparams));
        assert_eq!(
            p.gpu.weights + p.cpu.weights,
            s.layer_weights.iter().sum::<u64>() + s.output_weights + s.embd_weights
        );
        let p = plan(&s, &shape(), &req(GpuLayers::Count(99), None, None)).unwrap();
        assert_eq!((p.n_gpu_layers, p.output_on_gpu), (28, true));
        let p = plan(
            &s,
            &shape(),
            &req(GpuLayers::Count(28), None, Some(80 << 30)),
        )
        .unwrap();
        assert_eq!((p.n_gpu_layers, p.output_on_gpu), (28, false));
        let p = plan(&s, &shape(), &req(GpuLayers::Count(0), None, None)).unwrap();
        assert!(!p.uses_gpu());
        let e = plan(
            &s,
            &shape(),
            &req(GpuLayers::Count(28), Some(2 << 30), None),
        )
        .unwrap_err();
        assert!(e.to_string().contains("-ngl 28 needs"), "{e}");
        assert!(e.to_string().contains("layers fit"), "{e}");
    }

    /// Issue 22's memory targets at ChatGLM3-6B-32K's shapes (the 6B's, 32,768 tokens, batch
    /// 512): flash attention's compute buffer below a quarter of the unfused one (which holds
    /// 32 heads × 512 × 32,768 f32 scores), a q8_0 cache at most 0.55 × an f16 one.
    #[test]
    fn long_context_memory() {
        let hp = sizes_6b().hparams;
        let shape = |fa: FlashAttn, t: KvType| PlanShape {
            n_ctx: 32768,
            n_batch: 512,
            cache_type: CacheType::both(t),
            logits_rows: 1,
            flash_attn: fa,
            n_seq: 1,
        };
        let unfused = compute_bytes(&hp, &shape(FlashAttn::Off, KvType::F16), true, false);
        let flash = compute_bytes(&hp, &shape(FlashAttn::On, KvType::F16), true, true);
        assert!(
            unfused > 2 << 30 && flash < unfused / 4,
            "{flash} vs {unfused}"
        );
        let kv = |t| shape(FlashAttn::On, t).layer_kv_bytes(&hp) as f64;
        assert_eq!(kv(KvType::F16), 32768.0 * 2.0 * 256.0 * 2.0);
        assert!(kv(KvType::Q8_0) <= 0.55 * kv(KvType::F16));
        assert!(kv(KvType::Q4_0) <= 0.3 * kv(KvType::F16));
        // the plan's CPU side follows -fa: auto is flash attention without a GPU
        let sizes = sizes_6b();
        let p = Plan::cpu_only(&sizes, &shape(FlashAttn::Auto, KvType::Q8_0));
        assert_eq!(p.cpu.compute, flash);
        assert!(
            p.describe()
                .contains("(q8_0) + compute 108 MiB (flash attention)"),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn cpu_plan() {
        let s = sizes_6b();
        let mut r = req(GpuLayers::Auto, None, None);
        r.device = None;
        let p = plan(&s, &shape(), &r).unwrap();
        assert!(!p.uses_gpu());
        assert_eq!(p.gpu, Usage::default());
        assert!(p.describe().contains("all 28 layers on the CPU"));
    }
}
