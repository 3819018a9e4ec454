//! One file per ggml block format: its packed layout (the comment at the top of each file), the
//! reference product on ggml's own blocks, and its kernels (portable, AVX2, AVX-512 VNNI and, for
//! the 32-column formats, NEON). The shared walk over groups, tokens and blocks is
//! `crate::driver`; the activation quantizers are `crate::act`.

pub(crate) mod iq4_nl;
pub(crate) mod iq4_xs;
pub(crate) mod q3_k;
pub(crate) mod q4_0;
pub(crate) mod q4_k;
pub(crate) mod q5_0;
pub(crate) mod q5_1;
pub(crate) mod q5_k;
pub(crate) mod q6_k;
pub(crate) mod q8_0;
