//! x86_64: feature detection, the AVX-512 VNNI, AVX-VNNI and AVX2 tile drivers, and the small SIMD
//! helpers every format's kernels share (nibble unpacking, activation broadcasts, dot-product
//! chains). AVX-VNNI's kernels work on AVX2's 256-bit halves of the group, with its driver.
//!
//! A tile is up to 8 tokens (AVX2: 4 for q4_0, `Format::AVX2_TOKENS`) against one group
//! of 16 rows: for each block along `k` the format unpacks the group's weights once and uses them
//! for every token of the tile. AVX-512 holds the 16 rows in one register (one i32/f32 lane per
//! row); AVX2 holds 8, so its driver runs the two halves of the group: one after the other for
//! tiles of 3–8 tokens, block by block for one or two (`tile256_both`).

use crate::driver::{for_tiles, Format, Prefetch, Strides};
use crate::{MatMul, Out, GROUP};
use std::arch::x86_64::*;

/// Tokens per tile: AVX-512 has 32 registers (16 rows' weights of one block, and one
/// accumulator per token); AVX2 has 16, and takes 4 or 8 by format.
const TILE512: usize = 8;
const TILE256: usize = 4;

type Tile = [[f32; GROUP]; TILE512];

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// AVX2 (with FMA and F16C) and AVX-VNNI: the 256-bit `vpdpbusd` in its VEX form, which CPUs
/// without AVX-512 have (Intel since Alder Lake, AMD since Zen 5).
pub(crate) fn has_avx_vnni() -> bool {
    has_avx2() && is_x86_feature_detected!("avxvnni")
}

/// AVX-512 VBMI (`vpermb`) and GFNI (`vgf2p8affineqb`), which Intel has since Ice Lake and AMD
/// since Zen 4 (not Cascade Lake), for the second AVX-512 kernels ([`Format::AVX512_VBMI`]: the
/// iq4 table lookups, the fifth bits of the q5 types and q6_K's high bits).
/// `GLM_KERNELS_MAX_ISA=avx512-vnni` hides them, so that the kernels can be tested as an AVX-512
/// CPU without them runs them.
pub(crate) fn has_avx512_vbmi() -> bool {
    has_avx512_vnni()
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("gfni")
        && !crate::vbmi_hidden()
}

pub(crate) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// `$f::<n, ..>(args)` for a tile of `n` (1..=4) tokens.
macro_rules! by_n4 {
    ($n:expr, $f:ident::<$($g:ty),*>($($arg:expr),*)) => {
        match $n {
            1 => $f::<1, $($g),*>($($arg),*),
            2 => $f::<2, $($g),*>($($arg),*),
            3 => $f::<3, $($g),*>($($arg),*),
            _ => $f::<4, $($g),*>($($arg),*),
        }
    };
}

/// `$f::<n, ..>(args)` for a tile of `n` (1..=8) tokens.
macro_rules! by_n8 {
    ($n:expr, $f:ident::<$($g:ty),*>($($arg:expr),*)) => {
        match $n {
            1 => $f::<1, $($g),*>($($arg),*),
            2 => $f::<2, $($g),*>($($arg),*),
            3 => $f::<3, $($g),*>($($arg),*),
            4 => $f::<4, $($g),*>($($arg),*),
            5 => $f::<5, $($g),*>($($arg),*),
            6 => $f::<6, $($g),*>($($arg),*),
            7 => $f::<7, $($g),*>($($arg),*),
            _ => $f::<8, $($g),*>($($arg),*),
        }
    };
}

/// Runs `tile(group weights, the tile's activation rows, n tokens, prefetch reach)` over the
/// groups and tokens and stores the results. Only the first tile of tokens of a chunk streams the
/// weights from memory (the others find them in L2), so only it prefetches (the AVX-512 kernels
/// by `Format::PREFETCH_AVX512`, the AVX2 and AVX-VNNI ones by `Format::PREFETCH`).
fn run<F: Format, const AVX512: bool>(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
    tile_tokens: usize,
    tile: impl Fn(&[u8], &[u8], usize, Reach) -> Tile,
) {
    let s = Strides::of(&m);
    // the format's one-token choice and the vendor, once per product rather than per tile
    let one = if AVX512 {
        F::PREFETCH_AVX512
    } else {
        F::PREFETCH
    };
    let amd = amd();
    for_tiles(&m, groups, tile_tokens, |g, t0, n| {
        let res = tile(
            &w[g * s.nb * s.gbb..][..s.nb * s.gbb],
            &acts[t0 * s.arb..][..n * s.arb],
            n,
            if t0 == 0 {
                reach(n, one, amd)
            } else {
                Reach::NONE
            },
        );
        let valid = GROUP.min(m.rows - g * GROUP);
        for (i, r) in res.iter().enumerate().take(n) {
            out.put(t0 + i, g * GROUP, r, valid);
        }
    });
}

