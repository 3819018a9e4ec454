//! CPU flash attention: `out = softmax(scale · Q·Kᵀ + mask) · V` for every query head, without
//! ever holding the whole score matrix.
//!
//! The work is cut into items: one KV group (the keys and values that `n_head / n_head_kv`
//! query heads share), a chunk of those heads, and a tile of query tokens. An item's query rows
//! (tokens × heads, at most [`ROWS`]) walk the keys in tiles of [`KEY_TILE`]; each tile of keys
//! and values is turned into f32 once and serves every row of the item — for ChatGLM3 and GLM-4
//! (32 heads in 2 groups) a decoding step's tile serves 16 heads. Quantized keys are scored in
//! 16-bit integers on AVX-512 and AVX2 (qk16.rs). Per tile (flash attention's online softmax,
//! everything else in f32):
//!
//! ```text
//! S      = scale·Q · K_tileᵀ (+ mask)              [rows × keys]
//! m'     = max(m, rowmax S)
//! P      = exp(S − m')
//! l      = l · exp(m − m') + rowsum P
//! O      = O · exp(m − m') + P · V_tile
//! ...
//! out    = O / l
//! ```
//!
//! Layout: for the scores and the softmax, rows live in vector lanes. Q is transposed once per
//! item into `QT[d][rows]` (scale folded in) and scores are kept as `S[key][rows]`, so a score
//! is `Σ_k QT[k][rows] · K[key][k]` (a broadcast key element times a vector of rows) and the
//! softmax's maxima and sums are lane-wise. For `O += P · V` the lanes run along the head
//! instead: the output is kept by rows, `O[rows][d]`, and a chunk of one value (turned into f32
//! in a register, straight from an f32 or f16 cache) times a broadcast probability serves a
//! block of rows. No horizontal reductions, no transposes of K or V. The kernels are written
//! once (`Vector`: portable, AVX2, AVX-512; simd.rs).
//!
//! Masks: causal (query token `t` of `n_tokens` sees keys `0 ..= n_kv − n_tokens + t`; tiles past
//! an item's last visible key are skipped, tiles wholly visible are not masked), or an explicit
//! additive mask. Threads take items in turn (item `i` on thread `i mod nth`), so the longer
//! causal items of the last tokens are spread over all threads.

mod kv;
mod qk16;
mod simd;

pub use kv::KvType;
pub use simd::EXP_ULPS;

use crate::{check, Isa, ShapeError};
use simd::{Portable, Vector};

/// Keys per tile.
pub const KEY_TILE: usize = 64;
/// Query rows (tokens × heads) of one work item, at most.
pub const ROWS: usize = 64;
/// An item's rows are padded to a multiple of this (AVX-512's lanes; AVX2 takes two registers).
const LANES: usize = 16;

/// One attention call's shapes.
///
/// - `q`: f32 `[n_tokens][n_head][head_dim]`;
/// - `k`, `v`: `n_kv` rows of `n_head_kv · head_dim` values of `k_type` / `v_type` (one row per
///   token, heads side by side; quantized types need `head_dim` a multiple of 32);
/// - `out`: f32 `[n_tokens][n_head][head_dim]`.
///
/// Query head `h` reads KV head `h / (n_head / n_head_kv)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub head_dim: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_tokens: usize,
    pub n_kv: usize,
    pub k_type: KvType,
    pub v_type: KvType,
    pub scale: f32,
}

impl AttnShape {
    /// f32 values of Q (and of the output).
    pub fn q_len(&self) -> usize {
        self.n_tokens * self.n_head * self.head_dim
    }

    /// Bytes of one cache row of `ty` (all KV heads of one token).
    pub fn row_bytes(&self, ty: KvType) -> usize {
        ty.row_bytes(self.n_head_kv * self.head_dim)
    }

