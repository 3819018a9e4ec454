#!/usr/bin/env bash
# Golden type mixes: which ggml type llama.cpp 2026's llama-quantize gives every tensor of a
# ChatGLM-architecture file, for every file type and option that changes the mix. Writes
# tests/fixtures/quant-mix/mixes.txt, which crates/convert/tests/quant_mix.rs compares with
# glm_convert::policy (no llama.cpp needed there).
#
#   bash tools/make_mix_golden.sh        # ~1 min; needs llama.cpp 2026 built by
#                                        # ../shared/tools/build-llama-cpp.sh, python3 with
#                                        # numpy + safetensors, and target/release/glmtool
#
# LLAMA_BIN overrides where llama-quantize / llama-imatrix are (default ~/.cache/llama-anchor/bin).
# The two models are small random ChatGLM3-shaped checkpoints (tools/make_random_checkpoint.py):
#   a: 28 layers (ChatGLM3's count), 8 query heads / 2 kv groups (GQA 4), ffn 416 (like 13696,
#      not a multiple of 256), hidden 256;
#   b: 12 layers, 8 heads / 4 groups (GQA 2), ffn 320.
# llama-quantize runs with --dry-run, so only the type choice is recorded, not bytes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LLAMA_BIN:-$HOME/.cache/llama-anchor/bin}
py=${PYTHON:-python3}
glmtool=$root/target/release/glmtool
out=$root/tests/fixtures/quant-mix/mixes.txt
long=$(mktemp)
ref=${REFERENCE_DIR:-$root/../shared/reference/chatglm3}
work=$(mktemp -d)
trap 'rm -rf "$work" "$long"' EXIT

for f in "$bin/llama-quantize" "$bin/llama-imatrix" "$glmtool" "$ref/config.json"; do
    [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done

make_model() { # name layers heads groups ffn
    "$py" - "$ref/config.json" "$work/$1.json" "$2" "$3" "$4" "$5" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(hidden_size=256, kv_channels=32, num_layers=int(sys.argv[3]),
         num_attention_heads=int(sys.argv[4]), multi_query_group_num=int(sys.argv[5]),
         ffn_hidden_size=int(sys.argv[6]))
json.dump(c, open(sys.argv[2], "w"))
EOF
    "$py" "$root/tools/make_random_checkpoint.py" "$work/$1" --reference-dir "$ref" \
        --config "$work/$1.json" --shards 1 --fast >/dev/null
    "$glmtool" convert "$work/$1" -o "$work/$1.gguf" --type f16 -q >/dev/null
}

# a short calibration text: has_imatrix changes a few choices
for i in $(seq 1 40); do echo "The quick brown fox $i jumps over the lazy dog; 春眠不觉晓 $i."; done >"$work/calib.txt"

{
    echo "# llama-quantize --dry-run type choices (tools/make_mix_golden.sh; llama.cpp $(cd "$bin/.." 2>/dev/null && git -C src/vendor/llama.cpp rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "# model <name> <n_layer> <n_head> <n_head_kv>; tensor <name> <ne0> <ne1> (in llama-quantize's order);"
    echo "# case <ftype> <options or -> : <type of each tensor, in the order above>"
} >"$out"

for m in "a 28 8 2 416" "b 12 8 4 320"; do
    set -- $m
    make_model "$@"
    "$bin/llama-imatrix" -m "$work/$1.gguf" -f "$work/calib.txt" -c 64 --chunks 2 \
        -o "$work/$1.imatrix.gguf" >/dev/null 2>&1
    echo "model $1 $2 $3 $4" >>"$long"
    for ft in F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M \
              Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS; do
        for opts in "" "--pure" "--imatrix" "--output-tensor-type q8_0 --token-embedding-type q5_K"; do
            args=$opts
            [ "$opts" = "--imatrix" ] && args="--imatrix $work/$1.imatrix.gguf"
            echo "case $ft ${opts:--}" >>"$long"
            # shellcheck disable=SC2086
            "$bin/llama-quantize" --dry-run $args "$work/$1.gguf" "$ft" 2>&1 |
                sed -nE 's/^\[ *[0-9]+\/ *[0-9]+\] +([^ ]+) +- \[ *([0-9]+), *([0-9]+),.*type = +([a-z0-9_A-Z]+), size = .*\(([a-z0-9_A-Z]+)\)$/\1 \2 \3 \5/p; s/^\[ *[0-9]+\/ *[0-9]+\] +([^ ]+) +- \[ *([0-9]+), *([0-9]+),.*type = +([a-z0-9_A-Z]+), size = +[0-9.]+ MiB$/\1 \2 \3 \4/p' >>"$long"
        done
    done
done
# compact: the tensor list once per model, one line of types per case
awk '
    /^model/ { if (c != "") print c; c = ""; print; m = 1; next }
    /^case/  { if (c != "") print c; c = $0 " :"; if (m == 2) m = 3; if (m == 1) m = 2; next }
    { if (m == 2) print "tensor " $1 " " $2 " " $3; c = c " " $4 }
    END { if (c != "") print c }
' "$long" | awk '/^model/ && c { } { print }' >>"$out"
echo "wrote $out ($(wc -l <"$out") lines)"