pub(crate) fn matmul_avx512<F: Format>(
    m: MatMul,
    w: &[u8],
    acts: &[u8],
    groups: std::ops::Range<usize>,
    out: Out,
) {
    let s = Strides::of(&m);
    if F::AVX512_VBMI && has_avx512_vbmi() {
        run::<F, true>(m, w, acts, groups, out, TILE512, |wg, a, n, reach| {
            // SAFETY: AVX-512 F/BW/VNNI/VBMI and GFNI were detected; pointers as below.
            unsafe { by_n8!(n, tile512_vbmi::<F>(wg.as_ptr(), a.as_ptr(), s, reach)) }
        });
        return;
    }
    run::<F, true>(m, w, acts, groups, out, TILE512, |wg, a, n, reach| {
        // SAFETY: AVX-512 F/BW/VNNI were detected (matmul checks availability); `wg` holds the
        // group's nb blocks and `a` n ≤ TILE512 activation rows (sliced by `run`, sizes checked
        // by MatMul::check), which is all the tile reads.
        unsafe { by_n8!(n, tile512::<F>(wg.as_ptr(), a.as_ptr(), s, reach)) }
    });
}

/// How far ahead of the block being multiplied the weights are prefetched into L2 (bytes) by
/// a tile of `n` tokens: what a core must have in flight to stream from DRAM (latency ×
/// bandwidth ≈ 100 ns × 20 GB/s = 2 KB), with margin. A tile of several tokens always
/// prefetches (on AMD 8 KiB ahead): each block takes n times the work, so the loads no longer
/// overlap by themselves (measured, q4_0 6B, AVX-512, 2 threads: four sequences decoding side
/// by side 25 → 40 t/s, two 18 → 23, one unchanged; `glmtool bench --parallel 1,2,4`,
/// docs/benchmarks.md).
///
/// A tile of one token (decoding) prefetches as the CPU wants it. On AMD (`amd`: measured on
/// Zen 4), by format and instruction set (`one`: `Format::PREFETCH`, `Format::PREFETCH_AVX512`):
/// there the hardware prefetchers stream a block read front to back by themselves, and the
/// prefetch instructions only cost issue slots. On Intel every format streams faster with it,
/// and from nearer (an AMX Xeon VM, 2 threads, the 6B files decoding, `glmtool bench -p 0 -n 32
/// --bandwidth`: q4_0 58 → 82 % of the paired read probe, Q4_K_M 63 → 83 % 8 KiB ahead; 3 KiB
/// ahead was the fastest of 2, 3 and 4 KiB in 5 of 8 alternating runs, 4 KiB faster than 8 in
/// 11 of 12; docs/benchmarks.md). A later session on the same kind of VM found 8 KiB ahead the
/// better one-token distance, and since the kernels' two `vpdpbusd` chains ([`dot_chains`]) the
/// one that reaches the bound (one token's `up` product, 2 threads, `examples/bench.rs --probe`,
/// 3 → 8 KiB: q4_0 84 → 89 %, q4_K 83 → 88 %, q6_K 74 → 78 %, q8_0 95 → 99 %; whole files
/// in docs/benchmarks.md): the latency the distance must cover moves with the host's load, and
/// reaching too far costs only a few lines of L2, so one token now prefetches 8 KiB ahead.
/// Tiles of several tokens prefetch 3 KiB ahead (sequences decoding side by side, `bench
/// --parallel 2,4`: 3 KiB faster than 8 in 8 of 8 paired runs, by 1–6 %; prompts unchanged).
/// Other vendors are taken to be like Intel.
///
/// On AMD some tiles ask for each line a second time, 4 KiB ahead ([`Prefetch::Twice`]): tiles
/// of one token where the format says so, and tiles of 2 tokens (Zen 4, 2 threads,
/// `examples/bench.rs`, `up` from memory: one token where the memory ran at ~50 GB/s, q4_K
/// 79–84 → 90–92 % of the paired probe, q6_K 75–77 → 85–91 %; 2 tokens, the best of 5 passes,
/// q4_K 48–52 → 54–58 GB/s, q6_K 45 → 56; 4 tokens level or 2–5 % slower and 8 tokens level,
/// their arithmetic nearer the limit, so they ask once; docs/benchmarks.md). Not measured on
/// Intel, which asks once.
///
/// `GLM_KERNELS_PREFETCH=<bytes>` sets the distance for every format and tile, for tuning (0:
/// off), `GLM_KERNELS_PREFETCH_AGAIN=<bytes>` the second request's (0: none; it is made only
/// when nearer than the first).
fn reach(n: usize, one: Prefetch, amd: bool) -> Reach {
    static ENV: std::sync::OnceLock<(Option<usize>, Option<usize>)> = std::sync::OnceLock::new();
    let (dist, again) = *ENV.get_or_init(|| {
        let var = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
        (
            var("GLM_KERNELS_PREFETCH"),
            var("GLM_KERNELS_PREFETCH_AGAIN"),
        )
    });
    let (d, a) = match (n, amd, one) {
        (1, true, Prefetch::Off) => (0, 0),
        (1, true, Prefetch::Once) => (8192, 0),
        (1, true, Prefetch::Twice) | (2, true, _) => (8192, 4096),
        // 3 tokens or more
        (_, true, _) => (8192, 0),
        (1, false, _) => (8192, 0),
        (_, false, _) => (3072, 0),
    };
    Reach::new(dist.unwrap_or(d), again.unwrap_or(a))
}

