#!/usr/bin/env bash
# Quality per byte: for every file type glmtool writes, its size (bits per weight) and its
# distortion against the f16 model on a held-out text — perplexity, mean KL divergence of the
# next-token distributions and top-1 agreement (`glmtool perplexity --kl-divergence`, llama.cpp's
# method) — without and with an importance matrix computed on a separate calibration text.
# Prints the markdown table of docs/quantization.md ("Quality per type").
#
# usage: bash tools/quality-report.sh CHECKPOINT_DIR EVAL.txt CALIB.txt [FILE_TYPE ...]
#   env: CTX (512: tokens per chunk, for perplexity and the imatrix)  CHUNKS (all)  THREADS (2)
# e.g.   /work/pyenv/bin/python tools/make_calibration_text.py /tmp/calib.txt
#        bash tools/quality-report.sh tests/fixtures/tiny-chatglm3 \
#            tests/fixtures/tiny-chatglm3/heldout.txt /tmp/calib.txt
# Needs target/release/glmtool (cargo build --release) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,13p "$0"; exit 2; }
ckpt=$1 eval_text=$2 calib=$3
shift 3
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(Q2_K Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS Q4_0 Q4_1 Q4_K_S Q4_K_M
    Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0)
CTX=${CTX:-512} THREADS=${THREADS:-2}
chunks=()
[ -n "${CHUNKS:-}" ] && chunks=(--chunks "$CHUNKS")
glmtool=target/release/glmtool
[ -x "$glmtool" ] || cargo build --release -q -p glmtool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$glmtool" convert "$ckpt" -o "$work/f16.gguf" --type f16 -q --force >&2
ppl() { # model [--kl-divergence] -> JSON summary line
    "$glmtool" perplexity -m "$1" -f "$eval_text" -c "$CTX" -t "$THREADS" "${chunks[@]}" \
        --kl-divergence-base "$work/base.kld" "${@:2}" --json -q 2>/dev/null
}
ppl "$work/f16.gguf" >"$work/f16.json"
"$glmtool" imatrix -m "$work/f16.gguf" -f "$calib" -c "$CTX" -t "$THREADS" \
    -o "$work/imatrix.gguf" --no-ppl -q --force >&2

for ty in "${types[@]}"; do
    for im in plain imatrix; do
        args=()
        [ "$im" = imatrix ] && args=(--imatrix "$work/imatrix.gguf")
        if ! "$glmtool" quantize "$work/f16.gguf" "$work/q.gguf" "$ty" "${args[@]}" -q --force \
            >/dev/null 2>"$work/err"; then
            echo "$ty $im - $(head -c 200 "$work/err" | tr '\n' ' ')" >>"$work/rows"
            continue
        fi
        bpw=$("$glmtool" quantize --dry-run "$work/f16.gguf" "$ty" "${args[@]}" | tail -1 |
            sed -E 's/.*\(([0-9.]+) BPW\), from.*/\1/')
        echo "$ty $im $bpw $(ppl "$work/q.gguf" --kl-divergence)" >>"$work/rows"
        echo "$ty $im done" >&2
    done
done

python3 - "$work/f16.json" "$work/rows" "$ckpt" "$eval_text" "$CTX" <<'EOF'
import json, sys
base = json.load(open(sys.argv[1]))
rows = {}
for line in open(sys.argv[2]):
    ty, im, bpw, rest = line.rstrip("\n").split(" ", 3)
    rows.setdefault(ty, {})[im] = (bpw, rest)
print(f"{sys.argv[3]}, scored on {sys.argv[4]} in chunks of {sys.argv[5]} tokens: "
      f"f16 perplexity {base['ppl']:.4f}\n")
print("| file type | bits/weight | PPL | KL divergence | top-1 agreement | PPL, imatrix | KL, imatrix | top-1, imatrix |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def cells(v):
    if v is None:
        return ["", "", ""]
    bpw, rest = v
    if bpw == "-":
        return ["refused", "", ""]
    r = json.loads(rest)
    k = r["kl"]
    return [f"{r['ppl']:.4f}", f"{k['mean_kl']:.6f}", f"{100 * k['top1_agreement']:.2f} %"]
for ty, v in rows.items():
    plain, im = v.get("plain"), v.get("imatrix")
    bpw = next((x[0] for x in (plain, im) if x and x[0] != "-"), "-")
    print(f"| {ty} | {bpw} | " + " | ".join(cells(plain) + cells(im)) + " |")
EOF
