//! Loading a GGUF model: hyperparameters, tokenizer, and the weights, validated all at once and
//! then mapped zero-copy into ggml (the weights stay in the page cache, not in anonymous memory).

use crate::chatglm::{matmul_type_supported, Hparams, WeightSlots, Weights};
use crate::plan::{GpuLayers, ModelSizes, Plan, PlanRequest, PlanShape};
use crate::tokenizer::Tokenizer;
use crate::RuntimeError;
use gguf::GgufFile;
use glm_ggml::{
    Backend, DeviceKind, Isa, PackSource, PackedStore, Tensor, TensorSpec, TensorStore, WeightType,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loaded model.
pub struct Model {
    pub hparams: Hparams,
    pub tokenizer: Tokenizer,
    /// Model name from `general.name`.
    pub name: String,
    pub file_size: u64,
    /// Weights (elements of all tensors).
    pub n_params: u64,
    /// Bytes of the file's tensors that a decoding step reads from the CPU's memory: every
    /// tensor outside the GPU's share but the token embeddings (of which a step reads one row).
    pub step_bytes: u64,
    pub load_time: Duration,
    /// Where the layers and the output head live.
    pub plan: Plan,
    /// Every tensor, mapped from the file (the CPU's copy).
    weights: TensorStore,
    /// The tensors the plan puts on the GPU, copied there; `gpu_index[i]` is tensor i's index
    /// in that store.
    gpu_weights: Option<TensorStore>,
    gpu_index: Vec<Option<usize>>,
    gpu: Option<Backend>,
    /// Number of weight tensors in the store.
    n_weight_tensors: usize,
    /// Where each weight sits in the store (found by GGUF name at load).
    slots: WeightSlots,
    /// Quantized matrices repacked for our CPU kernels ([`kernel_type`]); `packed_index[i]` is tensor i's index
    /// in that store.
    packed: Option<PackedStore>,
    packed_index: Vec<Option<usize>>,
}

/// Where to run: the device and the offload request (see [`crate::plan`]).
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `None`: the CPU only.
    pub device: Option<(DeviceKind, usize)>,
    pub layers: GpuLayers,
    /// `--vram-budget` in bytes.
    pub budget: Option<u64>,
    /// The session the plan is sized for.
    pub shape: PlanShape,
    /// The kernels for quantized matrices ([`kernel_type`]) on the CPU: ours for that instruction set (the
    /// weights are repacked at load), or `None` for ggml's `mul_mat`. A model that uses a GPU
    /// runs ggml's everywhere.
    pub cpu_kernels: Option<Isa>,
}

impl LoadOptions {
    /// CPU only.
    pub fn cpu(shape: PlanShape) -> Self {
        LoadOptions {
            device: None,
            layers: GpuLayers::Auto,
            budget: None,
            shape,
            cpu_kernels: Some(Isa::detect()),
        }
    }
}

/// The offload plan for `file` under `opts`: reads the device's free memory, loads no weights.
pub fn plan_for(
    file: &GgufFile,
    hparams: &Hparams,
    opts: &LoadOptions,
) -> Result<Plan, RuntimeError> {
    let sizes = ModelSizes::from_gguf(file, hparams)?;
    let device = match opts.device {
        None => None,
        Some((kind, index)) => Some(
            glm_ggml::gpu_devices()
                .into_iter()
                .find(|d| d.kind == kind && d.index == index)
                .ok_or_else(|| {
                    RuntimeError::Input(format!(
                        "{}:{index}: no such device in this build/machine",
                        kind.name()
                    ))
                })?,
        ),
    };
    let req = PlanRequest {
        device: device
            .as_ref()
            .map(|d| format!("{}:{} ({})", d.kind.name(), d.index, d.description)),
        layers: opts.layers,
        budget: opts.budget,
        free: device
            .as_ref()
            .and_then(|d| glm_ggml::device_memory(d.kind, d.index))
            .map(|(free, _)| free),
    };
    crate::plan::plan(&sizes, &opts.shape, &req)
}