/// Where a tile prefetches the weights: `dist` bytes ahead of the block being multiplied (0:
/// nowhere) and, when `again` is not 0, each line a second time `again` bytes ahead.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Reach {
    dist: usize,
    again: usize,
}

impl Reach {
    /// No prefetching.
    pub(crate) const NONE: Reach = Reach { dist: 0, again: 0 };

    /// `dist` and `again` bytes ahead; a second request no nearer than the first is none.
    fn new(dist: usize, again: usize) -> Reach {
        Reach {
            dist,
            again: if again < dist { again } else { 0 },
        }
    }
}

/// Whether this is an AMD (or Hygon, the same cores) CPU: the vendor string of `cpuid` leaf 0.
/// Read once.
fn amd() -> bool {
    static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD.get_or_init(|| {
        let r = __cpuid(0);
        let mut vendor = [0u8; 12];
        for (i, x) in [r.ebx, r.edx, r.ecx].into_iter().enumerate() {
            vendor[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        &vendor == b"AuthenticAMD" || &vendor == b"HygonGenuine"
    })
}

/// The group block a kernel prefetches into L2 while it multiplies the current one: the block
/// [`Reach`]'s bytes ahead (and again nearer), issued in parts spread over the kernel's steps
/// ([`Ahead::part`]) rather than all at the block's start. A burst of 35–53 line requests per
/// k-quant block, then none while the block is computed, leaves the memory idle part of the
/// time: measured on q6_K (one token, AVX-512, 2 threads, `examples/bench.rs --probe`), 76–82 %
/// of the read probe with the burst, 92–95 % with one part per 16-column sub-block
/// (docs/cpu-kernels.md). On AVX2, for
/// one or two tokens, the first half of the block's lines is spread over the first half of
/// rows' call and the second over the second's ([`Ahead::halves`]; all in the first call
/// before: q4_K, one token's `up` product, 2 threads, where the memory ran at ~52 GB/s, 81–82
/// → 87–92 % of the paired probe, q4_0 88–93 → 91–95 %, q5_0 and q6_K level); for more tokens,
/// which take the halves one after the other, over the first half's call only (the second
/// finds the block in L2).
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    start: *const u8,
    len: usize,
    /// Bytes before `start` that each line is asked for again (0: once only).
    back: usize,
}

impl Ahead {
    /// Nothing to prefetch.
    pub(crate) const NONE: Ahead = Ahead {
        start: std::ptr::null(),
        len: 0,
        back: 0,
    };

    /// The `len` bytes at `p + reach.dist`, and again at `p + reach.again` (none when `dist`
    /// is 0). The addresses may lie past the weights: prefetches never fault, and
    /// `wrapping_add` computes them without claiming they are in bounds.
    #[inline(always)]
    pub(crate) fn new(p: *const u8, reach: Reach, len: usize) -> Ahead {
        if reach.dist == 0 {
            return Ahead::NONE;
        }
        Ahead {
            start: p.wrapping_add(reach.dist),
            len,
            back: if reach.again == 0 {
                0
            } else {
                reach.dist - reach.again
            },
        }
    }

    /// The first and the second half of the block's lines (split near the middle), each to be
    /// prefetched in the parts of one of the two calls that take a group block's two halves of
    /// rows on AVX2, so that the requests come at an even pace over the whole block.
    #[inline(always)]
    pub(crate) fn halves(self) -> (Ahead, Ahead) {
        if self.len == 0 {
            return (Ahead::NONE, Ahead::NONE);
        }
        let at = (self.len / 2) & !63;
        let second = Ahead {
            start: self.start.wrapping_add(at),
            len: self.len - at,
            back: self.back,
        };
        (Ahead { len: at, ..self }, second)
    }

    /// Prefetches part `i` of `n` of the block's lines ([`part_lines`]).
    ///
    /// # Safety
    /// SSE must be available (every x86_64 has it); nothing is dereferenced.
    #[inline(always)]
    pub(crate) unsafe fn part(self, i: usize, n: usize) {
        if self.len == 0 {
            return;
        }
        let base = self.start as usize;
        let (lo, hi) = part_lines(base, self.len, i, n);
        // the first line may start up to 63 bytes before `start`: wrapping offsets
        let first = self.start.wrapping_add(lo.wrapping_sub(base));
        prefetch_lines::<_MM_HINT_T1>(first, hi.saturating_sub(lo));
        if self.back != 0 {
            prefetch_lines::<_MM_HINT_T1>(first.wrapping_sub(self.back), hi.saturating_sub(lo));
        }
    }
}

/// The addresses `[lo, hi)` of the 64-byte lines of part `i` of `n` of the bytes
/// `[base, base + len)`: the lines that start in `[line(base + len·i/n), line(base +
/// len·(i+1)/n))`, the last part up to the line holding the last byte, so that the `n` parts
/// together name every line the bytes touch, once.
#[inline(always)]
fn part_lines(base: usize, len: usize, i: usize, n: usize) -> (usize, usize) {
    let lo = (base + len * i / n) & !63;
    let hi = if i + 1 == n {
        (base + len + 63) & !63
    } else {
        (base + len * (i + 1) / n) & !63
    };
    (lo, hi)
}

/// Asks for the `len` bytes at `p` to be brought into the caches with `HINT` (`_MM_HINT_T0`:
/// every level, `_MM_HINT_T1`: L2 and out), one instruction per 64-byte line. A prefetch never
/// faults, so `p` need not point into an allocation.
#[inline(always)]
pub(crate) unsafe fn prefetch_lines<const HINT: i32>(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        _mm_prefetch::<HINT>(p.wrapping_add(off).cast());
        off += 64;
    }
}

