//! Watching the activations that enter a matrix, for importance matrices (llama-imatrix).
//!
//! [`GraphCtx::observe_squares`](crate::GraphCtx::observe_squares) puts an in-place custom op on
//! a `[k, T]` activation tensor: it passes the tensor on unchanged (it is a view of it) and adds
//! Σ x² over the T rows to each of the k columns of a caller-owned [`SquareSums`], plus T to
//! its row count. Each ggml thread takes its own slice of the columns, so no two threads write
//! the same memory; within a column the rows are added in order, in f32, which is exactly
//! llama-imatrix's `acc[j] += x[j] * x[j]`.

use crate::tensor::Tensor;
use crate::{sys, GgmlError};
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};

/// ggml.h's GGML_N_TASKS_MAX: every thread.
const ALL_THREADS: c_int = -1;

/// Σ x² per column, and the number of rows (tokens) seen, of the activations observed by
/// [`GraphCtx::observe_squares`](crate::GraphCtx::observe_squares) ops.
///
/// A graph borrows it for as long as the graph lives; its values can only be read or reset
/// through `&mut self`, that is when no graph holds it, so Rust never reads a value while ggml's
/// threads write it.
pub struct SquareSums {
    sums: Box<[UnsafeCell<f32>]>,
    rows: UnsafeCell<u64>,
}

impl SquareSums {
    /// Zero sums over `columns` columns.
    pub fn new(columns: usize) -> Self {
        SquareSums {
            sums: (0..columns).map(|_| UnsafeCell::new(0.0)).collect(),
            rows: UnsafeCell::new(0),
        }
    }

    /// Sums that start from `sums` over `rows` rows (to continue earlier statistics).
    pub fn starting_at(sums: &[f32], rows: u64) -> Self {
        SquareSums {
            sums: sums.iter().map(|&x| UnsafeCell::new(x)).collect(),
            rows: UnsafeCell::new(rows),
        }
    }

    pub fn columns(&self) -> usize {
        self.sums.len()
    }

    /// The sums and the row count so far.
    pub fn read(&mut self) -> (&[f32], u64) {
        let rows = *self.rows.get_mut();
        // SAFETY: UnsafeCell<f32> has f32's layout (repr(transparent)), and `&mut self` proves
        // that nothing else (no graph) can reach the cells while the slice lives.
        let sums = unsafe { &*(&*self.sums as *const [UnsafeCell<f32>] as *const [f32]) };
        (sums, rows)
    }

    /// Back to zero.
    pub fn reset(&mut self) {
        self.sums.iter_mut().for_each(|c| *c.get_mut() = 0.0);
        *self.rows.get_mut() = 0;
    }
}

/// The observe op on `x` (f32, `[k, T]`, rows of contiguous elements), accumulating into `acc`.
///
/// # Safety
/// `ctx` must be a live graph context with room for one more tensor, `x` usable in that graph,
/// and `acc` must outlive every computation of the graph (the graph keeps a pointer to it).
pub(crate) unsafe fn observe_squares(
    ctx: *mut sys::ggml_context,
    x: Tensor<'_>,
    acc: &SquareSums,
) -> Result<*mut sys::ggml_tensor, GgmlError> {
    let ne = x.ne();
    if x.ty() != sys::ggml_type_GGML_TYPE_F32
        || x.nb()[0] != 4
        || ne[2] != 1
        || ne[3] != 1
        || ne[0] as usize != acc.columns()
    {
        return Err(GgmlError::Shape(format!(
            "observe_squares: activations {ne:?} for sums over {} columns",
            acc.columns()
        )));
    }
    // In place: the result is a view of x, so observing costs no memory and changes nothing
    // downstream.
    let r = sys::ggml_map_custom1_inplace(
        ctx,
        x.raw(),
        Some(observe_op),
        ALL_THREADS,
        acc as *const SquareSums as *mut c_void,
    );
    if r.is_null() {
        return Err(GgmlError::Backend("ggml_map_custom1 failed".into()));
    }
    Ok(r)
}

/// The columns thread `ith` of `nth` takes: consecutive slices that cover `0..k` exactly once.
fn thread_columns(k: usize, ith: c_int, nth: c_int) -> std::ops::Range<usize> {
    let nth = nth.max(1) as usize;
    let ith = (ith.max(0) as usize).min(nth - 1);
    k * ith / nth..k * (ith + 1) / nth
}

unsafe extern "C" fn observe_op(
    _dst: *mut sys::ggml_tensor,
    x: *const sys::ggml_tensor,
    ith: c_int,
    nth: c_int,
    acc: *mut c_void,
) {
    let x = &*x;
    // SAFETY (of the reference): `acc` points to the SquareSums the op was made with, alive for
    // as long as the graph (`observe_squares`' contract); only its immutable parts (the box's
    // pointer and length) are read through this reference, the cells are written through raw
    // pointers below.
    let acc = &*(acc as *const SquareSums);
    let (k, t) = (x.ne[0] as usize, x.ne[1] as usize);
    let cols = thread_columns(k, ith, nth);
    let sums = UnsafeCell::raw_get(acc.sums.as_ptr());
    for row in 0..t {
        // SAFETY: x holds t rows of k contiguous f32 at stride nb[1] (checked when the op was
        // made; reads only); the sums have k cells (checked too), of which this thread alone
        // writes `cols`, and no Rust reference to them exists while the graph runs (reading
        // them takes `&mut SquareSums`).
        let xr =
            std::slice::from_raw_parts((x.data as *const u8).add(row * x.nb[1]).cast::<f32>(), k);
        for j in cols.clone() {
            *sums.add(j) += xr[j] * xr[j];
        }
    }
    if ith == 0 {
        // SAFETY: thread 0 alone writes the row count; nothing reads it during the graph.
        *acc.rows.get() += t as u64;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_split_the_columns_exactly() {
        for k in [0, 1, 5, 128, 352, 4097] {
            for nth in 1..=17 {
                let mut next = 0;
                for ith in 0..nth {
                    let r = super::thread_columns(k, ith, nth);
                    assert_eq!(r.start, next, "k {k}, {ith}/{nth}");
                    next = r.end;
                }
                assert_eq!(next, k);
            }
        }
    }
}