struct SharedFile(Arc<GgufFile>);
impl AsRef<[u8]> for SharedFile {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl Model {
    /// Opens, validates and maps `path`, CPU only.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let shape = PlanShape {
            n_ctx: 0,
            n_batch: 1,
            cache_type: crate::CacheType::F16,
            logits_rows: 1,
            ..Default::default()
        };
        Self::load_with(path, &LoadOptions::cpu(shape))
    }

    /// Opens, validates and maps `path`; plans the offload and copies the GPU's share there.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        let t0 = Instant::now();
        let file = Arc::new(GgufFile::open(path)?);
        let hparams = Hparams::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.vocab_size() != hparams.n_vocab {
            return Err(RuntimeError::Model(format!(
                "{}: tokenizer has {} tokens but token_embd.weight has {} rows",
                path.display(),
                tokenizer.vocab_size(),
                hparams.n_vocab
            )));
        }
        let expected = hparams.expected_tensors();
        let mut problems = Vec::new();
        let mut specs = Vec::with_capacity(expected.len());
        let mut offsets = Vec::with_capacity(expected.len());
        for (name, dims, f32_only) in &expected {
            match file.tensor(name) {
                None => problems.push(format!("tensor {name} is missing")),
                Some(t) => {
                    if &t.dims != dims {
                        problems.push(format!(
                            "tensor {name} has shape {:?}, expected {dims:?}",
                            t.dims
                        ));
                    } else if *f32_only && t.ty != gguf::GgmlType::F32 {
                        problems.push(format!("tensor {name} is {}, expected f32", t.ty));
                    } else if !matmul_type_supported(t.ty) {
                        problems.push(format!(
                            "tensor {name} has type {}, which this ggml cannot use",
                            t.ty
                        ));
                    }
                    specs.push(TensorSpec {
                        name: name.clone(),
                        ty: t.ty.id(),
                        ne: t.dims.iter().map(|&d| d as i64).collect(),
                    });
                    offsets.push((file.data_offset + t.offset) as usize);
                }
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::Model(format!(
                "{}: {}",
                path.display(),
                crate::few(&problems, 4)
            )));
        }
        let name = file
            .get_str(gguf::names::GENERAL_NAME)
            .unwrap_or("chatglm")
            .to_string();
        let file_size = file.file_size();
        let n_params = specs
            .iter()
            .map(|s| s.ne.iter().product::<i64>() as u64)
            .sum();
        let mut shape = opts.shape;
        if shape.n_ctx == 0 || shape.n_ctx > hparams.n_ctx_train {
            shape.n_ctx = hparams.n_ctx_train;
        }
        let plan = plan_for(
            &file,
            &hparams,
            &LoadOptions {
                shape,
                ..opts.clone()
            },
        )?;

        // CUDA's RMSNorm kernel works on whole warps of 32 columns.
        if plan.uses_gpu() && hparams.n_embd % 32 != 0 {
            return Err(RuntimeError::Model(format!(
                "{}: a width of {} is not a multiple of 32, which GPU layers need; run it on the CPU",
                path.display(),
                hparams.n_embd
            )));
        }
        // The GPU's share: the plan's layers and, if it says so, the output head.
        let mut gpu_index = vec![None; specs.len()];
        let (mut gpu_weights, mut gpu) = (None, None);
        if let (true, Some((kind, index))) = (plan.uses_gpu(), opts.device) {
            let on_gpu = |name: &str| match gguf::names::layer_of(name) {
                Some(il) => plan.layer_on_gpu(il),
                None => plan.output_on_gpu && name != gguf::names::TOKEN_EMBD,
            };
            let mut gpu_specs = Vec::new();
            for (i, s) in specs.iter().enumerate() {
                if on_gpu(&s.name) {
                    gpu_index[i] = Some(gpu_specs.len());
                    gpu_specs.push(s.clone());
                }
            }
            let backend = Backend::gpu(kind, index)?;
            let store = TensorStore::allocate_weights(&backend, &gpu_specs).map_err(|e| {
                RuntimeError::Model(format!(
                    "{}: could not place {} on {}: {e}",
                    path.display(),
                    crate::plan::fmt_bytes(plan.gpu.weights),
                    backend.name()
                ))
            })?;
            for (i, spec) in specs.iter().enumerate() {
                if let Some(g) = gpu_index[i] {
                    let info = file.tensor(&spec.name).expect("validated above");
                    let t = store.at(g).expect("index in range");
                    store.upload(t, file.tensor_data(info))?;
                }
            }
            gpu_weights = Some(store);
            gpu = Some(backend);
        }
        // the plan's CPU weights (its layers, the embeddings, the head unless on the GPU) but
        // the embeddings
        let step_bytes = plan.cpu.weights
            - file
                .tensor(gguf::names::TOKEN_EMBD)
                .map_or(0, |t| t.n_bytes());
        let (packed, packed_index) = match opts.cpu_kernels {
            Some(isa) if !plan.uses_gpu() => pack_matrices(&file, &specs, isa)?,
            _ => (None, vec![None; specs.len()]),
        };
        let weights = TensorStore::map_host(SharedFile(file), &specs, &offsets)?;
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let slots = WeightSlots::find(&names, hparams.n_layer)?;
        Ok(Model {
            hparams,
            tokenizer,
            name,
            file_size,
            n_params,
            step_bytes,
            load_time: t0.elapsed(),
            plan,
            weights,
            gpu_weights,
            gpu_index,
            gpu,
            n_weight_tensors: specs.len(),
            slots,
            packed,
            packed_index,
        })
    }

    /// The instruction set of our CPU kernels, when the model's matrices were repacked for them.
    pub fn cpu_kernels(&self) -> Option<Isa> {
        self.packed.as_ref().map(|p| p.isa())
    }

    /// The matrices repacked for our CPU kernels: names and types.
    pub fn packed_matrices(&self) -> Vec<(String, WeightType)> {
        self.packed.as_ref().map_or(Vec::new(), |p| {
            p.matrices().map(|(n, t)| (n.to_string(), t)).collect()
        })
    }

    /// Bytes of repacked weights (anonymous memory).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.size_bytes())
    }

    /// The GPU backend the model's GPU share lives on.
    pub fn gpu_backend(&self) -> Option<&Backend> {
        self.gpu.as_ref()
    }

    /// Weight handles for graph building: the GPU's copy where the plan put one there.
    pub fn weights(&self) -> Weights<'_> {
        let t: Vec<Tensor<'_>> = (0..self.n_weight_tensors)
            .map(|i| match (self.gpu_index[i], &self.gpu_weights) {
                (Some(g), Some(store)) => store.at(g).expect("index in range"),
                _ => self.weights.at(i).expect("index in range"),
            })
            .collect();
        let packed: Vec<_> = self
            .packed_index
            .iter()
            .map(|j| j.and_then(|j| self.packed.as_ref()?.get(j)))
            .collect();
        Weights::from_slots(&self.slots, &t, &packed, !self.plan.uses_gpu())
    }
}

