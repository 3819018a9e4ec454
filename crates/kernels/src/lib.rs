//! CPU matrix kernels for ggml's quantized weights: `out[t][r] = Σ_k W[r][k] · x[t][k]`.
//!
//! ggml b2757 multiplies one weight row at a time against one token (`ggml_vec_dot_*`), so every
//! pass over the weights serves one row and each activation block is reloaded per row. Here the
//! weights are repacked once, at load, into groups of [`GROUP`] rows whose blocks sit side by
//! side, so one pass over memory serves 16 rows and each activation block is loaded once per
//! group. Within a group block every 32-bit lane holds 4 consecutive columns of one row, which is
//! what `vpdpbusd` (AVX-512 VNNI: u8 × i8, 4 products summed per 32-bit lane) and `vpmaddubsw`
//! (AVX2) want: the weights are the unsigned side, the activations the signed side, broadcast 4
//! bytes at a time. Offsets (q4_0's −8, q8_0's +128, …) come back as one integer term per block
//! and token from the activations' sums.
//!
//! Where to read what:
//!
//! - `formats/<type>.rs`: one file per weight type (q4_0, q8_0, q5_0, q5_1, iq4_nl, q3_K, q4_K,
//!   q5_K, q6_K, iq4_xs): ggml's block, the packed group block, the reference product on ggml's own
//!   blocks and the kernels for each instruction set;
//! - `driver.rs`: the shared tile driver (chunks of groups in L2, tiles of tokens in L1) and the
//!   [`driver::Format`] trait every format implements;
//! - `act.rs`: the activations, quantized as ggml does for each weight type (q8_0, q8_1, q8_K),
//!   so the integer dot products are exactly ggml's and only the float accumulation differs;
//! - `x86.rs`, `neon.rs`: the per-ISA drivers and shared SIMD helpers;
//! - `attention.rs` (and `attention/`): flash attention over a KV cache of f32, f16, q8_0 or
//!   q4_0 rows (online softmax in f32, query rows in vector lanes; its own module doc);
//! - `bandwidth.rs`: the read-bandwidth probe that decoding speed is judged against.
//!
//! Kernels: AVX-512 VNNI, AVX-VNNI (256-bit) and AVX2 on x86_64 (chosen at run time), NEON on
//! aarch64 (every format), and a portable one everywhere. All of them read the same layout.

mod act;
pub mod attention;
mod bandwidth;
mod driver;
mod formats;
#[cfg(target_arch = "aarch64")]
mod neon;
mod ops;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use act::{Activation, ACT_BLOCK, Q8K_BLOCK, QK, QK_K};
pub use attention::KvType;
pub use bandwidth::{advise_huge_pages, ReadProbe};
pub use ops::{softmax_row, swiglu};

/// Rows per interleaved group.
pub const GROUP: usize = 16;

/// The weight types these kernels take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    Q4_0,
    Q8_0,
    /// 5-bit: `d · (q − 16)`.
    Q5_0,
    /// 5-bit with a min: `d · q + m`.
    Q5_1,
    /// 4-bit indices into a non-linear table: `d · KVALUES[q]`.
    IQ4NL,
    /// llama.cpp's q3_K: 256-column super-blocks of 16 × 16 with 6-bit scales, 3-bit quants.
    Q3K,
    /// llama.cpp's q4_K: 256-column super-blocks of 8 × 32 with 6-bit scales and mins.
    Q4K,
    /// llama.cpp's q5_K: q4_K with a fifth bit.
    Q5K,
    /// llama.cpp's q6_K: 256-column super-blocks of 16 × 16 with 8-bit scales.
    Q6K,
    /// iq4_nl's table in 256-column super-blocks of 8 × 32 with 6-bit scales.
    IQ4XS,
}

/// What the kernels need to know about a weight type.
struct Spec {
    ty: WeightType,
    name: &'static str,
    /// Columns per ggml block.
    block_cols: usize,
    /// Bytes of one ggml block.
    ggml_bytes: usize,
    /// Bytes of one packed group block (16 rows' blocks; see the type's file in `formats/`).
    group_bytes: usize,
    /// ggml's `vec_dot_type` for this type.
    activation: Activation,
    /// Byte offsets of the f16 fields (scales, mins) in ggml's block.
    f16_offsets: &'static [usize],
}

