#!/usr/bin/env python3
"""Build the tiny ChatGLM3-shaped test fixture in tests/fixtures/tiny-chatglm3/.

Run (from anywhere; paths default relative to the repository root):

    /work/pyenv/bin/python tools/make_tiny_model.py            # full build, a few CPU minutes
    /work/pyenv/bin/python tools/make_tiny_model.py --steps 50 --out /tmp/tiny   # quick try

Requirements: tools/requirements.txt (torch, transformers, sentencepiece, protobuf,
safetensors, numpy).  Text source: the Debian packages `fortunes`, `fortunes-min`
and `fortunes-zh` (/usr/share/games/fortunes).  Everything is seeded; on the same
machine and library versions a rerun gives byte-identical files.

What it writes (see the README.md it also writes):
  tokenizer.model     SentencePiece BPE (~3000 pieces, byte_fallback) whose normalizer
                      and splitting flags are copied from the real ChatGLM3 tokenizer.model
  config.json         ChatGLM3 config keys (THUDM layout) for a 2-layer, hidden-128 model
  model.safetensors   f16 weights in THUDM naming (+ transformer.rotary_pos_emb.inv_freq)
  heldout.txt         text used neither for the tokenizer nor for the model
  reference.json      prompt ids, held-out ids and llama.cpp-style perplexity (ctx 128),
                      greedy continuations, tokenizer cases
  reference_logits.bin  f32 LE [len(prompt_ids), padded_vocab_size] logits of the prompt

The model is trained as HF transformers' GlmForCausalLM (same maths as THUDM's
ChatGLM3: partial rotary on the first half of each head with adjacent pairs,
SwiGLU with gate first, RMSNorm, MQA groups, QKV bias) and then mapped to THUDM
names.  The script asserts that an independent numpy re-implementation of THUDM's
forward pass on the saved weights gives the same logits as HF Glm.
"""

import argparse
import io
import json
import math
import os
import random
import re
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ZH_FILES = {"chinese", "tang300", "song100"}
CHATGLM3_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                     "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures", "tiny-chatglm3"))
    p.add_argument("--reference-dir", default="/work/shared/reference/chatglm3",
                   help="real ChatGLM3 dir with tokenizer.model and config.json (specs are copied from it)")
    p.add_argument("--fortunes-dir", default="/usr/share/games/fortunes")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=3000, help="SentencePiece vocab size")
    p.add_argument("--character-coverage", type=float, default=0.99,
                   help="the real tokenizer uses 0.9999; 3000 pieces cannot cover that many CJK characters, "
                        "the rest goes through byte fallback")
    p.add_argument("--heldout-bytes", type=int, default=8000)
    p.add_argument("--steps", type=int, default=1400, help="training steps")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--train-seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--ppl-ctx", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=32)
    # model shape
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-channels", type=int, default=32)
    p.add_argument("--kv-groups", type=int, default=2)
    p.add_argument("--ffn", type=int, default=352)
    p.add_argument("--seq-length", type=int, default=512)
    return p.parse_args()


# ----------------------------------------------------------------------------- text

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_OVERSTRIKE = re.compile(r".\x08")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(s):
    s = _ANSI.sub("", s)
    while "\x08" in s:
        t = _OVERSTRIKE.sub("", s)
        if t == s:
            break
        s = t
    s = s.replace("\r\n", "\n")
    return _CTRL.sub("", s)


def load_fortunes(d):
    """-> list of (file, is_zh, text) entries, in a fixed order."""
    entries = []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if name.endswith(".dat") or name.endswith(".u8") or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        text = clean(text)
        for chunk in re.split(r"^%[ \t]*$", text, flags=re.M):
            chunk = chunk.strip("\n").rstrip()
            if chunk.strip():
                entries.append((name, name in ZH_FILES, chunk))
    return entries


