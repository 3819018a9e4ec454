//! The shared tile driver: what every block format plugs into.
//!
//! A format (one file in `formats/`) says how one ggml block becomes part of a packed group block
//! ([`Format::repack_row`]), how ggml itself computes one block's product (the reference), and how
//! to multiply one packed group block (16 rows) with one activation block of each token of a tile,
//! for each instruction set. This file walks the matrix: chunks of groups that stay in L2, tiles
//! of tokens that stay in L1, and for each group and tile every block along `k`.

use crate::{Isa, MatMul, Out, WeightType, GROUP};
use half::f16;

/// How a tile of one token prefetches its weights ahead into L2 on an AMD CPU
/// ([`Format::PREFETCH`], [`Format::PREFETCH_AVX512`]; the distances are `x86::reach`'s).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Prefetch {
    /// Not at all: the hardware prefetchers keep up alone.
    Off,
    /// Each line once, 8 KiB ahead.
    Once,
    /// Each line 8 KiB ahead, and asked for again 4 KiB ahead. Measured, not derived: the
    /// likeliest reason it streams faster is that a core drops a software prefetch it has no
    /// miss buffer free for, and the second request finds one where the first did not.
    Twice,
}

/// One block format's kernels. Implemented by a unit struct in each file of `formats/`.
pub(crate) trait Format {
    /// The weight type.
    const TY: WeightType;

    /// How the x86 kernels prefetch the weights ahead when decoding one token on an AMD CPU
    /// (`x86::reach`; on other CPUs always [`Prefetch::Once`]). Measured per format on Zen 4,
    /// decoding one token on one thread: q5_K and q6_K stream twice as fast with it
    /// (they read two regions of each group block, nibbles and high bits, in turn), q5_0, q5_1
    /// and iq4_xs on AVX2 1.2–1.5× as fast; q8_0, which reads its group blocks front to back,
    /// was as fast or slower with it (the hardware prefetcher already keeps up, and the prefetch
    /// instructions cost issue slots). q4_0 and q4_K on AVX2 stream fastest asking for each
    /// line twice (one token's `up` product, 2 threads, share of the paired probe where the
    /// memory ran at ~50 GB/s: q4_0 73–76 → 91–95 %, q4_K 76–77 → 80–81 %; at ~33 GB/s 90–93
    /// → 95–97 % and 92–93 → 93–95 %); the AVX2 kernels of q5_K, q6_K and the iq4 formats, whose
    /// arithmetic is the limit where the memory is fast, keep one request per line. Tiles of
    /// several tokens prefetch whatever the format (see `x86::reach`). Only the x86 kernels
    /// prefetch.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const PREFETCH: Prefetch = Prefetch::Once;

    /// [`Format::PREFETCH`] for the AVX-512 kernels, where they differ. q5_0, q5_1 and iq4_nl,
    /// whose blocks the hardware prefetcher streams alone, q4_0 and q8_0, and q5_K since its
    /// block is read front to back, stream as fast or faster without it (one core from memory:
    /// q5_0 25.4 → 28.1 GB/s, q5_1 25.7 → 26.5, iq4_nl 24.7 → 27.2; q5_K with two cores 91 →
    /// 96 % of the paired probe, and level against asking twice). q4_K, q6_K and iq4_xs ask
    /// for each line twice: one token's `up` product, 2 threads, where the memory ran at ~50
    /// GB/s, q4_K 79–84 % (once) → 90–92 %, q6_K 75–77 % (once) → 85–91 %, iq4_xs 80–89 %
    /// (without) → 90–91 %; at ~33 GB/s q4_K 88–91 → 92–96 %, q6_K 88–91 → 94–97 %, iq4_xs
    /// level (the thirteenth session, docs/benchmarks.md).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const PREFETCH_AVX512: Prefetch = Self::PREFETCH;

    /// Bytes at the start of a group block (its scales and other per-row values) that the x86
    /// kernels read after or between the quants they qualify. The drivers read one byte of each
    /// of its 64-byte lines before the kernel (`x86::touch_header`), so that the block's lines
    /// are first asked of memory in address order: a hardware prefetcher that sees a block's
    /// header lines missed after its quants (a step back of up to 2 KiB in every block) keeps
    /// less of the stream in flight. Measured on q4_K, one token, one AVX-512 core streaming
    /// from memory: 70 % of the read probe without, 83 % with (docs/cpu-kernels.md).
    /// 0: the kernels read their blocks front to back already.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const HEADER: usize = 0;

    /// Tokens per AVX2 tile (4 or 8). Most formats take 8, spreading the unpacking of each
    /// vector of weights (masks, shifts, fifth or sixth bits, table lookups, magnitudes) over
    /// twice the tokens; q4_0, whose unpacking is one or two operations, keeps 4 (with 8, its
    /// prompts ran 5–7 % slower). q8_0 took 4 while its kernel held 8 vectors and their
    /// magnitudes; unpacking one at a time, 8 is 4 % faster. Measured with the micro benchmark,
    /// docs/benchmarks.md.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const AVX2_TOKENS: usize = 8;

