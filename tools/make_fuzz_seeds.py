#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/corpus/*/seed-*): a tiny but complete
ChatGLM GGUF (1 layer, 32 wide, a 300-token vocabulary) that glmtool loads, and ChatGLM3 reply
texts with tool calls and code cells. Standard library only; deterministic.

    python3 tools/make_fuzz_seeds.py        # from the repository root
"""
import os
import random
import struct

random.seed(20261130)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, val):
    out = s(key) + struct.pack("<I", ty)
    if ty == 4:
        out += struct.pack("<I", val)
    elif ty == 6:
        out += struct.pack("<f", val)
    elif ty == 8:
        out += s(val)
    return out


def arr(key, ety, vals):
    out = s(key) + struct.pack("<I", 9) + struct.pack("<IQ", ety, len(vals))
    for v in vals:
        out += s(v) if ety == 8 else struct.pack("<f" if ety == 6 else "<i", v)
    return out


def gguf():
    embd, ff, head, n_head, n_kv = 32, 32, 16, 2, 1
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += ["▁", "▁a", "▁the", "e", "t", "th", "▁fortune", "s", "▁is"]
    specials = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
    pieces = len(tokens)
    tokens += specials
    vocab = len(tokens)
    types = [2, 3, 3] + [6] * 256 + [1] * (pieces - 259) + [3] * len(specials)
    scores = [0.0] * 259 + [-float(i) for i in range(pieces - 259)] + [0.0] * len(specials)
    meta = [
        kv("general.architecture", 8, "chatglm"),
        kv("general.name", 8, "fuzz-seed"),
        kv("chatglm.context_length", 4, 64),
        kv("chatglm.embedding_length", 4, embd),
        kv("chatglm.feed_forward_length", 4, ff),
        kv("chatglm.block_count", 4, 1),
        kv("chatglm.attention.head_count", 4, n_head),
        kv("chatglm.attention.head_count_kv", 4, n_kv),
        kv("chatglm.attention.layer_norm_rms_epsilon", 6, 1e-5),
        kv("chatglm.rope.dimension_count", 4, head // 2),
        kv("chatglm.rope.freq_base", 6, 10000.0),
        kv("tokenizer.ggml.model", 8, "llama"),
        arr("tokenizer.ggml.tokens", 8, tokens),
        arr("tokenizer.ggml.scores", 6, scores),
        arr("tokenizer.ggml.token_type", 5, types),
    ]
    qkv = (n_head + 2 * n_kv) * head
    tensors = [  # name, ggml dims, type (0 f32, 1 f16)
        ("token_embd.weight", [embd, vocab], 1),
        ("blk.0.attn_norm.weight", [embd], 0),
        ("blk.0.attn_qkv.weight", [embd, qkv], 1),
        ("blk.0.attn_qkv.bias", [qkv], 0),
        ("blk.0.attn_output.weight", [embd, embd], 1),
        ("blk.0.ffn_norm.weight", [embd], 0),
        ("blk.0.ffn_up.weight", [embd, 2 * ff], 1),
        ("blk.0.ffn_down.weight", [ff, embd], 1),
        ("output_norm.weight", [embd], 0),
        ("output.weight", [embd, vocab], 1),
    ]
    infos, data = b"", b""
    for name, dims, ty in tensors:
        n = 1
        for d in dims:
            n *= d
        while len(data) % 32:
            data += b"\0"
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ty, len(data))
        vals = [1.0] * n if name.endswith("norm.weight") else [random.gauss(0, 0.1) for _ in range(n)]
        data += b"".join(struct.pack("<e" if ty == 1 else "<f", v) for v in vals)
    head_bytes = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta) + infos
    while len(head_bytes) % 32:
        head_bytes += b"\0"
    return head_bytes + data


REPLIES = [
    "A fortune: you will write a fast kernel.",
    "get_weather\n```python\ntool_call(city='Beijing', days=3, units=\"metric\", flags=[1, 2.5, None, True])\n```",
    "interpreter\n```python\nimport math\nprint(math.pi)\n```",
    "search\n```python\ntool_call(query={'a': (1, 2), 'b': '中文'}, n=-1e3)\n```\n<|observation|>",
    " \n Hello\nworld",
]


def main():
    os.makedirs(os.path.join(ROOT, "gguf_load"), exist_ok=True)
    os.makedirs(os.path.join(ROOT, "reply_parsers"), exist_ok=True)
    with open(os.path.join(ROOT, "gguf_load", "seed-tiny-gguf"), "wb") as f:
        f.write(gguf())
    for i, r in enumerate(REPLIES):
        with open(os.path.join(ROOT, "reply_parsers", f"seed-{i}.txt"), "w", encoding="utf-8") as f:
            f.write(r)


if __name__ == "__main__":
    main()