def split_heldout(entries, target_bytes, rng):
    """Pick whole fortunes for the held-out text, alternating English and Chinese."""
    def ok(e):
        n = len(e[2].encode("utf-8"))
        return 80 <= n <= 700 and "\t" not in e[2] and e[0] not in ("art", "ascii-art")
    en = [i for i, e in enumerate(entries) if ok(e) and not e[1]]
    zh = [i for i, e in enumerate(entries) if ok(e) and e[1]]
    rng.shuffle(en)
    rng.shuffle(zh)
    picked, size, k = [], 0, 0
    while size < target_bytes:
        pool = en if k % 2 == 0 else zh
        i = pool.pop()
        picked.append(i)
        size += len(entries[i][2].encode("utf-8")) + 1
        k += 1
    held_texts = {entries[i][2] for i in picked}
    heldout = "\n".join(entries[i][2] for i in picked) + "\n"
    train = [e for i, e in enumerate(entries) if e[2] not in held_texts]
    return heldout, train


# ----------------------------------------------------------------------------- tokenizer

def load_model_proto(path):
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


COPIED_TRAINER_FLAGS = [
    "model_type", "split_by_unicode_script", "split_by_whitespace", "split_by_number", "split_digits",
    "treat_whitespace_as_suffix", "allow_whitespace_only_pieces", "byte_fallback", "max_sentencepiece_length",
    "max_sentence_length", "unk_id", "bos_id", "eos_id", "pad_id", "unk_piece", "bos_piece", "eos_piece",
    "pad_piece", "unk_surface", "vocabulary_output_piece_score", "hard_vocab_limit", "use_all_vocab",
]


def train_tokenizer(lines, ref, args):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    rt, rn = ref.trainer_spec, ref.normalizer_spec
    kw = {f: getattr(rt, f) for f in COPIED_TRAINER_FLAGS}
    kw["model_type"] = pb.TrainerSpec.ModelType.Name(rt.model_type).lower()
    kw.update(
        normalization_rule_name=rn.name,
        add_dummy_prefix=rn.add_dummy_prefix,
        remove_extra_whitespaces=rn.remove_extra_whitespaces,
        vocab_size=args.vocab_size,
        character_coverage=args.character_coverage,
        num_threads=args.threads,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    print("sentencepiece trainer args:", json.dumps(kw, ensure_ascii=False, sort_keys=True))
    spm.set_random_generator_seed(args.seed)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, **kw)

    m = pb.ModelProto()
    m.ParseFromString(buf.getvalue())
    # Mirror the real tokenizer's normalizer exactly (identity rule, no charsmap, dummy prefix,
    # no whitespace squeezing) and drop machine-specific trainer fields.
    m.normalizer_spec.CopyFrom(ref.normalizer_spec)
    m.denormalizer_spec.CopyFrom(ref.denormalizer_spec)
    m.trainer_spec.input[:] = []
    m.trainer_spec.model_prefix = ""
    assert m.normalizer_spec == ref.normalizer_spec
    print("normalizer_spec (copied from reference):\n" + str(m.normalizer_spec))
    print("trainer_spec differences  tiny  vs  reference:")
    for fd in m.trainer_spec.DESCRIPTOR.fields:
        a, b = getattr(m.trainer_spec, fd.name), getattr(rt, fd.name)
        if not isinstance(a, (str, bytes, int, float, bool)):  # repeated field
            a, b = list(a), list(b)
        if a != b:
            print(f"  {fd.name}: {a!r}  vs  {b!r}")
    # layout checks: <unk> <s> </s>, then the 256 byte pieces, like ChatGLM3
    assert [p.piece for p in m.pieces[:3]] == ["<unk>", "<s>", "</s>"]
    assert [p.piece for p in m.pieces[3:259]] == [f"<0x{i:02X}>" for i in range(256)]
    assert all(p.type == pb.ModelProto.SentencePiece.BYTE for p in m.pieces[3:259])
    return m.SerializeToString()


# ----------------------------------------------------------------------------- model maths

def hf_config(cfg, attn):
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
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=cfg["eos_token_id"],
        initializer_range=0.02,
        use_cache=False,
    )
    c._attn_implementation = attn
    return c


