//! CPU matrix kernels for q4_0 and q8_0 weights: `out[t][r] = Σ_k W[r][k] · x[t][k]`.
//!
//! ggml b2757 multiplies one weight row at a time against one token (`ggml_vec_dot_q4_0_q8_0`),
//! so every pass over the weights serves one row and one activation block is reloaded per row.
//! Here the weights are repacked once, at load, into groups of [`GROUP`] rows whose blocks sit
//! side by side, so one pass over memory serves 16 rows and each activation block is loaded once
//! per group:
//!
//! ```text
//! group g (rows 16g .. 16g+15), for each block b of 32 columns:
//!   16 × f16 scales                      (row r's d)
//!   q4_0: 4 × 64 bytes: vector v, lane r (4 bytes) = row r's quant bytes 4v .. 4v+3
//!         (low nibbles are columns 4v+j, high nibbles 16+4v+j: ggml's own nibble order)
//!   q8_0: 8 × 64 bytes: vector s, lane r (4 bytes) = row r's quants 4s .. 4s+3, each XOR 0x80
//!         (= q + 128 as an unsigned byte)
//! ```
//!
//! Each 32-bit lane holds 4 consecutive columns of one row, which is what `vpdpbusd` (AVX-512
//! VNNI: u8 × s8, 4 products summed per 32-bit lane) and `pmaddubsw` (AVX2) want: the unsigned
//! side is the weights (nibbles 0..15, or q8 + 128), the signed side is the activations broadcast
//! 4 bytes at a time. The offsets come back in one integer term per block and token:
//! `Σ (q−8)·a = Σ q·a − 8·Σa` (q4_0), `Σ q·a = Σ (q+128)·a − 128·Σa` (q8_0).
//!
//! Activations are quantized once per op into [`ACT_BLOCK`]-byte blocks exactly as ggml
//! quantizes them to q8_0 on x86 (scale `f16(amax/127)`, values `round_ties_even(x·127/amax)`),
//! plus the block's sum, so the integer dot products are exactly ggml's and only the float
//! accumulation order differs.
//!
//! Kernels: AVX-512 VNNI and AVX2 on x86_64 (chosen at run time), NEON on aarch64, and a scalar
//! one everywhere. All of them read the same layout.

pub mod kquants;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_k;

use half::f16;

/// Rows per interleaved group.
pub const GROUP: usize = 16;
/// Columns per block (q4_0, q8_0 and the activation blocks).
pub const QK: usize = 32;
/// Bytes of one quantized activation block: f32 scale, i32 sum of the quants, 32 × i8.
pub const ACT_BLOCK: usize = 40;

/// The weight types these kernels take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    Q4_0,
    Q8_0,
    /// llama.cpp's q4_K: 256-column super-blocks of 8 × 32 with 6-bit scales and mins.
    Q4K,
    /// llama.cpp's q6_K: 256-column super-blocks of 16 × 16 with 8-bit scales.
    Q6K,
}

impl WeightType {
    /// Bytes of one ggml block (f16 scale + quants).
    pub fn ggml_block_bytes(self) -> usize {
        match self {
            WeightType::Q4_0 => 18,
            WeightType::Q8_0 => 34,
            WeightType::Q4K => kquants::Q4K_BLOCK,
            WeightType::Q6K => kquants::Q6K_BLOCK,
        }
    }
    /// Columns of one ggml block (32, or 256 for the K types).
    pub fn block_cols(self) -> usize {
        match self {
            WeightType::Q4_0 | WeightType::Q8_0 => QK,
            WeightType::Q4K | WeightType::Q6K => kquants::QK_K,
        }
    }
    /// Whether the activations are quantized as ggml's q8_K (256-value blocks, for the K types)
    /// rather than q8_0.
    pub fn uses_q8k(self) -> bool {
        matches!(self, WeightType::Q4K | WeightType::Q6K)
    }
    /// Quant bytes of one row's block.
    fn quant_bytes(self) -> usize {
        self.ggml_block_bytes() - 2
    }
    /// Bytes of one group's block in the packed layout.
    pub fn group_block_bytes(self) -> usize {
        match self {
            WeightType::Q4K => kquants::Q4K_GROUP_BLOCK,
            _ => GROUP * self.ggml_block_bytes(),
        }
    }
    /// Bytes of one token's quantized activations (`k` columns) for this weight type.
    pub fn act_row_bytes(self, k: usize) -> usize {
        if self.uses_q8k() {
            kquants::q8k_row_bytes(k)
        } else {
            act_row_bytes(k)
        }
    }
    /// Quantizes one token's activations the way ggml does for this weight type (q8_0 or
    /// q8_K) into `out` (`act_row_bytes(x.len())` bytes).
    pub fn quantize_activations(self, x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
        if self.uses_q8k() {
            kquants::quantize_q8k(x, out)
        } else {
            quantize_activations(x, out)
        }
    }
    /// What each activation sum is multiplied by in the offset term (−8 for q4_0, −128 for q8_0).
    fn offset(self) -> i32 {
        match self {
            WeightType::Q4_0 => -8,
            _ => -128,
        }
    }
}