    /// Tokens per AVX-VNNI tile (4 or 8): by default the AVX2 kernel's. iq4_nl takes 4 (prompts
    /// 23 % faster than with 8; q4_K, q5_0 and q5_1 were 12–14 % faster with 8, iq4_xs even:
    /// `examples/bench.rs --tokens 512 --shapes small --resident`, one core of the AMX Xeon, medians
    /// of 4 alternating runs).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const AVX_VNNI_TOKENS: usize = Self::AVX2_TOKENS;

    /// Writes row `r`'s ggml block `blk` into the group block `out` (zero-filled beforehand;
    /// padding rows stay zero, and a zero scale makes them contribute nothing).
    fn repack_row(blk: &[u8], r: usize, out: &mut [u8]);

    /// One row's ggml block against one activation block, computed as ggml's scalar code does
    /// (integer sums, then its float terms): `(Σ terms, Σ |terms|)`.
    fn reference(blk: &[u8], a: &[u8]) -> (f32, f32);

    /// Adds the group block `p` × the activation block `a` (one token) to the 16 row sums.
    fn scalar(p: &[u8], a: &[u8], acc: &mut [f32; GROUP]);

    /// AVX-512 VNNI: adds the group block at `p` × each token's activation block `a[t]` to
    /// `acc[t]` (16 rows, one per lane), and calls `ahead.part(i, n)` once for each `i < n`,
    /// spread over its steps (one part per step of its loop; `n` = 1 for one-step formats).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI must be available; `p` must point at a whole group block and each
    /// `a[t]` at a whole activation block.
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx512<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    );

    /// Whether [`Format::avx512_vbmi`] is a kernel of its own, which the AVX-512 driver runs
    /// where the CPU has AVX-512 VBMI and GFNI (`x86::has_avx512_vbmi`).
    #[cfg(target_arch = "x86_64")]
    const AVX512_VBMI: bool = false;

    /// AVX-512 VBMI and GFNI: as [`Format::avx512`], with `vpermb` (a 64-byte table lookup that
    /// ignores the index's top two bits) or `vgf2p8affineqb` (any permutation of the bits of each
    /// byte). By default the AVX-512 kernel itself.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI/VBMI and GFNI must be available; pointers as for [`Format::avx512`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
    #[inline]
    unsafe fn avx512_vbmi<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m512; N],
    ) {
        Self::avx512::<N>(p, a, ahead, acc)
    }

    /// AVX2: as [`Format::avx512`] for rows `8·half .. 8·half + 7` of the group.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; pointers as for [`Format::avx512`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn avx2<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        half: usize,
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m256; N],
    );

    /// AVX-VNNI: as [`Format::avx2`] (same halves, same layout), with the 256-bit `vpdpbusd`.
    /// By default the AVX2 kernel itself (q6_K's: a `vpdpbusd` kernel and one fusing AVX2's
    /// `vpmaddwd` + add into `vpdpwssd` were no faster).
    ///
    /// # Safety
    /// AVX2, FMA, F16C and AVX-VNNI must be available; pointers as for [`Format::avx512`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    #[inline]
    unsafe fn avx_vnni<const N: usize>(
        p: *const u8,
        a: &[*const u8; N],
        half: usize,
        ahead: crate::x86::Ahead,
        acc: &mut [std::arch::x86_64::__m256; N],
    ) {
        Self::avx2::<N>(p, a, half, ahead, acc)
    }

    /// Whether [`Format::neon`] is a NEON kernel (otherwise aarch64 runs [`Format::scalar`]).
    #[cfg(target_arch = "aarch64")]
    const NEON: bool = false;

    /// NEON: adds the group block at `p` × one token's activation block `a` to the 16 row sums
    /// (4 registers of 4 rows).
    ///
    /// # Safety
    /// Pointers as for [`Format::avx512`].
    #[cfg(target_arch = "aarch64")]
    unsafe fn neon(_p: *const u8, _a: *const u8, _acc: &mut [std::arch::aarch64::float32x4_t; 4]) {
        unreachable!("no NEON kernel: Format::NEON is false")
    }
}

/// Bytes of one group block / activation block of `F`, and blocks per row.
#[derive(Clone, Copy)]
pub(crate) struct Strides {
    /// Blocks along k.
    pub nb: usize,
    /// Bytes of one packed group block.
    pub gbb: usize,
    /// Bytes of one activation block.
    pub abb: usize,
    /// Bytes of one token's activations.
    pub arb: usize,
}

