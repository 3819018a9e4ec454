//! Flags shared by several subcommands, as flattened clap structs.

use anyhow::{bail, Context, Result};
use clap::Args;
use glm_runtime::plan::{FlashAttn, KvType};
use glm_runtime::{
    CacheType, DeviceKind, GpuLayers, Isa, LoadOptions, Model, PlanShape, SessionOptions,
};
use std::path::PathBuf;

/// Model and context flags shared by `run`, `perplexity`, `bench` and `serve`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file, or a Hugging Face checkpoint folder (converted once into the cache and
    /// reused). Default: $GLMTOOL_MODEL, else the bundled tiny demo model
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// File type to convert a checkpoint given to -m to (as `convert --type`) [default: Q4_0]
    #[arg(long = "type", value_parser = parse_file_type)]
    pub convert_type: Option<glm_convert::FileType>,
    /// Threads (default: physical cores)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Kernels for quantized matrices on the CPU (q4_0, q8_0, q5_0, q5_1, iq4_nl, q3_K, q4_K,
    /// q5_K, q6_K, iq4_xs): native (glmtool's own, for the best
    /// instruction set here; the weights are repacked at load), avx512, avx-vnni, avx2, scalar,
    /// neon, or
    /// ggml (ggml's mul_mat, as llama.cpp b2757). Layers on a GPU always use ggml's
    #[arg(long = "cpu-kernels", default_value = "native", value_parser = parse_cpu_kernels)]
    pub cpu_kernels: CpuKernelsArg,
}

/// `--cpu-kernels`: `None` = ggml's.
#[derive(Clone, Copy, Debug)]
pub struct CpuKernelsArg(pub Option<Isa>);

fn parse_cpu_kernels(s: &str) -> Result<CpuKernelsArg, String> {
    let isa = match s {
        "ggml" => return Ok(CpuKernelsArg(None)),
        "native" => Isa::detect(),
        "avx512" | "avx512-vnni" => Isa::Avx512Vnni,
        "avx-vnni" => Isa::AvxVnni,
        "avx2" => Isa::Avx2,
        "scalar" => Isa::Scalar,
        "neon" => Isa::Neon,
        _ => {
            return Err(format!(
                "{s:?}: expected native, avx512, avx-vnni, avx2, scalar, neon or ggml"
            ))
        }
    };
    if !isa.runs_here() {
        let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        return Err(format!(
            "{s}: this CPU cannot run it (it can: {})",
            have.join(", ")
        ));
    }
    Ok(CpuKernelsArg(Some(isa)))
}

/// What a session — and its offload plan — is sized by (also `info --plan`'s flags).
#[derive(Args, Clone, Debug)]
pub struct ShapeArgs {
    /// Context size in tokens (default and maximum: the model's)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Prompt tokens per batch
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch: usize,
    /// KV cache type of keys and values: f32, f16, q8_0 or q4_0 (a quantized V cache needs
    /// flash attention)
    #[arg(long = "cache-type", default_value = "f16", value_parser = parse_kv_type)]
    pub cache_type: KvType,
    /// KV cache type of the keys (llama.cpp's -ctk) [default: --cache-type]
    #[arg(long = "cache-type-k", value_parser = parse_kv_type)]
    pub cache_type_k: Option<KvType>,
    /// KV cache type of the values (llama.cpp's -ctv) [default: --cache-type]
    #[arg(long = "cache-type-v", value_parser = parse_kv_type)]
    pub cache_type_v: Option<KvType>,
    /// Flash attention (llama.cpp's -fa): on, off, or auto = on where glmtool's CPU kernel runs
    /// (a model wholly on the CPU)
    #[arg(long = "flash-attn", default_value = "auto", num_args = 0..=1,
          default_missing_value = "on", value_parser = parse_flash_attn)]
    pub flash_attn: FlashAttn,
}

impl ShapeArgs {
    /// The plan's shape; `logits_rows` is 1 for generation and the batch size for perplexity;
    /// an unset context is 0 (the model's).
    pub fn plan_shape(&self, logits_rows: usize) -> PlanShape {
        PlanShape {
            n_ctx: self.ctx.unwrap_or(0),
            n_batch: self.batch.max(1),
            cache_type: self.cache(),
            logits_rows,
            flash_attn: self.flash_attn,
            n_seq: 1,
        }
    }

