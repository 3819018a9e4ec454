//! Loading a GGUF model: hyperparameters, tokenizer, and the weights, validated all at once and
//! then mapped zero-copy into ggml (the weights stay in the page cache, not in anonymous memory).

use crate::chatglm::{matmul_type_supported, Hparams, Weights};
use crate::tokenizer::Tokenizer;
use crate::RuntimeError;
use gguf::GgufFile;
use glm_ggml::{TensorSpec, TensorStore};
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
    pub load_time: Duration,
    weights: TensorStore,
    n_weight_tensors: usize,
}

struct SharedFile(Arc<GgufFile>);
impl AsRef<[u8]> for SharedFile {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl Model {
    /// Opens, validates and maps `path`.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
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
                problems.join("; ")
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
        let weights = TensorStore::map_host(SharedFile(file), &specs, &offsets)?;
        Ok(Model {
            hparams,
            tokenizer,
            name,
            file_size,
            n_params,
            load_time: t0.elapsed(),
            weights,
            n_weight_tensors: specs.len(),
        })
    }

    /// Weight handles for graph building.
    pub fn weights(&self) -> Weights<'_> {
        let t: Vec<_> = (0..self.n_weight_tensors)
            .map(|i| self.weights.at(i).expect("index in range"))
            .collect();
        Weights::from_ordered(&t, self.hparams.n_layer)
    }
}
