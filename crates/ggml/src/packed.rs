//! Our own CPU matrix kernels (crate `glm-kernels`) wired into ggml graphs.
//!
//! Quantized weights that stay on the CPU (q4_0, q8_0, q5_0, q5_1, iq4_nl, q3_K, q4_K, q5_K,
//! q6_K, iq4_xs: every [`WeightType`]) are repacked once, at load, into a [`PackedStore`] (16-row
//! interleaved groups, see glm-kernels). In a graph, [`GraphCtx::mul_mat_packed`]
//! (graph.rs) adds two custom ops in place of ggml's `mul_mat`: one quantizes the activations
//! (once per op, each thread a share of the tokens), the next multiplies (each thread a share of
//! the row groups). ggml runs custom ops on all its threads and puts a barrier between ops.

use crate::backend::Backend;
use crate::tensor::{Tensor, TensorSpec, TensorStore};
use crate::{sys, GgmlError};
pub use glm_kernels::{Activation, Isa, WeightType};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A repacked weight matrix (`rows × k`), as the graph uses it.
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    pub(crate) data: Tensor<'a>,
    pub ty: WeightType,
    pub rows: usize,
    pub k: usize,
    pub isa: Isa,
}

/// One matrix to repack: ggml's row-major blocks of `rows × k` elements.
pub struct PackSource<'s> {
    pub name: String,
    pub ty: WeightType,
    pub rows: usize,
    pub k: usize,
    pub data: &'s [u8],
}

impl PackSource<'_> {
    /// Bytes of one row in ggml's layout.
    fn row_bytes(&self) -> usize {
        self.k / self.ty.block_cols() * self.ty.ggml_block_bytes()
    }

    /// Bytes of one packed row group.
    fn group_bytes(&self) -> usize {
        glm_kernels::packed_len(self.ty, glm_kernels::GROUP, self.k)
    }
}

/// Repacked matrices in CPU memory (anonymous memory: the mapped originals can be dropped from
/// the page cache afterwards).
pub struct PackedStore {
    store: TensorStore,
    shapes: Vec<(WeightType, usize, usize)>,
    isa: Isa,
}

impl PackedStore {
    /// Repacks `sources` with `n_threads` threads, for kernel `isa`. `done(i, bytes)` is called
    /// as each slice of source `i` is packed (`bytes`: the slice's range in `data`, whole row
    /// groups of at most [`SLICE_BYTES`] but one group, in order), so that its mapped pages can
    /// be released before the next slice is read: the peak resident memory then holds one slice
    /// twice, not the largest matrix (the 218 MB output matrix of a 6B model).
    pub fn build(
        sources: &[PackSource<'_>],
        isa: Isa,
        n_threads: usize,
        mut done: impl FnMut(usize, std::ops::Range<usize>),
    ) -> Result<Self, GgmlError> {
        if !isa.runs_here() {
            return Err(GgmlError::Backend(format!(
                "{} kernels cannot run on this CPU",
                isa.name()
            )));
        }
        let specs: Vec<TensorSpec> = sources
            .iter()
            .map(|s| TensorSpec {
                name: s.name.clone(),
                ty: sys::ggml_type_GGML_TYPE_I8,
                ne: vec![glm_kernels::packed_len(s.ty, s.rows, s.k) as i64],
            })
            .collect();
        let mut store = TensorStore::allocate_weights(&Backend::cpu(1)?, &specs)?;
        store.advise_huge_pages();
        for (i, s) in sources.iter().enumerate() {
            let dst = store.host_bytes_mut(i)?;
            repack_sliced(s, dst, n_threads.max(1), SLICE_BYTES, |bytes| {
                done(i, bytes)
            })?;
        }
        Ok(PackedStore {
            store,
            shapes: sources.iter().map(|s| (s.ty, s.rows, s.k)).collect(),
            isa,
        })
    }

    /// Matrix `i` (in `build`'s order).
    pub fn get(&self, i: usize) -> Option<Packed<'_>> {
        let (ty, rows, k) = *self.shapes.get(i)?;
        Some(Packed {
            data: self.store.at(i)?,
            ty,
            rows,
            k,
            isa: self.isa,
        })
    }

