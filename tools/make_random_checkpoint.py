#!/usr/bin/env python3
"""Write a random-weight checkpoint with THUDM/chatglm3-6b's exact tensor names and shapes (for benchmarks).

Run:

    /work/pyenv/bin/python tools/make_random_checkpoint.py OUT_DIR              # full size, ~12.5 GB
    /work/pyenv/bin/python tools/make_random_checkpoint.py OUT_DIR --layers 2   # smoke test, ~1.1 GB
    python3 tools/make_random_checkpoint.py OUT_DIR --fast    # tiles one random pool: seconds, not minutes

Writes into OUT_DIR:
  config.json, tokenizer.model (+ tokenizer_config.json if present), copied from --reference-dir
      (with --layers N, config.json gets num_layers = N)
  model-0000{1..7}-of-00007.safetensors   float16, THUDM names, metadata {"format": "pt"}
  model.safetensors.index.json            {"metadata": {"total_size": ...}, "weight_map": {...}}

Values: weights ~ N(0, 0.02) (float16), RMSNorm weights 1.0, QKV bias ~ N(0, 0.02),
transformer.rotary_pos_emb.inv_freq as real checkpoints carry it.  Shards are generated and
written one at a time, so memory stays around one shard (~2 GB).  Only numpy + safetensors.
Seeded per tensor (--seed), so the output does not depend on the sharding.  --fast fills each
"normal" tensor from one shared pool of 16M N(0, std) values, starting at a per-tensor offset
(speed benchmarks only care about shapes and types; tools/device-check.sh uses it).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import save_file

N_SHARDS = 7


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--reference-dir", default="/work/shared/reference/chatglm3",
                   help="directory with the real config.json and tokenizer.model")
    p.add_argument("--config", default=None, help="config.json to copy (default: REFERENCE_DIR/config.json)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model to copy (default: REFERENCE_DIR/tokenizer.model)")
    p.add_argument("--layers", type=int, default=None, help="number of layers (default: the config's, 28)")
    p.add_argument("--shards", type=int, default=N_SHARDS)
    p.add_argument("--std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="tile one random pool instead of drawing every value")
    return p.parse_args()


def tensor_specs(cfg):
    """[(name, shape, kind)] in THUDM checkpoint order; kind in {normal, ones, inv_freq}."""
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    d = cfg.get("kv_channels") or h // nh
    ng = cfg["multi_query_group_num"] if cfg.get("multi_query_attention") else nh
    ffn = cfg["ffn_hidden_size"]
    V = cfg["padded_vocab_size"]
    qkv = (nh + 2 * ng) * d
    specs = [("transformer.embedding.word_embeddings.weight", (V, h), "normal"),
             ("transformer.rotary_pos_emb.inv_freq", (d // 4,), "inv_freq")]
    for n in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{n}."
        specs += [
            (p + "input_layernorm.weight", (h,), "ones"),
            (p + "self_attention.query_key_value.weight", (qkv, h), "normal"),
            (p + "self_attention.query_key_value.bias", (qkv,), "normal"),
            (p + "self_attention.dense.weight", (h, nh * d), "normal"),
            (p + "post_attention_layernorm.weight", (h,), "ones"),
            (p + "mlp.dense_h_to_4h.weight", (2 * ffn, h), "normal"),
            (p + "mlp.dense_4h_to_h.weight", (h, ffn), "normal"),
        ]
    specs += [("transformer.encoder.final_layernorm.weight", (h,), "ones"),
              ("transformer.output_layer.weight", (V, h), "normal")]
    return specs


def nbytes(shape):
    return int(np.prod(shape)) * 2


def split_shards(specs, n_shards):
    """Greedy contiguous split into n_shards of roughly equal byte size (never splits a tensor)."""
    total = sum(nbytes(s) for _, s, _ in specs)
    shards, cur, acc = [], [], 0
    for i, spec in enumerate(specs):
        cur.append(spec)
        acc += nbytes(spec[1])
        remaining_specs = len(specs) - i - 1
        remaining_shards = n_shards - len(shards) - 1
        if remaining_shards > 0 and (acc >= total * (len(shards) + 1) / n_shards or remaining_specs == remaining_shards):
            shards.append(cur)
            cur = []
    if cur:
        shards.append(cur)
    assert len(shards) == n_shards, (len(shards), n_shards)
    return shards


POOL = None


def fast_fill(out, key, std):
    global POOL
    if POOL is None:
        POOL = (np.random.default_rng(12345).standard_normal(1 << 24, dtype=np.float32) * np.float32(std)).astype(np.float16)
    flat = out.reshape(-1)
    start = key % POOL.size
    i = 0
    while i < flat.size:
        n = min(POOL.size - start, flat.size - i)
        flat[i:i + n] = POOL[start:start + n]
        i += n
        start = 0
    return out


def make_tensor(name, shape, kind, std, seed, fast=False):
    if kind == "ones":
        return np.ones(shape, dtype=np.float16)
    if kind == "inv_freq":
        dim = shape[0] * 2  # THUDM RotaryEmbedding(kv_channels // 2): arange(0, dim, 2) / dim
        return (1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float32) / dim))).astype(np.float16)
    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    out = np.empty(shape, dtype=np.float16)
    if fast:
        return fast_fill(out, key, std)
    rng = np.random.default_rng(key)
    flat = out.reshape(-1)
    step = 1 << 24  # generate in 16M-element pieces to keep the f32 temporaries small
    for i in range(0, flat.size, step):
        n = min(step, flat.size - i)
        flat[i:i + n] = rng.standard_normal(n, dtype=np.float32) * np.float32(std)
    return out


def main():
    args = parse_args()
    cfg_path = args.config or os.path.join(args.reference_dir, "config.json")
    tok_path = args.tokenizer or os.path.join(args.reference_dir, "tokenizer.model")
    with open(cfg_path) as f:
        cfg_text = f.read()
    cfg = json.loads(cfg_text)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.layers is not None and args.layers != cfg["num_layers"]:
        cfg["num_layers"] = args.layers
        cfg_text = json.dumps(cfg, indent=2) + "\n"
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        f.write(cfg_text)
    shutil.copyfile(tok_path, os.path.join(args.out_dir, "tokenizer.model"))
    tcfg = os.path.join(os.path.dirname(tok_path), "tokenizer_config.json")
    if os.path.exists(tcfg):
        shutil.copyfile(tcfg, os.path.join(args.out_dir, "tokenizer_config.json"))

    specs = tensor_specs(cfg)
    shards = split_shards(specs, args.shards)
    weight_map, total = {}, 0
    for si, shard in enumerate(shards):
        fname = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: make_tensor(name, shape, kind, args.std, args.seed, args.fast) for name, shape, kind in shard}
        save_file(tensors, os.path.join(args.out_dir, fname), metadata={"format": "pt"})
        os.chmod(os.path.join(args.out_dir, fname), 0o644)  # safetensors creates files 0600
        size = sum(t.nbytes for t in tensors.values())
        total += size
        for name in tensors:
            weight_map[name] = fname
        print(f"{fname}: {len(tensors)} tensors, {size / 2**30:.2f} GiB", flush=True)
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    print(f"total {total} bytes ({total / 2**30:.2f} GiB), {len(weight_map)} tensors, {cfg['num_layers']} layers")


if __name__ == "__main__":
    sys.exit(main())
