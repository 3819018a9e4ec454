//! Importance matrices ("imatrix"), as llama.cpp 2026 writes, reads and uses them.
//!
//! An imatrix holds, for every matrix `NAME` that multiplies activations, the sum over the
//! calibration tokens of the squared activation entering each input column (`Σ x²`), and the
//! number of tokens behind those sums. llama-quantize turns it into one weight per column,
//! `Σ x² / count` (the mean squared activation), which the quantizers use to spend precision
//! where the activations are large.
//!
//! Two file forms:
//!
//! * GGUF (what llama-imatrix writes by default since 2025): `general.type = "imatrix"`,
//!   `imatrix.datasets` (strings), `imatrix.chunk_count` and `imatrix.chunk_size` (u32), and per
//!   matrix two f32 tensors, `NAME.in_sum2` `[columns, matrices]` (the raw sums) and
//!   `NAME.counts` `[1, matrices]` (trailing 1-dimensions dropped, as ggml writes them), sorted
//!   by name. [`Imatrix::write_gguf`] writes this form byte for byte as llama-imatrix does.
//! * The legacy `.dat` (read only): i32 entry count; per entry an i32 name length, the name, an
//!   i32 `ncall`, an i32 value count and the f32 values, which are `Σ x² / count · ncall`; then,
//!   optionally, an i32 chunk count, an i32 length and the dataset name.
//!
//! [`Imatrix::quant_weights`] is llama-quantize's `load_imatrix`; [`ImatrixSpec::prepare`] is
//! its `prepare_imatrix` (`--include-weights` / `--exclude-weights`), plus checks against the
//! model that llama-quantize makes later or not at all, plus the `quantize.imatrix.*` keys it
//! records in the quantized file.

use gguf::{names, AtomicFile, GgmlType, GgufError, GgufFile, GgufWriter, TensorDecl, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// llama-quantize stores strings through a 128-byte buffer (`llama_model_kv_override`):
/// `quantize.imatrix.file` and `.dataset` keep at most this many bytes.
const KV_STRING_MAX: usize = 127;

/// Everything that can be wrong with an imatrix file or its use; every message names the file
/// and, where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {what}", path.display())]
    Bad { path: PathBuf, what: String },
}

fn bad<T>(path: &Path, what: impl Into<String>) -> Result<T, ImatrixError> {
    Err(ImatrixError::Bad {
        path: path.to_path_buf(),
        what: what.into(),
    })
}

/// Which file form the data came from: it decides what the values mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Raw sums and token counts.
    Gguf,
    /// Normalised values (`Σ x² / count · ncall`) and one count, `ncall`, per entry.
    Legacy,
}

/// One matrix's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `counts.len()` matrices (experts; 1 for a dense matrix) of `sums.len() / counts.len()`
    /// columns. GGUF: Σ x² per column; legacy: Σ x² / count · ncall.
    pub sums: Vec<f32>,
    /// GGUF: tokens per matrix; legacy: `[ncall]`.
    pub counts: Vec<u64>,
}

impl Entry {
    /// Columns per matrix.
    pub fn columns(&self) -> usize {
        self.sums.len() / self.counts.len().max(1)
    }
}

/// An importance matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    /// By tensor name (`blk.0.attn_qkv.weight`), in name order.
    pub entries: BTreeMap<String, Entry>,
    /// The calibration text files, in the order they were used.
    pub datasets: Vec<String>,
    /// Chunks collected: the largest token count divided by `chunk_size`.
    pub chunk_count: u32,
    /// Tokens per chunk (0 in a legacy file, which does not record it).
    pub chunk_size: u32,
    pub format: Format,
}

