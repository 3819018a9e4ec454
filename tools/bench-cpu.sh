#!/usr/bin/env bash
# CPU speed, side by side with llama.cpp: the same GGUF files, the same machine, the same thread
# count, runs alternating (llama.cpp, glmtool, llama.cpp, glmtool, ...), plus the memory
# bandwidth bound of decoding. Prints one ratio table (markdown) for docs/benchmarks.md.
#
# usage: bash tools/bench-cpu.sh MODEL.gguf [MODEL2.gguf ...]
#   env: THREADS (2)  PP (512)  TG (128)  REPS (2, per run)  ROUNDS (2, alternations)
#        KERNELS ("native ggml": glmtool's --cpu-kernels values to measure)
#        DEPTHS ("0 2048 8192": tokens already cached when each test starts, llama-bench's -d;
#                depth + PP must fit the model's context: 8192 needs a 32k model)
#        FA (on: -fa for both tools)  CACHE (f16: -ctk and -ctv for both tools)
#        LLAMA_DIR (~/.cache/llama-anchor: built by ../shared/tools/build-llama-cpp.sh if absent;
#                an AVX2-only build from tools/build-llama-cpp-avx2.sh measures against KERNELS=avx2
#                on a CPU with AVX-512, and its rows say "llama.cpp (AVX2 build)")
#        GLMTOOL (a glmtool binary to measure; default: target/release/glmtool, built first)
# "each round": the range of glmtool's run ÷ llama.cpp's run of the same round (adjacent in time).
# Needs: python3, gcc, /usr/bin/time. Takes a few minutes per model and kernel at depth 0, and
# tens of minutes with the deep rows (each depth's prefix is evaluated once per run).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
# the models and GLMTOOL as absolute paths (the script runs from the repository root)
if [ -n "${GLMTOOL:-}" ]; then
  [ -x "$GLMTOOL" ] || { echo "bench-cpu.sh: GLMTOOL=$GLMTOOL: not an executable file" >&2; exit 2; }
  GLMTOOL=$(realpath "$GLMTOOL")
fi
models=()
for m in "$@"; do
  [ -f "$m" ] || { echo "bench-cpu.sh: $m: no such file" >&2; exit 2; }
  models+=("$(realpath "$m")")
done
set -- "${models[@]}"
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} PP=${PP:-512} TG=${TG:-128} REPS=${REPS:-2} ROUNDS=${ROUNDS:-2}
KERNELS=${KERNELS:-"native ggml"} DEPTHS=${DEPTHS:-"0 2048 8192"} FA=${FA:-on} CACHE=${CACHE:-f16}
depths=$(echo $DEPTHS | tr ' ' ,)
LLAMA_DIR=${LLAMA_DIR:-$HOME/.cache/llama-anchor}

if [ ! -x "$LLAMA_DIR/bin/llama-bench" ]; then
  echo "building llama.cpp's tools into $LLAMA_DIR (~15 min)..." >&2
  bash ../shared/tools/build-llama-cpp.sh "$LLAMA_DIR" >&2
fi
if [ -z "${GLMTOOL:-}" ]; then
  cargo build --release -q -p glmtool
  GLMTOOL=target/release/glmtool
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -mavx2 -pthread ../shared/tools/bw.c -o "$work/bw"
# VM bandwidth is noisy: measured before every round, the best value bounds decoding
measure_bw() { "$work/bw" "$THREADS" | grep -o '[0-9.]* GB/s' | cut -d' ' -f1 >>"$work/bw.txt"; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|amx_int8)$' | tr '\n' ' ')
# a llama-bench without one 512-bit register is an AVX2 build, whatever the CPU has
llama_name="llama.cpp"
# (grep -c reads to the end: with -q, objdump would die of SIGPIPE and pipefail would say "none")
if command -v objdump >/dev/null &&
  [ "$(objdump -d "$LLAMA_DIR/bin/llama-bench" | grep -c zmm || true)" = 0 ]; then
  llama_name="llama.cpp (AVX2 build)"
fi