    /// The instruction set the matrices are run with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The names of the packed matrices and their types, in `build`'s order.
    pub fn matrices(&self) -> impl Iterator<Item = (&str, WeightType)> {
        self.store
            .tensors()
            .map(|(name, _)| name)
            .zip(self.shapes.iter().map(|s| s.0))
    }

    /// Bytes of packed weights.
    pub fn size_bytes(&self) -> usize {
        self.store.size_bytes()
    }
}

/// The source bytes [`PackedStore::build`] repacks between two calls of its `done`: small
/// against a matrix (the peak holds one slice both mapped and packed), large against the cost of
/// starting the threads that split it and of one `madvise`.
pub const SLICE_BYTES: usize = 8 << 20;

/// Repacks one matrix a slice of whole row groups (about `slice_bytes` of source) at a time, the
/// groups of each slice split between threads, and calls `done` with each slice's byte range in
/// `s.data` once it is packed.
fn repack_sliced(
    s: &PackSource<'_>,
    dst: &mut [u8],
    n_threads: usize,
    slice_bytes: usize,
    mut done: impl FnMut(std::ops::Range<usize>),
) -> Result<(), GgmlError> {
    if dst.len() != glm_kernels::packed_len(s.ty, s.rows, s.k)
        || !s.k.is_multiple_of(s.ty.block_cols())
    {
        return Err(GgmlError::Shape(format!(
            "{}: packed size mismatch",
            s.name
        )));
    }
    let (g_bytes, row_bytes) = (s.group_bytes(), s.row_bytes());
    let per_slice = (slice_bytes / (glm_kernels::GROUP * row_bytes).max(1))
        .clamp(1, glm_kernels::n_groups(s.rows));
    for (j, out) in dst.chunks_mut(per_slice * g_bytes).enumerate() {
        let r0 = j * per_slice * glm_kernels::GROUP;
        let r1 = (r0 + per_slice * glm_kernels::GROUP).min(s.rows);
        repack_parallel(s, r0..r1, out, n_threads)?;
        done(r0 * row_bytes..(r1 * row_bytes).min(s.data.len()));
    }
    Ok(())
}

/// Repacks rows `rows` (whole groups but the last) of one matrix into `dst`, the row groups
/// split between threads.
fn repack_parallel(
    s: &PackSource<'_>,
    rows: std::ops::Range<usize>,
    dst: &mut [u8],
    n_threads: usize,
) -> Result<(), GgmlError> {
    let bad = |e: glm_kernels::ShapeError| GgmlError::Shape(format!("{}: {e}", s.name));
    let groups = glm_kernels::n_groups(rows.len());
    let per = groups.div_ceil(n_threads).max(1);
    let (g_bytes, row_bytes) = (s.group_bytes(), s.row_bytes());
    std::thread::scope(|scope| {
        let jobs: Vec<_> = dst
            .chunks_mut(per * g_bytes)
            .enumerate()
            .map(|(j, out)| {
                let r0 = rows.start + j * per * glm_kernels::GROUP;
                let r1 = (r0 + per * glm_kernels::GROUP).min(rows.end);
                let src = s.data.get(r0 * row_bytes..r1 * row_bytes);
                scope.spawn(move || match src {
                    Some(src) => glm_kernels::repack(s.ty, src, r1 - r0, s.k, out).map_err(bad),
                    None => Err(GgmlError::Shape(format!("{}: source too short", s.name))),
                })
            })
            .collect();
        jobs.into_iter().try_for_each(|j| {
            j.join()
                .unwrap_or_else(|_| Err(GgmlError::Backend("repack thread panicked".into())))
        })
    })
}

/// ggml.h's GGML_N_TASKS_MAX (a macro the bindings lack): run on every thread.
const N_TASKS_MAX: c_int = -1;

/// The matmul op's user data: the weight type (index in `WeightType::ALL`) and the kernel.
fn op_to_ptr(ty: WeightType, isa: Isa) -> *mut c_void {
    let t = WeightType::ALL.iter().position(|&t| t == ty).unwrap_or(0);
    let i = isa.code() as usize;
    (t << 8 | i) as *mut c_void
}

fn op_from_ptr(p: *mut c_void) -> (WeightType, Isa) {
    let p = p as usize;
    let isa = Isa::from_code((p & 0xff) as u8);
    (
        WeightType::ALL[(p >> 8).min(WeightType::ALL.len() - 1)],
        isa,
    )
}

