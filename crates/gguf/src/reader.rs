//! GGUF reader: memory-maps the file, parses and validates the header, and hands out tensor data
//! as borrowed byte slices (zero copy). Nothing read from the file is trusted: every count and
//! length is bounded by what remains of the file before anything is allocated, and every tensor's
//! extent is checked against the file size.

use crate::value::{Array, Value, ValueType};
use crate::{GgmlType, GgufError, DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Caps on header counts, far above any real model, so a corrupt count fails fast.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

/// Where and what one tensor is.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Bytes of the tensor's data.
    pub fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }
    /// Shape in PyTorch order (outermost first), for messages.
    pub fn shape_torch(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            offset: self.pos as u64,
            what,
        }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "file truncated: {what} needs {n} bytes, only {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what}: string length {len} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("{what}: string is not valid UTF-8")))
    }
    fn bool(&mut self, what: &str) -> Result<bool, GgufError> {
        match self.arr::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
        }
    }
    /// An array: element type, count, elements.
    fn array_value(&mut self, what: &str, depth: u32) -> Result<Array, GgufError> {
        if depth >= 2 {
            return Err(self.err(format!("{what}: arrays nested deeper than 2 levels")));
        }
        let et_id = self.u32(what)?;
        let et = ValueType::from_id(et_id)
            .ok_or_else(|| self.err(format!("{what}: unknown array element type {et_id}")))?;
        let n = self.u64(what)?;
        if n > (self.remaining() / et.min_size()) as u64 {
            return Err(self.err(format!(
                "{what}: array of {n} {et:?} values cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        self.array(et, n as usize, what, depth)
    }
    fn value(&mut self, ty: ValueType, what: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            ValueType::Bool => Value::Bool(self.bool(what)?),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            ValueType::Array => Value::Array(self.array_value(what, depth)?),
        })
    }

    /// `n` elements of type `et` (already checked to fit in what is left of the file), stored
    /// by type: no per-element `Value`.
    fn array(
        &mut self,
        et: ValueType,
        n: usize,
        what: &str,
        depth: u32,
    ) -> Result<Array, GgufError> {
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.arr(what)?));
                }
                Array::$variant(v)
            }};
        }
        Ok(match et {
            ValueType::U8 => Array::U8(self.take(n, what)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(n, what)?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(what)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(what)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(what, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |e| GgufError::Io {
            path: path.to_path_buf(),
            err: e,
        };
        let file = File::open(path).map_err(io)?;
        let mmap = map_readonly(&file).map_err(io)?;
        Self::parse(path.to_path_buf(), mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self, GgufError> {
        let mut c = Cursor {
            buf: &mmap,
            pos: 0,
            path: &path,
        };
        let magic = c
            .take(4, "magic")
            .map_err(|_| GgufError::NotGguf { path: path.clone() })?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf { path: path.clone() });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "unsupported GGUF version {version} (expected 2 or 3)"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > MAX_TENSORS {
            return Err(c.err(format!(
                "tensor count {n_tensors} is implausible (limit {MAX_TENSORS})"
            )));
        }
        if n_kv > MAX_KV {
            return Err(c.err(format!(
                "metadata count {n_kv} is implausible (limit {MAX_KV})"
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv.min(1024) as usize);
        // Duplicate checks by hash: linear in the number of keys and tensors (a file of 2^20
        // keys took minutes with pairwise comparisons).
        let mut seen_keys = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty_id = c.u32(&key)?;
            let ty = ValueType::from_id(ty_id)
                .ok_or_else(|| c.err(format!("{key}: unknown value type {ty_id}")))?;
            let v = c.value(ty, &key, 0)?;
            if !seen_keys.insert(key.clone()) {
                return Err(c.err(format!("duplicate metadata key {key}")));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 16 => a,
                _ => return Err(c.err(format!("{KEY_ALIGNMENT} = {v} is not a power of two"))),
            },
        };
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors.min(4096) as usize);
        let mut seen_names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name #{i}"))?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!(
                    "tensor {name}: {n_dims} dimensions (expected 1..={MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ty_id = c.u32(&name)?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| c.err(format!("tensor {name}: unknown ggml type {ty_id}")))?;
            let offset = c.u64(&name)?;
            if dims.contains(&0) {
                return Err(c.err(format!("tensor {name}: zero dimension in {dims:?}")));
            }
            if dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none_or(|n| n > 1 << 40)
            {
                return Err(c.err(format!(
                    "tensor {name}: shape {dims:?} is implausibly large"
                )));
            }
            if ty.row_bytes(dims[0]).is_none() {
                return Err(c.err(format!(
                    "tensor {name}: row length {} is not a multiple of the {}-element block of {ty}",
                    dims[0],
                    ty.block_size()
                )));
            }
            if offset % alignment != 0 {
                return Err(c.err(format!(
                    "tensor {name}: offset {offset} is not aligned to {alignment}"
                )));
            }
            if !seen_names.insert(name.clone()) {
                return Err(c.err(format!("duplicate tensor name {name}")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let header_end = c.pos as u64;
        let data_offset = header_end.div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(t.n_bytes()));
            if end.is_none_or(|e| e > file_len) {
                return Err(GgufError::Truncated {
                    path: path.clone(),
                    tensor: t.name.clone(),
                    need: end.unwrap_or(u64::MAX),
                    have: file_len,
                });
            }
        }
        Ok(GgufFile {
            path,
            mmap,
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn missing(&self, key: &str, what: &str) -> GgufError {
        match self.get(key) {
            None => GgufError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            },
            Some(v) => GgufError::KeyType {
                path: self.path.clone(),
                key: key.to_string(),
                expected: what.to_string(),
                found: format!("{:?}", v.value_type()),
            },
        }
    }

    /// An integer key.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.missing(key, "an unsigned integer"))
    }
    /// A float key (integers are accepted too).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.missing(key, "a number"))
    }
    /// A string key.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.missing(key, "a string"))
    }
    /// A string array.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        let a = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.missing(key, "an array of strings"))?;
        a.as_strings()
            .map(<[String]>::to_vec)
            .ok_or_else(|| self.missing(key, "an array of strings"))
    }
    /// A numeric array as f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let a = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.missing(key, "an array of numbers"))?;
        a.to_f32s()
            .ok_or_else(|| self.missing(key, "an array of numbers"))
    }
    /// An integer array as i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let a = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.missing(key, "an array of integers"))?;
        a.to_i32s()
            .ok_or_else(|| self.missing(key, "an array of integers"))
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.mmap[start..start + t.n_bytes() as usize]
    }

    /// The whole mapped file (the runtime hands it to ggml as a host buffer).
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }
}

impl GgufFile {
    /// Drops this process's pages of bytes `offset .. offset + len` of the mapped file (for data
    /// that was copied elsewhere, e.g. repacked weights): resident memory shrinks, and a later
    /// read maps the same file bytes again. Only advice: errors are ignored.
    pub fn release(&self, offset: usize, len: usize) {
        // memmap2 checks offset and len against the map separately, not their sum: a range past
        // the end would drop pages of whatever is mapped after the file.
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.mmap.len())
        {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the range lies inside the map (checked above); the map is read-only,
        // file-backed and never written, so MADV_DONTNEED only drops page-table entries: a later access faults the unchanged file contents back in,
        // and no reference into the map can observe a difference.
        let _ = unsafe {
            self.mmap
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
        #[cfg(not(unix))]
        let _ = (offset, len);
    }
}

/// Maps a file read-only. The one `unsafe` of this crate; the converter maps safetensors shards
/// through it too.
pub fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process; if another process truncates
    // the file while mapped, accesses may fault (the documented hazard of any mmap reader, the
    // same one llama.cpp accepts). All offsets are validated against the length at open time.
    unsafe { Mmap::map(file) }
}
