//! A compute graph under construction: a `no_alloc` ggml context for the intermediate tensors,
//! the `ggml_cgraph`, and the ops used by the GLM graph. Every op checks the preconditions ggml
//! would otherwise `GGML_ASSERT` (an abort), so a shape mistake is an error, not a crash.

use crate::backend::Scheduler;
use crate::context::RawContext;
use crate::tensor::Tensor;
use crate::{ffi, sys, GgmlError};
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

pub const TYPE_F32: u32 = sys::ggml_type_GGML_TYPE_F32;
pub const TYPE_F16: u32 = sys::ggml_type_GGML_TYPE_F16;
pub const TYPE_I32: u32 = sys::ggml_type_GGML_TYPE_I32;

/// Makes `'g` invariant.
type Invariant<'g> = fn(&'g ()) -> &'g ();

/// See [`Scheduler::with_graph`]. `'g` is invariant and unique to one `with_graph` call; `'w`
/// is the lifetime of what the graph reads (weights, cache), which outlives the call.
pub struct GraphCtx<'g, 'w: 'g> {
    ctx: RawContext,
    graph: *mut sys::ggml_cgraph,
    sched: *mut std::ffi::c_void,
    inputs: RefCell<Vec<*mut sys::ggml_tensor>>,
    allocated: Cell<bool>,
    /// Used by `reserve`: the scheduler rewrote its sources, it must not run.
    spent: Cell<bool>,
    _brand: PhantomData<(Invariant<'g>, &'w ())>,
}

fn shape_err<T>(op: &str, msg: String) -> Result<T, GgmlError> {
    Err(GgmlError::Shape(format!("{op}: {msg}")))
}

impl Scheduler {
    /// Builds, allocates and runs one graph inside `f`. The graph context and every tensor made
    /// in it are confined to the closure (`'g` is chosen per call, like `std::thread::scope`), so
    /// nothing can outlive the graph's memory, and everything the graph reads (`'w`: weights,
    /// cache) outlives the call.
    pub fn with_graph<'w, R, E: From<GgmlError>>(
        &mut self,
        f: impl for<'g> FnOnce(&'g GraphCtx<'g, 'w>) -> Result<R, E>,
    ) -> Result<R, E> {
        let g = GraphCtx::new(self)?;
        f(&g)
    }
}

impl<'g, 'w> GraphCtx<'g, 'w> {
    pub(crate) fn new(sched: &mut Scheduler) -> Result<Self, GgmlError> {
        let max_nodes = sched.max_nodes();
        // SAFETY: pure size computation.
        let graph_mem = unsafe { sys::ggml_graph_overhead_custom(max_nodes, false) };
        let ctx = RawContext::new(max_nodes, graph_mem)?;
        // SAFETY: the context has room for the graph object (graph_mem reserved above).
        let graph = unsafe { sys::ggml_new_graph_custom(ctx.raw(), max_nodes, false) };
        if graph.is_null() {
            return Err(GgmlError::Backend("ggml_new_graph_custom failed".into()));
        }
        Ok(GraphCtx {
            ctx,
            graph,
            sched: sched.raw(),
            inputs: RefCell::new(Vec::new()),
            allocated: Cell::new(false),
            spent: Cell::new(false),
            _brand: PhantomData,
        })
    }