    /// The cache's types: --cache-type, overridden by --cache-type-k / -v.
    pub fn cache(&self) -> CacheType {
        CacheType {
            k: self.cache_type_k.unwrap_or(self.cache_type),
            v: self.cache_type_v.unwrap_or(self.cache_type),
        }
    }
}

/// Device and offload flags (used by the model-running subcommands and `info --plan`).
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// cpu, cuda, cuda:N or metal (default: the GPU when this build has one and it is present)
    #[arg(long = "device", value_parser = parse_device)]
    pub device: Option<Device>,
    /// Layers on the GPU: the last N (llama.cpp's -ngl; above the layer count, e.g. 99, also
    /// the output head). Default: as many as fit the VRAM budget, the head included
    #[arg(long = "gpu-layers", visible_alias = "ngl", alias = "n-gpu-layers")]
    pub gpu_layers: Option<usize>,
    /// GPU memory the model may use, e.g. 2G or 1500M (default: the device's free memory
    /// less a reserve)
    #[arg(long = "vram-budget", value_parser = parse_size)]
    pub vram_budget: Option<u64>,
}

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Device {
    Cpu,
    Gpu(DeviceKind, usize),
}

fn parse_device(s: &str) -> Result<Device, String> {
    let (name, index) = match s.split_once(':') {
        Some((n, i)) => (
            n,
            i.parse::<usize>()
                .map_err(|_| format!("{s:?}: the device number must be an integer"))?,
        ),
        None => (s, 0),
    };
    match (name.to_ascii_lowercase().as_str(), index) {
        ("cpu", 0) => Ok(Device::Cpu),
        ("cuda", i) => Ok(Device::Gpu(DeviceKind::Cuda, i)),
        ("metal", 0) => Ok(Device::Gpu(DeviceKind::Metal, 0)),
        _ => Err(format!(
            "unknown device {s:?} (expected cpu, cuda, cuda:N or metal)"
        )),
    }
}

impl GpuArgs {
    /// The device to use: the flag, or the first GPU present in a GPU build, or the CPU.
    pub fn device(&self) -> Result<Option<(DeviceKind, usize)>> {
        // Devices are listed only when needed: listing initialises the GPU runtime.
        match self.device {
            Some(Device::Cpu) => {
                if self.gpu_layers.is_some_and(|n| n > 0) {
                    bail!("--gpu-layers needs a GPU device, but --device cpu was given");
                }
                Ok(None)
            }
            Some(Device::Gpu(kind, index)) => {
                if !glm_runtime::gpu_kinds().contains(&kind) {
                    bail!(
                        "--device {}: this glmtool was built without {} support (build it with `--features {}`; see docs/gpu.md)",
                        kind.name(),
                        kind.name(),
                        kind.name()
                    );
                }
                let devices = glm_runtime::gpu_devices();
                if !devices.iter().any(|d| d.kind == kind && d.index == index) {
                    bail!(
                        "--device {}:{index}: no such device ({} found)",
                        kind.name(),
                        devices.iter().filter(|d| d.kind == kind).count()
                    );
                }
                Ok(Some((kind, index)))
            }
            None => {
                let first = glm_runtime::gpu_devices()
                    .first()
                    .map(|d| (d.kind, d.index));
                if first.is_none() && self.gpu_layers.is_some_and(|n| n > 0) {
                    // as llama.cpp: scripts carry -ngl everywhere; --device cuda stays an error
                    eprintln!(
                        "warning: --gpu-layers/-ngl ignored: no GPU is available ({}); running on the CPU",
                        if glm_runtime::gpu_kinds().is_empty() {
                            "this glmtool was built without CUDA or Metal; see docs/gpu.md"
                        } else {
                            "none was found"
                        }
                    );
                }
                Ok(first)
            }
        }
    }

    pub fn layers(&self) -> GpuLayers {
        self.gpu_layers.map_or(GpuLayers::Auto, GpuLayers::Count)
    }
}

fn parse_kv_type(s: &str) -> Result<KvType, String> {
    KvType::from_name(&s.to_ascii_lowercase()).ok_or_else(|| {
        let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown cache type {s:?} (expected {})", names.join(", "))
    })
}

