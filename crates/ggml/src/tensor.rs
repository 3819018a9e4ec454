//! Tensors and tensor stores.
//!
//! A [`Tensor<'a>`] is a copyable handle to a ggml tensor that cannot outlive what owns its
//! memory: a [`TensorStore`] (weights, KV cache) or a graph context (see `graph.rs`).
//! A [`TensorStore`] owns a ggml context *and* the backend buffer holding its tensors' data, so a
//! live handle always points at live data.

use crate::backend::{Backend, Buffer};
use crate::context::RawContext;
use crate::{ffi, sys, GgmlError};
use std::any::Any;
use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// A ggml tensor borrowed from its owner for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    raw: NonNull<sys::ggml_tensor>,
    _owner: PhantomData<&'a ()>,
}

impl<'a> Tensor<'a> {
    /// # Safety
    /// `raw` must point to a tensor that stays valid for `'a`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::ggml_tensor) -> Result<Self, GgmlError> {
        NonNull::new(raw)
            .map(|raw| Tensor {
                raw,
                _owner: PhantomData,
            })
            .ok_or_else(|| GgmlError::Backend("ggml returned a null tensor (context full?)".into()))
    }
    pub(crate) fn raw(self) -> *mut sys::ggml_tensor {
        self.raw.as_ptr()
    }
    fn get(&self) -> &sys::ggml_tensor {
        // SAFETY: the handle is valid for 'a (constructor contract), and ggml does not mutate a
        // tensor's header while the Rust side reads it (single-threaded graph building).
        unsafe { self.raw.as_ref() }
    }
    /// Elements per dimension (ggml order).
    pub fn ne(&self) -> [i64; 4] {
        self.get().ne
    }
    /// Bytes per step in each dimension.
    pub fn nb(&self) -> [usize; 4] {
        self.get().nb
    }
    /// ggml type id.
    pub fn ty(&self) -> u32 {
        self.get().type_
    }
    pub fn n_elements(&self) -> i64 {
        self.ne().iter().product()
    }
    /// Bytes spanned by the tensor's data.
    pub fn n_bytes(&self) -> usize {
        // SAFETY: valid tensor (see `get`).
        unsafe { sys::ggml_nbytes(self.raw()) }
    }
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: valid tensor (see `get`).
        unsafe { sys::ggml_is_contiguous(self.raw()) }
    }
    /// True once the tensor has memory (a store, or an allocated graph).
    pub(crate) fn has_data(&self) -> bool {
        !self.get().data.is_null()
    }
    pub(crate) fn buffer(&self) -> *mut std::ffi::c_void {
        self.get().buffer.cast()
    }
}

/// Creates a tensor in `ctx` after validating its shape and type (whole blocks per row).
pub(crate) fn new_tensor(
    ctx: &RawContext,
    ty: u32,
    ne: &[i64],
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    if ne.is_empty() || ne.len() > 4 || ne.iter().any(|&d| d <= 0) {
        return Err(GgmlError::Shape(format!("bad tensor shape {ne:?}")));
    }
    crate::quant::row_size(ty, ne[0] as usize)?;
    ctx.ensure_room(1)?;
    // SAFETY: valid context with room for one more tensor (checked); ne has ne.len() entries
    // and the type is valid with whole blocks per row (checked by row_size).
    let t = unsafe { sys::ggml_new_tensor(ctx.raw(), ty, ne.len() as i32, ne.as_ptr()) };
    if t.is_null() {
        return Err(GgmlError::Backend("ggml_new_tensor failed".into()));
    }
    Ok(t)
}

/// Name, type and shape of a tensor to create in a store.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub ty: u32,
    /// ggml order.
    pub ne: Vec<i64>,
}

/// Tensors of a store with their names, in creation order.
type NamedTensors = Vec<(String, NonNull<sys::ggml_tensor>)>;

/// A set of named tensors whose data lives in one backend buffer that the store owns: model
/// weights (zero-copy over a memory-mapped file, or copied into device memory) or a KV cache.
pub struct TensorStore {
    tensors: NamedTensors,
    // Drop order: buffer, then context, then the host memory owner / the backend.
    buffer: Buffer,
    _ctx: RawContext,
    _host: Option<Box<dyn Any>>,
    _backend: Option<Backend>,
}

impl TensorStore {
    fn create(specs: &[TensorSpec]) -> Result<(RawContext, NamedTensors), GgmlError> {
        let ctx = RawContext::new(specs.len(), 0)?;
        let mut tensors = Vec::with_capacity(specs.len());
        for s in specs {
            let t = new_tensor(&ctx, s.ty, &s.ne)?;
            let name = CString::new(s.name.as_str())
                .map_err(|_| GgmlError::Shape(format!("tensor name {:?} has a NUL", s.name)))?;
            // SAFETY: valid tensor; ggml copies the name into its fixed-size field (truncating).
            unsafe { sys::ggml_set_name(t, name.as_ptr()) };
            tensors.push((s.name.clone(), NonNull::new(t).expect("checked non-null")));
        }
        Ok((ctx, tensors))
    }

