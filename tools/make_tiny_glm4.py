#!/usr/bin/env python3
"""Build the tiny random-weight GLM-4 test fixture in tests/fixtures/tiny-glm4/.

Run (from anywhere; seeded and deterministic, well under a minute on 2 CPU cores):

    /work/pyenv-glm/bin/python tools/make_tiny_glm4.py
    /work/pyenv-glm/bin/python tools/make_tiny_glm4.py --out /tmp/tiny-glm4     # try elsewhere

Environment: tools/requirements-glm.txt (torch, transformers, tiktoken, numpy, safetensors, ...).
Inputs (read-only, not in the repository): /work/shared/reference/glm-4-9b-chat/{config.json,tokenizer.model}
(--shared DIR, default /work/shared or ../shared beside the repository) and the Debian fortune files
(/usr/share/games/fortunes, packages fortunes, fortunes-min, fortunes-zh) for heldout.txt.

What it writes (see the README.md it also writes):
  config.json         the keys of THUDM/glm-4-9b-chat's config.json (model_type chatglm), tiny shape
  model.safetensors   bf16 weights in THUDM naming, plus transformer.rotary_pos_emb.inv_freq as THUDM saves it
  heldout.txt         a few KB of whole fortunes, English and Chinese alternating
  reference.json      GLM-4 tiktoken ids of heldout.txt, llama.cpp-style perplexity (ctx 128), logits of a short
                      prompt (a handful of ids + top-5 + logsumexp at every position), greedy continuations

The weights are random (seeded), not trained: the scales are chosen so that attention is far from uniform and the
logits are far from flat (top1 - top2 margins are reported).  The reference numbers come from HF transformers'
GlmForCausalLM run in float32 (eager attention) on the bf16 weights exactly as saved, after mapping THUDM names to
HF ones (tools/make_tiny_model.py's thudm_to_hf).  GLM-4 differs from ChatGLM3 only in its numbers: rope base
10000 * rope_ratio (5e6), layernorm_epsilon 1.5625e-07, vocabulary 151552, several eos ids.  The script asserts that
an independent numpy re-implementation of THUDM's GLM-4 modeling_chatglm.py forward pass (RotaryEmbedding with
base = 10000 * rope_ratio over kv_channels // 2 dims, adjacent pairs; SwiGLU; RMSNorm; multi-query groups) gives the
same logits, and that deliberately wrong variants (rope_ratio ignored, GPT-NeoX pairing, swapped SwiGLU halves)
do not.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import sys
import time

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
from make_glm_golden import (GLM4_CHAT_TEMPLATE, GLM4_N_RANKS, GLM4_SPECIALS, GLM4_TOKENIZER_SHA256,  # noqa: E402
                             find_shared, load_glm4_encoding, render_glm4, sha256_file)
from make_tiny_model import llama_cpp_perplexity, load_fortunes, split_heldout, thudm_to_hf  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures", "tiny-glm4"))
    p.add_argument("--shared", default=None)
    p.add_argument("--fortunes-dir", default="/usr/share/games/fortunes")
    p.add_argument("--seed", type=int, default=20240605)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--heldout-bytes", type=int, default=5000)
    p.add_argument("--ppl-ctx", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=12)
    # model shape: hidden 16 = 2 heads x kv_channels 8 keeps the two 151552-row matrices at 4.85 MB each in bf16
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--kv-channels", type=int, default=8)
    p.add_argument("--kv-groups", type=int, default=2)
    p.add_argument("--ffn", type=int, default=64)
    return p.parse_args()


# ----------------------------------------------------------------------------- model maths

def rope_base(cfg):
    return 10000.0 * cfg["rope_ratio"]


def hf_config(cfg, attn="eager"):
    from transformers import GlmConfig
    c = GlmConfig(
        vocab_size=cfg["padded_vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["ffn_hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["multi_query_group_num"],
        head_dim=cfg["kv_channels"],
        hidden_act="silu",
        max_position_embeddings=cfg["seq_length"],
        rms_norm_eps=cfg["layernorm_epsilon"],
        tie_word_embeddings=False,
        attention_bias=True,
        attention_dropout=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": rope_base(cfg), "partial_rotary_factor": 0.5},
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=cfg["eos_token_id"],
        initializer_range=0.02,
        use_cache=False,
    )
    c._attn_implementation = attn
    return c


def thudm_inv_freq_buffer(cfg):
    """transformer.rotary_pos_emb.inv_freq as THUDM's GLM-4 RotaryEmbedding registers it: dim = kv_channels // 2,
    computed in the checkpoint dtype (bf16) with base 10000 -- NOT 10000 * rope_ratio, which only forward_impl uses.
    Converters must ignore it."""
    import torch
    dim = cfg["kv_channels"] // 2
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).to(dtype=torch.bfloat16) / dim))


def glm4_forward_numpy(w, ids, cfg, dtype=np.float64, base=None, rope_pairs="adjacent", swiglu_gate_first=True):
    """Independent re-implementation of THUDM GLM-4 modeling_chatglm.py inference (no KV cache).

    Fused QKV split [np*hn, ng*hn, ng*hn] (+bias); RotaryEmbedding(kv_channels // 2, rope_ratio): forward_impl uses
    base = 10000 * rope_ratio, theta_i = base^(-2i/n_elem), n_elem = kv_channels // 2, cache[..., 0] = cos,
    [..., 1] = sin, applied to x[..., :n_elem] in adjacent pairs (2i, 2i+1), the rest passes through; head i uses
    KV group i // (np // ng); causal softmax(QK^T / sqrt(hn)) (query_key_layer_scaling cancels); dense;
    SwiGLU silu(first half) * second half of dense_h_to_4h; RMSNorm (eps layernorm_epsilon); final norm; output_layer.
    base / rope_pairs="halves" / swiglu_gate_first=False give deliberately wrong variants (negative controls)."""
    W = {k: np.asarray(v, dtype=dtype) for k, v in w.items()}
    nh, ng, hn, eps = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"], cfg["layernorm_epsilon"]
    base = rope_base(cfg) if base is None else base
    s = len(ids)

    def rmsnorm(x, g):
        return g * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))

    n_elem = hn // 2
    f32 = np.float32  # the cache is built in float32 by THUDM (and HF) whatever the model dtype
    theta = f32(1.0) / (f32(base) ** (np.arange(0, n_elem, 2, dtype=f32) / f32(n_elem)))
    idx_theta = np.outer(np.arange(s, dtype=f32), theta)
    cache = np.stack([np.cos(idx_theta), np.sin(idx_theta)], -1).astype(dtype)  # [s, n_elem/2, 2]

    def rope(x):  # x [s, heads, hn]
        rot = n_elem
        xr, xp = x[..., :rot], x[..., rot:]
        c = cache.reshape(s, 1, rot // 2, 2)
        if rope_pairs == "adjacent":
            xs = xr.reshape(s, -1, rot // 2, 2)
            x0, x1 = xs[..., 0], xs[..., 1]
        else:  # GPT-NeoX pairs (i, i + rot/2): not GLM
            x0, x1 = xr[..., : rot // 2], xr[..., rot // 2:]
        o0 = x0 * c[..., 0] - x1 * c[..., 1]
        o1 = x1 * c[..., 0] + x0 * c[..., 1]
        out = np.stack([o0, o1], -1).reshape(s, -1, rot) if rope_pairs == "adjacent" else np.concatenate([o0, o1], -1)
        return np.concatenate([out, xp], -1)

    x = W["transformer.embedding.word_embeddings.weight"][np.asarray(ids)]
    mask = np.triu(np.ones((s, s), dtype=bool), 1)
    for n in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{n}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"])
        mixed = h @ W[p + "self_attention.query_key_value.weight"].T + W[p + "self_attention.query_key_value.bias"]
        q = mixed[:, : nh * hn].reshape(s, nh, hn)
        k = mixed[:, nh * hn: (nh + ng) * hn].reshape(s, ng, hn)
        v = mixed[:, (nh + ng) * hn:].reshape(s, ng, hn)
        q, k = rope(q), rope(k)
        k = np.repeat(k, nh // ng, axis=1)
        v = np.repeat(v, nh // ng, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hn)
        scores = np.where(mask[None], -np.inf, scores)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", probs, v).reshape(s, nh * hn)
        x = x + ctx @ W[p + "self_attention.dense.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"])
        a = h @ W[p + "mlp.dense_h_to_4h.weight"].T
        g, u = np.split(a, 2, axis=-1)
        if not swiglu_gate_first:
            g, u = u, g
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W[p + "mlp.dense_4h_to_h.weight"].T
    x = rmsnorm(x, W["transformer.encoder.final_layernorm.weight"])
    return x @ W["transformer.output_layer.weight"].T


def random_weights(cfg, seed):
    """Seeded random THUDM-named float32 weights with scales that keep activations O(1) and make attention and
    logits decisive. Rows of the padding ids (>= 151343, past the 14 specials) are near zero, as in a real
    checkpoint where they are never trained, so they never win an argmax."""
    import torch
    g = torch.Generator().manual_seed(seed)
    H, L, nh, ng, hn, F, V = (cfg["hidden_size"], cfg["num_layers"], cfg["num_attention_heads"],
                              cfg["multi_query_group_num"], cfg["kv_channels"], cfg["ffn_hidden_size"],
                              cfg["padded_vocab_size"])
    n_real = GLM4_N_RANKS + len(GLM4_SPECIALS)

    def normal(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    w = {}
    emb = normal(V, H, std=1.0)
    emb[n_real:] *= 0.02
    w["transformer.embedding.word_embeddings.weight"] = emb
    qkv_rows = (nh + 2 * ng) * hn
    for n in range(L):
        p = f"transformer.encoder.layers.{n}."
        w[p + "input_layernorm.weight"] = 1.0 + normal(H, std=0.2)
        w[p + "self_attention.query_key_value.weight"] = normal(qkv_rows, H, std=1.5 / math.sqrt(H))
        w[p + "self_attention.query_key_value.bias"] = normal(qkv_rows, std=0.5)
        w[p + "self_attention.dense.weight"] = normal(H, nh * hn, std=1.0 / math.sqrt(nh * hn))
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal(H, std=0.2)
        w[p + "mlp.dense_h_to_4h.weight"] = normal(2 * F, H, std=1.5 / math.sqrt(H))
        w[p + "mlp.dense_4h_to_h.weight"] = normal(H, F, std=1.0 / math.sqrt(F))
    w["transformer.encoder.final_layernorm.weight"] = 1.0 + normal(H, std=0.2)
    out = normal(V, H, std=1.0)
    out[n_real:] *= 0.02
    w["transformer.output_layer.weight"] = out
    return w


# ----------------------------------------------------------------------------- main

def main():
    args = parse_args()
    import torch
    import tiktoken
    import transformers
    import safetensors
    from safetensors.torch import load_file, save_file
    from transformers import GlmForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    shared = find_shared(args.shared)
    ref_dir = os.path.join(shared, "reference", "glm-4-9b-chat")
    tok_path = os.path.join(ref_dir, "tokenizer.model")
    assert sha256_file(tok_path) == GLM4_TOKENIZER_SHA256
    enc, specials = load_glm4_encoding(tok_path)
    os.makedirs(args.out, exist_ok=True)

    # --- config.json: THUDM/glm-4-9b-chat's keys and order, tiny shape
    with open(os.path.join(ref_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "chatglm" and cfg["add_qkv_bias"] and cfg["multi_query_attention"]
    assert cfg["rmsnorm"] and cfg["post_layer_norm"] and cfg["original_rope"] and not cfg["add_bias_linear"]
    assert cfg["padded_vocab_size"] == 151552 and cfg["rope_ratio"] == 500
    cfg.update({
        "_name_or_path": "glmtool/tiny-glm4",
        "hidden_size": args.hidden, "num_layers": args.layers, "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads, "kv_channels": args.kv_channels, "multi_query_group_num": args.kv_groups,
        "ffn_hidden_size": args.ffn, "rope_ratio": 500, "layernorm_epsilon": 1.5625e-07, "seq_length": 131072,
        "padded_vocab_size": 151552, "eos_token_id": [151329, 151336, 151338], "pad_token_id": 151329,
        "torch_dtype": "bfloat16",
    })
    assert args.heads % args.kv_groups == 0 and args.kv_channels % 4 == 0
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    # --- weights: seeded f32 -> bf16, THUDM names, plus the inv_freq buffer
    w32 = random_weights(cfg, args.seed)
    w = {k: v.to(torch.bfloat16).contiguous() for k, v in w32.items()}
    w["transformer.rotary_pos_emb.inv_freq"] = thudm_inv_freq_buffer(cfg).contiguous()
    st_path = os.path.join(args.out, "model.safetensors")
    save_file(w, st_path, metadata={"format": "pt"})
    os.chmod(st_path, 0o644)
    n_params = sum(v.numel() for k, v in w.items() if not k.endswith("inv_freq"))

    loaded = load_file(st_path)
    assert set(loaded) == set(w) and all(v.dtype == torch.bfloat16 for v in loaded.values())
    wf = {k: v.to(torch.float32) for k, v in loaded.items()}
    model = GlmForCausalLM(hf_config(cfg)).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(thudm_to_hf(wf, cfg), strict=False)
    assert not unexpected and all("rotary_emb" in m for m in missing), (missing, unexpected)
    n_elem = args.kv_channels // 2
    theta = 1.0 / (rope_base(cfg) ** (torch.arange(0, n_elem, 2, dtype=torch.float32) / n_elem))
    assert torch.allclose(model.model.rotary_emb.inv_freq, theta, rtol=1e-6), model.model.rotary_emb.inv_freq

    @torch.no_grad()
    def logits_of(ids, m=model):
        return m(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]

    # --- heldout text and ids
    entries = load_fortunes(args.fortunes_dir)
    heldout, _ = split_heldout(entries, args.heldout_bytes, rng)
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(heldout)
    heldout_ids = enc.encode(heldout, disallowed_special=())
    assert enc.decode(heldout_ids) == heldout

    # --- independent THUDM-forward check on the saved weights
    chat_one = [{"role": "user", "content": "你好，请介绍一下你自己。"}]
    chat_ids = enc.encode(render_glm4(chat_one), allowed_special="all")
    chk_ids = chat_ids + heldout_ids[:60]
    wnp = {k: v.numpy() for k, v in wf.items()}
    ref64 = glm4_forward_numpy(wnp, chk_ids, cfg, np.float64)
    hf32 = logits_of(chk_ids).numpy().astype(np.float64)
    m64 = GlmForCausalLM(hf_config(cfg)).to(torch.float64).eval()
    m64.load_state_dict({k: v.to(torch.float64) for k, v in thudm_to_hf(wf, cfg).items()}, strict=False)
    hf64 = logits_of(chk_ids, m64).numpy()
    del m64
    d64, d32 = float(np.abs(hf64 - ref64).max()), float(np.abs(hf32 - ref64).max())
    scale = max(1.0, float(np.abs(ref64).max()))
    print(f"THUDM GLM-4 numpy forward vs HF Glm: max|diff| f64 {d64:.3e}, f32 {d32:.3e} (max|logit| {scale:.2f})")
    assert d64 < 2e-6 * scale and d32 < 2e-5 * scale, (d64, d32)
    controls = {}
    for name, kw in (("rope_ratio_ignored", {"base": 10000.0}), ("neox_pairs", {"rope_pairs": "halves"}),
                     ("swiglu_swapped", {"swiglu_gate_first": False})):
        dbad = float(np.abs(glm4_forward_numpy(wnp, chk_ids, cfg, np.float64, **kw) - ref64).max())
        controls[name] = dbad
        print(f"  negative control {name}: max|diff| {dbad:.3e}")
        assert dbad > 100 * max(d32, 1e-6), (name, dbad)

    # --- logits of a short prompt: a handful of ids, top-5 and logsumexp at every position
    prompt_text = "GLM-4 says: 你好, world! 1234 🚀"
    prompt_ids = [specials["[gMASK]"], specials["<sop>"]] + enc.encode(prompt_text, disallowed_special=())
    lg = logits_of(prompt_ids)
    probe_ids = sorted(set([0, 11, 198, 220, 9703, 109377, GLM4_N_RANKS - 1] + list(specials.values())[:10]
                           + [151343, 151551] + prompt_ids[2:6]))
    lse = torch.logsumexp(lg.to(torch.float64), dim=-1)
    top = torch.topk(lg, 5, dim=-1)
    prompt_logits = {
        "probe_ids": probe_ids,
        "probe": [[float(lg[i, t]) for t in probe_ids] for i in range(len(prompt_ids))],
        "top5_ids": top.indices.tolist(),
        "top5_logits": [[float(x) for x in row] for row in top.values],
        "logsumexp": [float(x) for x in lse],
    }
    margins0 = (top.values[:, 0] - top.values[:, 1]).tolist()
    print(f"prompt: {len(prompt_ids)} ids, logit std {float(lg.std()):.2f}, top1-top2 margin min {min(margins0):.4f}")

    # --- perplexity the llama.cpp way (same definition as tests/fixtures/tiny-chatglm3/reference.json)
    C = args.ppl_ctx
    n_chunks, count, nll_per_chunk, ppl_running, ppl, ppl_stderr = llama_cpp_perplexity(logits_of, heldout_ids, C)
    print(f"perplexity ctx {C}: {n_chunks} chunks, {count} scored: {ppl:.2f} +/- {ppl_stderr:.2f}")

    # --- greedy continuations
    greedy_prompts = [
        ("chat_one_turn", chat_ids),
        ("raw_text", enc.encode("The quick brown fox", disallowed_special=())),
        ("raw_text_prefixed", [specials["[gMASK]"], specials["<sop>"]]
         + enc.encode("床前明月光，疑是", disallowed_special=())),
    ]
    greedy = []
    eos = set(cfg["eos_token_id"])
    for name, ids in greedy_prompts:
        cur, margins = list(ids), []
        for _ in range(args.gen_tokens):
            t2 = torch.topk(logits_of(cur)[-1], 2)
            margins.append(round(float(t2.values[0] - t2.values[1]), 6))
            cur.append(int(t2.indices[0]))
        new = cur[len(ids):]
        greedy.append({"name": name, "prompt_ids": ids, "new_ids": new, "top1_top2_margin": margins,
                       "new_text": enc.decode([t for t in new if t < GLM4_N_RANKS], errors="replace"),
                       "hits_eos": any(t in eos for t in new)})
        print(f"greedy {name}: min margin {min(margins):.4f}, eos {greedy[-1]['hits_eos']}: {new}")
    # consistency: teacher-forced logits of the whole greedy sequence pick the same tokens (checks no KV-cache
    # confusion in the reference itself; the Rust side may decode incrementally)
    for gr in greedy:
        full = gr["prompt_ids"] + gr["new_ids"]
        am = logits_of(full)[len(gr["prompt_ids"]) - 1:-1].argmax(-1).tolist()
        assert am == gr["new_ids"], gr["name"]

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "tiktoken": tiktoken.__version__,
                "numpy": np.__version__, "safetensors": safetensors.__version__}
    ref = {
        "about": "Made by tools/make_tiny_glm4.py. Random (seeded) weights, not trained. Logits/perplexity/greedy from HF "
                 "transformers GlmForCausalLM in float32 (eager attention) on the bf16 weights of model.safetensors "
                 "upcast to float32 (rope_theta = 10000 * rope_ratio = 5e6, partial_rotary_factor 0.5, head_dim = "
                 "kv_channels). Ids are GLM-4 tiktoken ids (tokenizer.model of THUDM/glm-4-9b-chat, not in the repository; "
                 "specials 151329.. as in special_ids). Argmax/top-k run over all padded_vocab_size rows.",
        "versions": versions,
        "tokenizer_model_sha256": GLM4_TOKENIZER_SHA256,
        "special_ids": specials,
        "padded_vocab_size": cfg["padded_vocab_size"],
        "numpy_check": {"max_abs_diff_f64": d64, "max_abs_diff_hf_f32": d32, "negative_controls": controls},
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "prompt_logits": prompt_logits,
        "heldout_file": "heldout.txt",
        "heldout_ids": heldout_ids,
        "perplexity": {
            "ctx": C, "first_scored": C // 2, "n_chunks": n_chunks, "n_scored": count,
            "nll_per_chunk": nll_per_chunk, "ppl_running": ppl_running, "ppl": ppl, "ppl_stderr": ppl_stderr,
            "method": "llama.cpp perplexity: non-overlapping chunks of ctx tokens of heldout_ids (plain ids, no "
                      "[gMASK]<sop> prefix, tail dropped), fresh state per chunk, no BOS substitution, score positions "
                      "j = ctx/2 .. ctx-2 predicting token j+1; stderr = sqrt((mean(nll^2) - mean(nll)^2) / (N - 1)) * ppl",
        },
        "greedy": greedy,
    }
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")

    write_readme(args, cfg, n_params, len(heldout.encode()), len(heldout_ids), ppl, ppl_stderr, n_chunks, count,
                 greedy, min(margins0), versions, d32, controls)
    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"  {size:9d}  {name}")
    print(f"  {total:9d}  total; {time.time() - t0:.0f}s")
    assert total < 11 * 1024 * 1024


def write_readme(args, cfg, n_params, heldout_bytes, heldout_tokens, ppl, ppl_stderr, n_chunks, count, greedy,
                 prompt_min_margin, versions, d32, controls):
    gm = ", ".join(f"{g['name']} {min(g['top1_top2_margin']):.3f}" for g in greedy)
    eos_hits = [g["name"] for g in greedy if g["hits_eos"]]
    text = f"""# tiny-glm4 test fixture

A tiny GLM-4-shaped model with **random (seeded) weights** in THUDM's original layout
(`model_type: chatglm`, the config keys of THUDM/glm-4-9b-chat), plus reference outputs from HF
transformers, to check glmtool's GLM-4 converter and runtime. **Generated; do not edit by hand.**
Rebuild with

    /work/pyenv-glm/bin/python tools/make_tiny_glm4.py

(seeded, deterministic on the same library versions; `--help` lists the flags; versions below and in
tools/requirements-glm.txt). This fixture was made with the defaults: `--seed {args.seed} --hidden {args.hidden}
--layers {args.layers} --heads {args.heads} --kv-channels {args.kv_channels} --kv-groups {args.kv_groups} --ffn {args.ffn}
--heldout-bytes {args.heldout_bytes} --ppl-ctx {args.ppl_ctx} --gen-tokens {args.gen_tokens}`.

## Tokenizer: not in the repository

The GLM-4 tokenizer (`tokenizer.model`, tiktoken ranks, 2.6 MB, sha256 {GLM4_TOKENIZER_SHA256[:8]}…{GLM4_TOKENIZER_SHA256[-5:]},
THUDM's GLM-4 licence) is **not** committed. Tests that need it copy it from
`/work/shared/reference/glm-4-9b-chat/tokenizer.model` (or `../shared/reference/glm-4-9b-chat/` relative to the
repository) next to these files and **skip when it is absent**. Everything in reference.json is given as ids, so
the model-side checks (conversion, logits, perplexity, greedy) need no tokenizer.

## Files

- `config.json`: the keys (and order) of THUDM/glm-4-9b-chat's config.json with hidden_size {cfg['hidden_size']},
  num_layers = num_hidden_layers = {cfg['num_layers']}, num_attention_heads {cfg['num_attention_heads']}, kv_channels {cfg['kv_channels']},
  multi_query_group_num {cfg['multi_query_group_num']}, ffn_hidden_size {cfg['ffn_hidden_size']}; unchanged from the real model:
  padded_vocab_size 151552, rope_ratio 500 (rope base 5e6), layernorm_epsilon 1.5625e-07, seq_length 131072,
  eos_token_id [151329, 151336, 151338], pad_token_id 151329, torch_dtype bfloat16.
- `model.safetensors`: {n_params} parameters, **bfloat16**, THUDM names: `transformer.embedding.word_embeddings.weight`,
  per layer `transformer.encoder.layers.N.{{input_layernorm, self_attention.query_key_value (weight + bias),
  self_attention.dense, post_attention_layernorm, mlp.dense_h_to_4h ([gate; up]), mlp.dense_4h_to_h}}.weight`,
  `transformer.encoder.final_layernorm.weight`, `transformer.output_layer.weight` (not tied), and the buffer
  `transformer.rotary_pos_emb.inv_freq` exactly as THUDM's GLM-4 code registers it: bf16, {cfg['kv_channels'] // 4} values,
  base **10000** (not 10000 × rope_ratio; only forward_impl applies rope_ratio). Converters must ignore it.
  Embedding and output-layer rows of the padding ids 151343..151551 are near zero (std 0.02), like never-trained
  rows, so they never win an argmax; the 14 special-token rows are ordinary random rows.
- `heldout.txt`: {heldout_bytes} bytes ({heldout_tokens} GLM-4 tokens) of whole fortunes, English and Chinese alternating.
- `reference.json`: `heldout_ids` (plain tiktoken ids of heldout.txt, no prefix); llama.cpp-style `perplexity`
  (ctx {args.ppl_ctx}, chunks of ctx tokens, second half scored, same definition as tiny-chatglm3);
  `prompt_logits` for `prompt_ids` ([gMASK] <sop> + text): at every position the logits of `probe_ids`,
  the top-5 ids and logits, and the logsumexp over all 151552 rows; `greedy`: 3 prompts × {args.gen_tokens} tokens
  (a one-turn GLM-4 chat prompt rendered with THUDM's chat template, raw text, raw text with the [gMASK] <sop>
  prefix that THUDM's tokenizer.encode adds) with the top1 − top2 margin of every step.

## Shape choice

Hidden {cfg['hidden_size']} = {cfg['num_attention_heads']} heads × kv_channels {cfg['kv_channels']} is the smallest shape that keeps GLM's
structure testable: kv_channels must be a multiple of 4 (rotary on the first half of each head, in pairs) and
kv_channels 8 gives two rotary frequencies (1 and 5e6^-1/2), so a runtime that ignores rope_ratio fails; THUDM and
HF would also accept kv_channels 4 (one frequency, rope base untestable) or hidden ≠ heads × kv_channels, which no
real GLM has. The bulk is the two 151552-row matrices (151552 × {cfg['hidden_size']} bf16 = {151552 * cfg['hidden_size'] * 2 / 1e6:.2f} MB each).
With 2 heads and 2 KV groups each head has its own K/V (GQA ratio 1; the real model's is 16): the grouped
broadcast is exercised by tests/fixtures/tiny-chatglm3 (4 heads, 2 groups).

## How the reference was computed

HF transformers' `GlmForCausalLM` (eager attention, float32) on the bf16 weights upcast to float32, after mapping
THUDM names to HF ones (tools/make_tiny_model.py's `thudm_to_hf`: query_key_value split into q/k/v weight and
bias, dense_h_to_4h → gate_up_proj, …) with GlmConfig(head_dim = kv_channels, num_key_value_heads =
multi_query_group_num, partial_rotary_factor 0.5, rope_theta = 10000 × rope_ratio = 5e6, rms_norm_eps =
layernorm_epsilon, attention_bias True). HF Glm rotates the first half of each head in interleaved (adjacent)
pairs, as THUDM's apply_rotary_pos_emb does. The script asserts that an independent numpy re-implementation of
THUDM's GLM-4 forward pass agrees (max |diff| of HF float32 vs numpy float64: {d32:.1e}) and that wrong variants do
not: rope_ratio ignored {controls['rope_ratio_ignored']:.2f}, GPT-NeoX pairing {controls['neox_pairs']:.2f}, swapped SwiGLU halves
{controls['swiglu_swapped']:.2f} (max |logit diff|).

Weights are random, so the numbers only test agreement, not quality: held-out perplexity (ctx {args.ppl_ctx}, {n_chunks} chunks,
{count} scored tokens) is {ppl:.0f} ± {ppl_stderr:.0f}. Logits are far from flat (output layer std 1, logit std ≈ 4); the
smallest top1 − top2 margins are {prompt_min_margin:.3f} over the prompt positions and, per greedy run, {gm}.
{"Greedy runs that emit an eos id (the runtime must not stop there to match): " + ", ".join(eos_hits) + "." if eos_hits else "No greedy run emits an eos id."}

Versions: {", ".join(f"{k} {v}" for k, v in versions.items())}.

## Text source and licences

heldout.txt is an excerpt of the fortune cookie databases shipped by Debian in /usr/share/games/fortunes: packages
`fortunes` and `fortunes-min` (fortune-mod data, BSD licence of the Regents of the University of California with
further per-file notices; see /usr/share/doc/fortunes/copyright) and `fortunes-zh` (files chinese, tang300,
song100; Copyright 2001-2009 Yu Guanghui, 2015-2019 Mo Zhou, 2020-2021 xiao sheng wen; GPL-3.0+, see
/usr/share/doc/fortunes-zh/copyright); it keeps their licences. `%` separators, ANSI colour escapes and backspace
overstrikes were removed (same selection code as tools/make_tiny_model.py, with its own seed). The weights are
random numbers; the vocabulary size and special-token ids are those of THUDM/glm-4-9b-chat.
"""
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