/// `-fa`'s values, with llama.cpp's older spellings (llama-bench's 0/1).
pub(crate) fn parse_flash_attn(s: &str) -> Result<FlashAttn, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "enabled" => Ok(FlashAttn::On),
        "off" | "0" | "false" | "disabled" => Ok(FlashAttn::Off),
        "auto" | "-1" => Ok(FlashAttn::Auto),
        _ => Err(format!("{s:?}: expected on, off or auto")),
    }
}

impl ModelArgs {
    /// The GGUF file to load: -m's (converted when it is a checkpoint), $GLMTOOL_MODEL's, or
    /// the demo model.
    pub fn path(&self) -> Result<PathBuf> {
        crate::models::resolve(
            self.model.as_deref(),
            self.convert_type.unwrap_or(glm_convert::FileType::Q4_0),
            false,
        )
    }

    /// Loads the model (or the demo model), placing it on the device as planned, and prints the
    /// plan on stderr when a GPU is involved (or with `verbose`).
    pub fn load(&self, logits_rows: usize, verbose: bool) -> Result<Model> {
        self.load_shaped(self.shape.plan_shape(logits_rows), verbose)
    }

    /// [`Self::load`] with the plan made for `shape`.
    pub fn load_shaped(&self, shape: PlanShape, verbose: bool) -> Result<Model> {
        let path = self.path()?;
        let opts = LoadOptions {
            device: self.gpu.device()?,
            layers: self.gpu.layers(),
            budget: self.gpu.vram_budget,
            shape,
            cpu_kernels: self.cpu_kernels.0,
        };
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let spinner = crate::progress::Spinner::start(format!("loading {name}"));
        let model =
            Model::load_with(&path, &opts).with_context(|| format!("loading {}", path.display()));
        drop(spinner);
        let model = model?;
        if verbose || model.plan.device.is_some() {
            eprintln!("{}", model.plan.describe());
        }
        Ok(model)
    }

    /// Session options for `model`.
    pub fn session_options(&self, model: &Model) -> Result<SessionOptions> {
        let n_ctx = self
            .shape
            .ctx
            .unwrap_or_else(|| default_ctx(model.hparams.n_ctx_train));
        if n_ctx == 0 || n_ctx > model.hparams.n_ctx_train {
            bail!(
                "-c {n_ctx}: the context must be between 1 and the model's {}",
                model.hparams.n_ctx_train
            );
        }
        if self.shape.batch == 0 {
            bail!("-b must be at least 1");
        }
        Ok(SessionOptions {
            n_ctx,
            n_batch: self.shape.batch,
            n_threads: self.n_threads()?,
            cache_type: self.shape.cache(),
            flash_attn: self.shape.flash_attn,
            n_seq: 1,
        })
    }

    /// `-t`, checked: ggml's threads spin while they wait, so more threads than cores slows
    /// everything down (minutes for a few tokens at 10× the cores): warn above the logical CPU
    /// count, refuse above MAX_THREADS; without -t, warn when other work keeps the CPUs busy
    /// (busy.rs).
    pub fn n_threads(&self) -> Result<usize> {
        let Some(t) = self.threads else {
            let t = glm_runtime::default_threads();
            crate::busy::warn_if_busy(t);
            return Ok(t);
        };
        if t == 0 || t > MAX_THREADS {
            bail!("-t {t}: the thread count must be between 1 and {MAX_THREADS}");
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if t > cpus {
            eprintln!(
                "warning: -t {t} is more threads than the {cpus} CPUs here; \
                 expect it to be much slower than -t {}",
                glm_runtime::default_threads()
            );
        }
        Ok(t)
    }
}

/// The context a run gets without `-c`: the model's training length up to 8192 tokens (GLM-4's
/// 131,072 would need a 5 GB KV cache; `-c` asks for more, `info --plan -c N` shows the cost).
pub const DEFAULT_CTX: usize = 8192;

pub fn default_ctx(n_ctx_train: usize) -> usize {
    n_ctx_train.min(DEFAULT_CTX)
}

/// Parses a memory size: `2G`, `2GiB`, `1.5g`, `1500M`, `800MiB`, `4096` (bytes). K/M/G/T are
/// binary (1024-based), as GPU tools report memory.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 2G, 1500M, 2GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use K, M, G or T)")),
    };
    if !num.is_finite() || num < 0.0 {
        return Err(format!("{s:?} is not a size"));
    }
    Ok((num * mult as f64) as u64)
}