def hf_to_thudm(sd, cfg):
    """HF GlmForCausalLM state dict -> THUDM ChatGLM3 names (torch tensors)."""
    import torch
    out = {"transformer.embedding.word_embeddings.weight": sd["model.embed_tokens.weight"]}
    for n in range(cfg["num_layers"]):
        h, t = f"model.layers.{n}.", f"transformer.encoder.layers.{n}."
        out[t + "input_layernorm.weight"] = sd[h + "input_layernorm.weight"]
        for suf in ("weight", "bias"):
            out[t + "self_attention.query_key_value." + suf] = torch.cat(
                [sd[h + f"self_attn.{p}_proj.{suf}"] for p in "qkv"], 0)
        out[t + "self_attention.dense.weight"] = sd[h + "self_attn.o_proj.weight"]
        out[t + "post_attention_layernorm.weight"] = sd[h + "post_attention_layernorm.weight"]
        out[t + "mlp.dense_h_to_4h.weight"] = sd[h + "mlp.gate_up_proj.weight"]
        out[t + "mlp.dense_4h_to_h.weight"] = sd[h + "mlp.down_proj.weight"]
    out["transformer.encoder.final_layernorm.weight"] = sd["model.norm.weight"]
    out["transformer.output_layer.weight"] = sd["lm_head.weight"]
    # THUDM's RotaryEmbedding(dim = kv_channels // 2) buffer, carried by real checkpoints.
    rd = cfg["kv_channels"] // 2
    out["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
    return out


def thudm_to_hf(w, cfg):
    nh, ng, d = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"]
    sd = {"model.embed_tokens.weight": w["transformer.embedding.word_embeddings.weight"]}
    for n in range(cfg["num_layers"]):
        h, t = f"model.layers.{n}.", f"transformer.encoder.layers.{n}."
        sd[h + "input_layernorm.weight"] = w[t + "input_layernorm.weight"]
        for suf in ("weight", "bias"):
            qkv = w[t + "self_attention.query_key_value." + suf]
            q, k, v = qkv.split([nh * d, ng * d, ng * d], 0)
            sd[h + f"self_attn.q_proj.{suf}"], sd[h + f"self_attn.k_proj.{suf}"], sd[h + f"self_attn.v_proj.{suf}"] = q, k, v
        sd[h + "self_attn.o_proj.weight"] = w[t + "self_attention.dense.weight"]
        sd[h + "post_attention_layernorm.weight"] = w[t + "post_attention_layernorm.weight"]
        sd[h + "mlp.gate_up_proj.weight"] = w[t + "mlp.dense_h_to_4h.weight"]
        sd[h + "mlp.down_proj.weight"] = w[t + "mlp.dense_4h_to_h.weight"]
    sd["model.norm.weight"] = w["transformer.encoder.final_layernorm.weight"]
    sd["lm_head.weight"] = w["transformer.output_layer.weight"]
    return sd


def thudm_forward_numpy(w, ids, cfg, dtype=np.float64, rope_pairs="adjacent", swiglu_gate_first=True):
    """Independent re-implementation of THUDM modeling_chatglm.py (ChatGLM3) inference, no KV cache.

    Follows THUDM's code: fused QKV split [np*hn, ng*hn, ng*hn]; RotaryEmbedding(kv_channels // 2,
    original_impl) with cache[..., 0] = cos, [..., 1] = sin applied to x[..., :rot_dim] viewed as
    (rot_dim // 2, 2) adjacent pairs; multi-query expand (head i uses group i // (np // ng));
    causal softmax(QK^T / sqrt(hn)); swiglu = silu(chunk0) * chunk1; RMSNorm; final norm; output_layer.
    rope_pairs="halves" / swiglu_gate_first=False give deliberately wrong variants (negative controls).
    """
    W = {k: np.asarray(v, dtype=dtype) for k, v in w.items()}
    nh, ng, hn, eps = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"], cfg["layernorm_epsilon"]
    s = len(ids)

    def rmsnorm(x, g):
        return g * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))

    # rope cache (THUDM RotaryEmbedding.forward_impl, base 10000, n_elem = kv_channels // 2),
    # computed in float32 as THUDM (and HF) do, whatever the model dtype
    n_elem = hn // 2
    f32 = np.float32
    theta = f32(1.0) / (f32(10000.0) ** (np.arange(0, n_elem, 2, dtype=f32) / f32(n_elem)))
    idx_theta = np.outer(np.arange(s, dtype=f32), theta)                           # [s, n_elem/2]
    cache = np.stack([np.cos(idx_theta), np.sin(idx_theta)], -1).astype(dtype)     # [s, n_elem/2, 2]
    assert np.allclose(theta, W["transformer.rotary_pos_emb.inv_freq"], rtol=1e-3), "inv_freq buffer mismatch"

    def rope(x):  # x [s, heads, hn]
        rot_dim = cache.shape[-2] * 2
        xr, xp = x[..., :rot_dim], x[..., rot_dim:]
        c = cache.reshape(s, 1, rot_dim // 2, 2)
        if rope_pairs == "adjacent":  # THUDM: pairs (2i, 2i+1)
            xs = xr.reshape(s, -1, rot_dim // 2, 2)
            x0, x1 = xs[..., 0], xs[..., 1]
        else:  # GPT-NeoX style pairs (i, i + rot_dim/2): NOT ChatGLM, negative control only
            x0, x1 = xr[..., : rot_dim // 2], xr[..., rot_dim // 2:]
        o0 = x0 * c[..., 0] - x1 * c[..., 1]
        o1 = x1 * c[..., 0] + x0 * c[..., 1]
        out = np.stack([o0, o1], -1).reshape(s, -1, rot_dim) if rope_pairs == "adjacent" else np.concatenate([o0, o1], -1)
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
        rep = nh // ng
        k = np.repeat(k, rep, axis=1)  # == unsqueeze(-2).expand(..., np // ng, ...).view(..., np, hn)
        v = np.repeat(v, rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hn)
        scores = np.where(mask[None], -np.inf, scores)
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", probs, v).reshape(s, nh * hn)
        x = x + ctx @ W[p + "self_attention.dense.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"])
        a = h @ W[p + "mlp.dense_h_to_4h.weight"].T
        g, u = np.split(a, 2, axis=-1)
        if not swiglu_gate_first:  # negative control only
            g, u = u, g
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W[p + "mlp.dense_4h_to_h.weight"].T
    x = rmsnorm(x, W["transformer.encoder.final_layernorm.weight"])
    return x @ W["transformer.output_layer.weight"].T


# ----------------------------------------------------------------------------- main

def llama_cpp_perplexity(logits_of, ids, C):
    """Perplexity as llama.cpp's `perplexity` computes it: non-overlapping chunks of C tokens (the
    tail dropped), each evaluated afresh, scoring positions C/2 .. C-2 (predicting the next token).
    Returns (n_chunks, count, nll_per_chunk, ppl_running, ppl, ppl_stderr)."""
    import torch

    n_chunks = len(ids) // C
    assert n_chunks >= 6, n_chunks
    nll_tot = nll2_tot = 0.0
    count = 0
    nll_per_chunk, ppl_running = [], []
    for c in range(n_chunks):
        toks = ids[c * C:(c + 1) * C]
        lp = torch.log_softmax(logits_of(toks).to(torch.float64), dim=-1).numpy()
        nll_c = 0.0
        for j in range(C // 2, C - 1):
            v = -float(lp[j, toks[j + 1]])
            nll_c += v
            nll2_tot += v * v
            count += 1
        nll_tot += nll_c
        nll_per_chunk.append(nll_c)
        ppl_running.append(math.exp(nll_tot / count))
    m, m2 = nll_tot / count, nll2_tot / count
    ppl = math.exp(m)
    ppl_stderr = math.sqrt((m2 - m * m) / (count - 1)) * ppl
    return n_chunks, count, nll_per_chunk, ppl_running, ppl, ppl_stderr


def main():
    args = parse_args()
    import sentencepiece as spm
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import GlmForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    # --- text
    entries = load_fortunes(args.fortunes_dir)
    heldout, train_entries = split_heldout(entries, args.heldout_bytes, rng)
    heldout.encode("utf-8")  # valid UTF-8 by construction
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(heldout)
    n_zh = sum(e[1] for e in train_entries)
    print(f"fortunes: {len(entries)} entries, held out {len(entries) - len(train_entries)} "
          f"({len(heldout.encode())} bytes); train {len(train_entries)} entries ({n_zh} zh), "
          f"{sum(len(e[2].encode()) for e in train_entries)} bytes")

    # --- tokenizer
    ref_proto = load_model_proto(os.path.join(args.reference_dir, "tokenizer.model"))
    lines = [ln for e in train_entries for ln in e[2].split("\n") if ln.strip()]
    sp_bytes = train_tokenizer(lines, ref_proto, args)
    with open(os.path.join(args.out, "tokenizer.model"), "wb") as f:
        f.write(sp_bytes)
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    sp_size = sp.get_piece_size()
    special = {name: sp_size + i for i, name in enumerate(CHATGLM3_SPECIALS)}
    padded_vocab = (sp_size + len(CHATGLM3_SPECIALS) + 63) // 64 * 64
    print(f"tokenizer: {sp_size} pieces, specials {special}, padded_vocab_size {padded_vocab}")

    # --- config.json (THUDM keys, same order as the real one)
    with open(os.path.join(args.reference_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.update({
        "_name_or_path": "glmtool/tiny-chatglm3",
        "hidden_size": args.hidden, "num_layers": args.layers, "num_attention_heads": args.heads,
        "kv_channels": args.kv_channels, "multi_query_group_num": args.kv_groups,
        "ffn_hidden_size": args.ffn, "seq_length": args.seq_length, "padded_vocab_size": padded_vocab,
        "layernorm_epsilon": 1e-5, "torch_dtype": "float16", "eos_token_id": 2, "pad_token_id": 0,
    })
    for k in ("model_type", "architectures", "add_qkv_bias", "multi_query_attention", "rmsnorm",
              "post_layer_norm", "original_rope", "add_bias_linear"):
        assert k in cfg, k
    assert cfg["model_type"] == "chatglm" and cfg["add_qkv_bias"] and cfg["multi_query_attention"]
    assert cfg["rmsnorm"] and cfg["post_layer_norm"] and cfg["original_rope"] and not cfg["add_bias_linear"]
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    # --- training data: shuffled fortunes joined with "\n" (like heldout.txt), encoded in blocks
    order = list(range(len(train_entries)))
    rng.shuffle(order)
    stream = []
    for b in range(0, len(order), 64):
        stream.extend(sp.encode("\n".join(train_entries[i][2] for i in order[b:b + 64]) + "\n"))
    data = torch.tensor(stream, dtype=torch.long)
    heldout_ids = sp.encode(heldout)
    print(f"train tokens {len(data)}, heldout tokens {len(heldout_ids)}")

    # --- train HF GlmForCausalLM
    model = GlmForCausalLM(hf_config(cfg, "sdpa"))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    T = args.train_seq

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    t_train = time.time()
    for step in range(args.steps):
        starts = torch.randint(0, len(data) - T - 1, (args.batch,), generator=gen)
        batch = torch.stack([data[s: s + T + 1] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {time.time() - t_train:.0f}s", flush=True)
    train_secs = time.time() - t_train
    print(f"trained {n_params} params, {args.steps} steps x {args.batch} x {T} tokens in {train_secs:.1f}s")

    # --- save in THUDM layout, f16
    sd = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    w = {k: v.to(torch.float16).contiguous() for k, v in hf_to_thudm(sd, cfg).items()}
    st_path = os.path.join(args.out, "model.safetensors")
    save_file(w, st_path, metadata={"format": "pt"})
    os.chmod(st_path, 0o644)  # safetensors creates the file 0600

    # --- reload exactly as saved, upcast to f32, HF Glm with eager attention
    loaded = load_file(st_path)
    assert set(loaded) == set(w) and all(loaded[k].dtype == torch.float16 for k in loaded)
    w32 = {k: v.to(torch.float32) for k, v in loaded.items()}
    ref_model = GlmForCausalLM(hf_config(cfg, "eager")).to(torch.float32).eval()
    missing, unexpected = ref_model.load_state_dict(thudm_to_hf(w32, cfg), strict=False)
    assert not unexpected and all("rotary_emb" in m for m in missing), (missing, unexpected)
    rot = ref_model.model.rotary_emb.inv_freq
    assert rot.shape[0] == args.kv_channels // 4, rot.shape  # rotary on the first half of each head
    assert torch.allclose(rot, w32["transformer.rotary_pos_emb.inv_freq"], rtol=1e-3)

    @torch.no_grad()
    def logits_of(ids, m=ref_model):
        return m(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]

    # --- independent THUDM-forward check on the saved weights
    prompt_text = "Fortune says: 人生若只如初见, and 2024 is here."
    prompt_ids = sp.encode(prompt_text)
    chk_ids = prompt_ids + heldout_ids[:40]
    hf32 = logits_of(chk_ids).numpy().astype(np.float64)
    np64 = thudm_forward_numpy({k: v.numpy() for k, v in w32.items()}, chk_ids, cfg, np.float64)
    ref64 = GlmForCausalLM(hf_config(cfg, "eager")).to(torch.float64).eval()
    ref64.load_state_dict({k: v.to(torch.float64) for k, v in thudm_to_hf(w32, cfg).items()}, strict=False)
    hf64 = logits_of(chk_ids, ref64).numpy()
    d64 = float(np.abs(hf64 - np64).max())
    d32 = float(np.abs(hf32 - np64).max())
    print(f"THUDM numpy forward vs HF Glm: max|diff| f64 {d64:.3e}, HF f32 {d32:.3e} (logit range {np.abs(np64).max():.2f})")
    # HF Glm keeps rotary angles, RMSNorm and softmax in float32 even in a float64 model, so agreement
    # is at float32 precision (~1e-7 relative), not ~1e-12; the negative controls below differ by O(1).
    scale = max(1.0, float(np.abs(np64).max()))
    assert d64 < 2e-6 * scale, d64
    assert d32 < 1e-5 * scale, d32
    w32np = {k: v.numpy() for k, v in w32.items()}
    for bad in ({"rope_pairs": "halves"}, {"swiglu_gate_first": False}):
        dbad = float(np.abs(thudm_forward_numpy(w32np, chk_ids, cfg, np.float64, **bad) - np64).max())
        print(f"  negative control {bad}: max|diff| {dbad:.3e}")
        assert dbad > 100 * max(d64, 1e-6), (bad, dbad)
    del ref64

    # --- reference logits for the prompt
    prompt_logits = logits_of(prompt_ids).numpy().astype("<f4")
    assert prompt_logits.shape == (len(prompt_ids), padded_vocab)
    with open(os.path.join(args.out, "reference_logits.bin"), "wb") as f:
        f.write(prompt_logits.tobytes(order="C"))

    # --- perplexity the llama.cpp way
    C = args.ppl_ctx
    n_chunks, count, nll_per_chunk, ppl_running, ppl, ppl_stderr = llama_cpp_perplexity(logits_of, heldout_ids, C)
    print(f"held-out perplexity (ctx {C}, {n_chunks} chunks, {count} tokens): {ppl:.3f} +/- {ppl_stderr:.3f}; "
          f"uniform over padded vocab = {padded_vocab}, over sp vocab = {sp_size}")

    # --- greedy continuations
    def build_chat(messages):
        ids = [special["[gMASK]"], special["sop"]]
        for msg in messages:
            ids += [special[f"<|{msg['role']}|>"]] + sp.encode(msg.get("metadata", "") + "\n") + sp.encode(msg["content"])
        return ids + [special["<|assistant|>"]]

    greedy_prompts = [
        ("plain", sp.encode("A fortune cookie says: 人生")),
        ("chat_user", build_chat([{"role": "user", "content": "你好, tell me a fortune."}])),
        ("chat_system_multi_turn", build_chat([
            {"role": "system", "content": "You are a wise old computer."},
            {"role": "user", "content": "What is Unix?"},
            {"role": "assistant", "content": "A fortune 说: 一切皆文件。"},
            {"role": "user", "content": "And Linux?"}])),
    ]
    greedy = []
    for name, ids in greedy_prompts:
        cur, margins = list(ids), []
        for _ in range(args.gen_tokens):
            last = logits_of(cur)[-1]
            top2 = torch.topk(last, 2)
            margins.append(round(float(top2.values[0] - top2.values[1]), 6))
            cur.append(int(top2.indices[0]))
        new = cur[len(ids):]
        greedy.append({"name": name, "prompt_ids": ids, "new_ids": new, "top1_top2_margin": margins,
                       "new_text": sp.decode([t for t in new if t < sp_size])})
        print(f"greedy {name}: min margin {min(margins):.4f}: {greedy[-1]['new_text']!r}")

    # --- tokenizer cases
    texts = [
        "", " ", "  ", "   ", "\n", "\n\n", " \n ", "\t", "\t\tindented", "a", "Hello world", " Hello",
        "Hello  world", "Hello   world", "  leading spaces", "trailing spaces  ", "line one\nline two\n",
        "CRLF line\r\nnext", "12345", "3.14159 and 2024-06-11", "x=10000000000", "你好", "你好，世界！",
        "床前明月光，疑是地上霜。", "人生若只如初见", "Debian 是一个自由的操作系统。", "Mixed 中英 text 123 混合",
        "emoji 👋😀🚀", "龘靐齉爩", "𠀀𪚥 (astral CJK)", "Привет, мир", "こんにちは世界", "café naïve résumé",
        "non\u00a0breaking\u2009spaces", "zero\u200bwidth", "e\u0301 combining", "<s> </s> <unk> [gMASK] <|user|>",
        "▁ literal meta symbol", "tabs\tand\tspaces  mixed \t end", "fortune: \"You will be hungry again in one hour.\"",
        "if (x) { return y; }  // code", "    four-space indent\n        eight", "ALL CAPS SHOUTING!!!",
    ]
    tokenizer_cases = [{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in texts]

    ref = {
        "about": "Made by tools/make_tiny_model.py. Logits/perplexity/greedy from HF transformers GlmForCausalLM in "
                 "float32 (eager attention) on the float16 weights of model.safetensors upcast to float32. "
                 "All ids are plain SentencePiece ids of tokenizer.model unless noted; ChatGLM3 special ids are "
                 "sp_size + index in special_ids order.",
        "sp_vocab_size": sp_size,
        "padded_vocab_size": padded_vocab,
        "special_ids": special,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "logits_file": "reference_logits.bin",
        "logits_shape": [len(prompt_ids), padded_vocab],
        "logits_dtype": "f32 little-endian, row-major",
        "heldout_file": "heldout.txt",
        "heldout_ids": heldout_ids,
        "perplexity": {
            "ctx": C, "first_scored": C // 2, "n_chunks": n_chunks, "n_scored": count,
            "nll_per_chunk": nll_per_chunk, "ppl_running": ppl_running, "ppl": ppl, "ppl_stderr": ppl_stderr,
            "method": "llama.cpp perplexity: non-overlapping chunks of ctx tokens (tail dropped), fresh state per "
                      "chunk, no BOS substitution, score positions j = ctx/2 .. ctx-2 predicting token j+1; "
                      "stderr = sqrt((mean(nll^2) - mean(nll)^2) / (N - 1)) * ppl",
        },
        "greedy": greedy,
        "tokenizer_cases": tokenizer_cases,
    }
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")

    write_readme(args, cfg, sp_size, padded_vocab, n_params, ppl, ppl_stderr, n_chunks, count, len(data),
                 len(heldout.encode()), len(heldout_ids))
    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"  {size:9d}  {name}")
    print(f"  {total:9d}  total; wall time {time.time() - t_start:.0f}s (training {train_secs:.0f}s)")
    assert total < 5 * 1024 * 1024


def write_readme(args, cfg, sp_size, padded_vocab, n_params, ppl, ppl_stderr, n_chunks, count, n_train_tokens,
                 heldout_bytes, heldout_tokens):
    text = f"""# tiny-chatglm3 test fixture

A tiny ChatGLM3-shaped model (THUDM layout and naming, float16 safetensors) with its own small
SentencePiece tokenizer, trained for a few CPU minutes so that its outputs are meaningful, plus
reference outputs to check glmtool's converter, tokenizer and runtime against. **Generated; do not
edit by hand.** Rebuild with

    /work/pyenv/bin/python tools/make_tiny_model.py

(seeded; `--help` lists the flags; versions in tools/requirements.txt). This fixture was made with
`--steps {args.steps} --batch {args.batch} --train-seq {args.train_seq} --lr {args.lr} --seed {args.seed}`.

## Files

- `tokenizer.model`: SentencePiece BPE, {sp_size} pieces (ids 0,1,2 = `<unk>`, `<s>`, `</s>`; 3..258 byte
  pieces; byte_fallback). normalizer_spec is copied verbatim from ChatGLM3's tokenizer.model (rule `identity`,
  add_dummy_prefix true, remove_extra_whitespaces false, escape_whitespaces true, no precompiled charsmap),
  and the trainer used ChatGLM3's splitting flags (split_digits, allow_whitespace_only_pieces,
  split_by_unicode_script/whitespace/number, max_sentencepiece_length 16). Character coverage was
  {args.character_coverage} (ChatGLM3: 0.9999), so rarer CJK characters go through byte fallback.
  ChatGLM3's 9 special tokens ([MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|>
  <|observation|>) are not in the SentencePiece model; they get ids {sp_size}..{sp_size + 8}, as in ChatGLM3.
- `config.json`: the keys of THUDM/chatglm3-6b's config.json; hidden {cfg['hidden_size']}, {cfg['num_layers']} layers,
  {cfg['num_attention_heads']} heads, kv_channels {cfg['kv_channels']}, multi_query_group_num {cfg['multi_query_group_num']},
  ffn {cfg['ffn_hidden_size']}, seq_length {cfg['seq_length']}, padded_vocab_size {padded_vocab}.
- `model.safetensors`: {n_params} parameters, float16, THUDM names (fused query_key_value with bias,
  dense_h_to_4h = [gate; up]), plus the buffer `transformer.rotary_pos_emb.inv_freq` that real
  checkpoints carry (converters must ignore it). The rows for the special ids were never trained.
- `heldout.txt`: {heldout_bytes} bytes ({heldout_tokens} tokens) of whole fortunes, English and Chinese
  alternating, joined by newlines; used neither for the tokenizer nor for the model.
- `reference.json` + `reference_logits.bin`: computed in float32 by HF transformers' GlmForCausalLM (eager
  attention) on the float16 weights exactly as saved: logits of `prompt_ids` at every position
  (f32 LE, [len(prompt_ids), {padded_vocab}]), `heldout_ids` = SentencePiece ids of heldout.txt,
  llama.cpp-style perplexity (ctx {args.ppl_ctx}), 3 greedy continuations of {args.gen_tokens} tokens
  (one plain prompt, two chat prompts built like ChatGLM3's build_chat_input, with the top1-top2 logit
  margin of each step), and `tokenizer_cases` (text -> ids, decoded).

The script also checks that an independent numpy implementation of THUDM's ChatGLM3 forward pass
(partial rotary on the first half of each head, adjacent pairs; SwiGLU silu(gate)*up; RMSNorm;
multi-query groups) gives the same logits as HF Glm on these weights.

## Quality

Held-out perplexity, ctx {args.ppl_ctx}, {n_chunks} chunks ({count} scored tokens): **{ppl:.2f} +/- {ppl_stderr:.2f}**,
against {padded_vocab} for a uniform guess over the padded vocabulary ({sp_size} over the SentencePiece
vocabulary). Training saw {args.steps * args.batch * args.train_seq} tokens (random windows) of a
{n_train_tokens}-token stream.

## Text source and licences

The training and held-out text are the fortune cookie databases shipped by Debian in
/usr/share/games/fortunes: packages `fortunes` and `fortunes-min` (fortune-mod data, BSD licence of the
Regents of the University of California with further per-file notices; see
/usr/share/doc/fortunes/copyright) and `fortunes-zh` (files chinese, tang300, song100;
Copyright 2001-2009 Yu Guanghui, 2015-2019 Mo Zhou, 2020-2021 xiao sheng wen; GPL-3.0+, see
/usr/share/doc/fortunes-zh/copyright). The `%` separators, ANSI colour escapes and backspace
overstrikes were removed. heldout.txt is an excerpt of those files and keeps their licences; the
tokenizer and weights are derived from them.
"""
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