impl Imatrix {
    /// An empty GGUF-form imatrix for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: u32) -> Self {
        Imatrix {
            entries: BTreeMap::new(),
            datasets: Vec::new(),
            chunk_count: 0,
            chunk_size,
            format: Format::Gguf,
        }
    }

    /// Reads either form (GGUF when the file starts with the GGUF magic), checking everything:
    /// paired `.in_sum2`/`.counts` f32 tensors, whole matrices, finite non-negative sums and
    /// counts, the three `imatrix.*` keys (llama-quantize refuses a GGUF imatrix without them),
    /// no truncation, nothing after the end of a legacy file.
    pub fn load(path: &Path) -> Result<Self, ImatrixError> {
        let mut magic = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|err| ImatrixError::Io {
                path: path.to_path_buf(),
                err,
            })?;
            let mut n = 0;
            while n < 4 {
                match f.read(&mut magic[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        return Err(ImatrixError::Io {
                            path: path.to_path_buf(),
                            err,
                        })
                    }
                }
            }
            n
        };
        if n == 4 && &magic == gguf::GGUF_MAGIC {
            Self::load_gguf(path)
        } else {
            let bytes = std::fs::read(path).map_err(|err| ImatrixError::Io {
                path: path.to_path_buf(),
                err,
            })?;
            Self::parse_legacy(path, &bytes)
        }
    }

    fn load_gguf(path: &Path) -> Result<Self, ImatrixError> {
        let f = GgufFile::open(path)?;
        // Pair NAME.in_sum2 with NAME.counts.
        let mut pairs: BTreeMap<&str, [Option<&gguf::TensorInfo>; 2]> = BTreeMap::new();
        for t in &f.tensors {
            let (name, slot) = if let Some(n) = t.name.strip_suffix(names::IMATRIX_SUMS_SUFFIX) {
                (n, 0)
            } else if let Some(n) = t.name.strip_suffix(names::IMATRIX_COUNTS_SUFFIX) {
                (n, 1)
            } else {
                return bad(
                    path,
                    format!(
                        "tensor {} is neither NAME{} nor NAME{}: not an importance matrix \
                         (a model file?)",
                        t.name,
                        names::IMATRIX_SUMS_SUFFIX,
                        names::IMATRIX_COUNTS_SUFFIX
                    ),
                );
            };
            if t.ty != GgmlType::F32 {
                return bad(path, format!("tensor {} is {}, expected f32", t.name, t.ty));
            }
            pairs.entry(name).or_default()[slot] = Some(t);
        }
        if pairs.is_empty() {
            return bad(path, "holds no importance data (no NAME.in_sum2 tensors)");
        }
        let missing = |key: &str| ImatrixError::Bad {
            path: path.to_path_buf(),
            what: format!(
                "missing metadata key {key}: not an importance matrix as llama-imatrix writes \
                 it (llama-quantize refuses it too)"
            ),
        };
        let datasets = match f.get(names::IMATRIX_DATASETS) {
            None => return Err(missing(names::IMATRIX_DATASETS)),
            Some(v) => match v.as_array().and_then(|a| a.as_strings()) {
                Some(s) => s.to_vec(),
                None => {
                    return bad(
                        path,
                        format!(
                            "metadata key {} is {:?}, expected an array of strings",
                            names::IMATRIX_DATASETS,
                            v.value_type()
                        ),
                    )
                }
            },
        };
        let u32_key = |key: &str| -> Result<u32, ImatrixError> {
            match f.get(key) {
                None => Err(missing(key)),
                Some(v) => match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
                    Some(x) => Ok(x),
                    None => bad(
                        path,
                        format!("metadata key {key} is {v}, expected an unsigned 32-bit integer"),
                    ),
                },
            }
        };
        let chunk_count = u32_key(names::IMATRIX_CHUNK_COUNT)?;
        let chunk_size = u32_key(names::IMATRIX_CHUNK_SIZE)?;

        let mut entries = BTreeMap::new();
        for (name, [sums, counts]) in pairs {
            let (Some(sums), Some(counts)) = (sums, counts) else {
                let (has, lacks) = if sums.is_some() {
                    (names::IMATRIX_SUMS_SUFFIX, names::IMATRIX_COUNTS_SUFFIX)
                } else {
                    (names::IMATRIX_COUNTS_SUFFIX, names::IMATRIX_SUMS_SUFFIX)
                };
                return bad(path, format!("tensor {name}{has} has no {name}{lacks}"));
            };
            let sums = f32s(f.tensor_data(sums));
            let raw_counts = f32s(f.tensor_data(counts));
            let entry = Entry {
                counts: raw_counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        if c.is_finite() && c >= 0.0 {
                            // common_imatrix_load rounds (std::lround)
                            Ok(c.round() as u64)
                        } else {
                            bad(
                                path,
                                format!(
                                    "tensor {name}{}: count {i} is {c}, expected a finite \
                                     number >= 0",
                                    names::IMATRIX_COUNTS_SUFFIX
                                ),
                            )
                        }
                    })
                    .collect::<Result<_, _>>()?,
                sums,
            };
            check_entry(path, name, &entry)?;
            entries.insert(name.to_string(), entry);
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
            chunk_size,
            format: Format::Gguf,
        })
    }

    /// Parses the legacy `.dat` form.
    pub fn parse_legacy(path: &Path, bytes: &[u8]) -> Result<Self, ImatrixError> {
        let mut r = Legacy { bytes, pos: 0 };
        // an entry takes at least 17 bytes: length, a 1-byte name, ncall, count, one value
        let n_entries = match r.i32() {
            Some(n) if n >= 1 && n as usize <= bytes.len() / 17 => n as usize,
            Some(n) => {
                return bad(
                    path,
                    format!(
                        "not an importance matrix: neither GGUF nor a legacy .dat (whose first \
                         word, {n}, would be its number of entries)"
                    ),
                )
            }
            None => {
                return bad(
                    path,
                    "is empty or shorter than 4 bytes: not an importance matrix",
                )
            }
        };
        let truncated = |what: String| {
            bad(
                path,
                format!(
                    "file truncated: {what} ends past the end of the file ({} bytes)",
                    bytes.len()
                ),
            )
        };
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let Some(len) = r.i32() else {
                return truncated(format!("entry {} of {n_entries}", i + 1));
            };
            if len <= 0 {
                return bad(path, format!("entry {}: name length {len}", i + 1));
            }
            let Some(name) = r.take(len as usize) else {
                return truncated(format!("the name of entry {} of {n_entries}", i + 1));
            };
            let Ok(name) = std::str::from_utf8(name) else {
                return bad(path, format!("entry {}: the name is not UTF-8", i + 1));
            };
            let (Some(ncall), Some(nval)) = (r.i32(), r.i32()) else {
                return truncated(format!("entry {} ({name})", i + 1));
            };
            if ncall < 0 || nval < 1 {
                return bad(
                    path,
                    format!("entry {name}: {nval} values from {ncall} calls, expected values >= 1 and calls >= 0"),
                );
            }
            let Some(data) = r.take(4 * nval as usize) else {
                return truncated(format!("entry {} ({name}, {nval} values)", i + 1));
            };
            let entry = Entry {
                sums: f32s(data),
                counts: vec![ncall as u64],
            };
            check_entry(path, name, &entry)?;
            if entries.insert(name.to_string(), entry).is_some() {
                return bad(path, format!("tensor {name} appears twice"));
            }
        }
        // Optional trailer: the chunk count, then the dataset name.
        let (mut chunk_count, mut datasets) = (0, Vec::new());
        if r.pos < bytes.len() {
            let Some(n) = r.i32() else {
                return truncated("the chunk count after the last entry".into());
            };
            chunk_count = u32::try_from(n).or_else(|_| bad(path, format!("chunk count {n}")))?;
            if r.pos < bytes.len() {
                let Some(len) = r.i32() else {
                    return truncated("the dataset name's length".into());
                };
                let len = usize::try_from(len)
                    .or_else(|_| bad(path, format!("dataset name length {len}")))?;
                let Some(name) = r.take(len) else {
                    return truncated("the dataset name".into());
                };
                let Ok(name) = std::str::from_utf8(name) else {
                    return bad(path, "the dataset name is not UTF-8");
                };
                if len > 0 {
                    datasets.push(name.to_string());
                }
            }
            if r.pos < bytes.len() {
                return bad(
                    path,
                    format!(
                        "{} bytes after the dataset name: not a legacy importance matrix",
                        bytes.len() - r.pos
                    ),
                );
            }
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
            format: Format::Legacy,
        })
    }

    /// llama-quantize's per-column weights (`load_imatrix`): GGUF, per matrix, Σ x² / count
    /// (1 for every column of a matrix that saw no token); legacy, value / ncall (the values
    /// themselves when ncall is 0).
    pub fn quant_weights(&self) -> BTreeMap<String, Vec<f32>> {
        let weights = |e: &Entry| -> Vec<f32> {
            match self.format {
                Format::Gguf => {
                    let cols = e.columns();
                    e.sums
                        .chunks(cols.max(1))
                        .zip(&e.counts)
                        .flat_map(|(s, &c)| {
                            let c = c as f32;
                            s.iter().map(move |&x| if c > 0.0 { x / c } else { 1.0 })
                        })
                        .collect()
                }
                Format::Legacy => {
                    let ncall = e.counts.first().copied().unwrap_or(0);
                    if ncall > 0 {
                        e.sums.iter().map(|&x| x / ncall as f32).collect()
                    } else {
                        e.sums.clone()
                    }
                }
            }
        };
        self.entries
            .iter()
            .map(|(n, e)| (n.clone(), weights(e)))
            .collect()
    }

    /// Adds `other` as llama-imatrix's `--in-file` does (`load_imatrix`), for chunks of
    /// `chunk_size` tokens: GGUF sums and counts add up; legacy values become sums again
    /// (value · chunk_size, count ncall · chunk_size). Datasets are appended. `other_path` is
    /// for messages.
    pub fn add(&mut self, other: &Imatrix, other_path: &Path) -> Result<(), ImatrixError> {
        let chunk = self.chunk_size as u64;
        for (name, o) in &other.entries {
            let e = self.entries.entry(name.clone()).or_insert_with(|| Entry {
                sums: Vec::new(),
                counts: Vec::new(),
            });
            match other.format {
                Format::Legacy => {
                    if e.sums.is_empty() {
                        e.sums = vec![0.0; o.sums.len()];
                        e.counts = vec![0];
                    } else if e.sums.len() != o.sums.len() {
                        return bad(
                            other_path,
                            format!(
                                "tensor {name} has {} values, {} in the importance data before it",
                                o.sums.len(),
                                e.sums.len()
                            ),
                        );
                    }
                    for (s, &x) in e.sums.iter_mut().zip(&o.sums) {
                        *s += x * chunk as f32;
                    }
                    for c in &mut e.counts {
                        *c += o.counts[0] * chunk;
                    }
                }
                Format::Gguf => {
                    if e.sums.is_empty() {
                        e.sums = vec![0.0; o.sums.len()];
                    } else if e.sums.len() != o.sums.len() {
                        return bad(
                            other_path,
                            format!(
                                "tensor {name} has {} values, {} in the importance data before it",
                                o.sums.len(),
                                e.sums.len()
                            ),
                        );
                    }
                    if e.counts.is_empty() {
                        e.counts = vec![0; o.counts.len()];
                    } else if e.counts.len() == 1 && o.counts.len() > 1 {
                        e.counts = vec![e.counts[0]; o.counts.len()];
                    } else if e.counts.len() != o.counts.len() {
                        return bad(
                            other_path,
                            format!(
                                "tensor {name} has {} counts, {} in the importance data before it",
                                o.counts.len(),
                                e.counts.len()
                            ),
                        );
                    }
                    for (s, &x) in e.sums.iter_mut().zip(&o.sums) {
                        *s += x;
                    }
                    for (c, &x) in e.counts.iter_mut().zip(&o.counts) {
                        *c += x;
                    }
                }
            }
        }
        self.datasets.extend(other.datasets.iter().cloned());
        self.update_chunk_count();
        Ok(())
    }

    /// `chunk_count` = the largest token count / `chunk_size` (llama-imatrix's `m_last_chunk`).
    pub fn update_chunk_count(&mut self) {
        let max = self
            .entries
            .values()
            .flat_map(|e| e.counts.iter().copied())
            .max()
            .unwrap_or(0);
        self.chunk_count = max
            .checked_div(self.chunk_size as u64)
            .map_or(0, |n| n.min(u32::MAX as u64) as u32);
    }

    /// Writes the GGUF form exactly as llama-imatrix's `save_imatrix`: keys `general.type`,
    /// `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`; per entry in name order
    /// `NAME.in_sum2` then `NAME.counts`. Legacy-form data must be converted first ([`Self::add`]
    /// into an empty imatrix).
    pub fn write_gguf<W: Write>(&self, out: W) -> Result<W, GgufError> {
        if self.format != Format::Gguf {
            return Err(GgufError::Invalid(
                "legacy-form importance data cannot be written as GGUF: add it to an empty \
                 imatrix first"
                    .into(),
            ));
        }
        let metadata = vec![
            (
                names::GENERAL_TYPE.to_string(),
                Value::String(names::GENERAL_TYPE_IMATRIX.into()),
            ),
            (
                names::IMATRIX_DATASETS.to_string(),
                Value::strings(self.datasets.clone()),
            ),
            (
                names::IMATRIX_CHUNK_COUNT.to_string(),
                Value::U32(self.chunk_count),
            ),
            (
                names::IMATRIX_CHUNK_SIZE.to_string(),
                Value::U32(self.chunk_size),
            ),
        ];
        // ggml writes a tensor's dims without the trailing 1s (ggml_n_dims)
        let dims = |inner: u64, mats: u64| {
            if mats == 1 {
                vec![inner]
            } else {
                vec![inner, mats]
            }
        };
        let mut decls = Vec::new();
        let mut data: Vec<Vec<u8>> = Vec::new();
        for (name, e) in &self.entries {
            let mats = e.counts.len() as u64;
            if e.sums.is_empty() || mats == 0 {
                continue;
            }
            decls.push(TensorDecl {
                name: format!("{name}{}", names::IMATRIX_SUMS_SUFFIX),
                dims: dims(e.columns() as u64, mats),
                ty: GgmlType::F32,
            });
            data.push(e.sums.iter().flat_map(|x| x.to_le_bytes()).collect());
            decls.push(TensorDecl {
                name: format!("{name}{}", names::IMATRIX_COUNTS_SUFFIX),
                dims: dims(1, mats),
                ty: GgmlType::F32,
            });
            data.push(
                e.counts
                    .iter()
                    .flat_map(|&c| (c as f32).to_le_bytes())
                    .collect(),
            );
        }
        let mut w = GgufWriter::new(out, &metadata, decls.clone())?;
        for (d, bytes) in decls.iter().zip(&data) {
            w.write_tensor(&d.name, bytes)?;
        }
        w.finish()
    }

    /// Writes the GGUF form to `dest` atomically (nothing at `dest` unless it all succeeded);
    /// `inputs` are files `dest` must not replace. Returns the bytes written.
    pub fn save(&self, dest: &Path, overwrite: bool, inputs: &[&Path]) -> Result<u64, GgufError> {
        let mut file = AtomicFile::create_from(dest, overwrite, inputs)?;
        self.write_gguf(file.writer())?;
        file.commit()
    }
}