impl Strides {
    pub fn of(m: &MatMul) -> Strides {
        let act = m.ty.activation();
        Strides {
            nb: m.k / m.ty.block_cols(),
            gbb: m.ty.group_block_bytes(),
            abb: act.block_bytes(),
            arb: act.row_bytes(m.k),
        }
    }
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
pub(crate) fn for_tiles(
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

/// Repacks ggml's rows (shapes checked by the caller) into groups of 16, padding rows zero.
pub(crate) fn repack<F: Format>(src: &[u8], rows: usize, k: usize, dst: &mut [u8]) {
    let ty = F::TY;
    let nb = k / ty.block_cols();
    let (bb, gbb) = (ty.ggml_block_bytes(), ty.group_block_bytes());
    for (g, group) in dst.chunks_exact_mut(nb * gbb).enumerate() {
        for (b, out) in group.chunks_exact_mut(gbb).enumerate() {
            out.fill(0);
            for r in 0..GROUP.min(rows - g * GROUP) {
                F::repack_row(&src[((g * GROUP + r) * nb + b) * bb..][..bb], r, out);
            }
        }
    }
}

/// The reference product on ggml's row-major blocks: `(out, Σ|terms|)`, `[token][row]`.
pub(crate) fn reference<F: Format>(
    src: &[u8],
    rows: usize,
    k: usize,
    acts: &[u8],
    n_tokens: usize,
) -> (Vec<f32>, Vec<f32>) {
    let ty = F::TY;
    let nb = k / ty.block_cols();
    let bb = ty.ggml_block_bytes();
    let act = ty.activation();
    let (abb, arb) = (act.block_bytes(), act.row_bytes(k));
    let mut out = vec![0f32; rows * n_tokens];
    let mut mag = vec![0f32; rows * n_tokens];
    for t in 0..n_tokens {
        for r in 0..rows {
            let (mut acc, mut abs) = (0f32, 0f32);
            for b in 0..nb {
                let blk = &src[(r * nb + b) * bb..][..bb];
                let (v, m) = F::reference(blk, &acts[t * arb + b * abb..][..abb]);
                acc += v;
                abs += m;
            }
            out[t * rows + r] = acc;
            mag[t * rows + r] = abs;
        }
    }
    (out, mag)
}

/// The portable kernel: one token at a time, every block of the group.
fn matmul_scalar<F: Format>(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let s = Strides::of(&m);
    for_tiles(&m, groups, 1, |g, t, _| {
        let wg = &w[g * s.nb * s.gbb..][..s.nb * s.gbb];
        let arow = &acts[t * s.arb..][..s.arb];
        let mut acc = [0f32; GROUP];
        for (p, a) in wg.chunks_exact(s.gbb).zip(arow.chunks_exact(s.abb)) {
            F::scalar(p, a, &mut acc);
        }
        out.put(t, g * GROUP, &acc, GROUP.min(m.rows - g * GROUP));
    });
}

/// Runs `F`'s kernel for `isa` (available: checked by the caller).
pub(crate) fn matmul<F: Format>(
    isa: Isa,
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => crate::x86::matmul_avx512::<F>(m, w, acts, groups, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => crate::x86::matmul_avx2::<F>(m, w, acts, groups, out),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => crate::x86::matmul_avx_vnni::<F>(m, w, acts, groups, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if F::NEON => crate::neon::matmul::<F>(m, w, acts, groups, out),
        _ => matmul_scalar::<F>(m, w, acts, groups, out),
    }
}

/// The f32 value of the f16 at byte `i`.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Copies 4 bytes of row `r` into lane `r` of the 64-byte vector at `out[at..]`.
#[inline(always)]
pub(crate) fn put_lane(out: &mut [u8], at: usize, r: usize, src: &[u8]) {
    out[at + 4 * r..at + 4 * r + 4].copy_from_slice(&src[..4]);
}

/// Calls `$body` with `$f` a type alias of the [`Format`] of weight type `$ty`.
macro_rules! with_format {
    ($ty:expr, $f:ident => $body:expr) => {{
        use $crate::formats::*;
        use $crate::WeightType as W;
        match $ty {
            W::Q4_0 => {
                type $f = q4_0::Q4_0;
                $body
            }
            W::Q8_0 => {
                type $f = q8_0::Q8_0;
                $body
            }
            W::Q5_0 => {
                type $f = q5_0::Q5_0;
                $body
            }
            W::Q5_1 => {
                type $f = q5_1::Q5_1;
                $body
            }
            W::IQ4NL => {
                type $f = iq4_nl::IQ4NL;
                $body
            }
            W::Q3K => {
                type $f = q3_k::Q3K;
                $body
            }
            W::Q4K => {
                type $f = q4_k::Q4K;
                $body
            }
            W::Q5K => {
                type $f = q5_k::Q5K;
                $body
            }
            W::Q6K => {
                type $f = q6_k::Q6K;
                $body
            }
            W::IQ4XS => {
                type $f = iq4_xs::IQ4XS;
                $body
            }
        }
    }};
}
pub(crate) use with_format;