/// The AVX-512 tile functions: `$tile` runs `F::$kernel` (compiled with `$features`, so that
/// the kernel inlines into it) over a group's blocks for a tile of `N` tokens.
macro_rules! tile512 {
    ($features:literal, $tile:ident, $kernel:ident) => {
        #[target_feature(enable = $features)]
        unsafe fn $tile<const N: usize, F: Format>(
            wg: *const u8,
            a: *const u8,
            s: Strides,
            reach: Reach,
        ) -> Tile {
            let mut acc = [_mm512_setzero_ps(); N];
            for b in 0..s.nb {
                let ab: [*const u8; N] = std::array::from_fn(|t| a.add(t * s.arb + b * s.abb));
                let p = wg.add(b * s.gbb);
                touch_header::<F>(p);
                F::$kernel::<N>(p, &ab, Ahead::new(p, reach, s.gbb), &mut acc);
            }
            let mut res = [[0f32; GROUP]; TILE512];
            for (r, acc) in res.iter_mut().zip(&acc) {
                _mm512_storeu_ps(r.as_mut_ptr(), *acc);
            }
            res
        }
    };
}

tile512!("avx512f,avx512bw,avx512vnni", tile512, avx512);
tile512!(
    "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni",
    tile512_vbmi,
    avx512_vbmi
);

/// The 256-bit drivers: `$matmul` runs `F::$kernel` (compiled with `$features`) over the tiles
/// of `$tokens` tokens, with the tile functions `$tile` and `$both` compiled with the same
/// features so that the kernel inlines into them. Written once for AVX2 and AVX-VNNI, whose
/// kernels share the layout and the halves of the group.
macro_rules! driver256 {
    ($features:literal, $matmul:ident, $tile:ident, $both:ident, $kernel:ident, $tokens:ident) => {
        pub(crate) fn $matmul<F: Format>(
            m: MatMul,
            w: &[u8],
            acts: &[u8],
            groups: std::ops::Range<usize>,
            out: Out,
        ) {
            let s = Strides::of(&m);
            run::<F, false>(m, w, acts, groups, out, F::$tokens, |wg, a, n, reach| {
                let mut res = [[0f32; GROUP]; TILE512];
                if n <= 2 {
                    // SAFETY: the features were detected (matmul checks availability); reads
                    // stay inside `wg` (nb group blocks) and `a` (n ≤ 2 activation rows), as
                    // for the AVX-512 tile.
                    unsafe {
                        match n {
                            1 => $both::<1, F>(wg.as_ptr(), a.as_ptr(), s, reach, &mut res),
                            _ => $both::<2, F>(wg.as_ptr(), a.as_ptr(), s, reach, &mut res),
                        }
                    }
                    return res;
                }
                for half in 0..2 {
                    // the first half streams the weights in, the second finds them in L2
                    let reach = if half == 0 { reach } else { Reach::NONE };
                    // SAFETY: the features were detected; reads stay inside `wg` (nb group
                    // blocks) and `a` (n ≤ the format's tile ≤ TILE512 activation rows), as for
                    // the AVX-512 tile.
                    unsafe {
                        if F::$tokens > TILE256 {
                            by_n8!(
                                n,
                                $tile::<F>(wg.as_ptr(), a.as_ptr(), s, half, reach, &mut res)
                            )
                        } else {
                            by_n4!(
                                n,
                                $tile::<F>(wg.as_ptr(), a.as_ptr(), s, half, reach, &mut res)
                            )
                        }
                    }
                }
                res
            });
        }

        /// Rows 8·half .. 8·half+7 of the group.
        #[target_feature(enable = $features)]
        unsafe fn $tile<const N: usize, F: Format>(
            wg: *const u8,
            a: *const u8,
            s: Strides,
            half: usize,
            reach: Reach,
            res: &mut Tile,
        ) {
            let mut acc = [_mm256_setzero_ps(); N];
            for b in 0..s.nb {
                let ab: [*const u8; N] = std::array::from_fn(|t| a.add(t * s.arb + b * s.abb));
                let p = wg.add(b * s.gbb);
                if half == 0 {
                    touch_header::<F>(p);
                }
                F::$kernel::<N>(p, &ab, half, Ahead::new(p, reach, s.gbb), &mut acc);
            }
            for (r, acc) in res.iter_mut().zip(&acc) {
                _mm256_storeu_ps(r.as_mut_ptr().add(8 * half), *acc);
            }
        }

        /// Both halves of the group, block by block, for one or two tokens (decoding), whose
        /// accumulators for all 16 rows fit the registers. Half by half, a core would stream
        /// the weights from memory during the first half's pass only and then compute the
        /// second half from L2 with the memory idle; block by block it streams at an even pace.
        /// Measured on q4_0 6B, 2 threads, `glmtool bench -p 0 -n 32 --bandwidth --cpu-kernels
        /// avx2`: see docs/benchmarks.md.
        #[target_feature(enable = $features)]
        unsafe fn $both<const N: usize, F: Format>(
            wg: *const u8,
            a: *const u8,
            s: Strides,
            reach: Reach,
            res: &mut Tile,
        ) {
            let mut acc = [[_mm256_setzero_ps(); N]; 2];
            for b in 0..s.nb {
                let ab: [*const u8; N] = std::array::from_fn(|t| a.add(t * s.arb + b * s.abb));
                let p = wg.add(b * s.gbb);
                touch_header::<F>(p);
                let (first, second) = Ahead::new(p, reach, s.gbb).halves();
                F::$kernel::<N>(p, &ab, 0, first, &mut acc[0]);
                F::$kernel::<N>(p, &ab, 1, second, &mut acc[1]);
            }
            for (half, acc) in acc.iter().enumerate() {
                for (r, acc) in res.iter_mut().zip(acc) {
                    _mm256_storeu_ps(r.as_mut_ptr().add(8 * half), *acc);
                }
            }
        }
    };
}

