//! How fast this machine streams memory: the bound that decoding runs against.
//!
//! Decoding one token reads every weight matrix once, so its speed is at most
//! `read bandwidth / bytes read per token`. [`ReadProbe`] measures that bandwidth the way the
//! kernels read the weights: a buffer much larger than the caches, backed by 2 MiB pages where
//! Linux grants them (as the runtime asks for its repacked weights), read from start to end by
//! `n` threads at once, each its own contiguous share, with the widest loads the CPU has and
//! several independent sums so no add chain limits the loads. The best of a few passes is the
//! bound: a pass can only be slowed down (by other work on the machine), never sped up.
//!
//! `glmtool bench --bandwidth` runs a probe before every repetition of a generation test and
//! reports each repetition's bytes per second against the probe taken just before it, so a
//! machine whose bandwidth drifts (shared hosts do, by tens of percent within a minute) moves
//! both sides of the ratio alike.

use std::time::Instant;

/// A buffer to stream, allocated and written once.
pub struct ReadProbe {
    words: Vec<u64>,
}

/// Words (u64) summed per step: 256 bytes, four AVX-512 or eight AVX2 loads into as many sums.
const STEP: usize = 32;

impl ReadProbe {
    /// A probe of `bytes` bytes (rounded down to whole 256-byte steps, at least one). Use far
    /// more than the last-level cache: 256 MiB or more.
    pub fn new(bytes: usize) -> ReadProbe {
        let n = (bytes / 8 / STEP).max(1) * STEP;
        let mut words: Vec<u64> = Vec::with_capacity(n);
        advise_huge_pages(words.as_ptr() as usize, n * 8);
        // every page written (with distinct values) so the reads come from memory, not from a
        // shared zero page
        words.extend((0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        ReadProbe { words }
    }

    /// Bytes of the buffer.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Read bandwidth in bytes per second: the best of `passes` passes of `n_threads` threads
    /// each summing its contiguous share of the buffer.
    pub fn measure(&self, n_threads: usize, passes: usize) -> f64 {
        let nth = n_threads.max(1);
        let steps = self.words.len() / STEP;
        let per = steps.div_ceil(nth) * STEP;
        let mut best = f64::INFINITY;
        for _ in 0..passes.max(1) {
            let t = Instant::now();
            std::thread::scope(|s| {
                for share in self.words.chunks(per) {
                    s.spawn(move || std::hint::black_box(sum(share)));
                }
            });
            best = best.min(t.elapsed().as_secs_f64());
        }
        self.bytes() as f64 / best
    }
}

/// The wrapping sum of `w` (a whole number of steps), on the widest vectors this CPU has.
fn sum(w: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above); the function only reads `w`.
            return unsafe { sum_avx512(w) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the function only reads `w`.
            return unsafe { sum_avx2(w) };
        }
    }
    sum_portable(w)
}

/// Four 512-bit sums, one load each per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(w: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 4];
    for step in w.chunks_exact(STEP) {
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: words 8i .. 8i + 8 of a STEP-word step are in bounds.
            *a = _mm512_add_epi64(*a, _mm512_loadu_si512(step.as_ptr().add(8 * i).cast()));
        }
    }
    let mut out = [0u64; STEP];
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: 8 words of `out` from 8i.
        _mm512_storeu_si512(out.as_mut_ptr().add(8 * i).cast(), *a);
    }
    out.iter().fold(0, |s, &a| s.wrapping_add(a))
}

/// Eight 256-bit sums, one load each per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(w: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 8];
    for step in w.chunks_exact(STEP) {
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: words 4i .. 4i + 4 of a STEP-word step are in bounds.
            *a = _mm256_add_epi64(*a, _mm256_loadu_si256(step.as_ptr().add(4 * i).cast()));
        }
    }
    let mut out = [0u64; STEP];
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: 4 words of `out` from 4i.
        _mm256_storeu_si256(out.as_mut_ptr().add(4 * i).cast(), *a);
    }
    out.iter().fold(0, |s, &a| s.wrapping_add(a))
}

/// `STEP` independent sums, one per word of a step (the vector versions' result).
fn sum_portable(w: &[u64]) -> u64 {
    let mut acc = [0u64; STEP];
    for step in w.chunks_exact(STEP) {
        for (a, &x) in acc.iter_mut().zip(step) {
            *a = a.wrapping_add(x);
        }
    }
    acc.iter().fold(0, |s, &a| s.wrapping_add(a))
}

/// Asks Linux for 2 MiB pages (`madvise(MADV_HUGEPAGE)`, which transparent huge pages honour in
/// their default `madvise` mode) for the whole 2 MiB pages inside the `len` bytes at address
/// `start`: call it on memory the caller owns, before it is first written. Streaming from 4 KiB
/// pages costs a TLB miss per page and restarts the hardware prefetchers at every page boundary.
/// Only advice: nothing happens on other systems or where the range holds no whole huge page.
pub fn advise_huge_pages(start: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (from, to) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
        if to > from {
            // SAFETY: [from, to) lies inside an allocation of `len` bytes at `start` that the
            // caller owns; the advice changes how its pages are backed, never their contents.
            let _ =
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_word_once() {
        let w: Vec<u64> = (0..STEP as u64 * 5).map(|i| i * i + 1).collect();
        let expect = w.iter().fold(0u64, |s, &x| s.wrapping_add(x));
        assert_eq!(sum(&w), expect);
        assert_eq!(sum_portable(&w), expect);
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                assert_eq!(unsafe { sum_avx512(&w) }, expect);
            }
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                assert_eq!(unsafe { sum_avx2(&w) }, expect);
            }
        }
    }

    #[test]
    fn measures_a_positive_finite_rate() {
        let p = ReadProbe::new(1 << 20);
        assert_eq!(p.bytes(), 1 << 20);
        let bw = p.measure(2, 2);
        assert!(bw.is_finite() && bw > 0.0, "{bw}");
        // a buffer smaller than a step still holds one
        assert_eq!(ReadProbe::new(10).bytes(), STEP * 8);
    }
}