    fn wrap(&self, raw: *mut sys::ggml_tensor) -> Result<Tensor<'g>, GgmlError> {
        // SAFETY: `raw` was just created in self.ctx, which lives as long as `self`; `'g` cannot
        // outlive the `with_graph` call that owns `self`.
        unsafe { Tensor::from_raw(raw) }
    }

    fn room(&self) -> Result<*mut sys::ggml_context, GgmlError> {
        self.ctx.ensure_room(2)?;
        if self.allocated.get() || self.spent.get() {
            return Err(GgmlError::Backend(
                "graph already allocated: build every op before allocate()".into(),
            ));
        }
        Ok(self.ctx.raw())
    }

    /// A new input tensor; fill it with [`Self::set_f32`] / [`Self::set_i32`] after `allocate`.
    pub fn input(&self, ty: u32, ne: &[i64]) -> Result<Tensor<'g>, GgmlError> {
        self.room()?;
        let t = crate::tensor::new_tensor(&self.ctx, ty, ne)?;
        // SAFETY: valid tensor of this context.
        unsafe { sys::ggml_set_input(t) };
        self.inputs.borrow_mut().push(t);
        self.wrap(t)
    }

    /// Adds `t` and everything it depends on to the graph.
    pub fn expand(&self, t: Tensor<'g>) -> Result<(), GgmlError> {
        let n = self.n_nodes();
        // SAFETY: valid graph and tensor; the graph was created with room for max_nodes, and
        // ggml asserts (aborts) past it, so check the context room heuristic first.
        if n + 64 > self.capacity() {
            return Err(GgmlError::Backend(format!("graph full ({n} nodes)")));
        }
        // SAFETY: see above.
        unsafe { sys::ggml_build_forward_expand(self.graph, t.raw()) };
        Ok(())
    }

    /// Marks `t` as an output (kept, readable after compute) and adds it to the graph. For a
    /// view, the tensor it views is kept too (the allocator would reuse its memory otherwise).
    pub fn output(&self, t: Tensor<'g>) -> Result<(), GgmlError> {
        // SAFETY: valid tensor; view_src is null or a valid tensor of this graph or a store.
        unsafe {
            sys::ggml_set_output(t.raw());
            let src = (*t.raw()).view_src;
            if !src.is_null() {
                sys::ggml_set_output(src);
            }
        }
        self.expand(t)
    }

    fn n_nodes(&self) -> usize {
        // SAFETY: valid graph.
        unsafe { (*self.graph).n_nodes as usize }
    }
    fn capacity(&self) -> usize {
        // SAFETY: valid graph.
        unsafe { (*self.graph).size as usize }
    }

    fn check_unused(&self) -> Result<(), GgmlError> {
        if self.allocated.get() || self.spent.get() {
            return Err(GgmlError::Backend(
                "graph already allocated or reserved".into(),
            ));
        }
        if !self.placeable() {
            return Err(GgmlError::Backend(
                "graph has no op on weights or on a cache, so no backend can be chosen for it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Sizes the scheduler's compute buffers for this graph (they only grow), without running
    /// it; the graph is spent afterwards. A failed allocation is an error here, whereas growing
    /// the buffers inside [`Self::allocate`] cannot report one in this ggml: a session reserves
    /// its largest graphs first so that `allocate` never has to grow them.
    pub fn reserve(&self) -> Result<(), GgmlError> {
        self.check_unused()?;
        self.spent.set(true);
        // SAFETY: as in `allocate`; the scheduler is reset by ggml afterwards, and the graph
        // (whose sources ggml rewrote) is never allocated or run (`spent`).
        if !unsafe { ffi::ggml_backend_sched_reserve(self.sched, self.graph) } {
            return Err(GgmlError::Backend(
                "could not allocate the compute buffer".into(),
            ));
        }
        Ok(())
    }

    /// Assigns every op to a backend and places every tensor of the graph in the compute buffers.
    pub fn allocate(&self) -> Result<(), GgmlError> {
        self.check_unused()?;
        // SAFETY: the scheduler is alive and exclusively borrowed for 'g; the graph belongs to
        // self and has at most max_nodes nodes (the scheduler's hash set holds twice that).
        let ok = unsafe {
            ffi::ggml_backend_sched_reset(self.sched);
            ffi::ggml_backend_sched_alloc_graph(self.sched, self.graph)
        };
        if !ok {
            return Err(GgmlError::Backend(
                "could not allocate the compute buffer".into(),
            ));
        }
        self.check_layout()?;
        self.allocated.set(true);
        Ok(())
    }

    /// Every tensor the allocator placed lies inside its buffer (views lie inside their
    /// source, checked when they are made). A cheap guard: a layout past a buffer's end would
    /// corrupt the heap when the graph runs.
    fn check_layout(&self) -> Result<(), GgmlError> {
        // SAFETY: valid graph whose nodes/leafs arrays hold n_nodes/n_leafs valid tensors; their
        // buffers are null or live (the compute buffers, weights or caches).
        unsafe {
            let g = &*self.graph;
            let tensors = (0..g.n_nodes as usize)
                .map(|i| *g.nodes.add(i))
                .chain((0..g.n_leafs as usize).map(|i| *g.leafs.add(i)));
            for t in tensors {
                let t = &*t;
                if !t.view_src.is_null() || t.buffer.is_null() || t.data.is_null() {
                    continue;
                }
                let buf = t.buffer.cast();
                let base = ffi::ggml_backend_buffer_get_base(buf) as usize;
                let end = base + ffi::ggml_backend_buffer_get_size(buf);
                let (start, n) = (t.data as usize, sys::ggml_nbytes(t));
                if start < base || start.saturating_add(n) > end {
                    return Err(GgmlError::Backend(format!(
                        "allocator placed a tensor of {n} bytes at {} of a {}-byte buffer",
                        start.wrapping_sub(base) as isize,
                        end - base
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether ggml's scheduler can place the graph: it starts from the nodes whose memory or
    /// view source is allocated, graph inputs, and ops reading weights; with none it aborts.
    fn placeable(&self) -> bool {
        // SAFETY: valid graph; nodes holds n_nodes valid tensor pointers whose src/view_src
        // are null or valid tensors of this graph or of a live store.
        unsafe {
            let g = &*self.graph;
            (0..g.n_nodes as usize).any(|i| {
                let n = &**g.nodes.add(i);
                // The scheduler's passes skip view ops: they anchor nothing.
                let view = [
                    sys::ggml_op_GGML_OP_VIEW,
                    sys::ggml_op_GGML_OP_RESHAPE,
                    sys::ggml_op_GGML_OP_PERMUTE,
                    sys::ggml_op_GGML_OP_TRANSPOSE,
                ]
                .contains(&n.op);
                !view
                    && (!n.buffer.is_null()
                        || (!n.view_src.is_null() && !(*n.view_src).buffer.is_null())
                        || n.flags & sys::ggml_tensor_flag_GGML_TENSOR_FLAG_INPUT as i32 != 0
                        || n.src.iter().any(|&s| {
                            !s.is_null() && crate::backend::is_weight_buffer((*s).buffer.cast())
                        }))
            })
        }
    }

    fn check_input(&self, t: Tensor<'g>, ty: u32, n: usize) -> Result<(), GgmlError> {
        if !self.allocated.get() {
            return Err(GgmlError::Backend("set input before allocate()".into()));
        }
        if !self.inputs.borrow().contains(&t.raw()) {
            return Err(GgmlError::Shape("not an input tensor of this graph".into()));
        }
        if t.ty() != ty || t.n_elements() as usize != n {
            return Err(GgmlError::Shape(format!(
                "input has {} elements of type {}, {n} given",
                t.n_elements(),
                t.ty()
            )));
        }
        Ok(())
    }

    /// Copies host data into an input tensor.
    pub fn set_f32(&self, t: Tensor<'g>, data: &[f32]) -> Result<(), GgmlError> {
        self.set_input(t, TYPE_F32, data)
    }

    /// Copies host data into an input tensor.
    pub fn set_i32(&self, t: Tensor<'g>, data: &[i32]) -> Result<(), GgmlError> {
        self.set_input(t, TYPE_I32, data)
    }

    /// `T` must be the 4-byte element type that ggml type `ty` stores (f32 or i32).
    fn set_input<T: Copy>(&self, t: Tensor<'g>, ty: u32, data: &[T]) -> Result<(), GgmlError> {
        debug_assert_eq!(std::mem::size_of::<T>(), 4);
        self.check_input(t, ty, data.len())?;
        // SAFETY: t is an allocated input of this graph whose type is `ty` with exactly
        // data.len() 4-byte elements (checked), so the copy stays inside its data.
        unsafe {
            ffi::ggml_backend_tensor_set(
                t.raw(),
                data.as_ptr().cast(),
                0,
                std::mem::size_of_val(data),
            )
        };
        Ok(())
    }

    /// Runs the graph (each split on its backend) and waits for it.
    pub fn compute(&self) -> Result<(), GgmlError> {
        if !self.allocated.get() {
            return Err(GgmlError::Backend("compute before allocate()".into()));
        }
        // Every node and leaf must have memory, or ggml would dereference null.
        // SAFETY: valid graph; nodes/leafs arrays hold n_nodes/n_leafs valid tensor pointers.
        let ok = unsafe {
            let g = &*self.graph;
            (0..g.n_nodes as usize).all(|i| !(*(*g.nodes.add(i))).data.is_null())
                && (0..g.n_leafs as usize).all(|i| !(*(*g.leafs.add(i))).data.is_null())
        };
        if !ok {
            return Err(GgmlError::Backend(
                "graph has tensors without memory".into(),
            ));
        }
        // SAFETY: graph allocated by this scheduler, whose inputs (weights, cache) outlive 'g.
        let st = unsafe { ffi::ggml_backend_sched_graph_compute(self.sched, self.graph) };
        if st != sys::ggml_status_GGML_STATUS_SUCCESS {
            return Err(GgmlError::Backend(format!(
                "graph compute failed (status {st})"
            )));
        }
        Ok(())
    }

    /// Reads an f32 output after compute.
    pub fn read_f32(&self, t: Tensor<'g>) -> Result<Vec<f32>, GgmlError> {
        if t.ty() != TYPE_F32 || !t.is_contiguous() || !t.has_data() || t.buffer().is_null() {
            return Err(GgmlError::Shape(
                "read_f32 needs an allocated contiguous f32 tensor".into(),
            ));
        }
        let n = t.n_elements() as usize;
        let mut out = vec![0f32; n];
        // SAFETY: t is allocated in a live buffer (the allocator is borrowed for 'g), contiguous,
        // with n f32 elements = n*4 bytes, and `out` has room for them.
        unsafe { ffi::ggml_backend_tensor_get(t.raw(), out.as_mut_ptr().cast(), 0, n * 4) };
        Ok(out)
    }

    // ---------------------------------------------------------------- ops

    /// Rows `ids` (I32 vector) of matrix `a`.
    pub fn get_rows(&self, a: Tensor<'g>, ids: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let (na, ni) = (a.ne(), ids.ne());
        if ids.ty() != TYPE_I32 || ni[1] != 1 || ni[2] != 1 || na[2] != 1 || na[3] != 1 {
            return shape_err("get_rows", format!("table {na:?}, ids {ni:?}"));
        }
        let ctx = self.room()?;
        // SAFETY: shapes checked; ctx has room.
        self.wrap(unsafe { sys::ggml_get_rows(ctx, a.raw(), ids.raw()) })
    }

    /// RMS normalisation over rows. (CUDA's kernel also needs rows of a multiple of 32
    /// columns: the runtime refuses GPU layers for such a model.)
    pub fn rms_norm(&self, a: Tensor<'g>, eps: f32) -> Result<Tensor<'g>, GgmlError> {
        if a.ty() != TYPE_F32 || a.nb()[0] != 4 || a.nb()[1] != 4 * a.ne()[0] as usize {
            return shape_err("rms_norm", "needs contiguous f32 rows".into());
        }
        let ctx = self.room()?;
        // SAFETY: checked; ctx has room.
        self.wrap(unsafe { sys::ggml_rms_norm(ctx, a.raw(), eps) })
    }

    fn can_repeat(b: Tensor<'_>, a: Tensor<'_>) -> bool {
        let (nb, na) = (b.ne(), a.ne());
        (0..4).all(|i| na[i] % nb[i] == 0)
    }

    /// Checks an element-wise f32 op where `b` broadcasts over `a`.
    fn broadcast_args(
        &self,
        op: &str,
        a: Tensor<'g>,
        b: Tensor<'g>,
    ) -> Result<*mut sys::ggml_context, GgmlError> {
        if !Self::can_repeat(b, a)
            || a.ty() != TYPE_F32
            || b.ty() != TYPE_F32
            || a.nb()[0] != 4
            || b.nb()[0] != 4
        {
            return shape_err(op, format!("{:?} and {:?}", a.ne(), b.ne()));
        }
        self.room()
    }

    /// Element-wise a * b (b broadcast over a).
    pub fn mul(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.broadcast_args("mul", a, b)?;
        // SAFETY: shapes and types checked; ctx has room.
        self.wrap(unsafe { sys::ggml_mul(ctx, a.raw(), b.raw()) })
    }

    /// Element-wise a + b (b broadcast over a).
    pub fn add(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.broadcast_args("add", a, b)?;
        // SAFETY: shapes and types checked; ctx has room.
        self.wrap(unsafe { sys::ggml_add(ctx, a.raw(), b.raw()) })
    }

    /// SiLU of a contiguous tensor (CUDA's kernel ignores strides, so non-contiguous input is refused).
    pub fn silu(&self, a: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        if a.ty() != TYPE_F32 || !a.is_contiguous() {
            return shape_err("silu", "needs a contiguous f32 tensor".into());
        }
        let ctx = self.room()?;
        // SAFETY: checked; ctx has room.
        self.wrap(unsafe { sys::ggml_silu(ctx, a.raw()) })
    }

    /// `a`ᵀ·`b` the ggml way: result[i, j] = Σ_k a[k, i]·b[k, j], broadcasting a over b's dims 2, 3.
    pub fn mul_mat(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let (na, nb) = (a.ne(), b.ne());
        let bsz = crate::quant::block_size(a.ty())?;
        // SAFETY: valid tensor; pure predicate.
        let transposed = unsafe { sys::ggml_is_transposed(a.raw()) };
        if na[0] != nb[0]
            || nb[2] % na[2] != 0
            || nb[3] % na[3] != 0
            || transposed
            || b.nb()[0] > b.nb()[1]
        {
            return shape_err("mul_mat", format!("{na:?} x {nb:?}"));
        }
        if !(na[0] as usize).is_multiple_of(bsz) {
            return shape_err("mul_mat", format!("row of {} is not whole blocks", na[0]));
        }
        let ctx = self.room()?;
        // SAFETY: ggml_can_mul_mat holds (checked); ctx has room.
        self.wrap(unsafe { sys::ggml_mul_mat(ctx, a.raw(), b.raw()) })
    }

    /// `p`·`x` with our own kernels (packed.rs): `[rows, T]` for x `[k, T]` (f32, rows
    /// contiguous). CPU only: the weights live in a CPU packed store.
    pub fn mul_mat_packed(
        &self,
        p: crate::Packed<'g>,
        x: Tensor<'g>,
    ) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        self.ctx.ensure_room(3)?;
        // SAFETY: live graph context with room (checked); p's data is a packed store tensor
        // that outlives the graph ('g); shapes are checked inside.
        self.wrap(unsafe { crate::packed::mul_mat_packed(ctx, p, x)? })
    }

    /// softmax(a·scale + mask) like [`Self::soft_max_ext`], with `exp` in f32 (CPU only:
    /// ggml's CPU softmax takes `exp` from an f16 table; see exact.rs).
    pub fn soft_max_exact(
        &self,
        a: Tensor<'g>,
        mask: Tensor<'g>,
        scale: f32,
    ) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: live graph context with room (checked); shapes are checked inside.
        self.wrap(unsafe { crate::exact::soft_max(ctx, a, mask, scale)? })
    }

    /// `softmax(scale · q·Kᵀ + causal mask) · V` in one op, with our flash-attention kernel
    /// (attention.rs; CPU only): `q` contiguous f32 `[d, heads, T]`, `k` and `v` the first
    /// `n_kv` rows `[kv_width, n_kv]` of a layer's cache (f32, f16, q8_0 or q4_0; the last `T`
    /// rows are the queries' own). Returns `[d, heads, T]`.
    pub fn flash_attn(
        &self,
        q: Tensor<'g>,
        k: Tensor<'g>,
        v: Tensor<'g>,
        scale: f32,
        isa: crate::Isa,
    ) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: live graph context with room (checked); shapes are checked inside.
        self.wrap(unsafe { crate::attention::flash_attn(ctx, q, k, v, scale, isa)? })
    }

    /// silu(gate) ⊙ up for two `[n, T]` views with contiguous rows, with `exp` in f32 (CPU
    /// only); returns a contiguous `[n, T]`.
    pub fn swiglu_exact(&self, gate: Tensor<'g>, up: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: as soft_max_exact.
        self.wrap(unsafe { crate::exact::swiglu(ctx, gate, up)? })
    }

    /// `x` unchanged (a view), adding Σ x² per column of the f32 `[k, T]` activations `x` and
    /// T rows to `acc` when the graph runs (llama-imatrix's statistics; observe.rs). CPU only:
    /// a custom op.
    pub fn observe_squares(
        &self,
        x: Tensor<'g>,
        acc: &'g crate::SquareSums,
    ) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: live graph context with room (checked); `acc` is borrowed for 'g, which no
        // graph computation outlives; shapes are checked inside.
        self.wrap(unsafe { crate::observe::observe_squares(ctx, x, acc)? })
    }

    /// [`Self::mul_mat`] accumulated in f32 on every backend. CUDA's batched f16 GEMM (used for
    /// attention over an f16 cache) otherwise accumulates and stores the result in f16.
    pub fn mul_mat_f32(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let r = self.mul_mat(a, b)?;
        // SAFETY: r is a MUL_MAT node just made; sets its precision op-param.
        unsafe { sys::ggml_mul_mat_set_prec(r.raw(), sys::ggml_prec_GGML_PREC_F32) };
        Ok(r)
    }

    /// `a` and `b` (f32, with equal first two dimensions and contiguous rows) stacked along
    /// dimension 2 (ggml's concat, CPU: the flash-attention outputs of a batch's sequences).
    pub fn concat(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let (na, nb) = (a.ne(), b.ne());
        if a.ty() != TYPE_F32
            || b.ty() != TYPE_F32
            || na[0] != nb[0]
            || na[1] != nb[1]
            || na[3] != 1
            || nb[3] != 1
            || a.nb()[0] != 4
            || b.nb()[0] != 4
        {
            return shape_err("concat", format!("{na:?} + {nb:?}"));
        }
        let ctx = self.room()?;
        // SAFETY: f32 tensors of matching shapes with contiguous rows (checked: ggml's CPU
        // concat asserts these); ctx has room.
        self.wrap(unsafe { sys::ggml_concat(ctx, a.raw(), b.raw()) })
    }

    /// A contiguous copy.
    pub fn cont(&self, a: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: any tensor can be made contiguous; ctx has room.
        self.wrap(unsafe { sys::ggml_cont(ctx, a.raw()) })
    }

    /// Same data, new shape (contiguous input only).
    pub fn reshape(&self, a: Tensor<'g>, ne: &[i64]) -> Result<Tensor<'g>, GgmlError> {
        if !a.is_contiguous()
            || ne.iter().product::<i64>() != a.n_elements()
            || ne.is_empty()
            || ne.len() > 4
        {
            return shape_err("reshape", format!("{:?} -> {ne:?}", a.ne()));
        }
        let ctx = self.room()?;
        // SAFETY: contiguous with equal element count (checked); ctx has room.
        self.wrap(unsafe {
            match *ne {
                [a0] => sys::ggml_reshape_1d(ctx, a.raw(), a0),
                [a0, a1] => sys::ggml_reshape_2d(ctx, a.raw(), a0, a1),
                [a0, a1, a2] => sys::ggml_reshape_3d(ctx, a.raw(), a0, a1, a2),
                [a0, a1, a2, a3] => sys::ggml_reshape_4d(ctx, a.raw(), a0, a1, a2, a3),
                _ => unreachable!("length checked"),
            }
        })
    }

    /// A strided view: `ne` elements per dimension, `nb[i]` bytes between steps of dimension
    /// i+1, starting `offset` bytes into `a`. Must stay inside `a`'s data.
    pub fn view(
        &self,
        a: Tensor<'g>,
        ne: &[i64],
        nb: &[usize],
        offset: usize,
    ) -> Result<Tensor<'g>, GgmlError> {
        if ne.is_empty() || ne.len() > 4 || nb.len() + 1 != ne.len() || ne.iter().any(|&d| d <= 0) {
            return shape_err("view", format!("ne {ne:?}, nb {nb:?}"));
        }
        let row = crate::quant::row_size(a.ty(), ne[0] as usize)?;
        let extent = nb
            .iter()
            .zip(&ne[1..])
            .map(|(&s, &n)| s * (n as usize - 1))
            .sum::<usize>()
            + row;
        if offset + extent > a.n_bytes() {
            return shape_err(
                "view",
                format!(
                    "bytes {offset}..{} outside the {}-byte source",
                    offset + extent,
                    a.n_bytes()
                ),
            );
        }
        let ctx = self.room()?;
        // SAFETY: the view lies inside `a` (checked); ctx has room.
        self.wrap(unsafe {
            match (ne, nb) {
                ([a0], []) => sys::ggml_view_1d(ctx, a.raw(), *a0, offset),
                ([a0, a1], [b1]) => sys::ggml_view_2d(ctx, a.raw(), *a0, *a1, *b1, offset),
                ([a0, a1, a2], [b1, b2]) => {
                    sys::ggml_view_3d(ctx, a.raw(), *a0, *a1, *a2, *b1, *b2, offset)
                }
                ([a0, a1, a2, a3], [b1, b2, b3]) => {
                    sys::ggml_view_4d(ctx, a.raw(), *a0, *a1, *a2, *a3, *b1, *b2, *b3, offset)
                }
                _ => unreachable!("lengths checked"),
            }
        })
    }

    /// Permutes axes: axis i of `a` becomes axis `axes[i]` of the result.
    pub fn permute(&self, a: Tensor<'g>, axes: [i32; 4]) -> Result<Tensor<'g>, GgmlError> {
        let mut seen = [false; 4];
        for &x in &axes {
            if !(0..4).contains(&x) || seen[x as usize] {
                return shape_err("permute", format!("{axes:?} is not a permutation"));
            }
            seen[x as usize] = true;
        }
        let ctx = self.room()?;
        // SAFETY: a valid permutation (checked); ctx has room.
        self.wrap(unsafe { sys::ggml_permute(ctx, a.raw(), axes[0], axes[1], axes[2], axes[3]) })
    }

    /// Transposes the first two axes.
    pub fn transpose(&self, a: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let ctx = self.room()?;
        // SAFETY: always valid; ctx has room.
        self.wrap(unsafe { sys::ggml_transpose(ctx, a.raw()) })
    }

    /// Rotary embedding, "normal" mode (adjacent pairs), over the *whole* row of a contiguous
    /// `[n_dims, heads, tokens]` tensor with positions `pos` (I32, one per token). Partial
    /// rotation (n_dims < row) is refused: it is wrong in this ggml on CPU and CUDA.
    pub fn rope(
        &self,
        a: Tensor<'g>,
        pos: Tensor<'g>,
        freq_base: f32,
    ) -> Result<Tensor<'g>, GgmlError> {
        let (na, np) = (a.ne(), pos.ne());
        if a.ty() != TYPE_F32
            || !a.is_contiguous()
            || pos.ty() != TYPE_I32
            || np[0] != na[2]
            || na[3] != 1
            || na[0] % 2 != 0
        {
            return shape_err("rope", format!("x {na:?}, pos {np:?}"));
        }
        let ctx = self.room()?;
        // SAFETY: contiguous f32 x, I32 positions one per token (checked); ctx has room.
        self.wrap(unsafe {
            sys::ggml_rope_custom(
                ctx,
                a.raw(),
                pos.raw(),
                na[0] as i32,
                0,
                0,
                0,
                freq_base,
                1.0,
                0.0,
                1.0,
                32.0,
                1.0,
            )
        })
    }

    /// softmax(a·scale + mask) over rows; mask is `[a.ne0, a.ne1]` f32, broadcast over heads.
    pub fn soft_max_ext(
        &self,
        a: Tensor<'g>,
        mask: Tensor<'g>,
        scale: f32,
    ) -> Result<Tensor<'g>, GgmlError> {
        let (na, nm) = (a.ne(), mask.ne());
        if a.ty() != TYPE_F32
            || !a.is_contiguous()
            || mask.ty() != TYPE_F32
            || !mask.is_contiguous()
            || nm[0] != na[0]
            || nm[1] != na[1]
            || nm[2] != 1
            || nm[3] != 1
        {
            return shape_err("soft_max_ext", format!("scores {na:?}, mask {nm:?}"));
        }
        let ctx = self.room()?;
        // SAFETY: checked; ctx has room.
        self.wrap(unsafe {
            sys::ggml_soft_max_ext(ctx, a.raw(), mask.raw(), std::ptr::null_mut(), scale, 0.0)
        })
    }

    /// Copies `a` into `b` (converting f32 to f16, or quantizing to q8_0 / q4_0 with ggml's
    /// CPU quantizer); returns the written view of `b`. Add the result to the graph for the copy
    /// to happen. A quantized `b` must be contiguous and `a`'s rows contiguous whole blocks
    /// (ggml quantizes row by row).
    pub fn cpy(&self, a: Tensor<'g>, b: Tensor<'g>) -> Result<Tensor<'g>, GgmlError> {
        let quantized = crate::attention::kv_type_of(b.ty()).is_some_and(|t| t.is_quantized());
        if a.n_elements() != b.n_elements()
            || a.ty() != TYPE_F32
            || !(b.ty() == TYPE_F32 || b.ty() == TYPE_F16 || quantized)
        {
            return shape_err("cpy", format!("{:?} -> {:?}", a.ne(), b.ne()));
        }
        if quantized
            && (!b.is_contiguous()
                || a.nb()[0] != 4
                || !(a.ne()[0] as usize).is_multiple_of(crate::quant::block_size(b.ty())?))
        {
            return shape_err(
                "cpy",
                format!(
                    "{:?} -> a quantized {:?}: rows must be whole blocks",
                    a.ne(),
                    b.ne()
                ),
            );
        }
        let ctx = self.room()?;
        // SAFETY: equal element counts, supported types (checked); ctx has room.
        self.wrap(unsafe { sys::ggml_cpy(ctx, a.raw(), b.raw()) })
    }
}
