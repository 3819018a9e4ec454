//! Streaming GGUF writer: the header (metadata and tensor table) is written first from the
//! declared tensor shapes and types, then each tensor's bytes in declaration order. Nothing is
//! buffered beyond one tensor, so a 12 GB model converts in constant memory.

use crate::value::{Array, Value};
use crate::{GgmlType, GgufError, DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT};
use std::io::Write;

/// A tensor to be written: name, ggml-order dims, type.
#[derive(Clone, Debug)]
pub struct TensorDecl {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorDecl {
    pub fn n_bytes(&self) -> Result<u64, GgufError> {
        let row = self.ty.row_bytes(self.dims[0]).ok_or_else(|| {
            GgufError::Invalid(format!(
                "tensor {}: row length {} is not a multiple of the {}-element block of {}",
                self.name,
                self.dims[0],
                self.ty.block_size(),
                self.ty
            ))
        })?;
        Ok(row * self.dims.iter().skip(1).product::<u64>())
    }
}

/// Writes a GGUF v3 stream.
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<(TensorDecl, u64)>,
    next: usize,
    written: u64,
    /// (size, bytes written so far) of the tensor being written.
    open: Option<(u64, u64)>,
    alignment: u64,
}

fn put_str<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_value<W: Write>(w: &mut W, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => put_str(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(a) => put_array(w, a),
    }
}

fn put_array<W: Write>(w: &mut W, a: &Array) -> std::io::Result<()> {
    w.write_all(&(a.elem_type() as u32).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    match a {
        Array::U8(v) => w.write_all(v),
        Array::String(v) => v.iter().try_for_each(|s| put_str(w, s)),
        Array::Array(v) => v.iter().try_for_each(|inner| put_array(w, inner)),
        _ => a.iter().try_for_each(|x| put_value(w, &x)),
    }
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header. `metadata` is written in the given order; `general.alignment`, when
    /// present, sets the alignment (default 32).
    pub fn new(
        mut out: W,
        metadata: &[(String, Value)],
        tensors: Vec<TensorDecl>,
    ) -> Result<Self, GgufError> {
        let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
            Some((_, v)) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                GgufError::Invalid(format!("{KEY_ALIGNMENT} must be a power of two, got {v}"))
            })?,
            None => DEFAULT_ALIGNMENT,
        };
        let mut seen = std::collections::HashSet::new();
        if let Some((k, _)) = metadata.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(GgufError::Invalid(format!("duplicate metadata key {k}")));
        }
        let mut seen_names = std::collections::HashSet::new();
        let mut offset = 0u64;
        let mut placed = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t.dims.is_empty() || t.dims.len() > 4 || t.dims.contains(&0) {
                return Err(GgufError::Invalid(format!(
                    "tensor {}: bad dims {:?}",
                    t.name, t.dims
                )));
            }
            if !seen_names.insert(t.name.clone()) {
                return Err(GgufError::Invalid(format!(
                    "duplicate tensor name {}",
                    t.name
                )));
            }
            let n = t.n_bytes()?;
            placed.push((t, offset));
            offset = (offset + n).div_ceil(alignment) * alignment;
        }
        let io = |e| GgufError::Write(e);
        let mut header = Vec::new();
        header.extend_from_slice(GGUF_MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(placed.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut header, k).map_err(io)?;
            header.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut header, v).map_err(io)?;
        }
        for (t, off) in &placed {
            put_str(&mut header, &t.name).map_err(io)?;
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&off.to_le_bytes());
        }
        let pad = header.len().div_ceil(alignment as usize) * alignment as usize - header.len();
        header.resize(header.len() + pad, 0);
        out.write_all(&header).map_err(io)?;
        Ok(GgufWriter {
            out,
            tensors: placed,
            next: 0,
            written: 0,
            open: None,
            alignment,
        })
    }

    /// The declared tensors, in write order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorDecl> {
        self.tensors.iter().map(|(t, _)| t)
    }

    /// Writes the next tensor's bytes in one piece; `name` must be the next declared tensor and
    /// `data` exactly its size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        self.start_tensor(name)?;
        self.write_data(data)?;
        self.end_tensor()
    }

    /// Starts the next declared tensor (must be `name`); returns its size in bytes. Its data then
    /// goes through [`Self::write_data`] in any number of pieces, closed by [`Self::end_tensor`].
    pub fn start_tensor(&mut self, name: &str) -> Result<u64, GgufError> {
        if self.open.is_some() {
            return Err(GgufError::Invalid(format!(
                "tensor {name} started before the previous one ended"
            )));
        }
        let (decl, off) = self.tensors.get(self.next).ok_or_else(|| {
            GgufError::Invalid(format!(
                "tensor {name}: all declared tensors already written"
            ))
        })?;
        if decl.name != name {
            return Err(GgufError::Invalid(format!(
                "tensor {name} written out of order (expected {})",
                decl.name
            )));
        }
        debug_assert_eq!(*off, self.written);
        let n = decl.n_bytes()?;
        self.open = Some((n, 0));
        Ok(n)
    }

    /// Appends bytes to the open tensor.
    pub fn write_data(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let name = &self.tensors[self.next.min(self.tensors.len().saturating_sub(1))]
            .0
            .name;
        let (n, done) = self
            .open
            .as_mut()
            .ok_or_else(|| GgufError::Invalid("write_data with no open tensor".into()))?;
        if *done + data.len() as u64 > *n {
            return Err(GgufError::Invalid(format!(
                "tensor {name}: more than its {n} bytes written"
            )));
        }
        *done += data.len() as u64;
        self.out.write_all(data).map_err(GgufError::Write)
    }

    /// Closes the open tensor: checks its size and writes the alignment padding.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        let (n, done) = self
            .open
            .take()
            .ok_or_else(|| GgufError::Invalid("end_tensor with no open tensor".into()))?;
        if done != n {
            let d = &self.tensors[self.next].0;
            return Err(GgufError::Invalid(format!(
                "tensor {}: {done} bytes given, {n} expected for {} {:?}",
                d.name, d.ty, d.dims
            )));
        }
        let end = (self.written + n).div_ceil(self.alignment) * self.alignment;
        let pad = (end - self.written - n) as usize;
        self.out
            .write_all(&vec![0u8; pad])
            .map_err(GgufError::Write)?;
        self.written = end;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if self.next != self.tensors.len() {
            return Err(GgufError::Invalid(format!(
                "only {} of {} tensors written (next: {})",
                self.next,
                self.tensors.len(),
                self.tensors[self.next].0.name
            )));
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }
}
