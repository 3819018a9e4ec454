#!/usr/bin/env bash
# Golden data for importance matrices: what llama.cpp 2026's llama-imatrix collects on the tiny
# fixture model, and what llama-quantize makes with it, and with glmtool's own imatrix. Writes
# tests/fixtures/imatrix/:
#
#   calibration.txt       tests/fixtures/tiny-chatglm3/heldout.txt without the lines that contain
#                         "sop" or "eop" (see below), 3184 tokens
#   llama.imatrix.gguf    llama-imatrix's GGUF imatrix (24 chunks of 128 tokens, --process-output)
#   llama.imatrix.dat     the same in the legacy format (--output-format dat)
#   glmtool.imatrix.gguf  `glmtool imatrix` with the same flags (llama-quantize's input below)
#   quantized.txt         per case (imatrix, file type, options): the order of all keys and
#                         tensors in the file, the quantize.imatrix.* keys llama-quantize wrote
#                         and every tensor's type and FNV-1a-64 digest
#
# crates/convert/tests/imatrix_golden.rs checks glmtool's reader, writer and quantizer against
# these (no llama.cpp needed there); crates/runtime/tests/imatrix.rs checks `glmtool imatrix`'s
# statistics against llama.imatrix.gguf.
#
#   bash tools/make_imatrix_golden.sh    # seconds; needs llama.cpp 2026 built by
#                                        # ../shared/tools/build-llama-cpp.sh (LLAMA_BIN overrides
#                                        # ~/.cache/llama-anchor/bin), python3, and
#                                        # target/release/glmtool (cargo build --release)
#
# The model is tests/fixtures/tiny-chatglm3 converted to f32 by glmtool (llama.cpp reads it).
# The text: llama.cpp's SentencePiece tokenizer lets ChatGLM3's control pieces take part in
# merges, so "people" becomes "▁p" "eop" "le" where sentencepiece (and glmtool) give "▁people";
# the lines with "sop"/"eop" are dropped so that both tokenize the text alike (checked below).
# Both collectors run with -c 128 -b 128 (one chunk per batch), an f32 KV cache (-ctk/-ctv f32,
# so that attention does not round activations to f16) and 1 thread; llama-imatrix with -fa off:
# its fused CPU flash attention rounds differently from the plain softmax(K·q)·V both tools
# otherwise compute (with it on, the sums differ from glmtool's, and from llama.cpp's own -fa off,
# by up to 4e-4 relative on this model; with it off, by 6e-7). Paths are given relative
# to the repository root, since the imatrix records its dataset path and llama-quantize the
# imatrix path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LLAMA_BIN:-$HOME/.cache/llama-anchor/bin}
glmtool=$root/target/release/glmtool
out=tests/fixtures/imatrix
text=$out/calibration.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

