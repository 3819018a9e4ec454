#!/usr/bin/env bash
# build-cuda.sh — build `glmtool` with the CUDA backend on a machine without a system CUDA install.
#
#   bash tools/build-cuda.sh                            # target/cuda/release/glmtool
#   bash tools/build-cuda.sh test --release --no-run -p glm-runtime --features cuda --test gpu
#                                                       # any cargo command, with the CUDA settings
#
# The CUDA 13.0 compiler, headers and libraries come from PyPI wheels (nvidia-cuda-nvcc & co.),
# installed into a venv under target/cuda-toolkit/ and arranged as a toolkit root that nvcc, CMake's
# FindCUDAToolkit and the cc crate accept (following ../shared/tools/cuda-recipe.sh). ggml b2757's
# CUDA code compiles unmodified with nvcc 13.0.
#
# Output: target/cuda/release/glmtool (a separate target dir, so the CPU build is left alone).
#
# Environment:
#   CUDAARCHS   GPU generations to compile for (CMake syntax). Default "75;86;89;90;120-virtual":
#               Turing (RTX 20xx/GTX 16xx), Ampere laptop/desktop (RTX 30xx, A-series), Ada (RTX 40xx),
#               Hopper (H100/H200) as machine code, and PTX for Blackwell (RTX 50xx, B200) which the
#               driver compiles on first use. CUDA 13 supports 7.5 and newer only. Each generation adds
#               about the same nvcc time (docs/gpu.md has the measured cost); a build for one GPU of
#               your own is fastest with e.g. CUDAARCHS=89.
#   CUDA_PATH   use an existing CUDA 13 toolkit instead of the wheels (must have bin/nvcc, lib64/).
#   GLMTOOL_CUDA_RPATH  extra run-time search path for libcublas.so.13 baked into the binary
#               (default: none; see docs/gpu.md for how the binary finds its libraries).
#   PORTABLE    1 (default): CPU code for any AVX2+FMA+F16C x86-64; 0: -march=native of this machine.
#
# Run time needs: libcuda.so.1 (the NVIDIA driver, >= 580 for CUDA 13) and libcublas.so.13 +
# libcublasLt.so.13 (PyPI `nvidia-cublas`, a CUDA 13 toolkit, or PyTorch cu130's venv). cudart is
# linked statically.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/target/cuda-toolkit"
VENV="$WORK/venv"
TK="$WORK/cuda13"

bash "$ROOT/tools/install-deps.sh"

if [ -z "${CUDA_PATH:-}" ]; then
  # ---- CUDA 13.0 from PyPI (the 13.0 line matches driver 580 / PyTorch cu130).
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14
  CU=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
  [ -x "$CU/bin/nvcc" ] || { echo "build-cuda.sh: nvcc missing in $CU" >&2; exit 1; }

  # ---- A toolkit root. The wheels put everything under nvidia/cu13/{bin,include,lib,nvvm};
  # nvcc.profile wants TOP/lib64, FindCUDAToolkit wants libcudart.so, libcublas.so and
  # lib64/stubs/libcuda.so, the cc crate searches <nvcc>/../targets/x86_64-linux/lib.
  if [ ! -e "$TK/.complete" ]; then
    rm -rf "$TK"; mkdir -p "$TK/bin" "$TK/lib64/stubs" "$TK/targets/x86_64-linux"
    # Hard links or copies, not symlinks: nvcc finds nvcc.profile through /proc/self/exe.
    cp -al "$CU/bin/." "$TK/bin/" 2>/dev/null || cp -a "$CU/bin/." "$TK/bin/"
    ln -s "$CU/include" "$TK/include"
    ln -s "$CU/nvvm" "$TK/nvvm"
    for f in "$CU"/lib/*; do ln -s "$f" "$TK/lib64/$(basename "$f")"; done
    for l in cudart cublas cublasLt; do ln -sf "lib$l.so.13" "$TK/lib64/lib$l.so"; done
    ln -s ../../include "$TK/targets/x86_64-linux/include"
    ln -s ../../lib64 "$TK/targets/x86_64-linux/lib"
    # Link-time stand-in for the driver's libcuda.so.1: every cu* entry point of cuda.h, each
    # returning CUDA_ERROR_STUB_LIBRARY (34). Its soname makes the binary load the real driver.
    { grep -oE 'CUDAAPI[[:space:]]+cu[A-Za-z0-9_]+' "$CU/include/cuda.h" | awk '{print $2}'
      grep -oE '#define[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]+cu[A-Za-z0-9_]+' "$CU/include/cuda.h" | awk '{print $3}'
    } | sort -u | awk '{printf "int %s(void){return 34;}\n", $1}' > "$TK/lib64/stubs/cuda_stub.c"
    gcc -shared -fPIC -o "$TK/lib64/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$TK/lib64/stubs/cuda_stub.c"
    touch "$TK/.complete"
  fi
  export CUDA_PATH="$TK"
fi
"$CUDA_PATH/bin/nvcc" --version | tail -1

# ---- CMake settings for ggml: ours (tools/ggml-cpu.cmake), plus no -march=native when PORTABLE.
mkdir -p "$WORK"
TOOLCHAIN="$WORK/ggml-cuda.cmake"
{
  echo "include(\"$ROOT/tools/ggml-cpu.cmake\")"
  [ "${PORTABLE:-1}" = 1 ] && echo 'set(LLAMA_NATIVE OFF CACHE BOOL "no -march=native" FORCE)'
} > "$TOOLCHAIN"

export CUDAToolkit_ROOT="$CUDA_PATH" PATH="$CUDA_PATH/bin:$PATH"
export CUDAARCHS="${CUDAARCHS:-75;86;89;90;120-virtual}"
export CMAKE_TOOLCHAIN_FILE="$TOOLCHAIN"
export CARGO_TARGET_DIR="$ROOT/target/cuda"
# The rpath: next to the binary (lib/), then the optional extra path.
RPATH='$ORIGIN/lib'
[ -n "${GLMTOOL_CUDA_RPATH:-}" ] && RPATH="$RPATH:$GLMTOOL_CUDA_RPATH"
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$RPATH"
# ggml-sys's build script does not rerun when these variables change; a stamp of them does it for us.
STAMP="$CARGO_TARGET_DIR/.cuda-settings"
SETTINGS="$CUDA_PATH|$CUDAARCHS|${PORTABLE:-1}"
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$SETTINGS" ]; then
  cargo clean -p ggml-sys-bleedingedge --release >/dev/null 2>&1 || true
  echo "$SETTINGS" > "$STAMP"
fi
echo "build-cuda.sh: CUDAARCHS=$CUDAARCHS, target dir $CARGO_TARGET_DIR"
cd "$ROOT"
if [ $# -eq 0 ]; then
  time cargo build --release -p glmtool --features cuda
  echo "build-cuda.sh: built $CARGO_TARGET_DIR/release/glmtool"
else
  cargo "$@"
fi