/// The quantize op's user data: how the activations are quantized.
fn act_to_ptr(a: Activation) -> *mut c_void {
    (match a {
        Activation::Q8_0 => 0usize,
        Activation::Q8_1 => 1,
        Activation::Q8K => 2,
    }) as *mut c_void
}

fn act_from_ptr(p: *mut c_void) -> Activation {
    match p as usize {
        1 => Activation::Q8_1,
        2 => Activation::Q8K,
        _ => Activation::Q8_0,
    }
}

/// Builds the two custom ops of `p · x` (x: f32 `[k, T]`, contiguous rows); returns `[rows, T]`.
///
/// # Safety
/// `ctx` must be a live graph context with room for two more tensors, `p.data` a packed store
/// tensor and `x` a tensor usable in that graph (shapes are checked here).
pub(crate) unsafe fn mul_mat_packed(
    ctx: *mut sys::ggml_context,
    p: Packed<'_>,
    x: Tensor<'_>,
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    let [k, t, d2, d3] = x.ne();
    if x.ty() != sys::ggml_type_GGML_TYPE_F32
        || x.nb()[0] != 4
        || k as usize != p.k
        || d2 != 1
        || d3 != 1
    {
        return Err(GgmlError::Shape(format!(
            "mul_mat_packed: x {:?} for a {}×{} matrix",
            x.ne(),
            p.rows,
            p.k
        )));
    }
    if p.data.n_bytes() != glm_kernels::packed_len(p.ty, p.rows, p.k) {
        return Err(GgmlError::Shape(
            "mul_mat_packed: packed data of the wrong size".into(),
        ));
    }
    // The quantized activations are written into the op's f32-shaped [k, T] output: a block of
    // 32 values takes 40 bytes there instead of 128 (q8_0, q8_1), one of 256 takes 320 instead
    // of 1024 (q8_K).
    if counter_offset(t as usize, p.ty.act_row_bytes(p.k)) + COUNTER_BYTES > 4 * p.k * t as usize {
        return Err(GgmlError::Shape(
            "mul_mat_packed: activations do not fit their buffer".into(),
        ));
    }
    let q = sys::ggml_map_custom1(
        ctx,
        x.raw(),
        Some(quantize_op),
        N_TASKS_MAX,
        act_to_ptr(p.ty.activation()),
    );
    let r = sys::ggml_map_custom2(
        ctx,
        p.data.raw(),
        q,
        Some(matmul_op),
        N_TASKS_MAX,
        op_to_ptr(p.ty, p.isa),
    );
    if q.is_null() || r.is_null() {
        return Err(GgmlError::Backend("ggml_map_custom failed".into()));
    }
    // The result was made as a copy of the packed bytes' header: make it the f32 [rows, T]
    // output. It has no memory yet (the graph context is no_alloc): the allocator sizes it from
    // these fields.
    let out = &mut *r;
    out.type_ = sys::ggml_type_GGML_TYPE_F32;
    out.ne = [p.rows as i64, t, 1, 1];
    out.nb = [
        4,
        4 * p.rows,
        4 * p.rows * t as usize,
        4 * p.rows * t as usize,
    ];
    Ok(r)
}

/// Bytes of the row-group counter that the product's threads share.
const COUNTER_BYTES: usize = 64;

/// Where the row-group counter sits in the quantize op's output: after the `t` tokens'
/// activations (`arb` bytes each), at the next multiple of 64 bytes.
fn counter_offset(t: usize, arb: usize) -> usize {
    (t * arb).next_multiple_of(COUNTER_BYTES)
}

/// Row groups a thread of the product claims next when `left` of `groups` are unclaimed
/// (guided self-scheduling): a share of what is left, `left / (2·nth)`, but no less than a
/// 64th of the matrix per thread. Early claims stream long runs of weights; the last ones are
/// short, so a thread that the memory served slower (or that the host paused) keeps the others
/// waiting at the end of the op for a short run only (a fixed half each left both threads
/// spinning 8 % of a decoding step; sixteen equal runs still 4–5 %).
fn claim_groups(left: usize, groups: usize, nth: usize) -> usize {
    (left / (2 * nth))
        .max(groups.div_ceil(64 * nth))
        .clamp(1, left.max(1))
}

