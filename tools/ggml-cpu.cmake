# CMake settings for the bundled ggml (llama.cpp b2757), passed by .cargo/config.toml through
# CMAKE_TOOLCHAIN_FILE (the cmake crate forwards it; ggml-sys-bleedingedge's build script has no
# other way in). After editing: `cargo clean -p ggml-sys-bleedingedge`.
#
# llamafile's tinyBLAS kernels are off: in b2757 its q4_0 x q8_0 kernel is several times slower
# than ggml's own dot products here (docs/benchmarks.md has the measurement).
set(LLAMA_LLAMAFILE OFF CACHE BOOL "llamafile sgemm" FORCE)

# Metal builds (feature `metal`, macOS only) embed the shader source in the binary, so glmtool
# needs no ggml-metal.metal file at run time. Ignored everywhere else.
set(LLAMA_METAL_EMBED_LIBRARY ON CACHE BOOL "embed the Metal shaders" FORCE)

# GLMTOOL_GGML_X86_64_V3=1 (with its own CARGO_TARGET_DIR, see .ci/run): build ggml for plain
# x86-64-v3 — AVX2, FMA, F16C, no AVX-512 — instead of -march=native, so an AVX-512 machine runs
# the code an AVX2-only laptop runs.
if("$ENV{GLMTOOL_GGML_X86_64_V3}" STREQUAL "1")
    set(LLAMA_NATIVE OFF CACHE BOOL "llama: -march=native" FORCE)
    set(LLAMA_AVX ON CACHE BOOL "llama: AVX" FORCE)
    set(LLAMA_AVX2 ON CACHE BOOL "llama: AVX2" FORCE)
    set(LLAMA_FMA ON CACHE BOOL "llama: FMA" FORCE)
    set(LLAMA_F16C ON CACHE BOOL "llama: F16C" FORCE)
    set(LLAMA_AVX512 OFF CACHE BOOL "llama: AVX512" FORCE)
    set(LLAMA_AVX512_VBMI OFF CACHE BOOL "llama: AVX512-VBMI" FORCE)
    set(LLAMA_AVX512_VNNI OFF CACHE BOOL "llama: AVX512-VNNI" FORCE)
endif()