for f in "$bin/llama-quantize" "$bin/llama-imatrix" "$glmtool"; do
    [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done
mkdir -p "$out"

"$glmtool" convert tests/fixtures/tiny-chatglm3 -o "$work/tiny-f32.gguf" --type f32 -q --force

grep -v -e eop -e sop tests/fixtures/tiny-chatglm3/heldout.txt >"$text"
head -c -1 "$text" >"$work/text" # -f drops one trailing newline, in both tools
"$bin/llama-tokenize" -m "$work/tiny-f32.gguf" -f "$work/text" --ids --no-parse-special \
    --log-disable 2>/dev/null | tail -1 | tr -d '[] ' >"$work/llama.ids"
"$glmtool" tokenize -m "$work/tiny-f32.gguf" <"$work/text" | tr -d '[] ' >"$work/glmtool.ids"
cmp -s "$work/llama.ids" "$work/glmtool.ids" ||
    { echo "llama.cpp and glmtool tokenize $text differently" >&2; exit 1; }

flags=(-c 128 -b 128 -t 1 --process-output)
"$bin/llama-imatrix" -m "$work/tiny-f32.gguf" -f "$text" "${flags[@]}" -ctk f32 -ctv f32 -fa off \
    -o "$out/llama.imatrix.gguf" >"$work/llama-imatrix.log" 2>&1 ||
    { cat "$work/llama-imatrix.log" >&2; exit 1; }
"$bin/llama-imatrix" -m "$work/tiny-f32.gguf" -f "$text" "${flags[@]}" -ctk f32 -ctv f32 -fa off \
    --output-format dat -o "$out/llama.imatrix.dat" >"$work/llama-imatrix-dat.log" 2>&1 ||
    { cat "$work/llama-imatrix-dat.log" >&2; exit 1; }
"$glmtool" imatrix -m "$work/tiny-f32.gguf" -f "$text" "${flags[@]}" --cache-type f32 \
    -o "$out/glmtool.imatrix.gguf" --force -q

# Per-tensor digests and the quantize.imatrix.* keys of a GGUF file (no numpy needed).
digest() {
    python3 - "$1" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
pos = 0
def take(fmt):
    global pos
    v = struct.unpack_from("<" + fmt, b, pos)
    pos += struct.calcsize("<" + fmt)
    return v[0]
def string():
    global pos
    n = take("Q"); s = b[pos:pos + n].decode(); pos += n
    return s
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
def value(t):
    if t == 8:
        return string()
    if t == 9:
        et, n = take("I"), take("Q")
        return [value(et) for _ in range(n)]
    return take(SCALAR[t])
def fnv1a64(data):
    h = 0xCBF29CE484222325
    for x in data:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h
assert b[:4] == b"GGUF"
pos = 8
n_tensors, n_kv = take("Q"), take("Q")
kv = {}
for _ in range(n_kv):
    k = string(); kv[k] = (take("I"), None); kv[k] = (kv[k][0], value(kv[k][0]))
tensors = []
for _ in range(n_tensors):
    name = string(); nd = take("I"); dims = [take("Q") for _ in range(nd)]
    tensors.append((name, dims, take("I"), take("Q")))
align = kv.get("general.alignment", (4, 32))[1]
data = (pos + align - 1) // align * align
# ggml type id: (name, block elements, block bytes)
TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
         6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 10: ("q2_K", 256, 84),
         11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176),
         14: ("q6_K", 256, 210), 20: ("iq4_nl", 32, 18), 23: ("iq4_xs", 256, 136),
         30: ("bf16", 1, 2)}
# the layout: every key and every tensor in file order (llama-quantize's, see layout.rs)
print("keys", " ".join(kv))
print("order", " ".join(t[0] for t in tensors))
for k in sorted(kv):
    if k.startswith("quantize.imatrix."):
        t, v = kv[k]
        print("kv", k, {4: "u32", 8: "str"}.get(t, t), v)
for name, dims, t, off in sorted(tensors):
    tn, be, bb = TYPES[t]
    n = 1
    for d in dims:
        n *= d
    size = n // be * bb
    print("tensor", name, tn, fnv1a64(b[data + off:data + off + size]))
EOF
}

golden=$out/quantized.txt
{
    echo "# llama-quantize with an importance matrix, on tests/fixtures/tiny-chatglm3 as f32 (tools/make_imatrix_golden.sh;"
    echo "# llama.cpp $(git -C "$bin/../src/vendor/llama.cpp" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "# case <imatrix file> <file type> <options or ->, then every key and tensor name in file order (keys, order),"
    echo "# its quantize.imatrix.* keys (kv <key> <type> <value>)"
    echo "# and every tensor, by name: tensor <name> <type> <FNV-1a-64 of its data>"
} >"$golden"
for im in llama.imatrix.gguf llama.imatrix.dat glmtool.imatrix.gguf; do
    cases=("Q4_0 -" "Q4_0 --pure" "Q4_1 --pure" "Q5_0 --pure" "Q5_1 --pure" "IQ4_NL --pure"
           "IQ4_XS -" "Q4_K_M -" "Q2_K -" "Q8_0 --pure")
    if [ "$im" = llama.imatrix.gguf ]; then
        cases+=("Q4_0 --pure --include-weights ffn_down" "Q4_0 --pure --exclude-weights attn"
                "Q4_0 --pure --exclude-weights blk --exclude-weights output")
    fi
    for c in "${cases[@]}"; do
        read -r ft opts <<<"$c"
        args=()
        [ "$opts" != - ] && read -ra args <<<"$opts"
        echo "case $im $ft $opts" >>"$golden"
        "$bin/llama-quantize" --imatrix "$out/$im" "${args[@]}" "$work/tiny-f32.gguf" \
            "$work/q.gguf" "$ft" 1 >"$work/quantize.log" 2>&1 ||
            { cat "$work/quantize.log" >&2; exit 1; }
        digest "$work/q.gguf" >>"$golden"
    done
done
echo "wrote $out: $(ls "$out" | tr '\n' ' ')($(grep -c '^case' "$golden") cases)"