/// Claims the next run of row groups from `counter` (the first unclaimed group): `None` when
/// all are taken.
fn claim(counter: &AtomicUsize, groups: usize, nth: usize) -> Option<std::ops::Range<usize>> {
    let mut g0 = counter.load(Ordering::Relaxed);
    loop {
        if g0 >= groups {
            return None;
        }
        let g1 = g0 + claim_groups(groups - g0, groups, nth);
        match counter.compare_exchange_weak(g0, g1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(g0..g1),
            Err(now) => g0 = now,
        }
    }
}

/// Quantizes the activations as ggml does for the weight type (q8_0, q8_1 or q8_K: `act`). The
/// blocks of all tokens are split between threads in equal runs, so that decoding (one token)
/// does not quantize on one thread while the others wait.
unsafe extern "C" fn quantize_op(
    dst: *mut sys::ggml_tensor,
    x: *const sys::ggml_tensor,
    ith: c_int,
    nth: c_int,
    act: *mut c_void,
) {
    let (dst, x) = (&*dst, &*x);
    let (k, t) = (x.ne[0] as usize, x.ne[1] as usize);
    let act = act_from_ptr(act);
    let (qk, bb) = (act.block_cols(), act.block_bytes());
    let nb = k / qk; // k is whole blocks (checked when the op was made)
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    if ith == 0 {
        // SAFETY: the counter's 64 bytes lie inside this op's output (4·k·t bytes, checked by
        // mul_mat_packed) after the activations, at a multiple of 64 from ggml's aligned buffer
        // start (so an AtomicUsize is aligned); no other thread touches them during this op, and
        // the product, which starts after ggml's barrier, sees the store.
        let c = (dst.data as *mut u8)
            .add(counter_offset(t, nb * bb))
            .cast::<AtomicUsize>();
        (*c).store(0, Ordering::Relaxed);
    }
    let (u0, u1) = (t * nb * ith / nth, t * nb * (ith + 1) / nth);
    let mut u = u0;
    while u < u1 {
        // token i, its blocks b0..b1 (a run never crosses into the next token)
        let (i, b0) = (u / nb, u % nb);
        let b1 = nb.min(b0 + (u1 - u));
        // SAFETY: x holds t rows of k f32 at stride nb[1] (checked when the op was made); dst is
        // this op's allocated [k, t] f32 output (4·k·t bytes, more than t rows of nb·bb act
        // bytes), of which this thread alone writes token i's blocks b0..b1 (the runs of the
        // threads are disjoint).
        let src = std::slice::from_raw_parts(
            (x.data as *const u8)
                .add(i * x.nb[1])
                .cast::<f32>()
                .add(b0 * qk),
            (b1 - b0) * qk,
        );
        let out = std::slice::from_raw_parts_mut(
            (dst.data as *mut u8).add(i * nb * bb + b0 * bb),
            (b1 - b0) * bb,
        );
        let _ = act.quantize(src, out); // shapes match by construction
        u += b1 - b0;
    }
}