/// Instruction sets with a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
    Neon,
}

impl Isa {
    /// The best kernel this CPU can run.
    pub fn detect() -> Isa {
        *Self::available().last().unwrap_or(&Isa::Scalar)
    }

    /// Every kernel this CPU can run, slowest first (the scalar one always).
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }

    /// Whether this CPU can run the kernel (std caches the feature detection). The environment
    /// variable `GLM_KERNELS_MAX_ISA` (`scalar` or `avx2`) hides the kernels above it, so an
    /// AVX-512 machine can be tested as an AVX2-only one (.ci/run does).
    pub fn runs_here(self) -> bool {
        if self.rank() > max_rank() {
            return false;
        }
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::has_avx512_vnni(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Order for `GLM_KERNELS_MAX_ISA` (NEON is an aarch64 kernel: not capped by x86 names).
    fn rank(self) -> u8 {
        match self {
            Isa::Scalar => 0,
            Isa::Avx2 => 1,
            Isa::Avx512Vnni => 2,
            Isa::Neon => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Neon => "neon",
        }
    }
}

/// The highest [`Isa::rank`] `GLM_KERNELS_MAX_ISA` allows (read once; unset or unknown: all).
fn max_rank() -> u8 {
    static MAX: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| match std::env::var("GLM_KERNELS_MAX_ISA").as_deref() {
        Ok("scalar") => 0,
        Ok("avx2") => 1,
        _ => u8::MAX,
    })
}

/// What can be wrong with the arguments of a kernel call.
#[derive(Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), ShapeError> {
    if ok {
        Ok(())
    } else {
        Err(ShapeError(what()))
    }
}

/// Row groups of a matrix with `rows` rows.
pub fn n_groups(rows: usize) -> usize {
    rows.div_ceil(GROUP)
}

/// Bytes of the packed form of a `rows × k` matrix (rows padded to whole groups).
pub fn packed_len(ty: WeightType, rows: usize, k: usize) -> usize {
    n_groups(rows) * (k / ty.block_cols()) * ty.group_block_bytes()
}

/// Bytes of one token's quantized activations (`k` columns).
pub fn act_row_bytes(k: usize) -> usize {
    k / QK * ACT_BLOCK
}

