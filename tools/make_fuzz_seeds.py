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


def byte_level_chars():
    """GPT-2's bytes_to_unicode."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gguf(kind="chatglm3"):
    """kind: chatglm3 (SentencePiece + role tokens), chatglm2 (no role tokens, with
    glmtool.chat_format and add_space_prefix false), glm4 (byte-level BPE, merges)."""
    embd, ff, head, n_head, n_kv = 32, 32, 16, 2, 1
    tok_meta = []
    if kind == "glm4":
        chars = byte_level_chars()
        tokens = [chars[b] for b in range(256)]
        merged = [b" t", b"he", b" the", b"in", b" in", b"\n\n", b"\xe4\xbd"]
        tokens += ["".join(chars[b] for b in m) for m in merged]
        merges = ["\u0120 t", "h e", "\u0120t he", "i n", "\u0120 in", "\u010a \u010a", "\u00e4 \u00bd"]
        specials = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                    "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>",
                    "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>"]
        pieces = len(tokens)
        tokens += specials + ["[PAD%d]" % i for i in range(pieces + len(specials), pieces + len(specials) + 3)]
        types = [1] * pieces + [3] * len(specials) + [5] * 3
        tok_meta = [
            kv("tokenizer.ggml.model", 8, "gpt2"),
            kv("tokenizer.ggml.pre", 8, "chatglm-bpe"),
            arr("tokenizer.ggml.tokens", 8, tokens),
            arr("tokenizer.ggml.token_type", 5, types),
            arr("tokenizer.ggml.merges", 8, merges),
            kv("tokenizer.ggml.eos_token_id", 4, pieces),
            kv("tokenizer.ggml.eot_token_id", 4, pieces + 7),
        ]
    else:
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
        tokens += ["▁", "▁a", "▁the", "e", "t", "th", "▁fortune", "s", "▁is"]
        specials = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
        if kind == "chatglm3":
            specials += ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
        pieces = len(tokens)
        tokens += specials
        types = [2, 3, 3] + [6] * 256 + [1] * (pieces - 259) + [3] * len(specials)
        scores = [0.0] * 259 + [-float(i) for i in range(pieces - 259)] + [0.0] * len(specials)
        tok_meta = [
            kv("tokenizer.ggml.model", 8, "llama"),
            arr("tokenizer.ggml.tokens", 8, tokens),
            arr("tokenizer.ggml.scores", 6, scores),
            arr("tokenizer.ggml.token_type", 5, types),
        ]
        if kind == "chatglm2":
            tok_meta += [kv("glmtool.chat_format", 8, "completion"),
                         s("tokenizer.ggml.add_space_prefix") + struct.pack("<IB", 7, 0)]
    vocab = len(tokens)
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
    ] + tok_meta
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


def safetensors(tensors):
    """A safetensors file: {name: (dtype, shape, raw bytes)}."""
    import json
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def checkpoint_seeds():
    """Inputs of the checkpoint_inputs target: a selector byte (0 config.json, 1 tokenizer.model,
    2 model.safetensors, 3 model.safetensors.index.json) then that file; the others come from
    tests/fixtures/tiny-chatglm3."""
    fixture = os.path.join(ROOT, "..", "..", "tests", "fixtures", "tiny-chatglm3")
    out = {}
    with open(os.path.join(fixture, "config.json"), "rb") as f:
        out["config"] = b"\x00" + f.read()
    with open(os.path.join(fixture, "tokenizer.model"), "rb") as f:
        out["tokenizer"] = b"\x01" + f.read()
    with open(os.path.join(fixture, "model.safetensors"), "rb") as f:
        whole = f.read()
    n = struct.unpack("<Q", whole[:8])[0]
    out["safetensors-header"] = b"\x02" + whole[: 8 + n]
    out["safetensors-small"] = b"\x02" + safetensors({
        "transformer.embedding.word_embeddings.weight": ("BF16", [4, 2], bytes(16)),
        "transformer.output_layer.weight": ("F16", [2, 4], bytes(16)),
        "transformer.encoder.final_layernorm.weight": ("F32", [2], bytes(8)),
        "x.rotary_pos_emb.inv_freq": ("I64", [1], bytes(8)),
    })
    # a tiktoken vocabulary (GLM-4's format): the 256 bytes and a few merged tokens
    import base64
    toks = [bytes([b]) for b in range(256)] + [b" t", b"he", b" the", b"\xe4\xbd", b"\xe4\xbd\xa0"]
    out["tiktoken"] = b"\x01" + b"".join(
        base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(toks))
    import json
    out["index"] = b"\x03" + json.dumps({
        "metadata": {"total_size": len(whole)},
        "weight_map": {"transformer.embedding.word_embeddings.weight": "model.safetensors",
                       "transformer.output_layer.weight": "model.safetensors"},
    }).encode()
    return out


REQUESTS = [
    {"model": "glm", "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "你好 👋"}],
     "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "stop": ["\n\n"], "seed": 42,
     "stream": True, "stream_options": {"include_usage": True}},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "weather in "},
                                               {"type": "text", "text": "北京?"}]},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_0", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"北京\", \"days\": [1, 2.5]}"}}]},
                  {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": -3}"}],
     "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": None},
                  {"role": "assistant", "content": "ok", "function_call": {"name": "f", "arguments": {}}},
                  {"role": "function", "content": "1"}], "tool_choice": "none", "n": 1},
    {"prompt": "def fib(n):", "max_completion_tokens": 8, "stop": "\n"},
    {"prompt": ["<|user|> 你好"], "temperature": 0},
]


def main():
    import json
    os.makedirs(os.path.join(ROOT, "openai_request"), exist_ok=True)
    for i, r in enumerate(REQUESTS):
        with open(os.path.join(ROOT, "openai_request", f"seed-{i}.json"), "w", encoding="utf-8") as f:
            json.dump(r, f, ensure_ascii=False)
    os.makedirs(os.path.join(ROOT, "checkpoint_inputs"), exist_ok=True)
    for name, data in checkpoint_seeds().items():
        with open(os.path.join(ROOT, "checkpoint_inputs", f"seed-{name}"), "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(ROOT, "gguf_load"), exist_ok=True)
    os.makedirs(os.path.join(ROOT, "reply_parsers"), exist_ok=True)
    with open(os.path.join(ROOT, "gguf_load", "seed-tiny-gguf"), "wb") as f:
        f.write(gguf())
    for kind in ["chatglm2", "glm4"]:
        with open(os.path.join(ROOT, "gguf_load", f"seed-tiny-{kind}-gguf"), "wb") as f:
            f.write(gguf(kind))
    for i, r in enumerate(REPLIES):
        with open(os.path.join(ROOT, "reply_parsers", f"seed-{i}.txt"), "w", encoding="utf-8") as f:
            f.write(r)


if __name__ == "__main__":
    main()
