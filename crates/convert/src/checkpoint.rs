//! A Hugging Face checkpoint on disk: `config.json`, one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, all memory-mapped. Tensors are served as borrowed byte slices
//! with their dtype and shape; nothing is loaded until asked for.

use crate::ConvertError;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Element type of a checkpoint tensor that the converter can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcDtype {
    F32,
    F16,
    BF16,
}

impl SrcDtype {
    pub fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
        }
    }
}

/// A tensor of the checkpoint: where it lives and what it is.
pub struct SrcTensor<'a> {
    pub shard: &'a Path,
    pub dtype: Result<SrcDtype, String>,
    /// PyTorch order.
    pub shape: Vec<u64>,
    pub data: &'a [u8],
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// tensor name -> shard index
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens the safetensors files of `dir`.
    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| ConvertError::io(&index_path, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ConvertError::Checkpoint {
                    path: index_path.clone(),
                    what: format!("invalid JSON: {e}"),
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ConvertError::Checkpoint {
                    path: index_path.clone(),
                    what: "no \"weight_map\" object".into(),
                })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| ConvertError::Checkpoint {
                    path: index_path.clone(),
                    what: format!("weight_map entry {name} is not a file name"),
                })?;
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(ConvertError::Checkpoint {
                        path: index_path.clone(),
                        what: format!("weight_map entry {name} points outside the checkpoint: {f}"),
                    });
                }
                let p = dir.join(f);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
            files.sort();
            files
        } else if single.exists() {
            vec![single]
        } else {
            let has_bin = std::fs::read_dir(dir)
                .map_err(|e| ConvertError::io(dir, e))?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".bin"));
            return Err(ConvertError::Checkpoint {
                path: dir.to_path_buf(),
                what: if has_bin {
                    "only PyTorch .bin weights found; glmtool reads safetensors (model.safetensors or \
                     model-*.safetensors with model.safetensors.index.json) — re-save the checkpoint with \
                     `model.save_pretrained(dir, safe_serialization=True)`"
                        .into()
                } else {
                    "no model.safetensors or model.safetensors.index.json".into()
                },
            });
        };
        let mut shards = Vec::with_capacity(shard_files.len());
        let mut index = HashMap::new();
        for path in shard_files {
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            let mmap = gguf::reader::map_readonly(&file).map_err(|e| ConvertError::io(&path, e))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&mmap).map_err(|e| ConvertError::Checkpoint {
                    path: path.clone(),
                    what: format!(
                        "not a valid safetensors file ({e:?}); truncated or corrupt download?"
                    ),
                })?;
            for name in meta.tensors().keys() {
                if let Some(prev) = index.insert(name.clone(), shards.len()) {
                    let prev: &Shard = &shards[prev];
                    return Err(ConvertError::Checkpoint {
                        path: path.clone(),
                        what: format!("tensor {name} also appears in {}", prev.path.display()),
                    });
                }
            }
            shards.push(Shard {
                path,
                mmap,
                header_len,
                meta,
            });
        }
        Ok(Checkpoint { shards, index })
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<SrcTensor<'_>> {
        let shard = &self.shards[*self.index.get(name)?];
        let info = shard.meta.info(name)?;
        let start = 8 + shard.header_len + info.data_offsets.0;
        let end = 8 + shard.header_len + info.data_offsets.1;
        let dtype = match info.dtype {
            Dtype::F32 => Ok(SrcDtype::F32),
            Dtype::F16 => Ok(SrcDtype::F16),
            Dtype::BF16 => Ok(SrcDtype::BF16),
            other => Err(format!("{other:?}")),
        };
        Some(SrcTensor {
            shard: &shard.path,
            dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            data: &shard.mmap[start..end],
        })
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| (s.mmap.len() - 8 - s.header_len) as u64)
            .sum()
    }
}
