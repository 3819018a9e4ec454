#!/usr/bin/env bash
# Regenerates tests/fixtures/quant-golden/digests.txt: what llama.cpp 2026's ggml (its
# libggml-base, as llama-quantize links it) makes of awkward rows, for every type glmtool writes,
# with and without an importance matrix. crates/convert/tests/quant_golden.rs compares.
#
#   bash tools/quant-golden/make.sh            # needs ../shared/tools/build-llama-cpp.sh's build
#   bash tools/quant-golden/make.sh --raw DIR  # also keeps the raw bytes in DIR (debugging)
#
# LLAMA_SRC overrides the llama.cpp tree (default ~/.cache/llama-anchor/src/vendor/llama.cpp).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
src=${LLAMA_SRC:-$HOME/.cache/llama-anchor/src/vendor/llama.cpp}
lib=$src/build/ggml/src/libggml-base.a
[ -f "$lib" ] || { echo "missing $lib (run ../shared/tools/build-llama-cpp.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -I"$src/ggml/include" "$root/tools/quant-golden/oracle.c" "$lib" -lm -lpthread -lstdc++ -fopenmp \
    -o "$tmp/oracle"
out=$root/tests/fixtures/quant-golden/digests.txt
mkdir -p "$(dirname "$out")"
{
    "$tmp/oracle" "$@"
    echo "# llama.cpp $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$out"
echo "wrote $out"