driver256!(
    "avx2,fma,f16c",
    matmul_avx2,
    tile256,
    tile256_both,
    avx2,
    AVX2_TOKENS
);
driver256!(
    "avx2,fma,f16c,avxvnni",
    matmul_avx_vnni,
    tile256_vnni,
    tile256_both_vnni,
    avx_vnni,
    AVX_VNNI_TOKENS
);

/// Reads one byte of each 64-byte line of the first `F::HEADER` bytes of the group block at
/// `p`, in address order, before the kernel reads the rest ([`Format::HEADER`]): the loads'
/// values are not used, only the order in which the lines are first missed.
///
/// # Safety
/// `p` must point at a whole group block of `F` (`F::HEADER` ≤ its size).
#[inline(always)]
unsafe fn touch_header<F: Format>(p: *const u8) {
    let mut off = 0;
    while off < F::HEADER {
        // volatile: a plain read whose value is unused would be dropped
        std::ptr::read_volatile(p.add(off));
        off += 64;
    }
}

// ---- helpers shared by the formats ----

/// 4 bytes at `p` as one i32 (a lane's worth of activations).
#[inline(always)]
pub(crate) unsafe fn word(p: *const u8) -> i32 {
    p.cast::<i32>().read_unaligned()
}

/// 2 bytes at `p` as one i16.
#[inline(always)]
pub(crate) unsafe fn half_word(p: *const u8) -> i16 {
    p.cast::<i16>().read_unaligned()
}

/// The f32 at `p`.
#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    p.cast::<f32>().read_unaligned()
}

/// 16 f16 at `p` as f32 lanes (one per row of the group).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn f16x16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

/// The low and high nibbles of each byte of the 64 bytes at `p`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn nibbles512(p: *const u8) -> (__m512i, __m512i) {
    let m4 = _mm512_set1_epi8(0x0f);
    let x = _mm512_loadu_si512(p.cast());
    (
        _mm512_and_si512(x, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4),
    )
}

/// The low nibbles of each byte of the 64 bytes at `p`, and the high nibbles times 16 (each
/// byte with its low nibble cleared): one operation fewer than [`nibbles512`]'s shift and mask.
/// A `vpdpbusd` sum of the latter is 16 times the nibbles' sum (at most 8 · 4 · 240 · 128 < 2^31
/// for 8 vectors), which an arithmetic shift right by 4 undoes exactly. Decoding, where a core's
/// share of the memory stream is what bounds the speed, runs faster for every operation a byte
/// of weights costs: one token's q4_0 product, 2 threads, 86 → 89–92 % of the paired read probe,
/// q4_K 86 → 90 % (docs/benchmarks.md).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn nibbles512_x16(p: *const u8) -> (__m512i, __m512i) {
    let x = _mm512_loadu_si512(p.cast());
    (
        _mm512_and_si512(x, _mm512_set1_epi8(0x0f)),
        _mm512_and_si512(x, _mm512_set1_epi8(0xf0u8 as i8)),
    )
}

/// How many chains [`dot512`] and [`dot256_vnni`] sum `k` vectors in: the even and odd vectors
/// apart from 8 vectors on, added at the end (the same integers: exact). One chain of 8
/// dependent `vpdpbusd` (about 5 cycles each) is what a tile of one token, and even one of 4 or
/// 8, waited on: one core of the Intel Xeon, AVX-512, 1 token (weights in L2) q4_0 +35 %, q4_K
/// +14 %, iq4_xs +6 %; 512 tokens q4_0 +13 %, q5_0 +33 %, iq4_nl +38 %, iq4_xs +17 %, q5_1 +9 %,
/// q4_K even; AVX-VNNI, 512 tokens, q4_0 +37 %, q5_1 +12 %, iq4_xs and q5_0 +6 %, the rest even.
/// q6_K's 4-vector sums were no faster with two (1 token even, 512 tokens −5 %) and stay one
/// chain (`examples/bench.rs --resident --shapes small`, medians of 3 alternating runs; runs of
/// an unchanged kernel spread ±10 %).
const fn dot_chains(k: usize) -> usize {
    if k >= 8 {
        2
    } else {
        1
    }
}