/// One row per weight type, in the enum's order.
#[rustfmt::skip]
const SPECS: [Spec; 10] = {
    use Activation as A;
    use WeightType::*;
    const fn s(ty: WeightType, name: &'static str, block_cols: usize, ggml_bytes: usize,
               group_bytes: usize, activation: Activation, f16_offsets: &'static [usize]) -> Spec {
        Spec { ty, name, block_cols, ggml_bytes, group_bytes, activation, f16_offsets }
    }
    [
        //  type  name     cols  ggml  group  activations  f16 fields
        s(Q4_0, "q4_0",   32,   18,   288, A::Q8_0, &[0]),
        s(Q8_0, "q8_0",   32,   34,   544, A::Q8_0, &[0]),
        s(Q5_0, "q5_0",   32,   22,   352, A::Q8_0, &[0]),
        s(Q5_1, "q5_1",   32,   24,   384, A::Q8_1, &[0, 2]),
        s(IQ4NL,"iq4_nl", 32,   18,   288, A::Q8_0, &[0]),
        s(Q3K,  "q3_K",  256,  110,  1824, A::Q8K,  &[108]),
        s(Q4K,  "q4_K",  256,  144,  2368, A::Q8K,  &[0, 2]),
        s(Q5K,  "q5_K",  256,  176,  2880, A::Q8K,  &[0, 2]),
        s(Q6K,  "q6_K",  256,  210,  3360, A::Q8K,  &[208]),
        s(IQ4XS,"iq4_xs",256,  136,  2208, A::Q8K,  &[0]),
    ]
};

impl WeightType {
    /// Every type.
    pub const ALL: [WeightType; SPECS.len()] = {
        let mut all = [WeightType::Q4_0; SPECS.len()];
        let mut i = 0;
        while i < SPECS.len() {
            all[i] = SPECS[i].ty;
            i += 1;
        }
        all
    };

    fn spec(self) -> &'static Spec {
        let s = &SPECS[self as usize];
        debug_assert_eq!(s.ty, self);
        s
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Bytes of one ggml block.
    pub fn ggml_block_bytes(self) -> usize {
        self.spec().ggml_bytes
    }

    /// Columns of one ggml block (32, or 256 for the K types and iq4_xs).
    pub fn block_cols(self) -> usize {
        self.spec().block_cols
    }

    /// Bytes of one group's block in the packed layout.
    pub fn group_block_bytes(self) -> usize {
        self.spec().group_bytes
    }

    /// Byte offsets of the f16 fields (scales, mins) in one ggml block.
    pub fn f16_offsets(self) -> &'static [usize] {
        self.spec().f16_offsets
    }

    /// How the activations are quantized for this type (ggml's `vec_dot_type`).
    pub fn activation(self) -> Activation {
        self.spec().activation
    }

    /// Bytes of one token's quantized activations (`k` columns) for this weight type.
    pub fn act_row_bytes(self, k: usize) -> usize {
        self.activation().row_bytes(k)
    }

    /// Quantizes one token's activations the way ggml does for this weight type into `out`
    /// (`act_row_bytes(x.len())` bytes).
    pub fn quantize_activations(self, x: &[f32], out: &mut [u8]) -> Result<(), ShapeError> {
        self.activation().quantize(x, out)
    }
}

/// Instruction sets with a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    /// AVX2 with AVX-VNNI (Intel since Alder Lake, AMD since Zen 5): the AVX2 kernels' 256-bit
    /// layout and driver, with `vpdpbusd` (VEX) in place of `vpmaddubsw` + `vpmaddwd`
    /// (`Format::avx_vnni`; q6_K keeps its AVX2 kernel).
    AvxVnni,
    Avx512Vnni,
    Neon,
}