/// The product, row groups claimed by the threads in runs ([`claim`]) from the counter the
/// quantize op zeroed (`op`: the weight type and kernel).
unsafe extern "C" fn matmul_op(
    dst: *mut sys::ggml_tensor,
    w: *const sys::ggml_tensor,
    a: *const sys::ggml_tensor,
    _ith: c_int, // the threads claim row groups from the shared counter instead
    nth: c_int,
    op: *mut c_void,
) {
    let (ty, isa) = op_from_ptr(op);
    let (dst, w, a) = (&*dst, &*w, &*a);
    let (rows, k, t) = (dst.ne[0] as usize, a.ne[0] as usize, a.ne[1] as usize);
    let m = glm_kernels::MatMul {
        ty,
        rows,
        k,
        n_tokens: t,
    };
    let groups = glm_kernels::n_groups(rows);
    let nth = nth.max(1) as usize;
    let arb = ty.act_row_bytes(k);
    // SAFETY: w is the packed tensor (packed_len bytes, checked when the op was made); a is the
    // quantize op's output, whose first t·act_row_bytes(k) bytes hold the activations and whose
    // cache line at counter_offset the row-group counter (zeroed by the quantize op, which ggml
    // finished before this op began; only atomic operations touch it now); dst is this op's
    // [rows, t] f32 output, of which this thread writes only the row groups it claimed.
    let wb = std::slice::from_raw_parts(w.data as *const u8, glm_kernels::packed_len(ty, rows, k));
    let ab = std::slice::from_raw_parts(a.data as *const u8, t * arb);
    let counter = &*((a.data as *const u8)
        .add(counter_offset(t, arb))
        .cast::<AtomicUsize>());
    let out = glm_kernels::Out::new(dst.data as *mut f32, rows);
    while let Some(part) = claim(counter, groups, nth) {
        if glm_kernels::matmul(isa, m, wb, ab, part.clone(), out).is_err() {
            // Unreachable (shapes were checked when the op was made); never leave garbage behind.
            for tok in 0..t {
                for r in part.start * glm_kernels::GROUP..(part.end * glm_kernels::GROUP).min(rows)
                {
                    *(dst.data as *mut f32).add(tok * rows + r) = f32::NAN;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slice by slice, the packed bytes are those of one whole-matrix repack, and the slices
    /// reported cover the source once, in order, each whole row groups of about the slice size.
    #[test]
    fn slices_pack_like_the_whole_and_cover_the_source() {
        let (ty, rows, k) = (WeightType::Q8_0, 50, 96);
        let row_bytes = k / 32 * 34;
        // scales f16 1.0 (0x3c00), quants from a counter
        let data: Vec<u8> = (0..rows * k / 32)
            .flat_map(|b| {
                let mut blk = vec![0x00, 0x3c];
                blk.extend((0..32).map(|i| (b * 7 + i * 13) as u8));
                blk
            })
            .collect();
        assert_eq!(data.len(), rows * row_bytes);
        let mut whole = vec![0u8; glm_kernels::packed_len(ty, rows, k)];
        glm_kernels::repack(ty, &data, rows, k, &mut whole).unwrap();
        let src = PackSource {
            name: "m".into(),
            ty,
            rows,
            k,
            data: &data,
        };
        for (slice_bytes, n_threads, groups_per_slice) in [
            (1, 1, 1),
            (16 * row_bytes, 2, 1),
            (33 * row_bytes, 3, 2),
            (1 << 30, 2, 4),
        ] {
            let mut out = vec![0xaau8; whole.len()];
            let mut seen = Vec::new();
            repack_sliced(&src, &mut out, n_threads, slice_bytes, |r| seen.push(r)).unwrap();
            assert!(out == whole, "slice {slice_bytes}");
            assert_eq!(seen.first().map(|r| r.start), Some(0));
            assert_eq!(seen.last().map(|r| r.end), Some(data.len()));
            for w in seen.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(
                    w[0].len(),
                    groups_per_slice * glm_kernels::GROUP * row_bytes
                );
            }
        }
    }

    /// The claims of one or more threads cover every row group once, in order, each run no
    /// longer than the one before it but the floor, and none empty.
    #[test]
    fn claims_cover_every_group_once() {
        for groups in [1, 2, 7, 64, 288, 1712, 4064] {
            for nth in [1, 2, 3, 16] {
                let counter = AtomicUsize::new(0);
                let mut runs = Vec::new();
                while let Some(r) = claim(&counter, groups, nth) {
                    runs.push(r);
                }
                assert_eq!(runs.first().map(|r| r.start), Some(0));
                assert_eq!(runs.last().map(|r| r.end), Some(groups));
                for w in runs.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[1].len() <= w[0].len().max(groups.div_ceil(64 * nth)));
                }
                assert!(runs.iter().all(|r| !r.is_empty()));
                // a thread's first claim is a share of the matrix, not all of it
                if groups >= 4 * nth && nth > 1 {
                    assert!(
                        runs[0].len() <= groups / (2 * nth),
                        "{groups} {nth} {runs:?}"
                    );
                }
            }
        }
        // threads racing for the runs still split the groups exactly
        let (groups, nth) = (4064, 4);
        let counter = AtomicUsize::new(0);
        let claimed: Vec<Vec<std::ops::Range<usize>>> = std::thread::scope(|s| {
            let jobs: Vec<_> = (0..nth)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(r) = claim(&counter, groups, nth) {
                            mine.push(r);
                        }
                        mine
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let mut all: Vec<_> = claimed.into_iter().flatten().collect();
        all.sort_by_key(|r| r.start);
        assert_eq!(all.iter().map(|r| r.len()).sum::<usize>(), groups);
        for w in all.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }
}
