#!/usr/bin/env bash
# Builds an AVX2-only llama-bench (AVX2, FMA, F16C, BMI2; no AVX-512, no AVX-VNNI): the anchor for
# `glmtool bench --cpu-kernels avx2` on a machine whose CPU has AVX-512, when no AVX2-only machine is
# at hand. Same llama.cpp as ../shared/tools/build-llama-cpp.sh (the one PyPI's llama-cpp-python sdist
# vendors), built outside the repository: a measuring stick, nothing of it goes into the project.
#
# usage: bash tools/build-llama-cpp-avx2.sh [DIR]     (default ~/.cache/llama-avx2; ~10 min on 2 cores)
#   env: SRC (a llama.cpp source tree; default: the one build-llama-cpp.sh unpacked into
#        ~/.cache/llama-anchor, else downloaded here as that script does)
# then:  LLAMA_DIR=DIR KERNELS=avx2 bash tools/bench-cpu.sh MODEL.gguf
set -eu
DIR=${1:-$HOME/.cache/llama-avx2}
VER=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
SRC=${SRC:-$HOME/.cache/llama-anchor/src/vendor/llama.cpp}
mkdir -p "$DIR"
DIR=$(realpath "$DIR")
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  cd "$DIR"
  python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VER" -d dl -q
  mkdir -p src && tar xzf dl/llama_cpp_python-$VER.tar.gz -C src --strip-components=1
  SRC=$DIR/src/vendor/llama.cpp
fi
cd "$SRC"
cmake -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
  -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >"$DIR/cmake.log" 2>&1
cmake --build "$DIR/build" -j "$(nproc)" --target llama-bench >>"$DIR/cmake.log" 2>&1
mkdir -p "$DIR/bin" && cp "$DIR/build/bin/llama-bench" "$DIR/bin/"
# the check that the build is what it claims: no 512-bit register in the binary
if [ "$(objdump -d "$DIR/bin/llama-bench" | grep -c zmm || true)" != 0 ]; then
  echo "build-llama-cpp-avx2.sh: $DIR/bin/llama-bench uses AVX-512 registers" >&2
  exit 1
fi
echo "built: $DIR/bin/llama-bench (AVX2 only)"