/// Repacks a matrix stored the ggml way (`rows` rows of `k / 32` blocks) into `dst`
/// (`packed_len` bytes). Padding rows get scale 0 and zero quants.
pub fn repack(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    dst: &mut [u8],
) -> Result<(), ShapeError> {
    let qk = ty.block_cols();
    let nb = k / qk;
    let bb = ty.ggml_block_bytes();
    check(k.is_multiple_of(qk) && k > 0 && rows > 0, || {
        format!("{rows} rows of {k} columns: columns must be whole blocks of {qk}")
    })?;
    check(src.len() == rows * nb * bb, || {
        format!(
            "{} bytes for {rows} × {k} {ty:?}, expected {}",
            src.len(),
            rows * nb * bb
        )
    })?;
    check(dst.len() == packed_len(ty, rows, k), || {
        format!(
            "packed buffer of {} bytes, expected {}",
            dst.len(),
            packed_len(ty, rows, k)
        )
    })?;
    if ty.uses_q8k() {
        kquants::repack(ty, src, rows, k, dst);
        return Ok(());
    }
    let gbb = ty.group_block_bytes();
    let (zero_q, n_vec) = match ty {
        WeightType::Q4_0 => (0x88u8, 4), // nibbles 8 and 8: value 0
        _ => (0x80u8, 8),                // q8_0: 0 + 128
    };
    for (g, group) in dst.chunks_exact_mut(nb * gbb).enumerate() {
        for (b, out) in group.chunks_exact_mut(gbb).enumerate() {
            let (scales, quants) = out.split_at_mut(2 * GROUP);
            for r in 0..GROUP {
                let row = g * GROUP + r;
                if row >= rows {
                    scales[2 * r..2 * r + 2].fill(0);
                    for v in 0..n_vec {
                        quants[v * 64 + 4 * r..v * 64 + 4 * r + 4].fill(zero_q);
                    }
                    continue;
                }
                let blk = &src[(row * nb + b) * bb..][..bb];
                scales[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
                let qs = &blk[2..];
                for v in 0..n_vec {
                    let dst4 = &mut quants[v * 64 + 4 * r..v * 64 + 4 * r + 4];
                    for j in 0..4 {
                        dst4[j] = match ty {
                            WeightType::Q4_0 => qs[4 * v + j],
                            _ => qs[4 * v + j] ^ 0x80,
                        };
                    }
                }
            }
        }
    }
    debug_assert_eq!(ty.quant_bytes() * GROUP, gbb - 2 * GROUP);
    Ok(())
}

/// Quantizes one token's activations (`x.len()` a multiple of 32) into `out`
/// (`act_row_bytes(x.len())` bytes), as ggml's x86 `quantize_row_q8_0`, plus each block's sum.
pub fn quantize_activations(x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
    check(x.len().is_multiple_of(QK), || {
        format!("{} activations are not whole blocks", x.len())
    })?;
    check(out.len() == act_row_bytes(x.len()), || {
        format!("{} bytes for {} activations", out.len(), x.len())
    })?;
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(ACT_BLOCK)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = f16::from_f32(amax / 127.0).to_f32();
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (o, &v) in ob[8..].iter_mut().zip(xb) {
            let q = (v * id).round_ties_even() as i8;
            sum += q as i32;
            *o = q as u8;
        }
        ob[..4].copy_from_slice(&d.to_le_bytes());
        ob[4..8].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(())
}

/// One call's shapes, checked once for every kernel.
#[derive(Clone, Copy, Debug)]
pub struct MatMul {
    pub ty: WeightType,
    pub rows: usize,
    pub k: usize,
    pub n_tokens: usize,
}

impl MatMul {
    fn check(&self, w: &[u8], acts: &[u8]) -> Result<(), ShapeError> {
        check(
            self.k.is_multiple_of(self.ty.block_cols()) && self.k > 0 && self.rows > 0,
            || {
                format!(
                    "{} rows of {} columns: {:?} needs whole blocks of {}",
                    self.rows,
                    self.k,
                    self.ty,
                    self.ty.block_cols()
                )
            },
        )?;
        check(w.len() == packed_len(self.ty, self.rows, self.k), || {
            format!(
                "packed weights of {} bytes, expected {}",
                w.len(),
                packed_len(self.ty, self.rows, self.k)
            )
        })?;
        check(
            acts.len() == self.n_tokens * self.ty.act_row_bytes(self.k),
            || {
                format!(
                    "activations of {} bytes for {} tokens of {}",
                    acts.len(),
                    self.n_tokens,
                    self.k
                )
            },
        )
    }
}

/// Where a kernel writes: row `r` of token `t` goes to `ptr[t * stride + r]`.
#[derive(Clone, Copy)]
pub struct Out {
    ptr: *mut f32,
    stride: usize,
}

impl Out {
    /// # Safety
    /// For every token `t < n_tokens` and row `r < rows` of the calls this is passed to,
    /// `ptr + t * stride + r` must be valid for writes for the duration of the call and not be
    /// accessed by anyone else meanwhile (threads given disjoint row groups qualify).
    pub unsafe fn new(ptr: *mut f32, stride: usize) -> Out {
        Out { ptr, stride }
    }

    /// Writes 16 results for rows `row0 .. row0 + n` (n ≤ 16) of token `t`.
    #[inline(always)]
    fn put(&self, t: usize, row0: usize, vals: &[f32; GROUP], n: usize) {
        // SAFETY: Out::new's contract covers rows < rows and tokens < n_tokens; callers pass
        // n = the valid rows of the group only.
        unsafe {
            std::ptr::copy_nonoverlapping(vals.as_ptr(), self.ptr.add(t * self.stride + row0), n)
        }
    }
}

/// `out[t][r] = Σ_k W[r][k] · x[t][k]` for the row groups `groups` (of `n_groups(rows)`), every
/// token. `w` is `repack`'s output, `acts` the tokens' `quantize_activations` rows back to back.
/// Threads each take a disjoint range of groups.
pub fn matmul(
    isa: Isa,
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) -> Result<(), ShapeError> {
    m.check(w, acts)?;
    check(
        groups.end <= n_groups(m.rows) && groups.start <= groups.end,
        || format!("groups {groups:?} of {}", n_groups(m.rows)),
    )?;
    check(isa.runs_here(), || {
        format!("{} is not available on this CPU", isa.name())
    })?;
    if m.ty.uses_q8k() {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86_k::matmul_avx2(m, w, acts, groups, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_k::matmul_avx512(m, w, acts, groups, out),
            // NEON: the portable kernel for now (docs/cpu-kernels.md)
            _ => kquants::matmul_scalar(m, w, acts, groups, out),
        }
        return Ok(());
    }
    match isa {
        Isa::Scalar => scalar::matmul(m, w, acts, groups, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::matmul_avx2(m, w, acts, groups, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::matmul_avx512(m, w, acts, groups, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::matmul(m, w, acts, groups, out),
        #[allow(unreachable_patterns)]
        _ => unreachable!("availability checked above"),
    }
    Ok(())
}

/// Groups per cache chunk: the kernels run a chunk of groups (≤ 256 KiB of weights, which stays
/// in L2) against each tile of tokens (which stays in L1), so the activations are not streamed
/// again for every group.
fn chunk_groups(m: &MatMul) -> usize {
    let group_bytes = (m.k / m.ty.block_cols()) * m.ty.group_block_bytes();
    (256 * 1024 / group_bytes.max(1)).max(1)
}

/// Calls `f(group, first_token, n_tokens ≤ tile)` over `groups` × all tokens in cache-friendly
/// order.
fn for_tiles(
    m: &MatMul,
    groups: std::ops::Range<usize>,
    tile: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let chunk = chunk_groups(m);
    let mut g0 = groups.start;
    while g0 < groups.end {
        let g1 = (g0 + chunk).min(groups.end);
        let mut t0 = 0;
        while t0 < m.n_tokens {
            let n = tile.min(m.n_tokens - t0);
            for g in g0..g1 {
                f(g, t0, n);
            }
            t0 += n;
        }
        g0 = g1;
    }
}

/// Scale of block `b` of an activation row.
#[inline(always)]
fn act_scale(a: &[u8]) -> (f32, i32) {
    (
        f32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        i32::from_le_bytes([a[4], a[5], a[6], a[7]]),
    )
}

/// Reference: the same product computed from ggml's own row-major blocks, one row and one token
/// at a time with plain integer dot products (for tests and as a readable definition).
pub fn reference(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    acts: &[u8],
    n_tokens: usize,
) -> Vec<f32> {
    reference_terms(ty, src, rows, k, acts, n_tokens).0
}

/// [`reference`], and for each output the sum of the absolute values of its per-block terms
/// (`|d_w·d_a·Σ|`, for q4_K also `|dmin·d_a·Σ m·bsum|`): the f32 rounding of every kernel's
/// result is bounded by a few units of `f32::EPSILON` × (blocks + 4) × that sum.
pub fn reference_terms(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    acts: &[u8],
    n_tokens: usize,
) -> (Vec<f32>, Vec<f32>) {
    if ty.uses_q8k() {
        return kquants::reference(ty, src, rows, k, acts, n_tokens);
    }
    let nb = k / QK;
    let bb = ty.ggml_block_bytes();
    let mut out = vec![0f32; rows * n_tokens];
    let mut mag = vec![0f32; rows * n_tokens];
    for t in 0..n_tokens {
        let arow = &acts[t * act_row_bytes(k)..][..act_row_bytes(k)];
        for r in 0..rows {
            let mut acc = 0f32;
            let mut abs = 0f32;
            for b in 0..nb {
                let blk = &src[(r * nb + b) * bb..][..bb];
                let dw = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let ab = &arow[b * ACT_BLOCK..][..ACT_BLOCK];
                let (da, _) = act_scale(ab);
                let a = |i: usize| ab[8 + i] as i8 as i32;
                let isum: i32 = match ty {
                    WeightType::Q4_0 => (0..16)
                        .map(|i| {
                            let q = blk[2 + i];
                            ((q & 15) as i32 - 8) * a(i) + ((q >> 4) as i32 - 8) * a(i + 16)
                        })
                        .sum(),
                    _ => (0..32).map(|i| blk[2 + i] as i8 as i32 * a(i)).sum(),
                };
                acc += dw * da * isum as f32;
                abs += (dw * da * isum as f32).abs();
            }
            out[t * rows + r] = acc;
            mag[t * rows + r] = abs;
        }
    }
    (out, mag)
}

/// `row = softmax(row · scale + mask)` in place, with `exp` in f32 and the sum in f64 (as
/// ggml's CPU softmax, but without its f16 table of exp). `-inf` entries (masked) give 0.
pub fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32) -> Result<(), ShapeError> {
    check(row.len() == mask.len() && !row.is_empty(), || {
        format!(
            "softmax over {} values with a mask of {}",
            row.len(),
            mask.len()
        )
    })?;
    let mut max = f32::NEG_INFINITY;
    for (o, &m) in row.iter_mut().zip(mask) {
        *o = *o * scale + m;
        max = max.max(*o);
    }
    let mut sum = 0f64;
    for o in row.iter_mut() {
        *o = if *o == f32::NEG_INFINITY {
            0.0
        } else {
            (*o - max).exp()
        };
        sum += *o as f64;
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|o| *o *= inv);
    Ok(())
}

/// `out = silu(gate) ⊙ up` with `silu(x) = x / (1 + exp(−x))` in f32 (ggml's CPU SiLU reads a
/// table indexed by x rounded to f16).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), ShapeError> {
    check(gate.len() == up.len() && gate.len() == out.len(), || {
        format!(
            "swiglu of {} and {} values into {}",
            gate.len(),
            up.len(),
            out.len()
        )
    })?;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
    Ok(())
}