/// The weight types our CPU kernels multiply (everything else stays on ggml's `mul_mat`).
fn kernel_type(ty: gguf::GgmlType) -> Option<WeightType> {
    use gguf::GgmlType as G;
    Some(match ty {
        G::Q4_0 => WeightType::Q4_0,
        G::Q8_0 => WeightType::Q8_0,
        G::Q5_0 => WeightType::Q5_0,
        G::Q5_1 => WeightType::Q5_1,
        G::IQ4NL => WeightType::IQ4NL,
        G::Q3K => WeightType::Q3K,
        G::Q4K => WeightType::Q4K,
        G::Q5K => WeightType::Q5K,
        G::Q6K => WeightType::Q6K,
        G::IQ4XS => WeightType::IQ4XS,
        _ => return None,
    })
}

/// Repacks the matrices of [`kernel_type`]s (everything but the embedding table, which is only
/// gathered from) for our CPU kernels, and releases the mapped pages of each slice once it is
/// copied, so the resident memory holds the model once (and one slice twice).
fn pack_matrices(
    file: &GgufFile,
    specs: &[TensorSpec],
    isa: Isa,
) -> Result<(Option<PackedStore>, Vec<Option<usize>>), RuntimeError> {
    let mut index = vec![None; specs.len()];
    let mut sources = Vec::new();
    let mut starts = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let info = file.tensor(&s.name).expect("validated");
        let Some(ty) = kernel_type(info.ty) else {
            continue;
        };
        if s.name == gguf::names::TOKEN_EMBD || info.dims.len() != 2 {
            continue;
        }
        index[i] = Some(sources.len());
        starts.push((file.data_offset + info.offset) as usize);
        sources.push(PackSource {
            name: s.name.clone(),
            ty,
            rows: info.dims[1] as usize,
            k: info.dims[0] as usize,
            data: file.tensor_data(info),
        });
    }
    if sources.is_empty() {
        return Ok((None, index));
    }
    let store = PackedStore::build(&sources, isa, crate::default_threads(), |j, bytes| {
        file.release(starts[j] + bytes.start, bytes.len())
    })?;
    Ok((Some(store), index))
}