/// `init + Σ_i u[i] · (4 activation bytes at q + 4i, broadcast)` with `vpdpbusd` (u8 × i8, 4
/// products summed into each i32 lane), in [`dot_chains`] chains.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn dot512<const K: usize>(
    init: __m512i,
    u: &[__m512i; K],
    q: *const u8,
) -> __m512i {
    let c = dot_chains(K);
    let mut s = [init, _mm512_setzero_si512()];
    for (i, &u) in u.iter().enumerate() {
        s[i % c] = _mm512_dpbusd_epi32(s[i % c], u, _mm512_set1_epi32(word(q.add(4 * i))));
    }
    if c == 2 {
        _mm512_add_epi32(s[0], s[1])
    } else {
        s[0]
    }
}

/// `acc + f32(s) · (dw · da)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn fma512(acc: __m512, s: __m512i, dw: __m512, da: f32) -> __m512 {
    _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s),
        _mm512_mul_ps(dw, _mm512_set1_ps(da)),
        acc,
    )
}

/// One 32-column block against each token's q8_0 block (`a[t]`: d_a at 0, Σa at 4, the quants
/// at 8): `acc[t] += f32(Σ u·a + off·Σa) · dw · d_a`, with `u` the block's 8 vectors of unsigned
/// weights (columns 4i.. in `u[i]`) and `off` their offset (q5_0 −16, q8_0 and iq4_nl −128).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn block32_512<const N: usize>(
    u: &[__m512i; 8],
    dw: __m512,
    off: i32,
    a: &[*const u8; N],
    acc: &mut [__m512; N],
) {
    for (acc, &a) in acc.iter_mut().zip(a) {
        let s = dot512(_mm512_set1_epi32(off * word(a.add(4))), u, a.add(8));
        *acc = fma512(*acc, s, dw, f32_at(a));
    }
}

/// `init + Σ_i u[i] · (4 activation bytes at q + 4i, broadcast)` with the 256-bit `vpdpbusd`
/// of AVX-VNNI (u8 × i8, 4 products summed into each i32 lane; [`dot512`] on 8 rows), in
/// [`dot_chains`] chains.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
pub(crate) unsafe fn dot256_vnni<const K: usize>(
    init: __m256i,
    u: &[__m256i; K],
    q: *const u8,
) -> __m256i {
    let c = dot_chains(K);
    let mut s = [init, _mm256_setzero_si256()];
    for (i, &u) in u.iter().enumerate() {
        s[i % c] = _mm256_dpbusd_avx_epi32(s[i % c], u, _mm256_set1_epi32(word(q.add(4 * i))));
    }
    if c == 2 {
        _mm256_add_epi32(s[0], s[1])
    } else {
        s[0]
    }
}

/// [`block32_512`] on 8 rows with AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
pub(crate) unsafe fn block32_vnni<const N: usize>(
    u: &[__m256i; 8],
    dw: __m256,
    off: i32,
    a: &[*const u8; N],
    acc: &mut [__m256; N],
) {
    for (acc, &a) in acc.iter_mut().zip(a) {
        let s = dot256_vnni(_mm256_set1_epi32(off * word(a.add(4))), u, a.add(8));
        *acc = fma256(*acc, s, dw, f32_at(a));
    }
}

/// 8 f16 at `p` as f32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// The low and high nibbles of each byte of the 32 bytes at `p`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn nibbles256(p: *const u8) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let x = _mm256_loadu_si256(p.cast());
    (
        _mm256_and_si256(x, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4),
    )
}

/// [`nibbles512_x16`] on the 32 bytes at `p` (for the AVX-VNNI kernels: `vpmaddubsw`'s i16 pairs
/// would overflow with the high nibbles times 16).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn nibbles256_x16(p: *const u8) -> (__m256i, __m256i) {
    let x = _mm256_loadu_si256(p.cast());
    (
        _mm256_and_si256(x, _mm256_set1_epi8(0x0f)),
        _mm256_and_si256(x, _mm256_set1_epi8(0xf0u8 as i8)),
    )
}

/// `vpshufb` indices that repeat, within each 32-bit lane, its low (`[0]`) or its high (`[1]`)
/// i16 (the indices count the bytes of each 128-bit lane): a row's scale pair (sc_j, sc_j+1) to
/// (sc_j, sc_j) or (sc_j+1, sc_j+1), the form `vpmaddwd` takes.
pub(crate) const TWICE: [[i8; 32]; 2] = {
    let mut t = [[0i8; 32]; 2];
    let mut sub = 0;
    while sub < 2 {
        let mut b = 0;
        while b < 32 {
            t[sub][b] = ((b % 16) / 4 * 4 + 2 * sub + b % 2) as i8;
            b += 1;
        }
        sub += 1;
    }
    t
};

/// The 16-column sub-block formats (q3_K, q6_K: i8 scales at `sc`, [j][r]): rows 8·half ..'s
/// scales of sub-blocks j0 and j0 + 1 as an i16 pair per 32-bit lane (lane r: (sc_j0,
/// sc_j0+1)); [`TWICE`] makes each sub-block's `vpmaddwd` operand from it.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn scale_pairs256(sc: *const u8, j0: usize, half: usize) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(
        _mm_loadl_epi64(sc.add(16 * j0 + 8 * half).cast()),
        _mm_loadl_epi64(sc.add(16 * (j0 + 1) + 8 * half).cast()),
    ))
}