    fn heads_per_group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Checks the shape (and the mask's) without the data: heads split into groups, head size
    /// a whole number of blocks of the cache types, a causal mask with no more queries than keys.
    pub fn validate(&self, mask: &Mask<'_>) -> Result<(), ShapeError> {
        let s = self;
        check(
            s.head_dim > 0 && s.n_head_kv > 0 && s.n_tokens > 0 && s.n_kv > 0,
            || format!("attention with an empty dimension: {s:?}"),
        )?;
        check(s.n_head.is_multiple_of(s.n_head_kv) && s.n_head > 0, || {
            format!(
                "{} query heads do not split into {} KV groups",
                s.n_head, s.n_head_kv
            )
        })?;
        for ty in [s.k_type, s.v_type] {
            check(s.head_dim.is_multiple_of(ty.block_elems()), || {
                format!(
                    "a {} cache needs a head size that is a multiple of {}, not {}",
                    ty.name(),
                    ty.block_elems(),
                    s.head_dim
                )
            })?;
        }
        check(s.scale.is_finite(), || format!("scale {}", s.scale))?;
        match mask {
            Mask::Causal => check(s.n_kv >= s.n_tokens, || {
                format!(
                    "causal mask: {} queries after only {} keys",
                    s.n_tokens, s.n_kv
                )
            }),
            Mask::Additive(m) => check(m.len() == s.n_tokens * s.n_kv, || {
                format!(
                    "mask of {} values, expected {} × {}",
                    m.len(),
                    s.n_tokens,
                    s.n_kv
                )
            }),
        }
    }

    fn check(&self, q: &[f32], k: &[u8], v: &[u8], mask: &Mask<'_>) -> Result<(), ShapeError> {
        let s = self;
        s.validate(mask)?;
        check(q.len() == s.q_len(), || {
            format!("Q of {} values, expected {}", q.len(), s.q_len())
        })?;
        for (name, data, ty) in [("K", k, s.k_type), ("V", v, s.v_type)] {
            check(data.len() == s.n_kv * s.row_bytes(ty), || {
                format!(
                    "{name} of {} bytes, expected {} rows of {}",
                    data.len(),
                    s.n_kv,
                    s.row_bytes(ty)
                )
            })?;
        }
        Ok(())
    }
}

/// Which keys each query sees.
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    /// Query token `t` sees keys `0 ..= n_kv − n_tokens + t` (the last `n_tokens` keys are the
    /// queries' own).
    Causal,
    /// `[n_tokens][n_kv]` values added to the scaled scores (−∞: not seen).
    Additive(&'a [f32]),
}

/// How the work is cut: query tokens and heads per item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tiling {
    tokens: usize,
    heads: usize,
}

impl Tiling {
    /// Items of up to [`ROWS`] rows, all heads of a group together where possible (one tile of
    /// keys serves them all); heads split further only when there are fewer items than threads
    /// (decoding one token on more threads than KV groups).
    fn new(s: &AttnShape, n_threads: usize) -> Tiling {
        let hg = s.heads_per_group();
        let mut t = Tiling {
            tokens: (ROWS / hg).clamp(1, s.n_tokens),
            heads: hg.min(ROWS),
        };
        while t.n_items(s) < n_threads && t.heads > 1 {
            t.heads = t.heads.div_ceil(2);
        }
        t
    }

    fn head_chunks(&self, s: &AttnShape) -> usize {
        s.heads_per_group().div_ceil(self.heads)
    }

    fn token_tiles(&self, s: &AttnShape) -> usize {
        s.n_tokens.div_ceil(self.tokens)
    }

    fn n_items(&self, s: &AttnShape) -> usize {
        s.n_head_kv * self.head_chunks(s) * self.token_tiles(s)
    }
}

/// Where the attention writes: `[n_tokens][n_head][head_dim]` f32 at `ptr`.
#[derive(Clone, Copy)]
pub struct AttnOut {
    ptr: *mut f32,
}

// SAFETY: `AttnOut::new`'s contract makes the caller guarantee the memory stays valid and
// unshared for the calls; concurrent calls with distinct `ith` write disjoint rows (each work
// item is one thread's, and items cover disjoint (token, head) rows).
unsafe impl Send for AttnOut {}
// SAFETY: as for Send.
unsafe impl Sync for AttnOut {}

impl AttnOut {
    /// # Safety
    /// `ptr` must be valid for writes of the shape's `q_len()` f32s for the duration of the
    /// calls it is passed to, and not be accessed by anyone else meanwhile.
    pub unsafe fn new(ptr: *mut f32) -> AttnOut {
        AttnOut { ptr }
    }

    /// Writes `vals` at element `at` (within `q_len()`: checked by the caller's shapes).
    #[inline(always)]
    fn put(&self, at: usize, vals: &[f32]) {
        // SAFETY: AttnOut::new's contract covers the q_len() elements; callers write one head's
        // row of one token (at + head_dim ≤ q_len()), which only their item owns.
        unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), self.ptr.add(at), vals.len()) }
    }
}

/// Flash attention, the share of thread `ith` of `nth` (every thread of a call must be given
/// the same arguments; together they write all of `out`).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention(
    isa: Isa,
    s: &AttnShape,
    q: &[f32],
    k: &[u8],
    v: &[u8],
    mask: Mask<'_>,
    out: AttnOut,
    ith: usize,
    nth: usize,
) -> Result<(), ShapeError> {
    s.check(q, k, v, &mask)?;
    check(ith < nth, || format!("thread {ith} of {nth}"))?;
    check(isa.runs_here(), || {
        format!("{} is not available on this CPU", isa.name())
    })?;
    let a = Args {
        s,
        til: Tiling::new(s, nth),
        q,
        k,
        v,
        mask,
        out,
    };
    match isa {
        // SAFETY: the instruction set was checked above; the kernels read and write only inside
        // the slices (sizes checked by `AttnShape::check`) and `out` (AttnOut's contract).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { run_avx512(&a, ith, nth) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => unsafe { run_avx2(&a, ith, nth) },
        // SAFETY: the portable vector needs no CPU feature; bounds as above.
        _ => unsafe { run_items::<Portable>(&a, ith, nth) },
    }
    Ok(())
}

