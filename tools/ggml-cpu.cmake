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