/// Adds each token's offset term of sub-blocks j0 and j0 + 1 to its sums: `off_pair` (the
/// rows' scale pairs times the format's offset) against the token's two i16 activation sums of
/// 16, which lie side by side in its q8_K block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn add_offsets256<const N: usize>(
    sumi: &mut [__m256i; N],
    off_pair: __m256i,
    a: &[*const u8; N],
    j0: usize,
) {
    for t in 0..N {
        let bs = _mm256_set1_epi32(word(a[t].add(crate::act::A_BS16 + 2 * j0)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(off_pair, bs));
    }
}

/// `Σ_i u[i] · (4 activation bytes at q + 4i, broadcast)` as pairs summed in i16
/// (`vpmaddubsw`): the caller guarantees that K·2·max(u)·128 stays below 32768.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn maddubs256<const K: usize>(u: &[__m256i], q: *const u8) -> __m256i {
    let mut s16 = _mm256_setzero_si256();
    for (i, &u) in u.iter().take(K).enumerate() {
        let x = _mm256_set1_epi32(word(q.add(4 * i)));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u, x));
    }
    s16
}

/// i16 pairs summed into i32 lanes (`vpmaddwd` by 1).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn pairs256(s16: __m256i) -> __m256i {
    _mm256_madd_epi16(s16, _mm256_set1_epi16(1))
}

/// Signed weights `w` (|w| ≤ 127) · broadcast activations, as i16 pairs: `vpmaddubsw` takes
/// |w| as the unsigned side and the activations with w's sign, so no pair exceeds 2·127·127.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn signed_pairs256(w_abs: __m256i, w: __m256i, q: *const u8) -> __m256i {
    let x = _mm256_set1_epi32(word(q));
    _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w))
}

/// `acc + f32(s) · (dw · da)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn fma256(acc: __m256, s: __m256i, dw: __m256, da: f32) -> __m256 {
    _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(s),
        _mm256_mul_ps(dw, _mm256_set1_ps(da)),
        acc,
    )
}

/// 8 scales (u8 or i8 at `p`) as i32 lanes (for `vpmulld` of i32 sums).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn scales32(p: *const u8, signed: bool) -> __m256i {
    let b = _mm_loadl_epi64(p.cast());
    if signed {
        _mm256_cvtepi8_epi32(b)
    } else {
        _mm256_cvtepu8_epi32(b)
    }
}

/// 8 scales (u8 or i8 at `p`) as i32 lanes holding the scale in both 16-bit halves, for
/// `vpmaddwd` of i16 pairs.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn scales16(p: *const u8, signed: bool) -> __m256i {
    let s = scales32(p, signed);
    _mm256_or_si256(
        _mm256_slli_epi32::<16>(s),
        _mm256_and_si256(s, _mm256_set1_epi32(0xffff)),
    )
}

/// Bit `b` (0..=7) of each byte of `x` moved to bit 4 (value 16), every other bit cleared: the
/// fifth bit of 5-bit quants stored as bit planes (q5_0, q5_1, q5_K). The 16-bit shifts never
/// carry a bit from the neighbouring byte into bit 4 (shifts of at most 4 left or 3 right).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn bit_to_4_512(x: __m512i, b: usize) -> __m512i {
    let s = match b {
        0 => _mm512_slli_epi16::<4>(x),
        1 => _mm512_slli_epi16::<3>(x),
        2 => _mm512_slli_epi16::<2>(x),
        3 => _mm512_slli_epi16::<1>(x),
        4 => x,
        5 => _mm512_srli_epi16::<1>(x),
        6 => _mm512_srli_epi16::<2>(x),
        _ => _mm512_srli_epi16::<3>(x),
    };
    _mm512_and_si512(s, _mm512_set1_epi8(0x10))
}

/// The part of a `vgf2p8affineqb` bit matrix that copies bit `src` of each byte to bit `dst`
/// (output bit i's row is byte 7 − i of the qword). Parts or-ed together move several bits; the
/// output bits no part names are cleared.
pub(crate) const fn gf_move(src: usize, dst: usize) -> i64 {
    (1i64 << src) << (8 * (7 - dst))
}

/// [`bit_to_4_512`] with GFNI: one `vgf2p8affineqb` ([`gf_move`]) where the shifts take a shift
/// and a mask.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
#[inline]
pub(crate) unsafe fn bit_to_4_gfni(x: __m512i, b: usize) -> __m512i {
    _mm512_gf2p8affine_epi64_epi8::<0>(x, _mm512_set1_epi64(gf_move(b, 4)))
}

/// The low nibble of each byte of `lo` with bits 4-7 of `hi`'s (one `vpternlogd`, `0x0f ? lo :
/// hi` bit by bit): with `hi` from [`bit_to_4_gfni`] a 5-bit value, two operations fewer than
/// masking both and `or`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,gfni")]
#[inline]
pub(crate) unsafe fn merge_nibble(lo: __m512i, hi: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0xe4>(lo, hi, _mm512_set1_epi8(0x0f))
}

