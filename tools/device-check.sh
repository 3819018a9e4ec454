#!/usr/bin/env bash
# device-check.sh — the GPU checks of glmtool, for a machine with an NVIDIA GPU (H100/H200 here).
#
#   bash tools/device-check.sh prepare     # here (no GPU needed): build and bundle, ~5 min
#   bash tools/device-check.sh run         # on the GPU machine, from the repository root
#
# prepare: builds the CUDA glmtool and the GPU test binaries for sm_90 (tools/build-cuda.sh,
#   CUDAARCHS=90 unless set), strips them into target/device-check/ (~45 MB) with the ChatGLM3
#   config and tokenizer from ../shared/reference/chatglm3. With the device tool, carry
#   "target/device-check" and run `bash tools/device-check.sh run` with timeout_s 540.
# run: writes everything to $OUT/device-check.log (or /tmp) and prints it:
#   1. the host (GPU, driver, CPU) and the libraries the binary loads;
#   2. the GPU tests: every graph op GPU vs CPU (glm-ggml gpu_ops), the fixture's logits and
#      perplexity GPU vs CPU at full and partial offload, compute buffers vs the plan
#      (glm-runtime gpu);
#   3. `glmtool perplexity` on the fixture (f16, q8_0, q4_0): CPU, full offload, one layer;
#   4. a random-weight ChatGLM3-6B-shaped checkpoint (tools/make_random_checkpoint.py --fast),
#      converted to q4_0 and q8_0; `glmtool bench` pp512/tg128 at full offload, half the
#      layers, a 2 GiB VRAM budget and CPU only; `glmtool perplexity` GPU vs CPU on it.
# Typical cost on an H100 box: about 5 minutes after the machine is up.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE="$ROOT/target/device-check"

prepare() {
  set -e
  export CUDAARCHS="${CUDAARCHS:-90}"
  bash "$ROOT/tools/build-cuda.sh"
  local log
  log=$(bash "$ROOT/tools/build-cuda.sh" test --release --no-run -p glm-ggml -p glm-runtime \
        --features cuda --test gpu_ops --test gpu 2>&1) || { echo "$log"; exit 1; }
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE/ref"
  strip -o "$BUNDLE/glmtool" "$ROOT/target/cuda/release/glmtool"
  for t in gpu_ops gpu; do
    local exe
    exe=$(echo "$log" | grep -o "target/cuda/release/deps/$t-[0-9a-f]*" | tail -1)
    [ -n "$exe" ] || { echo "device-check.sh: test binary $t not found in:"; echo "$log"; exit 1; }
    strip -o "$BUNDLE/test-$t" "$ROOT/$exe"
  done
  local ref="$ROOT/../shared/reference/chatglm3"
  cp "$ref/config.json" "$ref/tokenizer.model" "$BUNDLE/ref/"
  [ -e "$ref/tokenizer_config.json" ] && cp "$ref/tokenizer_config.json" "$BUNDLE/ref/"
  # The test binaries find the fixture through the path they were built at.
  echo "$ROOT" > "$BUNDLE/BUILD_ROOT"
  du -sh "$BUNDLE"
  echo "device-check.sh: ready; carry target/device-check and run: bash tools/device-check.sh run"
}

run() {
  local out="${OUT:-/tmp}" work=/tmp/glmtool-device-check
  mkdir -p "$out" "$work"
  exec > >(tee "$out/device-check.log") 2>&1
  local G="$BUNDLE/glmtool"
  [ -x "$G" ] || { echo "no $G: run 'bash tools/device-check.sh prepare' here first and carry target/device-check"; exit 1; }

  echo "== host"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv,noheader
  grep -m1 "model name" /proc/cpuinfo; echo "cores: $(nproc)"
  # libcublas.so.13 from the machine's PyTorch venv (nvidia-cublas wheel), else anywhere.
  local cu13
  cu13=$(python3 -c 'import nvidia.cu13,os;print(os.path.join(list(nvidia.cu13.__path__)[0],"lib"))' 2>/dev/null)
  [ -n "$cu13" ] && [ -e "$cu13/libcublas.so.13" ] || cu13=$(dirname "$(find / -xdev -name libcublas.so.13 2>/dev/null | head -1)")
  export LD_LIBRARY_PATH="$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldconfig -p | grep -q 'libcuda.so.1 ' || export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
  ldd "$G" | grep -E "cuda|cublas|not found"
  # The test binaries read the fixture at the path they were built at.
  local built
  built=$(cat "$BUNDLE/BUILD_ROOT")
  if [ "$built" != "$ROOT" ] && [ ! -e "$built" ]; then mkdir -p "$(dirname "$built")" && ln -s "$ROOT" "$built"; fi

  echo "== GPU tests"
  "$BUNDLE/test-gpu_ops" --nocapture --test-threads 1; echo "gpu_ops rc=$?"
  "$BUNDLE/test-gpu" --nocapture --test-threads 1; echo "gpu (runtime) rc=$?"

  echo "== fixture perplexity: CPU vs GPU (glmtool perplexity -c 128)"
  local fx="$ROOT/tests/fixtures/tiny-chatglm3"
  for ty in f16 q8_0 q4_0; do
    "$G" convert "$fx" -o "$work/tiny-$ty.gguf" --type "$ty" --force -q || continue
    for dev in "--device cpu" "--device cuda" "--device cuda -ngl 1"; do
      printf '%-5s %-22s ' "$ty" "$dev"
      # shellcheck disable=SC2086
      "$G" perplexity -m "$work/tiny-$ty.gguf" -f "$fx/heldout.txt" -c 128 -q $dev 2>&1 | grep -E "Final estimate|error"
    done
  done

  echo "== ChatGLM3-6B-shaped random checkpoint"
  local t0=$SECONDS
  python3 "$ROOT/tools/make_random_checkpoint.py" "$work/ck6b" --fast --reference-dir "$BUNDLE/ref" | tail -1
  echo "checkpoint: $((SECONDS - t0)) s"
  for ty in q4_0 q8_0; do
    t0=$SECONDS
    "$G" convert "$work/ck6b" -o "$work/$ty.gguf" --type "$ty" --force -q && echo "convert $ty: $((SECONDS - t0)) s"
  done
  rm -rf "$work/ck6b"
  "$G" info "$work/q4_0.gguf" --plan -c 512
  "$G" info "$work/q4_0.gguf" --plan -c 512 --vram-budget 2G

  echo "== bench (pp512, tg128)"
  for ty in q4_0 q8_0; do
    local m="$work/$ty.gguf"
    echo "-- $ty full offload"; "$G" bench -m "$m" -p 512 -n 128 -r 3 --device cuda -ngl 99
    echo "-- $ty half (14 layers)"; "$G" bench -m "$m" -p 512 -n 128 -r 2 --device cuda -ngl 14
    echo "-- $ty 2 GiB budget"; "$G" bench -m "$m" -p 512 -n 128 -r 2 --device cuda --vram-budget 2G
    echo "-- $ty CPU only"; "$G" bench -m "$m" -p 512 -n 128 -r 1 --device cpu
  done

  echo "== 6B perplexity GPU vs CPU (random weights: only the agreement matters)"
  for dev in "--device cpu" "--device cuda" "--device cuda -ngl 14"; do
    printf '%-22s ' "$dev"
    # shellcheck disable=SC2086
    "$G" perplexity -m "$work/q4_0.gguf" -f "$fx/heldout.txt" -c 256 --chunks 2 -q $dev 2>&1 | grep -E "Final estimate|error"
  done
  nvidia-smi --query-gpu=memory.used --format=csv,noheader
  echo "== done"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