impl Isa {
    /// Every instruction set, slowest first; an [`Isa`]'s index here is its [`Isa::code`].
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Neon,
    ];

    /// The best kernel this CPU can run.
    pub fn detect() -> Isa {
        *Self::available().last().unwrap_or(&Isa::Scalar)
    }

    /// Every kernel this CPU can run, slowest first (the scalar one always).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.runs_here()).collect()
    }

    /// A small integer naming the instruction set (for ops that carry it in their user data).
    pub fn code(self) -> u8 {
        Isa::ALL.iter().position(|&i| i == self).unwrap_or(0) as u8
    }

    /// The instruction set of [`Isa::code`] `c` (an unknown code: the scalar kernel).
    pub fn from_code(c: u8) -> Isa {
        Isa::ALL.get(c as usize).copied().unwrap_or(Isa::Scalar)
    }

    /// Whether this CPU can run the kernel (std caches the feature detection). The environment
    /// variable `GLM_KERNELS_MAX_ISA` (`scalar`, `avx2`, `avx-vnni` or `avx512-vnni`) hides the
    /// kernels above it, so an AVX-512 machine can be tested as an AVX2-only one (.ci/run does);
    /// `avx512-vnni` hides AVX-512 VBMI and GFNI from the AVX-512 kernels.
    pub fn runs_here(self) -> bool {
        if self.rank() > max_rank() {
            return false;
        }
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => x86::has_avx_vnni(),
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
            Isa::AvxVnni => 2,
            Isa::Avx512Vnni => 3,
            Isa::Neon => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avx-vnni",
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
        Ok("avx-vnni") => 2,
        Ok("avx512-vnni") => 3,
        _ => u8::MAX,
    })
}

/// Whether `GLM_KERNELS_MAX_ISA` hides AVX-512 VBMI and GFNI (`avx512-vnni` and below: the
/// AVX-512 kernels run as on a CPU without them, such as Cascade Lake).
#[cfg(target_arch = "x86_64")]
fn vbmi_hidden() -> bool {
    max_rank() <= Isa::Avx512Vnni.rank()
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

/// Repacks a matrix stored the ggml way (`rows` rows of `k / block_cols` blocks) into `dst`
/// (`packed_len` bytes). Padding rows are zero (scale 0).
pub fn repack(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    dst: &mut [u8],
) -> Result<(), ShapeError> {
    let qk = ty.block_cols();
    let bb = ty.ggml_block_bytes();
    check(k.is_multiple_of(qk) && k > 0 && rows > 0, || {
        format!("{rows} rows of {k} columns: columns must be whole blocks of {qk}")
    })?;
    check(src.len() == rows * (k / qk) * bb, || {
        format!(
            "{} bytes for {rows} × {k} {}, expected {}",
            src.len(),
            ty.name(),
            rows * (k / qk) * bb
        )
    })?;
    check(dst.len() == packed_len(ty, rows, k), || {
        format!(
            "packed buffer of {} bytes, expected {}",
            dst.len(),
            packed_len(ty, rows, k)
        )
    })?;
    driver::with_format!(ty, F => driver::repack::<F>(src, rows, k, dst));
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
                    "{} rows of {} columns: {} needs whole blocks of {}",
                    self.rows,
                    self.k,
                    self.ty.name(),
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

// SAFETY: `Out::new`'s contract makes the caller guarantee that concurrent calls write disjoint
// rows (threads given disjoint row groups), so sharing the pointer between threads is sound.
unsafe impl Send for Out {}
// SAFETY: as for Send: `Out` is only written through, at places its creator made disjoint.
unsafe impl Sync for Out {}

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
    driver::with_format!(m.ty, F => driver::matmul::<F>(isa, m, w, acts, groups, out));
    Ok(())
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

/// [`reference`], and for each output the sum of the absolute values of its per-block float
/// terms (`|d_w·d_a·Σ|`, plus the min terms of q4_K/q5_K and q5_1): each kernel's f32 result
/// differs from the exact one by at most a few units of `f32::EPSILON` × (terms + 3) × that sum
/// (kernels.rs derives its bound from it).
pub fn reference_terms(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    k: usize,
    acts: &[u8],
    n_tokens: usize,
) -> (Vec<f32>, Vec<f32>) {
    driver::with_format!(ty, F => driver::reference::<F>(src, rows, k, acts, n_tokens))
}