/// An entry's shape and values: whole matrices, finite non-negative sums.
fn check_entry(path: &Path, name: &str, e: &Entry) -> Result<(), ImatrixError> {
    let (nval, nmat) = (e.sums.len(), e.counts.len());
    if nval == 0 || nmat == 0 || !nval.is_multiple_of(nmat) {
        return bad(
            path,
            format!("tensor {name}: {nval} values are not {nmat} whole matrices of columns"),
        );
    }
    if let Some((i, x)) = e
        .sums
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
    {
        return bad(
            path,
            format!("tensor {name}: value {i} is {x}, expected a finite sum of squares >= 0"),
        );
    }
    Ok(())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A cursor over a legacy file.
struct Legacy<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Legacy<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Which imatrix to use and for which tensors (llama-quantize's `--imatrix`,
/// `--include-weights`, `--exclude-weights`: substrings of tensor names).
#[derive(Clone, Debug, Default)]
pub struct ImatrixSpec {
    pub path: PathBuf,
    /// Use the imatrix only for tensors whose name contains one of these.
    pub include: Vec<String>,
    /// Do not use it for tensors whose name contains one of these.
    pub exclude: Vec<String>,
}

/// An imatrix ready for one model's quantization.
#[derive(Clone, Debug, Default)]
pub struct ImatrixUse {
    /// Per-column weights by tensor name, for the tensors it is used for.
    pub weights: HashMap<String, Vec<f32>>,
    /// The keys llama-quantize adds to the quantized file (`quantize.imatrix.file`,
    /// `.dataset`, `.entries_count`, `.chunks_count`), in its order; none when `weights` is
    /// empty.
    pub metadata: Vec<(String, Value)>,
}

impl ImatrixUse {
    /// Whether any tensor gets weights (llama.cpp's `has_imatrix`, which changes the mix).
    pub fn is_used(&self) -> bool {
        !self.weights.is_empty()
    }
    /// The weights for tensor `name`, if the imatrix is used for it.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.weights.get(name).map(Vec::as_slice)
    }
}

impl ImatrixSpec {
    /// Loads the file and readies it for a model whose matrices are given by
    /// `columns(name)` (`None`: the model has no such tensor; else its row length times its
    /// experts). Errors, each naming the file and the tensor: an entry for a tensor the model
    /// lacks, an entry of another width, both include and exclude lists, and everything
    /// [`Imatrix::load`] checks. `model` names the model in messages.
    pub fn prepare(
        &self,
        model: &Path,
        columns: impl Fn(&str) -> Option<u64>,
    ) -> Result<ImatrixUse, ImatrixError> {
        let path = &self.path;
        if !self.include.is_empty() && !self.exclude.is_empty() {
            return bad(
                path,
                "--include-weights and --exclude-weights cannot be used together (as in \
                 llama-quantize)",
            );
        }
        let im = Imatrix::load(path)?;
        for (name, e) in &im.entries {
            match columns(name) {
                None => {
                    return bad(
                        path,
                        format!(
                            "tensor {name} is not in the model {} (an importance matrix of \
                             another model?)",
                            model.display()
                        ),
                    )
                }
                Some(n) if n != e.sums.len() as u64 => {
                    return bad(
                        path,
                        format!(
                            "tensor {name} has {} importance values, but the model's tensor has \
                             {n} columns (an importance matrix of another model?)",
                            e.sums.len()
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        let mut weights: HashMap<String, Vec<f32>> = im.quant_weights().into_iter().collect();
        weights.retain(|name, _| !self.exclude.iter().any(|x| name.contains(x.as_str())));
        if !self.include.is_empty() {
            weights.retain(|name, _| self.include.iter().any(|x| name.contains(x.as_str())));
        }
        for (name, w) in &weights {
            if let Some((i, x)) = w.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return bad(path, format!("tensor {name}: weight {i} is {x}"));
            }
        }
        let mut metadata = Vec::new();
        if !weights.is_empty() {
            metadata.push((
                names::QUANTIZE_IMATRIX_FILE.to_string(),
                Value::String(c_string(&path.to_string_lossy())),
            ));
            if let Some(d) = im.datasets.first() {
                metadata.push((
                    names::QUANTIZE_IMATRIX_DATASET.to_string(),
                    Value::String(c_string(d)),
                ));
            }
            metadata.push((
                names::QUANTIZE_IMATRIX_ENTRIES.to_string(),
                Value::U32(weights.len() as u32),
            ));
            if im.chunk_count > 0 {
                metadata.push((
                    names::QUANTIZE_IMATRIX_CHUNKS.to_string(),
                    Value::U32(im.chunk_count),
                ));
            }
        }
        Ok(ImatrixUse { weights, metadata })
    }
}

/// `s` cut to llama-quantize's 127 bytes (at a character boundary: llama.cpp would cut a
/// multi-byte character in two).
fn c_string(s: &str) -> String {
    let mut end = s.len().min(KV_STRING_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        let mut im = Imatrix::new(64);
        im.datasets = vec!["calib.txt".into()];
        im.entries.insert(
            "blk.0.attn_qkv.weight".into(),
            Entry {
                sums: vec![1.0, 4.0, 0.0, 2.5],
                counts: vec![128],
            },
        );
        im.entries.insert(
            "blk.0.ffn_down.weight".into(),
            Entry {
                sums: vec![3.0, 0.5],
                counts: vec![128],
            },
        );
        im.update_chunk_count();
        im
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn gguf_bytes(im: &Imatrix) -> Vec<u8> {
        im.write_gguf(Vec::new()).unwrap()
    }

    fn err(path: &Path) -> String {
        Imatrix::load(path).unwrap_err().to_string()
    }

    #[test]
    fn gguf_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let im = sample();
        assert_eq!(im.chunk_count, 2);
        let bytes = gguf_bytes(&im);
        let p = write(dir.path(), "a.gguf", &bytes);
        let back = Imatrix::load(&p).unwrap();
        assert_eq!(back, im);
        assert_eq!(gguf_bytes(&back), bytes);
        // a matrix per expert: 2-D tensors
        let mut moe = Imatrix::new(8);
        moe.entries.insert(
            "blk.0.ffn_up_exps.weight".into(),
            Entry {
                sums: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                counts: vec![8, 0],
            },
        );
        let p = write(dir.path(), "moe.gguf", &gguf_bytes(&moe));
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.tensors[0].dims, [3, 2]);
        assert_eq!(f.tensors[1].dims, [1, 2]);
        let back = Imatrix::load(&p).unwrap();
        assert_eq!(back, moe);
        // an expert that saw no token weighs 1 everywhere
        assert_eq!(
            back.quant_weights()["blk.0.ffn_up_exps.weight"],
            [0.125, 0.25, 0.375, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn quantize_weights_are_mean_squares() {
        let w = sample().quant_weights();
        assert_eq!(
            w["blk.0.attn_qkv.weight"],
            [1.0 / 128.0, 4.0 / 128.0, 0.0, 2.5 / 128.0]
        );
    }

    /// A legacy file as llama-imatrix's `save_imatrix_legacy` writes one.
    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((n, d)) = trailer {
            b.extend(n.to_le_bytes());
            b.extend((d.len() as i32).to_le_bytes());
            b.extend(d.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_files_read_and_convert() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = legacy(
            &[
                ("blk.0.attn_qkv.weight", 2, &[0.5, 1.0]),
                ("output.weight", 0, &[3.0]),
            ],
            Some((2, "calib.txt")),
        );
        let p = write(dir.path(), "a.dat", &bytes);
        let im = Imatrix::load(&p).unwrap();
        assert_eq!(im.format, Format::Legacy);
        assert_eq!(im.chunk_count, 2);
        assert_eq!(im.datasets, ["calib.txt"]);
        let w = im.quant_weights();
        assert_eq!(w["blk.0.attn_qkv.weight"], [0.25, 0.5]);
        assert_eq!(w["output.weight"], [3.0]); // ncall 0: the values as they are
                                               // without the optional trailer
        let p = write(
            dir.path(),
            "b.dat",
            &legacy(&[("blk.0.attn_qkv.weight", 1, &[0.5])], None),
        );
        assert_eq!(Imatrix::load(&p).unwrap().chunk_count, 0);
        // into GGUF form, as llama-imatrix --in-file does: sums = value · chunk size
        let mut raw = Imatrix::new(512);
        raw.add(&im, &p).unwrap();
        assert_eq!(raw.entries["blk.0.attn_qkv.weight"].sums, [256.0, 512.0]);
        assert_eq!(raw.entries["blk.0.attn_qkv.weight"].counts, [1024]);
        assert_eq!(raw.chunk_count, 2);
        assert!(im.write_gguf(Vec::new()).is_err());
    }

    #[test]
    fn adding_gguf_imatrices_sums_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        let mut a = Imatrix::new(64);
        a.add(&sample(), &p).unwrap();
        a.add(&sample(), &p).unwrap();
        assert_eq!(a.entries["blk.0.ffn_down.weight"].sums, [6.0, 1.0]);
        assert_eq!(a.entries["blk.0.ffn_down.weight"].counts, [256]);
        assert_eq!(a.chunk_count, 4);
        assert_eq!(a.datasets, ["calib.txt", "calib.txt"]);
        let mut other = sample();
        other.entries.get_mut("blk.0.ffn_down.weight").unwrap().sums = vec![1.0; 3];
        let e = a.add(&other, &p).unwrap_err().to_string();
        assert!(
            e.contains("x.gguf") && e.contains("blk.0.ffn_down.weight"),
            "{e}"
        );
    }

    #[test]
    fn every_bad_gguf_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = gguf_bytes(&sample());
        let check = |name: &str, bytes: Vec<u8>, want: &[&str]| {
            let p = write(dir.path(), name, &bytes);
            let e = err(&p);
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(name), "{name}: {e}");
            for w in want {
                assert!(e.contains(w), "{name}: {e:?} lacks {w:?}");
            }
        };
        // truncated in the data: the reader names the tensor
        check(
            "cut.gguf",
            good[..good.len() - 40].to_vec(),
            &["truncated", "blk.0.ffn_down.weight"],
        );
        check("empty.gguf", Vec::new(), &["empty"]);
        // NaN, negative, infinite sums; a negative count
        let with = |name: &str, e: Entry| {
            let mut im = sample();
            im.entries.insert(name.into(), e);
            gguf_bytes(&im)
        };
        for (file, v) in [
            ("nan.gguf", f32::NAN),
            ("neg.gguf", -1.0),
            ("inf.gguf", f32::INFINITY),
        ] {
            check(
                file,
                with(
                    "blk.1.ffn_up.weight",
                    Entry {
                        sums: vec![1.0, v],
                        counts: vec![4],
                    },
                ),
                &[
                    "blk.1.ffn_up.weight",
                    "value 1",
                    "expected a finite sum of squares >= 0",
                ],
            );
        }
        // a counts tensor with a negative value: written by hand
        let mut im = sample();
        im.entries.clear();
        let md = vec![
            (names::IMATRIX_DATASETS.to_string(), Value::strings(vec![])),
            (names::IMATRIX_CHUNK_COUNT.to_string(), Value::U32(1)),
            (names::IMATRIX_CHUNK_SIZE.to_string(), Value::U32(1)),
        ];
        let gguf_of = |md: &[(String, Value)], tensors: &[(&str, GgmlType, Vec<u8>)]| {
            let decls: Vec<TensorDecl> = tensors
                .iter()
                .map(|(n, t, b)| TensorDecl {
                    name: n.to_string(),
                    dims: vec![(b.len() / t.type_size()) as u64],
                    ty: *t,
                })
                .collect();
            let mut w = GgufWriter::new(Vec::new(), md, decls).unwrap();
            for (n, _, b) in tensors {
                w.write_tensor(n, b).unwrap();
            }
            w.finish().unwrap()
        };
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        check(
            "negcount.gguf",
            gguf_of(
                &md,
                &[
                    ("a.weight.in_sum2", GgmlType::F32, f(&[1.0])),
                    ("a.weight.counts", GgmlType::F32, f(&[-3.0])),
                ],
            ),
            &["a.weight.counts", "count 0 is -3"],
        );
        check(
            "unpaired.gguf",
            gguf_of(&md, &[("a.weight.in_sum2", GgmlType::F32, f(&[1.0]))]),
            &["a.weight.in_sum2 has no a.weight.counts"],
        );
        check(
            "f16.gguf",
            gguf_of(
                &md,
                &[
                    ("a.weight.in_sum2", GgmlType::F16, vec![0, 60]),
                    ("a.weight.counts", GgmlType::F32, f(&[1.0])),
                ],
            ),
            &["a.weight.in_sum2 is f16, expected f32"],
        );
        check(
            "model.gguf",
            gguf_of(&md, &[("token_embd.weight", GgmlType::F32, f(&[1.0]))]),
            &["token_embd.weight is neither", "a model file?"],
        );
        check(
            "ragged.gguf",
            gguf_of(
                &md,
                &[
                    ("a.weight.in_sum2", GgmlType::F32, f(&[1.0, 2.0, 3.0])),
                    ("a.weight.counts", GgmlType::F32, f(&[1.0, 1.0])),
                ],
            ),
            &["a.weight", "3 values are not 2 whole matrices"],
        );
        check("none.gguf", gguf_of(&md, &[]), &["no importance data"]);
        for key in [
            names::IMATRIX_DATASETS,
            names::IMATRIX_CHUNK_COUNT,
            names::IMATRIX_CHUNK_SIZE,
        ] {
            let md: Vec<_> = md.iter().filter(|(k, _)| k != key).cloned().collect();
            check(
                "nokey.gguf",
                gguf_of(
                    &md,
                    &[
                        ("a.weight.in_sum2", GgmlType::F32, f(&[1.0])),
                        ("a.weight.counts", GgmlType::F32, f(&[1.0])),
                    ],
                ),
                &["missing metadata key", key],
            );
        }
        let mut md2 = md.clone();
        md2[1].1 = Value::String("ten".into());
        check(
            "keytype.gguf",
            gguf_of(
                &md2,
                &[
                    ("a.weight.in_sum2", GgmlType::F32, f(&[1.0])),
                    ("a.weight.counts", GgmlType::F32, f(&[1.0])),
                ],
            ),
            &[
                names::IMATRIX_CHUNK_COUNT,
                "expected an unsigned 32-bit integer",
            ],
        );
    }

    #[test]
    fn every_bad_legacy_file_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = legacy(
            &[
                ("blk.0.attn_qkv.weight", 2, &[0.5, 1.0]),
                ("blk.0.ffn_up.weight", 2, &[1.0]),
            ],
            Some((2, "calib.txt")),
        );
        let check = |name: &str, bytes: &[u8], want: &[&str]| {
            let p = write(dir.path(), name, bytes);
            let e = err(&p);
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(name), "{name}: {e}");
            for w in want {
                assert!(e.contains(w), "{name}: {e:?} lacks {w:?}");
            }
        };
        // cut anywhere inside the entries: truncated, naming the entry
        let first_end = 4 + 4 + 21 + 4 + 4 + 8;
        check(
            "cut1.dat",
            &good[..first_end - 3],
            &["truncated", "blk.0.attn_qkv.weight"],
        );
        check(
            "cut2.dat",
            &good[..first_end + 30],
            &["truncated", "blk.0.ffn_up.weight"],
        );
        check(
            "cut3.dat",
            &good[..good.len() - 2],
            &["truncated", "dataset name"],
        );
        check("short.dat", &[1, 0], &["shorter than 4 bytes"]);
        check("zero.dat", &[0, 0, 0, 0], &["not an importance matrix"]);
        check("text.dat", b"hello world", &["not an importance matrix"]);
        let mut extra = good.clone();
        extra.extend([1, 2, 3]);
        check("extra.dat", &extra, &["3 bytes after the dataset name"]);
        check(
            "nan.dat",
            &legacy(&[("blk.0.ffn_up.weight", 1, &[f32::NAN])], None),
            &["blk.0.ffn_up.weight", "value 0 is NaN"],
        );
        check(
            "neg.dat",
            &legacy(&[("blk.0.ffn_up.weight", 1, &[1.0, -2.0])], None),
            &["blk.0.ffn_up.weight", "value 1 is -2"],
        );
        check(
            "twice.dat",
            &legacy(&[("a.weight", 1, &[1.0]), ("a.weight", 1, &[1.0])], None),
            &["a.weight appears twice"],
        );
        check(
            "ncall.dat",
            &legacy(&[("a.weight", -1, &[1.0])], None),
            &["a.weight", "from -1 calls"],
        );
    }

    #[test]
    fn prepare_checks_the_model_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "im.gguf", &gguf_bytes(&sample()));
        let model = Path::new("model.gguf");
        let widths = |name: &str| match name {
            "blk.0.attn_qkv.weight" => Some(4),
            "blk.0.ffn_down.weight" => Some(2),
            _ => None,
        };
        let spec = ImatrixSpec {
            path: p.clone(),
            ..Default::default()
        };
        let u = spec.prepare(model, widths).unwrap();
        assert_eq!(u.weights.len(), 2);
        assert_eq!(
            u.metadata,
            [
                (
                    names::QUANTIZE_IMATRIX_FILE.to_string(),
                    Value::String(p.to_string_lossy().into())
                ),
                (
                    names::QUANTIZE_IMATRIX_DATASET.to_string(),
                    Value::String("calib.txt".into())
                ),
                (names::QUANTIZE_IMATRIX_ENTRIES.to_string(), Value::U32(2)),
                (names::QUANTIZE_IMATRIX_CHUNKS.to_string(), Value::U32(2)),
            ]
        );
        let only = |include: &[&str], exclude: &[&str]| {
            ImatrixSpec {
                path: p.clone(),
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            }
            .prepare(model, widths)
        };
        let u = only(&["ffn_"], &[]).unwrap();
        assert_eq!(
            u.weights.keys().collect::<Vec<_>>(),
            ["blk.0.ffn_down.weight"]
        );
        assert_eq!(u.metadata[2].1, Value::U32(1));
        let u = only(&[], &["attn", "ffn"]).unwrap();
        assert!(!u.is_used() && u.metadata.is_empty());
        let e = only(&["a"], &["b"]).unwrap_err().to_string();
        assert!(e.contains("cannot be used together"), "{e}");
        // a tensor the model lacks; a tensor of another width
        let e = spec
            .prepare(model, |n| (n != "blk.0.ffn_down.weight").then_some(4))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("im.gguf")
                && e.contains("blk.0.ffn_down.weight is not in the model model.gguf"),
            "{e}"
        );
        let e = spec.prepare(model, |_| Some(4)).unwrap_err().to_string();
        assert!(
            e.contains("im.gguf")
                && e.contains("blk.0.ffn_down.weight has 2 importance values")
                && e.contains("4 columns"),
            "{e}"
        );
    }

    #[test]
    fn long_names_are_cut_as_llama_quantize_cuts_them() {
        assert_eq!(c_string(&"a".repeat(200)).len(), 127);
        let s = format!("{}é", "a".repeat(126)); // é straddles byte 127
        assert_eq!(c_string(&s), "a".repeat(126));
        let mut md = vec![
            ("a".to_string(), Value::U32(1)),
            ("b".to_string(), Value::U32(2)),
        ];
        crate::layout::set_key(&mut md, "a", Value::U32(3));
        assert_eq!(md[0].0, "b");
        assert_eq!(md[1], ("a".to_string(), Value::U32(3)));
    }
}