    /// Allocates the tensors in `backend`'s memory, zero-filled (a KV cache).
    pub fn allocate(backend: &Backend, specs: &[TensorSpec]) -> Result<Self, GgmlError> {
        Self::allocate_as(backend, specs, false)
    }

    /// Allocates weights in `backend`'s memory (fill them with [`Self::upload`]). The buffer is
    /// marked as weights, so the scheduler runs the ops that read them on `backend`.
    pub fn allocate_weights(backend: &Backend, specs: &[TensorSpec]) -> Result<Self, GgmlError> {
        Self::allocate_as(backend, specs, true)
    }

    fn allocate_as(
        backend: &Backend,
        specs: &[TensorSpec],
        weights: bool,
    ) -> Result<Self, GgmlError> {
        let (ctx, tensors) = Self::create(specs)?;
        // SAFETY: valid context and backend; returns null on allocation failure.
        let raw = unsafe { ffi::ggml_backend_alloc_ctx_tensors(ctx.raw(), backend.raw()) };
        let buffer = Buffer::from_raw(raw).ok_or_else(|| {
            GgmlError::Backend(format!(
                "could not allocate {} tensors on {} ({} bytes): out of memory",
                specs.len(),
                backend.name(),
                specs
                    .iter()
                    .map(
                        |s| crate::quant::row_size(s.ty, s.ne[0] as usize).unwrap_or(0)
                            * s.ne[1..].iter().product::<i64>() as usize
                    )
                    .sum::<usize>()
            ))
        })?;
        let store = TensorStore {
            tensors,
            buffer,
            _ctx: ctx,
            _host: None,
            _backend: Some(backend.clone()),
        };
        if weights {
            store.buffer.mark_weights();
        } else {
            // The runtime's stores of this kind are KV caches: 2 MiB pages before the first
            // write (the zero-fill), as for the repacked weights (a no-op for small or device
            // buffers). Decoding at depth streams every layer's K and V once per token
            // after the weights have pushed them out of the caches; on 4 KiB pages that is a
            // page walk per 8 keys (ChatGLM3's 512-byte f16 rows) and a prefetcher restart.
            store.advise_huge_pages();
            store.buffer.clear(0);
        }
        Ok(store)
    }