/// The most threads `-t` accepts.
const MAX_THREADS: usize = 512;

/// Sampling flags (llama.cpp names, ChatGLM3 defaults).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true, value_parser = non_negative)]
    pub temp: f32,
    /// Top-k (0 = off)
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    /// Top-p (1 = off)
    #[arg(long = "top-p", default_value_t = 0.8, allow_negative_numbers = true, value_parser = unit_interval)]
    pub top_p: f32,
    /// Min-p: tokens less likely than MIN_P times the best one are dropped (0 = off)
    #[arg(long = "min-p", default_value_t = 0.0, allow_negative_numbers = true, value_parser = unit_interval)]
    pub min_p: f32,
    /// OpenAI's frequency penalty over the reply so far, -2..2 (0 = off)
    #[arg(long = "frequency-penalty", default_value_t = 0.0, allow_negative_numbers = true, value_parser = penalty)]
    pub frequency_penalty: f32,
    /// OpenAI's presence penalty over the reply so far, -2..2 (0 = off)
    #[arg(long = "presence-penalty", default_value_t = 0.0, allow_negative_numbers = true, value_parser = penalty)]
    pub presence_penalty: f32,
    /// Repetition penalty (1 = off)
    #[arg(long = "repeat-penalty", default_value_t = 1.0, allow_negative_numbers = true, value_parser = positive)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back on
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Bias one token's logit, llama.cpp's TOKEN_ID(+|-)BIAS: `15043+1`, `15043-inf` (or
    /// -100 and less) bans the token (repeatable)
    #[arg(short = 'l', long = "logit-bias", value_name = "ID(+|-)BIAS", value_parser = logit_bias_arg)]
    pub logit_bias: Vec<(u32, f32)>,
    /// Random seed (default: random; printed with --verbose)
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
}

/// A finite number; clap's error then names the flag and the value ("invalid value '-1' for
/// '--temp <TEMP>': must be >= 0").
fn number(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("expected a number".into()),
    }
}

pub(crate) fn non_negative(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must be >= 0".into())
        }
    })
}

pub(crate) fn unit_interval(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err("must be between 0 and 1".into())
        }
    })
}

/// llama.cpp's `--logit-bias` value: a token id, then a signed bias (`-inf` bans).
fn logit_bias_arg(s: &str) -> Result<(u32, f32), String> {
    let at = s
        .find(['+', '-'])
        .ok_or("expected TOKEN_ID+BIAS or TOKEN_ID-BIAS (e.g. 15043-inf)")?;
    let id: u32 = s[..at]
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a token id", &s[..at]))?;
    let bias = match &s[at..] {
        "-inf" => f32::NEG_INFINITY,
        b => b
            .parse::<f32>()
            .ok()
            .filter(|b| b.is_finite())
            .ok_or_else(|| format!("{b:?} is not a bias"))?,
    };
    Ok((id, bias))
}

pub(crate) fn penalty(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| {
        if (-2.0..=2.0).contains(&v) {
            Ok(v)
        } else {
            Err("must be between -2 and 2".into())
        }
    })
}

pub(crate) fn positive(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be > 0".into())
        }
    })
}

impl SamplingArgs {
    pub fn options(&self) -> Result<glm_runtime::sampler::SamplerOptions> {
        Ok(glm_runtime::sampler::SamplerOptions {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed.unwrap_or_else(rand::random),
        })
    }
}

/// Output type flags shared by `convert` and `quantize`.
#[derive(Args, Clone, Debug)]
pub struct TypeArgs {
    /// File type, as llama-quantize names it (any case) or numbers it: F32, F16, BF16, Q8_0,
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M (= Q3_K), Q3_K_L, Q4_K_S,
    /// Q4_K_M (= Q4_K), Q5_K_S, Q5_K_M (= Q5_K), Q6_K, IQ4_NL, IQ4_XS (convert's default: F16).
    /// The k- and i-quant types are mixes (llama.cpp's rules; docs/quantization.md)
    #[arg(long = "type", value_parser = parse_file_type)]
    pub ty: Option<glm_convert::FileType>,
    /// Type of output.weight (default: q6_K for quantized file types, q8_0 for Q8_0)
    #[arg(long = "output-tensor-type", visible_alias = "output-type", value_parser = parse_tensor_type)]
    pub output_type: Option<gguf::GgmlType>,
    /// Type of token_embd.weight (default: the file type's)
    #[arg(long = "token-embedding-type", value_parser = parse_tensor_type)]
    pub token_embd_type: Option<gguf::GgmlType>,
    /// No mix: every matrix (output.weight too) gets the file type's main type, except where
    /// its block does not fit a row
    #[arg(long)]
    pub pure: bool,
    /// Overwrite the output file if it exists
    #[arg(long)]
    pub force: bool,
    /// No progress bar
    #[arg(short, long)]
    pub quiet: bool,
}