# one run: tool, model, kernels -> appends "tool kernels model test t/s rss_kb load_s" lines
# (test: pp512, or pp512@d2048 at depth)
run() {
  local tool=$1 model=$2 k=$3 out="$work/out.json"
  if [ "$tool" = llama.cpp ]; then
    /usr/bin/time -f '%M %e' -o "$work/time" "$LLAMA_DIR/bin/llama-bench" -m "$model" -t "$THREADS" \
      -p "$PP" -n "$TG" -r "$REPS" -d "$depths" -fa "$FA" -ctk "$CACHE" -ctv "$CACHE" \
      -o json >"$out" 2>/dev/null
  else
    /usr/bin/time -f '%M %e' -o "$work/time" "$GLMTOOL" bench -m "$model" -t "$THREADS" \
      -p "$PP" -n "$TG" -r "$REPS" -d "$depths" -fa "$FA" -ctk "$CACHE" -ctv "$CACHE" \
      --cpu-kernels "$k" -o json >"$out" 2>/dev/null
  fi
  python3 - "$tool" "$k" "$model" "$out" "$work/time" >>"$work/rows" <<'EOF'
import json, sys
tool, k, model, out, tm = sys.argv[1:6]
rss = open(tm).read().split()[0]
for r in json.load(open(out)):
    at = f"@d{r['n_depth']}" if r.get("n_depth") else ""
    if "avg_ts" in r:  # llama-bench
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        print(tool, k, model, test + at, r["avg_ts"], rss, "-")
    else:
        test = r["test"].split(" @ ")[0]
        print(tool, k, model, test + at, r["tokens_per_second"], rss, f"{r['load_seconds']:.2f}")
EOF
}

# bytes decoding reads per token: every tensor but the embedding table (only gathered from)
for model in "$@"; do
  "$GLMTOOL" info "$model" --tensors --json | python3 -c '
import json, sys
per = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32, "q5_0": 22 / 32,
       "q5_1": 24 / 32, "q2_K": 84 / 256, "q3_K": 110 / 256, "q4_K": 144 / 256, "q5_K": 176 / 256, "q6_K": 210 / 256,
       "iq4_nl": 18 / 32, "iq4_xs": 136 / 256}
d = json.load(sys.stdin)
n = 0
for t in d["tensors"]:
    if t["name"] != "token_embd.weight":
        e = 1
        for x in t["shape"]:
            e *= x
        n += e * per[t["type"]]
print(sys.argv[1], int(n))' "$model" >>"$work/bytes"
done

for model in "$@"; do
  for round in $(seq "$ROUNDS"); do
    echo "$(basename "$model"): round $round/$ROUNDS" >&2
    measure_bw
    run llama.cpp "$model" -
    for k in $KERNELS; do run glmtool "$model" "$k"; done
  done
done

bw=$(sort -g "$work/bw.txt" | tail -1)
bws=$(sort -g "$work/bw.txt" | tr '\n' ' ')
FA=$FA CACHE=$CACHE LLAMA_NAME=$llama_name python3 - "$work/rows" "$bw" "$cpu" "$flags" "$THREADS" "$work/bytes" "$bws" <<'EOF'
import os, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
bw, cpu, flags, threads = float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
read = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[6])}
print(f"CPU: {cpu} ({flags.strip()}), {threads} threads; read bandwidth {bw} GB/s, the best of "
      f"bw.c runs before each round ({sys.argv[7].strip()} GB/s); -fa {os.environ['FA']}, "
      f"KV cache {os.environ['CACHE']}\n")
for m, b in read.items():
    print(f"- {os.path.basename(m)}: decoding reads {b / 2**30:.2f} GiB per token: bound {bw * 1e9 / b:.2f} t/s")
print()
print("| model | tool (kernels) | test | t/s (median) | vs llama.cpp | each round | decode vs bandwidth bound | peak RSS | load |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for model in dict.fromkeys(r[2] for r in rows):
    bound = bw * 1e9 / read[model]  # tokens/s if every byte decoding reads came at bw.c's rate
    for tool, k in dict.fromkeys((r[0], r[1]) for r in rows if r[2] == model):
        for test in dict.fromkeys(r[3] for r in rows if r[2] == model):
            sel = [r for r in rows if r[:4] == [tool, k, model, test]]
            if not sel:
                continue
            ts = statistics.median(float(r[4]) for r in sel)
            ref = [float(r[4]) for r in rows if r[0] == "llama.cpp" and r[2] == model and r[3] == test]
            ratio = ts / statistics.median(ref) if ref else float("nan")
            # each round's run against llama.cpp's run just before it: the two ran minutes
            # apart, where the medians may come from different speeds of a VM's memory and clock
            paired = [float(r[4]) / b for r, b in zip(sel, ref)] if tool != "llama.cpp" else []
            rounds = f"{min(paired):.2f}–{max(paired):.2f}x" if paired else ""
            rss = max(int(r[5]) for r in sel) / 1024 / 1024
            load = sel[0][6] + " s" if sel[0][6] != "-" else "-"
            # the bound counts the weights only: at depth decoding also reads the cache
            vsb = f"{100 * ts / bound:.0f} %" if test.startswith("tg") and "@" not in test else ""
            name = os.environ["LLAMA_NAME"] if tool == "llama.cpp" else f"glmtool ({k})"
            test = test.replace("@", " @ ")
            print(f"| {os.path.basename(model)} | {name} | {test} | {ts:.2f} | {ratio:.2f}x | {rounds} | {vsb} | {rss:.2f} GiB | {load} |")
EOF
