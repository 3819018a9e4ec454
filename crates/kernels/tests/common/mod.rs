//! Shared by glm-kernels' tests and its micro benchmarks (examples/bench.rs and attn_bench.rs
//! include this file by path): deterministic pseudo-random data, and copies on 2 MiB pages.

/// xorshift64: the same sequence for the same seed on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A copy of `src`, on 2 MiB pages if `huge` (Linux's transparent huge pages in `madvise` mode:
/// the advice comes before the first write), as the runtime's weights and KV cache.
#[allow(dead_code)] // the benchmarks' only
pub fn copy(src: &[u8], huge: bool) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::with_capacity(src.len());
    if huge {
        glm_kernels::advise_huge_pages(v.as_ptr() as usize, src.len());
    }
    v.extend_from_slice(src);
    v
}