/// Importance-matrix flags of `convert` and `quantize` (llama-quantize's).
#[derive(Args, Clone, Debug)]
pub struct ImatrixArgs {
    /// Importance matrix for the quantizers: llama.cpp's GGUF imatrix (`glmtool imatrix`,
    /// `llama-imatrix`) or its legacy .dat
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Use the importance matrix only for tensors whose name contains NAME (repeatable)
    #[arg(
        long = "include-weights",
        value_name = "NAME",
        requires = "imatrix",
        conflicts_with = "exclude_weights"
    )]
    pub include_weights: Vec<String>,
    /// Do not use the importance matrix for tensors whose name contains NAME (repeatable)
    #[arg(long = "exclude-weights", value_name = "NAME", requires = "imatrix")]
    pub exclude_weights: Vec<String>,
}

impl ImatrixArgs {
    pub fn spec(&self) -> Option<glm_convert::quant::imatrix::ImatrixSpec> {
        self.imatrix
            .as_ref()
            .map(|path| glm_convert::quant::imatrix::ImatrixSpec {
                path: path.clone(),
                include: self.include_weights.clone(),
                exclude: self.exclude_weights.clone(),
            })
    }
}

/// A file type: llama-quantize's name in any case (`Q4_K_M`, `q4_k`), or its number (15).
pub fn parse_file_type(s: &str) -> Result<glm_convert::FileType, String> {
    let writable = |ft: glm_convert::FileType| glm_convert::quant::can_quantize(ft.default_type());
    match glm_convert::FileType::parse(s) {
        Some(ft) if writable(ft) => Ok(ft),
        _ => Err(format!(
            "unsupported type {s:?}; expected one of: {}",
            glm_convert::FileType::all()
                .filter(|&ft| writable(ft))
                .map(|ft| ft.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One tensor type (`q6_K`, `Q8_0`, `f16`), for --output-tensor-type and --token-embedding-type.
pub fn parse_tensor_type(s: &str) -> Result<gguf::GgmlType, String> {
    match gguf::GgmlType::from_name(s) {
        Some(t) if glm_convert::quant::can_quantize(t) => Ok(t),
        _ => Err(format!(
            "unsupported tensor type {s:?}; expected one of: {}",
            glm_convert::quant::WRITABLE
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl TypeArgs {
    /// The policy for file type `ft` (`--type`, or what the subcommand decided).
    pub fn policy(&self, ft: glm_convert::FileType) -> glm_convert::TypePolicy {
        glm_convert::TypePolicy {
            output_type: self.output_type,
            token_embd_type: self.token_embd_type,
            pure: self.pure,
            ..glm_convert::TypePolicy::of(ft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("1500M").unwrap(), 1500 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("2X").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn cpu_kernels_names() {
        assert_eq!(parse_cpu_kernels("ggml").unwrap().0, None);
        assert_eq!(parse_cpu_kernels("scalar").unwrap().0, Some(Isa::Scalar));
        assert_eq!(parse_cpu_kernels("native").unwrap().0, Some(Isa::detect()));
        assert!(parse_cpu_kernels("sse9").unwrap_err().contains("avx-vnni"));
        // a named kernel is taken where the CPU runs it and refused, naming what it can, where not
        for (name, isa) in [("avx2", Isa::Avx2), ("avx-vnni", Isa::AvxVnni)] {
            match parse_cpu_kernels(name) {
                Ok(k) => assert_eq!(k.0, Some(isa)),
                Err(e) => {
                    assert!(!isa.runs_here());
                    assert!(e.contains("this CPU cannot run it"), "{e}");
                }
            }
        }
    }
}