    /// Places the tensors over host memory owned by `host` without copying: tensor `i` starts at
    /// byte `offsets[i]` of `host.as_ref()`. The memory is treated as read-only by the runtime.
    pub fn map_host<H: AsRef<[u8]> + 'static>(
        host: H,
        specs: &[TensorSpec],
        offsets: &[usize],
    ) -> Result<Self, GgmlError> {
        if specs.len() != offsets.len() {
            return Err(GgmlError::Shape("one offset per tensor is needed".into()));
        }
        let host: Box<H> = Box::new(host);
        let bytes: &[u8] = (*host).as_ref();
        let (base, len) = (bytes.as_ptr(), bytes.len());
        if !(base as usize).is_multiple_of(32) {
            return Err(GgmlError::Backend(
                "host memory is not 32-byte aligned".into(),
            ));
        }
        let (ctx, tensors) = Self::create(specs)?;
        for ((name, t), &off) in tensors.iter().zip(offsets) {
            // SAFETY: valid tensor just created.
            let n = unsafe { sys::ggml_nbytes(t.as_ptr()) };
            if off % 32 != 0 || off.checked_add(n).is_none_or(|end| end > len) {
                return Err(GgmlError::Shape(format!(
                    "tensor {name}: bytes {off}..{} are not an aligned range of the {len}-byte file",
                    off.saturating_add(n)
                )));
            }
        }
        // SAFETY: base is 32-byte aligned (checked) and len bytes are readable for as long as
        // `host` lives, which the store keeps alive until after the buffer is freed.
        let raw = unsafe { ffi::ggml_backend_cpu_buffer_from_ptr(base as *mut _, len) };
        let buffer = Buffer::from_raw(raw)
            .ok_or_else(|| GgmlError::Backend("could not wrap host memory".into()))?;
        buffer.mark_weights();
        for ((_, t), &off) in tensors.iter().zip(offsets) {
            // SAFETY: the tensor is unallocated, belongs to ctx, and [off, off+nbytes) lies in the
            // buffer (checked above).
            unsafe {
                ffi::ggml_backend_tensor_alloc(buffer.raw(), t.as_ptr(), base.add(off) as *mut _)
            };
        }
        Ok(TensorStore {
            tensors,
            buffer,
            _ctx: ctx,
            _host: Some(host),
            _backend: None,
        })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<Tensor<'_>> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| Tensor {
                raw: *t,
                _owner: PhantomData,
            })
    }

    /// The `i`-th tensor in creation order.
    pub fn at(&self, i: usize) -> Option<Tensor<'_>> {
        self.tensors.get(i).map(|(_, t)| Tensor {
            raw: *t,
            _owner: PhantomData,
        })
    }

    /// All tensors in creation order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, Tensor<'_>)> {
        self.tensors.iter().map(|(n, t)| {
            (
                n.as_str(),
                Tensor {
                    raw: *t,
                    _owner: PhantomData,
                },
            )
        })
    }

    /// Bytes of the backing buffer.
    pub fn size_bytes(&self) -> usize {
        self.buffer.size()
    }

    /// Copies `data` into tensor `t` of this store (e.g. weights uploaded to a device).
    pub fn upload(&self, t: Tensor<'_>, data: &[u8]) -> Result<(), GgmlError> {
        if !self.tensors.iter().any(|(_, x)| x.as_ptr() == t.raw()) {
            return Err(GgmlError::Shape(
                "tensor does not belong to this store".into(),
            ));
        }
        if self._host.is_some() {
            return Err(GgmlError::Shape("a host-mapped store is read-only".into()));
        }
        if data.len() != t.n_bytes() {
            return Err(GgmlError::Shape(format!(
                "{} bytes given for a {}-byte tensor",
                data.len(),
                t.n_bytes()
            )));
        }
        // SAFETY: t belongs to this store (checked), so it is allocated in self.buffer, which is
        // alive; the size matches the tensor exactly.
        unsafe { ffi::ggml_backend_tensor_set(t.raw(), data.as_ptr().cast(), 0, data.len()) };
        Ok(())
    }

    /// Copies `len` bytes of tensor `i` from byte offset `src` to byte offset `dst` (both ranges
    /// inside the tensor; through the host, so on any backend): a KV cache region shared by
    /// another sequence.
    pub fn copy_within(
        &self,
        i: usize,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), GgmlError> {
        let t = self
            .at(i)
            .ok_or_else(|| GgmlError::Shape(format!("no tensor {i} in this store")))?;
        let n = t.n_bytes();
        if self._host.is_some() || !t.has_data() {
            return Err(GgmlError::Shape("a host-mapped store is read-only".into()));
        }
        if src.checked_add(len).is_none_or(|e| e > n) || dst.checked_add(len).is_none_or(|e| e > n)
        {
            return Err(GgmlError::Shape(format!(
                "copy of {len} bytes from {src} to {dst} outside a {n}-byte tensor"
            )));
        }
        if len == 0 {
            return Ok(());
        }
        let mut buf = vec![0u8; len];
        // SAFETY: t belongs to this store's live buffer; both ranges lie inside the tensor
        // (checked) and buf holds len bytes.
        unsafe {
            ffi::ggml_backend_tensor_get(t.raw(), buf.as_mut_ptr().cast(), src, len);
            ffi::ggml_backend_tensor_set(t.raw(), buf.as_ptr().cast(), dst, len);
        }
        Ok(())
    }

    /// The bytes of tensor `i`, writable: only for stores allocated in host memory by
    /// [`Self::allocate_weights`] or [`Self::allocate`] (not mapped ones). `&mut self`: no handle
    /// into the store (and so no graph reading it) can be alive meanwhile.
    pub(crate) fn host_bytes_mut(&mut self, i: usize) -> Result<&mut [u8], GgmlError> {
        let t = self
            .at(i)
            .ok_or_else(|| GgmlError::Shape(format!("no tensor {i} in this store")))?;
        // SAFETY: live buffer; pure query.
        let host = unsafe { ffi::ggml_backend_buffer_is_host(self.buffer.raw()) };
        if !host || self._host.is_some() || !t.has_data() {
            return Err(GgmlError::Shape(
                "only allocated host tensors can be written in place".into(),
            ));
        }
        let n = t.n_bytes();
        // SAFETY: the tensor is allocated in this store's host buffer (n bytes at data), which
        // lives as long as self; &mut self makes this the only access.
        Ok(unsafe { std::slice::from_raw_parts_mut((*t.raw()).data.cast::<u8>(), n) })
    }

    /// Asks Linux for 2 MiB pages for this store's host memory (`madvise(MADV_HUGEPAGE)`, which
    /// transparent huge pages honour in their default `madvise` mode), before it is first
    /// written. Streaming repacked weights from 4 KiB pages costs a TLB miss per page and
    /// restarts the hardware prefetchers at every page boundary: decoding q4_0 on one AVX-512
    /// core ran 20–25 % faster from huge pages (docs/cpu-kernels.md). Only advice: ignored where
    /// it does not apply (other systems, device memory, the kernel declining).
    pub fn advise_huge_pages(&self) {
        // SAFETY: live buffer; pure queries.
        let (host, base) = unsafe {
            (
                ffi::ggml_backend_buffer_is_host(self.buffer.raw()),
                ffi::ggml_backend_buffer_get_base(self.buffer.raw()) as usize,
            )
        };
        if host && base != 0 {
            glm_kernels::advise_huge_pages(base, self.buffer.size());
        }
    }

    /// Zero-fills the store.
    pub fn clear(&self) {
        self.buffer.clear(0);
    }
}
