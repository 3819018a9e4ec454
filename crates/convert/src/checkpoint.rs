//! A Hugging Face checkpoint on disk: `config.json`, one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. Tensors are described by dtype, shape and place; their bytes
//! are read when asked for, with positioned reads (`pread`), not through a memory map: a shard
//! truncated while it is read (a download still running, another program rewriting it) gives a
//! clean "changed during conversion" error instead of killing the process with SIGBUS.

use crate::ConvertError;
use safetensors::tensor::{Dtype, Metadata};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    /// Bytes of tensor data.
    pub len: u64,
    file: &'a File,
    /// Where the data starts in the shard.
    offset: u64,
}

impl SrcTensor<'_> {
    /// Reads `buf.len()` bytes of the tensor's data from byte `pos` of it. A shard that became
    /// shorter since it was opened is reported as changed.
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<(), ConvertError> {
        debug_assert!(pos + buf.len() as u64 <= self.len);
        read_exact_at(self.file, buf, self.offset + pos).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                changed(self.shard, "it became shorter")
            } else {
                ConvertError::io(self.shard, e)
            }
        })
    }
}

/// The error for a shard that changed while it was read.
fn changed(path: &Path, how: &str) -> ConvertError {
    ConvertError::Checkpoint {
        path: path.to_path_buf(),
        what: format!(
            "changed during conversion ({how}); nothing was written — convert again once the \
             file is complete and no other program writes it"
        ),
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, pos)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut pos: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, pos) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Shard {
    path: PathBuf,
    file: File,
    /// Size and modification time when opened.
    size: u64,
    mtime: Option<SystemTime>,
    /// 8 + the JSON header's length: where tensor data starts.
    data_start: u64,
    meta: Metadata,
}

/// The safetensors header's size limit (as the `safetensors` crate's).
const MAX_HEADER: u64 = 100_000_000;

/// Reads and checks the header of the safetensors file `file` of `size` bytes: the JSON, and
/// tensors that tile the data section exactly (what `SafeTensors::read_metadata` checks).
fn read_header(file: &File, size: u64) -> Result<(u64, Metadata), String> {
    if size < 8 {
        return Err(format!(
            "{size} bytes, shorter than the 8-byte header length"
        ));
    }
    let mut n = [0u8; 8];
    read_exact_at(file, &mut n, 0).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || 8 + n > size {
        return Err(format!(
            "header length {n} does not fit (file of {size} bytes, limit {MAX_HEADER})"
        ));
    }
    let mut header = vec![0u8; n as usize];
    read_exact_at(file, &mut header, 8).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&header).map_err(|_| "header is not UTF-8".to_string())?;
    let meta: Metadata =
        serde_json::from_str(text).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let mut spans: Vec<(usize, usize, u64)> = meta
        .tensors()
        .into_values()
        .map(|info| {
            let bytes = info
                .shape
                .iter()
                .try_fold(info.dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            (info.data_offsets.0, info.data_offsets.1, bytes)
        })
        .collect();
    spans.sort_unstable();
    let mut end = 0usize;
    for (a, b, bytes) in &spans {
        if *a != end || b < a {
            return Err(format!(
                "tensor data offsets {a}..{b} leave a gap or overlap at byte {end}"
            ));
        }
        if (b - a) as u64 != *bytes {
            return Err(format!(
                "tensor data offsets {a}..{b} do not match its dtype and shape ({bytes} bytes)"
            ));
        }
        end = *b;
    }
    if 8 + n + end as u64 != size {
        return Err(format!(
            "the header describes {} bytes of tensor data but the file holds {}",
            end,
            size - 8 - n
        ));
    }
    Ok((8 + n, meta))
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
            let stat = file.metadata().map_err(|e| ConvertError::io(&path, e))?;
            let size = stat.len();
            let (data_start, meta) =
                read_header(&file, size).map_err(|e| ConvertError::Checkpoint {
                    path: path.clone(),
                    what: format!(
                        "not a valid safetensors file ({e}); truncated or corrupt download?"
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
                file,
                size,
                mtime: stat.modified().ok(),
                data_start,
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
            len: (info.data_offsets.1 - info.data_offsets.0) as u64,
            file: &shard.file,
            offset: shard.data_start + info.data_offsets.0 as u64,
        })
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.size - s.data_start).sum()
    }

    /// The safetensors files read.
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Fails if a shard's size or modification time differs from when it was opened: its data
    /// may have changed while it was read.
    pub fn check_unchanged(&self) -> Result<(), ConvertError> {
        for s in &self.shards {
            let stat = s
                .file
                .metadata()
                .map_err(|e| ConvertError::io(&s.path, e))?;
            if stat.len() != s.size {
                return Err(changed(
                    &s.path,
                    &format!("{} bytes when opened, {} now", s.size, stat.len()),
                ));
            }
            if stat.modified().ok() != s.mtime {
                return Err(changed(&s.path, "it was modified"));
            }
        }
        Ok(())
    }
}