/// [`bit_to_4_512`] for AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn bit_to_4_256(x: __m256i, b: usize) -> __m256i {
    let s = match b {
        0 => _mm256_slli_epi16::<4>(x),
        1 => _mm256_slli_epi16::<3>(x),
        2 => _mm256_slli_epi16::<2>(x),
        3 => _mm256_slli_epi16::<1>(x),
        4 => x,
        5 => _mm256_srli_epi16::<1>(x),
        6 => _mm256_srli_epi16::<2>(x),
        _ => _mm256_srli_epi16::<3>(x),
    };
    _mm256_and_si256(s, _mm256_set1_epi8(0x10))
}

#[cfg(test)]
mod tests {
    use super::{amd, part_lines, reach, Ahead, Reach};
    use crate::driver::Prefetch;

    #[test]
    fn one_token_prefetch_follows_the_vendor() {
        if std::env::var_os("GLM_KERNELS_PREFETCH").is_some()
            || std::env::var_os("GLM_KERNELS_PREFETCH_AGAIN").is_some()
        {
            eprintln!("skipped: GLM_KERNELS_PREFETCH(_AGAIN) overrides the distances");
            return;
        }
        let (none, once, twice) = (
            Reach::new(0, 0),
            Reach::new(8192, 0),
            Reach::new(8192, 4096),
        );
        // AMD: the format's choice for its instruction set
        assert_eq!(reach(1, Prefetch::Off, true), none);
        assert_eq!(reach(1, Prefetch::Once, true), once);
        assert_eq!(reach(1, Prefetch::Twice, true), twice);
        // tiles of several tokens on AMD: always, twice for 2 tokens
        for one in [Prefetch::Off, Prefetch::Once, Prefetch::Twice] {
            assert_eq!(reach(2, one, true), twice);
            assert_eq!(reach(3, one, true), once);
            assert_eq!(reach(8, one, true), once);
        }
        // any other vendor: always once, one token 8 KiB ahead, several 3 KiB
        for one in [Prefetch::Off, Prefetch::Once, Prefetch::Twice] {
            assert_eq!(reach(1, one, false), once);
            for n in [2, 8] {
                assert_eq!(reach(n, one, false), Reach::new(3072, 0));
            }
        }
        // a second request no nearer than the first is dropped
        assert_eq!(Reach::new(4096, 4096), Reach::new(4096, 0));
        assert_eq!(Reach::new(0, 4096), none);
    }

    #[test]
    fn vendor_matches_proc_cpuinfo() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("skipped: no /proc/cpuinfo");
            return;
        };
        let Some(vendor) = info.lines().find_map(|l| {
            l.strip_prefix("vendor_id")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        }) else {
            eprintln!("skipped: /proc/cpuinfo names no vendor_id");
            return;
        };
        assert_eq!(
            amd(),
            vendor == "AuthenticAMD" || vendor == "HygonGenuine",
            "{vendor}"
        );
    }

    #[test]
    fn prefetch_parts_name_every_line_once() {
        for base in [0usize, 1, 63, 64, 100, 4096 + 17] {
            for len in [1usize, 63, 64, 65, 288, 2208, 2304, 2816, 3360] {
                for n in [1usize, 4, 8, 16] {
                    let mut next = base & !63;
                    for i in 0..n {
                        let (lo, hi) = part_lines(base, len, i, n);
                        assert!(lo % 64 == 0 && hi % 64 == 0, "{base} {len} {n} {i}");
                        assert!(hi >= lo, "{base} {len} {n} {i}");
                        // contiguous: each part starts where the last one ended (or is empty)
                        if hi > lo {
                            assert_eq!(lo, next, "{base} {len} {n} {i}");
                            next = hi;
                        }
                    }
                    assert_eq!(next, (base + len + 63) & !63, "{base} {len} {n}");
                }
            }
        }
    }

    #[test]
    fn halves_name_every_line() {
        for p in [0usize, 1, 63, 64, 100, 4096 + 17] {
            for len in [1usize, 63, 64, 65, 288, 2208, 2304, 2816, 3360] {
                for n in [1usize, 4, 8] {
                    let reach = Reach::new(8192, 4096);
                    let whole = Ahead::new(std::ptr::null::<u8>().wrapping_add(p), reach, len);
                    let (first, second) = whole.halves();
                    assert_eq!((first.back, second.back), (4096, 4096));
                    let mut lines = Vec::new();
                    for half in [first, second] {
                        for i in 0..n {
                            let (lo, hi) = part_lines(half.start as usize, half.len, i, n);
                            lines.extend((lo..hi).step_by(64));
                        }
                    }
                    let start = p + 8192;
                    let want: Vec<usize> = ((start & !63)..start + len).step_by(64).collect();
                    // every line of the block, at most the one at the seam twice
                    assert!(lines.len() <= want.len() + 1, "{p} {len} {n}");
                    lines.dedup();
                    assert_eq!(lines, want, "{p} {len} {n}");
                }
            }
        }
        let (a, b) = Ahead::NONE.halves();
        assert_eq!((a.len, b.len), (0, 0));
    }
}