/// [`flash_attention`] into `out` on `n_threads` threads (scoped).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_into(
    isa: Isa,
    s: &AttnShape,
    q: &[f32],
    k: &[u8],
    v: &[u8],
    mask: Mask<'_>,
    out: &mut [f32],
    n_threads: usize,
) -> Result<(), ShapeError> {
    check(out.len() == s.q_len(), || {
        format!("output of {} values, expected {}", out.len(), s.q_len())
    })?;
    let nth = n_threads.max(1);
    // SAFETY: `out` is exclusively borrowed for the whole call and has q_len() elements; the
    // threads write disjoint rows (flash_attention's items).
    let o = unsafe { AttnOut::new(out.as_mut_ptr()) };
    std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..nth)
            .map(|ith| scope.spawn(move || flash_attention(isa, s, q, k, v, mask, o, ith, nth)))
            .collect();
        jobs.into_iter().try_for_each(|j| {
            j.join()
                .unwrap_or_else(|_| Err(ShapeError("attention thread panicked".into())))
        })
    })
}

/// Everything a thread's items read.
struct Args<'a> {
    s: &'a AttnShape,
    til: Tiling,
    q: &'a [f32],
    k: &'a [u8],
    v: &'a [u8],
    mask: Mask<'a>,
    out: AttnOut,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run_avx512(a: &Args<'_>, ith: usize, nth: usize) {
    run_items::<simd::Avx512>(a, ith, nth)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2(a: &Args<'_>, ith: usize, nth: usize) {
    run_items::<simd::Avx2>(a, ith, nth)
}

/// One item's working memory (f32): Q transposed, O by rows (each padded to whole vectors), a
/// tile of scores, the row statistics, a tile of keys and one of quantized values.
struct Scratch {
    qt: Vec<f32>,
    /// `O[i][k]` at `i · dp + k`, `dp` = [`padded_head`].
    o: Vec<f32>,
    st: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    kt: Vec<f32>,
    /// A quantized value tile in f32 (f32 and f16 values are read where they lie).
    vt: Vec<f32>,
    /// Causal mask: the last key each row sees.
    last: Vec<usize>,
    /// Quantized keys scored in integers (`V::INT_SCORES`): qk16.rs's working memory.
    int: Option<qk16::Work>,
}

impl Scratch {
    fn new(d: usize, r: usize, int_keys: bool) -> Scratch {
        Scratch {
            int: int_keys.then(|| qk16::Work::new(d, r, KEY_TILE)),
            qt: vec![0.0; d * r],
            o: vec![0.0; r * padded_head(d)],
            st: vec![0.0; KEY_TILE * r],
            m: vec![0.0; r],
            l: vec![0.0; r],
            alpha: vec![0.0; r],
            kt: vec![0.0; if int_keys { 0 } else { KEY_TILE * d }],
            vt: vec![0.0; KEY_TILE * d],
            last: vec![0; r],
        }
    }
}

/// A row of O: the head size padded to whole vectors.
fn padded_head(d: usize) -> usize {
    d.div_ceil(LANES) * LANES
}

/// Rows of an item, padded to whole vectors.
fn padded_rows(til: &Tiling) -> usize {
    (til.tokens * til.heads).div_ceil(LANES) * LANES
}

/// The items `ith, ith + nth, …`.
///
/// # Safety
/// `V`'s instruction set must be available; `a`'s shapes checked (`AttnShape::check`).
#[inline(always)]
unsafe fn run_items<V: Vector>(a: &Args<'_>, ith: usize, nth: usize) {
    let n = a.til.n_items(a.s);
    if ith >= n {
        return;
    }
    let mut sc = Scratch::new(a.s.head_dim, padded_rows(&a.til), int_keys::<V>(a.s));
    for item in (ith..n).step_by(nth) {
        run_item::<V>(a, item, &mut sc);
    }
}

/// One item: its rows against every key they see.
#[inline(always)]
unsafe fn run_item<V: Vector>(a: &Args<'_>, item: usize, sc: &mut Scratch) {
    let (s, til) = (a.s, &a.til);
    let d = s.head_dim;
    let hg = s.heads_per_group();
    let (n_tt, n_hc) = (til.token_tiles(s), til.head_chunks(s));
    let tt = item % n_tt;
    let hc = item / n_tt % n_hc;
    let g = item / n_tt / n_hc;
    let t0 = tt * til.tokens;
    let nt = til.tokens.min(s.n_tokens - t0);
    let h0 = g * hg + hc * til.heads;
    let nh = til.heads.min(hg - hc * til.heads);
    let rows = nt * nh;
    let r = padded_rows(til);
    // row i = token t0 + i / nh, head h0 + i % nh
    let q_at = |i: usize| ((t0 + i / nh) * s.n_head + h0 + i % nh) * d;

    // QT[k][i] = scale · q_i[k], padding rows 0
    sc.qt.fill(0.0);
    for i in 0..rows {
        for (kk, &x) in a.q[q_at(i)..][..d].iter().enumerate() {
            sc.qt[kk * r + i] = x * s.scale;
        }
    }
    if let Some(w) = &mut sc.int {
        w.set_rows(&sc.qt, d, r);
    }
    sc.o.fill(0.0);
    sc.m.fill(f32::NEG_INFINITY);
    sc.l.fill(0.0);

    // the keys the item sees: causal rows stop at their own position
    let first_pos = s.n_kv - s.n_tokens; // a causal mask's n_kv ≥ n_tokens is checked
    let (key_end, min_last) = match a.mask {
        Mask::Causal => {
            for (i, last) in sc.last.iter_mut().enumerate() {
                *last = first_pos + t0 + (i / nh).min(nt - 1);
            }
            (first_pos + t0 + nt, first_pos + t0)
        }
        Mask::Additive(_) => (s.n_kv, s.n_kv),
    };
    let (k_row, v_row) = (s.row_bytes(s.k_type), s.row_bytes(s.v_type));
    let (k_head, v_head) = (s.k_type.row_bytes(d), s.v_type.row_bytes(d));
    let mut j0 = 0;
    while j0 < key_end {
        let nk = KEY_TILE.min(key_end - j0);
        let tile = |ty, data, row_bytes, head_bytes| Tile {
            ty,
            data,
            row_bytes,
            head_off: g * head_bytes,
            j0,
            nk,
            d,
        };
        let (kt, vt) = (
            tile(s.k_type, a.k, k_row, k_head),
            tile(s.v_type, a.v, v_row, v_head),
        );
        // the next tile's keys and values, a few rows after each step of the scores
        let next = |key: usize, n: usize| {
            for j in j0 + KEY_TILE + key..j0 + KEY_TILE + key + n {
                prefetch(a.k, j * k_row + g * k_head, k_head);
                prefetch(a.v, j * v_row + g * v_head, v_head);
            }
        };
        if let Some(w) = &mut sc.int {
            w.tile::<V>(&kt, r, &mut sc.st, next);
        } else {
            dequant_tile::<V>(&kt, &mut sc.kt);
            scores::<V>(&sc.qt, r, &sc.kt, nk, d, &mut sc.st, next);
        }
        match a.mask {
            Mask::Causal if j0 + nk - 1 > min_last => {
                for key in 0..nk {
                    for (i, &last) in sc.last[..rows].iter().enumerate() {
                        if j0 + key > last {
                            sc.st[key * r + i] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Mask::Causal => {}
            Mask::Additive(m) => {
                for key in 0..nk {
                    for i in 0..rows {
                        sc.st[key * r + i] += m[(t0 + i / nh) * s.n_kv + j0 + key];
                    }
                }
            }
        }
        softmax::<V>(&mut sc.st, nk, r, &mut sc.m, &mut sc.l, &mut sc.alpha);
        // f32 and f16 values are turned into f32 in registers; a quantized tile is dequantized
        // once (decoding each chunk per block of rows, its scales gathered per tile: AVX-512
        // decoding −3 % but prompts +4 %, AVX2 q4_0 1.5× slower; docs/cpu-kernels.md)
        let vs = if s.v_type.is_quantized() {
            dequant_tile::<V>(&vt, &mut sc.vt);
            Tile {
                ty: KvType::F32,
                data: f32_bytes(&sc.vt[..nk * d]),
                row_bytes: 4 * d,
                head_off: 0,
                j0: 0,
                nk,
                d,
            }
        } else {
            vt
        };
        accumulate::<V>(&sc.st, r, rows, &vs, &sc.alpha, &mut sc.o);
        j0 += nk;
    }

    // out = O / l (a row that saw no key at all — possible only with an explicit mask — is 0)
    let dp = padded_head(d);
    let mut row = vec![0f32; d];
    for i in 0..rows {
        let inv = if sc.l[i] > 0.0 { 1.0 / sc.l[i] } else { 0.0 };
        for (o, &x) in row.iter_mut().zip(&sc.o[i * dp..][..d]) {
            *o = x * inv;
        }
        a.out.put(q_at(i), &row);
    }
}

/// The bytes of f32s (native order, as the cache's f32 rows).
fn f32_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: any initialized f32 is 4 initialized bytes; u8 has no alignment requirement and
    // the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), std::mem::size_of_val(x)) }
}

/// Asks for `bytes` of `data` from byte `at` to be brought into the L2 cache (x86's
/// `prefetcht1`, the matrix kernels' line loop; nothing past the end, nothing on other CPUs).
/// Decoding at depth reads every layer's K and V from memory, the weights having pushed them out
/// of the caches since the layer before, and the rows of one KV head alternate with the other
/// heads' halves, a pattern the hardware prefetchers follow poorly. `run_item` asks for the next
/// tile's rows a few at a time between the steps of the scores, so that the requests spread over
/// the tile's arithmetic. Measured with K and V from memory (`attn_bench --layers 28 --huge`,
/// depth 4096, 2 threads, AVX-512), ms a layer: the whole tile two tiles ahead at its conversion
/// into `prefetcht0` 0.71; spread, `prefetcht0` 0.70–0.71; spread, `prefetcht1` 0.57–0.63
/// (`prefetcht2` the same); warm caches 0.45–0.50.
#[inline(always)]
fn prefetch(data: &[u8], at: usize, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    if at + bytes <= data.len() {
        // SAFETY: a prefetch is a hint that never faults, and every SSE CPU has it; the
        // address is inside `data`.
        unsafe {
            crate::x86::prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                data.as_ptr().add(at),
                bytes,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at, bytes);
}

/// Turns a tile of keys (or values) into f32 rows of `d` in `out`.
#[inline(always)]
unsafe fn dequant_tile<V: Vector>(t: &Tile<'_>, out: &mut [f32]) {
    for key in 0..t.nk {
        dequant_row::<V>(t.ty, t.row(key), &mut out[key * t.d..][..t.d]);
    }
}

/// One head's row (`src`: `ty.row_bytes(dst.len())` bytes).
#[inline(always)]
unsafe fn dequant_row<V: Vector>(ty: KvType, src: &[u8], dst: &mut [f32]) {
    let d = dst.len();
    let (p, o) = (src.as_ptr(), dst.as_mut_ptr());
    match ty {
        KvType::F32 | KvType::F16 if !d.is_multiple_of(V::W) => kv::dequant_scalar(ty, src, dst),
        KvType::F32 => {
            for i in (0..d).step_by(V::W) {
                V::load(p.add(4 * i).cast()).store(o.add(i));
            }
        }
        KvType::F16 => {
            for i in (0..d).step_by(V::W) {
                V::from_f16(p.add(2 * i)).store(o.add(i));
            }
        }
        KvType::Q8_0 => {
            for b in 0..d / 32 {
                let blk = p.add(34 * b);
                let scale = V::splat_f16(blk);
                for i in (0..32).step_by(V::W) {
                    V::mul(V::from_i8(blk.add(2 + i)), scale).store(o.add(32 * b + i));
                }
            }
        }
        KvType::Q4_0 => {
            for b in 0..d / 32 {
                let blk = p.add(18 * b);
                let scale = V::splat_f16(blk);
                for i in (0..16).step_by(V::W) {
                    let lo = V::from_nibbles(blk.add(2 + i), false);
                    let hi = V::from_nibbles(blk.add(2 + i), true);
                    V::mul(lo, scale).store(o.add(32 * b + i));
                    V::mul(hi, scale).store(o.add(32 * b + 16 + i));
                }
            }
        }
    }
}

/// Whether the item's scores take the integer path (qk16.rs): quantized keys, a vector whose
/// 16-bit integer dot products beat its FMAs.
#[inline(always)]
fn int_keys<V: Vector>(s: &AttnShape) -> bool {
    V::INT_SCORES && s.k_type.is_quantized()
}

/// Register blockings (row vectors, keys or value columns) for `V`: 32 registers (AVX-512)
/// take 4 × 4 accumulators, 16 registers 2 × 4 (AVX2 and the portable arrays).
#[inline(always)]
fn wide<V: Vector>() -> bool {
    V::W == 16 && cfg!(target_arch = "x86_64")
}

/// `st[key][i] = Σ_k qt[k][i] · kt[key][k]` for `nk` keys.
#[inline(always)]
unsafe fn scores<V: Vector>(
    qt: &[f32],
    r: usize,
    kt: &[f32],
    nk: usize,
    d: usize,
    st: &mut [f32],
    after: impl Fn(usize, usize),
) {
    assert!(qt.len() >= d * r && kt.len() >= nk * d && st.len() >= nk * r);
    let (qp, kp, sp) = (qt.as_ptr(), kt.as_ptr(), st.as_mut_ptr());
    score_blocks::<V>(r, nk, after, |rb, v0, key| {
        let (q, kb) = (qp.add(v0 * V::W), nk - key);
        let (kpk, spk) = (kp.add(key * d), sp.add(v0 * V::W + key * r));
        match (rb, wide::<V>()) {
            (4, _) if kb >= 4 => scores_block::<V, 4, 4>(q, r, kpk, d, spk),
            (4, _) => scores_block::<V, 4, 1>(q, r, kpk, d, spk),
            (2, true) if kb >= 8 => scores_block::<V, 2, 8>(q, r, kpk, d, spk),
            (2, _) if kb >= 4 => scores_block::<V, 2, 4>(q, r, kpk, d, spk),
            (2, _) => scores_block::<V, 2, 1>(q, r, kpk, d, spk),
            (_, _) if kb >= 8 => scores_block::<V, 1, 8>(q, r, kpk, d, spk),
            (_, _) => scores_block::<V, 1, 1>(q, r, kpk, d, spk),
        }
    });
}

/// The register blocking of both score paths (f32 here, integers in qk16.rs) over `r` rows and
/// `nk` keys: row vectors in blocks of `rb` (4 where 32 registers allow, else 2, then 1),
/// `block(rb, v0, key)` scoring rows from vector `v0` against keys from `key` and returning how
/// many keys it took; `after(key, n)` follows each step of the first block of rows (the
/// caller's prefetches).
#[inline(always)]
fn score_blocks<V: Vector>(
    r: usize,
    nk: usize,
    after: impl Fn(usize, usize),
    mut block: impl FnMut(usize, usize, usize) -> usize,
) {
    let nv = r / V::W;
    let mut v0 = 0;
    while v0 < nv {
        let rb = match nv - v0 {
            4.. if wide::<V>() => 4,
            2.. => 2,
            _ => 1,
        };
        let mut key = 0;
        while key < nk {
            let step = block(rb, v0, key);
            if v0 == 0 {
                after(key, step);
            }
            key += step;
        }
        v0 += rb;
    }
}

/// `RB` row vectors × `KB` keys of [`scores`]; returns `KB`.
#[inline(always)]
unsafe fn scores_block<V: Vector, const RB: usize, const KB: usize>(
    qt: *const f32,
    r: usize,
    k: *const f32,
    d: usize,
    st: *mut f32,
) -> usize {
    let mut acc = [[V::zero(); RB]; KB];
    // step kk: the rows' q[kk] times key j's element kk
    rank1_tile::<V, RB, KB>(&mut acc, qt, r, d, k, 1, d);
    store_tile(&acc, st, r);
    KB
}

/// The inner loop of both products, a register tile of `RB` row vectors × `J` columns:
/// `acc[j][b] += Σ_s x[s·r + b·W ..] · y[s·ys + j·yj]` over `n` steps — each step loads the
/// rows' vectors once and multiplies them by one broadcast `y` element per column.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rank1_tile<V: Vector, const RB: usize, const J: usize>(
    acc: &mut [[V; RB]; J],
    x: *const f32,
    r: usize,
    n: usize,
    y: *const f32,
    ys: usize,
    yj: usize,
) {
    for s in 0..n {
        let xs = x.add(s * r);
        let xv: [V; RB] = std::array::from_fn(|b| V::load(xs.add(b * V::W)));
        for (j, acc) in acc.iter_mut().enumerate() {
            let yb = V::splat(*y.add(s * ys + j * yj));
            for (a, &xv) in acc.iter_mut().zip(&xv) {
                *a = V::fma(xv, yb, *a);
            }
        }
    }
}

/// Stores a register tile: column `j`'s row vectors at `dst + j·r`.
#[inline(always)]
unsafe fn store_tile<V: Vector, const RB: usize, const J: usize>(
    acc: &[[V; RB]; J],
    dst: *mut f32,
    r: usize,
) {
    for (j, acc) in acc.iter().enumerate() {
        for (b, a) in acc.iter().enumerate() {
            a.store(dst.add(j * r + b * V::W));
        }
    }
}

/// The online softmax step over a tile of `nk` keys: `st` becomes `exp(st − m')`, `m` the new
/// row maxima, `l` the rescaled sums plus this tile's, `alpha = exp(m − m')`.
#[inline(always)]
unsafe fn softmax<V: Vector>(
    st: &mut [f32],
    nk: usize,
    r: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    assert!(st.len() >= nk * r && m.len() >= r && l.len() >= r && alpha.len() >= r);
    let sp = st.as_mut_ptr();
    for v0 in (0..r).step_by(V::W) {
        let mut mx = V::splat(f32::NEG_INFINITY);
        for key in 0..nk {
            mx = V::max(mx, V::load(sp.add(key * r + v0)));
        }
        let m_old = V::load(m.as_ptr().add(v0));
        let m_new = V::max(m_old, mx);
        // rows that have seen no key yet keep −∞: subtract 0 instead (their terms are all 0)
        let m_use = m_new.neg_inf_to_zero();
        let al = V::sub(m_old, m_use).exp();
        let mut sum = V::zero();
        for key in 0..nk {
            let p = sp.add(key * r + v0);
            let e = V::sub(V::load(p), m_use).exp();
            e.store(p);
            sum = V::add(sum, e);
        }
        let l_new = V::fma(V::load(l.as_ptr().add(v0)), al, sum);
        l_new.store(l.as_mut_ptr().add(v0));
        m_new.store(m.as_mut_ptr().add(v0));
        al.store(alpha.as_mut_ptr().add(v0));
    }
}

/// A tile of the cache, keys or values, where it lies: keys `j0 .. j0 + nk` of the KV head at
/// byte `head_off` of each row (a head is `ty.row_bytes(d)` bytes).
struct Tile<'a> {
    ty: KvType,
    data: &'a [u8],
    row_bytes: usize,
    head_off: usize,
    j0: usize,
    nk: usize,
    d: usize,
}

impl Tile<'_> {
    /// Key `key`'s head, its bytes.
    #[inline(always)]
    fn row(&self, key: usize) -> &[u8] {
        &self.data[(self.j0 + key) * self.row_bytes + self.head_off..][..self.ty.row_bytes(self.d)]
    }

    /// Elements `c .. c + W` of key `key`'s value, as f32 (`c + W ≤ d`, `c` a multiple of
    /// `V::W`; f32 and f16 tiles: a quantized value tile is dequantized first, `run_item`).
    /// `TY` is the type's index (`KvType as usize`: the caller's dispatch makes it a constant).
    #[inline(always)]
    unsafe fn chunk<V: Vector, const TY: usize>(&self, key: usize, c: usize) -> V {
        let p = self
            .data
            .as_ptr()
            .add((self.j0 + key) * self.row_bytes + self.head_off);
        match KvType::ALL[TY] {
            KvType::F32 => V::load(p.add(4 * c).cast()),
            KvType::F16 => V::from_f16(p.add(2 * c)),
            KvType::Q8_0 | KvType::Q4_0 => unreachable!("values are f32 or f16 here"),
        }
    }
}

/// `O[i][k] = O[i][k] · alpha[i] + Σ_key st[key][i] · v_key[k]` for the item's `rows` rows.
///
/// Vectors run along the head (a chunk of `W` elements of one value), and each value chunk is
/// turned into f32 in a register and serves a block of rows, each row's probability broadcast:
/// the values are never written out as f32. Every output is the same chain of one multiply and
/// `nk` FMAs as a row-vector layout would give.
#[inline(always)]
unsafe fn accumulate<V: Vector>(
    st: &[f32],
    r: usize,
    rows: usize,
    vs: &Tile<'_>,
    alpha: &[f32],
    o: &mut [f32],
) {
    let dp = padded_head(vs.d);
    assert!(st.len() >= vs.nk * r && alpha.len() >= rows && o.len() >= rows * dp && rows <= r);
    assert!(vs.data.len() >= (vs.j0 + vs.nk) * vs.row_bytes);
    assert!(vs.head_off + vs.ty.row_bytes(vs.d) <= vs.row_bytes);
    match vs.ty {
        KvType::F32 => acc_type::<V, 0>(st, r, rows, vs, alpha, o, dp),
        KvType::F16 => acc_type::<V, 1>(st, r, rows, vs, alpha, o, dp),
        KvType::Q8_0 | KvType::Q4_0 => panic!("quantized values reach accumulate dequantized"),
    }
}

/// [`accumulate`] for the value type of index `TY`: blocks of rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc_type<V: Vector, const TY: usize>(
    st: &[f32],
    r: usize,
    rows: usize,
    vs: &Tile<'_>,
    alpha: &[f32],
    o: &mut [f32],
    dp: usize,
) {
    let mut i0 = 0;
    while i0 < rows {
        let left = rows - i0;
        i0 += match (wide::<V>(), left) {
            (true, 16..) => acc_rows::<V, TY, 16>(st, r, i0, vs, alpha, o, dp),
            (_, 8..) => acc_rows::<V, TY, 8>(st, r, i0, vs, alpha, o, dp),
            (_, 4..) => acc_rows::<V, TY, 4>(st, r, i0, vs, alpha, o, dp),
            _ => acc_rows::<V, TY, 1>(st, r, i0, vs, alpha, o, dp),
        };
    }
}

/// Rows `i0 .. i0 + RB` of [`accumulate`] (bounds asserted there); returns `RB`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn acc_rows<V: Vector, const TY: usize, const RB: usize>(
    st: &[f32],
    r: usize,
    i0: usize,
    vs: &Tile<'_>,
    alpha: &[f32],
    o: &mut [f32],
    dp: usize,
) -> usize {
    let (sp, op) = (st.as_ptr().add(i0), o.as_mut_ptr().add(i0 * dp));
    let full = vs.d / V::W * V::W;
    for c in (0..full).step_by(V::W) {
        let mut acc: [V; RB] =
            std::array::from_fn(|i| V::mul(V::load(op.add(i * dp + c)), V::splat(alpha[i0 + i])));
        for key in 0..vs.nk {
            let v = vs.chunk::<V, TY>(key, c);
            let p = sp.add(key * r);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = V::fma(v, V::splat(*p.add(i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            a.store(op.add(i * dp + c));
        }
    }
    if full < vs.d {
        acc_tail::<V>(st, r, i0, RB, vs, alpha, o, dp, full);
    }
    RB
}

/// The last, partial chunk of a head size that is not a multiple of `V::W` (f32 and f16 caches
/// only): the values dequantized one at a time into a zero-padded vector.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn acc_tail<V: Vector>(
    st: &[f32],
    r: usize,
    i0: usize,
    rb: usize,
    vs: &Tile<'_>,
    alpha: &[f32],
    o: &mut [f32],
    dp: usize,
    c: usize,
) {
    let mut row = vec![0f32; vs.d];
    let mut pad = [0f32; 16];
    for i in i0..i0 + rb {
        let op = o.as_mut_ptr().add(i * dp + c);
        let mut acc = V::mul(V::load(op), V::splat(alpha[i]));
        for key in 0..vs.nk {
            kv::dequant_scalar(vs.ty, vs.row(key), &mut row);
            pad[..vs.d - c].copy_from_slice(&row[c..]);
            acc = V::fma(V::load(pad.as_ptr()), V::splat(st[key * r + i]), acc);
        }
        acc.store(op);
    }
}

/// The definition, in f64: for each query token `t` and head `h`,
/// `out = Σ_j p_j · v_j / Σ_j p_j` with `p_j = exp(s_j − max s)`, `s_j = scale · q·k_j + mask`,
/// over the keys `j` the mask lets `t` see, K and V dequantized. Shapes as [`AttnShape`].
pub fn attention_reference(
    s: &AttnShape,
    q: &[f32],
    k: &[u8],
    v: &[u8],
    mask: Mask<'_>,
) -> Result<Vec<f64>, ShapeError> {
    s.check(q, k, v, &mask)?;
    let d = s.head_dim;
    let kv_w = s.n_head_kv * d;
    let deq = |ty: KvType, data: &[u8]| -> Result<Vec<f32>, ShapeError> {
        let mut out = vec![0f32; s.n_kv * kv_w];
        for (j, o) in out.chunks_exact_mut(kv_w).enumerate() {
            ty.dequantize_row(&data[j * s.row_bytes(ty)..][..s.row_bytes(ty)], o)?;
        }
        Ok(out)
    };
    let (kf, vf) = (deq(s.k_type, k)?, deq(s.v_type, v)?);
    let hg = s.heads_per_group();
    let mut out = vec![0f64; s.q_len()];
    for t in 0..s.n_tokens {
        for h in 0..s.n_head {
            let g = h / hg;
            let qv = &q[(t * s.n_head + h) * d..][..d];
            let scores: Vec<f64> = (0..s.n_kv)
                .map(|j| {
                    let add = match mask {
                        Mask::Causal if j > s.n_kv - s.n_tokens + t => f64::NEG_INFINITY,
                        Mask::Causal => 0.0,
                        Mask::Additive(m) => m[t * s.n_kv + j] as f64,
                    };
                    let kr = &kf[j * kv_w + g * d..][..d];
                    let dot: f64 = qv.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    dot * s.scale as f64 + add
                })
                .collect();
            let max = scores.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            if max == f64::NEG_INFINITY {
                continue; // no key seen: 0, as the kernel
            }
            let p: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = p.iter().sum();
            let o = &mut out[(t * s.n_head + h) * d..][..d];
            for (j, &pj) in p.iter().enumerate() {
                let vr = &vf[j * kv_w + g * d..][..d];
                for (o, &x) in o.iter_mut().zip(vr) {
                    *o += pj * x as f64 / sum;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::simd::*;

    /// Every kernel's `exp` within `EXP_ULPS` of f64's over the softmax's range (and a little
    /// above 0), and exactly 0 below `EXP_MIN`.
    #[test]
    fn exp_is_within_its_bound() {
        let u = f32::EPSILON as f64 / 2.0;
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -87.29 + i as f32 * (87.29 + 5.0) / 200_000.0)
            .chain([0.0, -0.0, -1e-8, 1e-8, 88.0, EXP_MIN])
            .collect();
        let check = |name: &str, f: &dyn Fn(&[f32]) -> Vec<f32>| {
            let got = f(&xs);
            for (&x, &y) in xs.iter().zip(&got) {
                let want = (x as f64).exp();
                let err = (y as f64 - want).abs() / want;
                assert!(
                    err <= EXP_ULPS as f64 * u,
                    "{name}: exp({x}) = {y}, want {want} ({:.1} ulp)",
                    err / u
                );
            }
            let low = f(&[-87.31, -100.0, -1e30, f32::NEG_INFINITY]);
            assert!(low.iter().all(|&y| y == 0.0), "{name}: {low:?}");
        };
        check("portable", &|x| run::<Portable>(x));
        #[cfg(target_arch = "x86_64")]
        {
            if crate::Isa::Avx2.runs_here() {
                // SAFETY: AVX2/FMA/F16C detected.
                check("avx2", &|x| unsafe { avx2(x) });
            }
            if crate::Isa::Avx512Vnni.runs_here() {
                // SAFETY: AVX-512 F detected.
                check("avx512", &|x| unsafe { avx512(x) });
            }
        }
    }

    /// `exp` over whole vectors (the tail padded with zeros).
    #[inline(always)]
    fn run<V: Vector>(x: &[f32]) -> Vec<f32> {
        let mut buf = x.to_vec();
        buf.resize(x.len().div_ceil(V::W) * V::W, 0.0);
        for c in buf.chunks_exact_mut(V::W) {
            // SAFETY: c holds W f32s; V's instruction set is the caller's (target_feature).
            unsafe { V::load(c.as_ptr()).exp().store(c.as_mut_ptr()) };
        }
        buf.truncate(x.len());
        buf
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(x: &[f32]) -> Vec<f32> {
        run::<Avx2>(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(x: &[f32]) -> Vec<f32> {
        run::<Avx512>(x)
    }
}
