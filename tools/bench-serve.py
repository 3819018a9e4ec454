#!/usr/bin/env python3
"""Serving throughput: `glmtool serve -np N` and llama-server side by side.

For each server (started here, one at a time, on the same GGUF file, thread count and slots)
and each number of concurrent clients, every client streams one /v1/completions request (the
same prompt length, a different prompt each, temperature 0, max_tokens tokens). Prints a
markdown table: aggregate generated tokens/s (all clients' tokens over the round's wall time),
median time to first token, median per-stream decode speed (tokens after the first over the
time since the first), the decode aggregate (the streams' decode speeds summed: what the
server generates per second while they all decode; shown up to SLOTS clients, beyond which the
streams no longer decode at the same time), and each server's ratio to its own single client.

usage: python3 tools/bench-serve.py MODEL.gguf   (or `demo`: glmtool's bundled tiny model)
  env: THREADS (2)  SLOTS (4)  CLIENTS ("1 2 4 8")  PROMPT (64 words)  TOKENS (64)
       ROUNDS (1: each server's rounds alternate with the other's)  CTX (1024 per slot)
       TOOLS ("llama.cpp glmtool")  GLMTOOL (target/release/glmtool)  LLAMA_DIR (~/.cache/llama-anchor: llama-server)
Only the standard library; the servers bind 127.0.0.1 on free ports.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

THREADS = int(os.environ.get("THREADS", 2))
SLOTS = int(os.environ.get("SLOTS", 4))
CLIENTS = [int(x) for x in os.environ.get("CLIENTS", "1 2 4 8").split()]
PROMPT = int(os.environ.get("PROMPT", 64))
TOKENS = int(os.environ.get("TOKENS", 64))
ROUNDS = int(os.environ.get("ROUNDS", 1))
CTX = int(os.environ.get("CTX", 1024))
GLMTOOL = os.environ.get("GLMTOOL", "target/release/glmtool")
TOOLS = os.environ.get("TOOLS", "llama.cpp glmtool").split()
LLAMA = os.path.join(
    os.environ.get("LLAMA_DIR", os.path.expanduser("~/.cache/llama-anchor")), "bin", "llama-server"
)
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly box".split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tool, model):
    port = free_port()
    if tool == "glmtool":
        cmd = [GLMTOOL, "serve", "-t", str(THREADS), "--parallel", str(SLOTS),
               "-c", str(CTX), "-fa", "on", "--port", str(port), "--max-queue", "64"]
        cmd += [] if model == "demo" else ["-m", model]  # demo: the bundled tiny model
    else:
        # llama-server's -c is shared by the slots; --kv-unified lets each use all of it
        cmd = [LLAMA, "-m", model, "-t", str(THREADS), "-np", str(SLOTS), "-c", str(CTX * SLOTS),
               "-fa", "on", "--port", str(port), "--host", "127.0.0.1", "--no-warmup"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except Exception:
            time.sleep(0.5)
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited with {proc.returncode}")
    sys.exit(f"{tool} did not start")


def stream(base, prompt, out, llama=False):
    body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if llama:
        body["ignore_eos"] = True  # glmtool has no such field (a random model rarely ends early)
    body = json.dumps(body).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    first = last = None
    n = chunks = 0
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            v = json.loads(line[6:])
            for c in v.get("choices", []):
                if c.get("text"):
                    chunks += 1
                    last = time.time()
                    first = first or last
            if v.get("usage"):
                n = v["usage"]["completion_tokens"]
    out.append((t0, first, last, n or chunks))


def round_(base, clients, tag, llama):
    out = []
    threads = []
    for i in range(clients):
        # a different prompt per client and round, of PROMPT words: no shared cached prefix
        words = [f"{tag}-{i}"] + [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(PROMPT - 1)]
        threads.append(threading.Thread(target=stream, args=(base, " ".join(words), out, llama)))
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    total = sum(r[3] for r in out)
    ttft = statistics.median(r[1] - r[0] for r in out if r[1])
    speeds = [(r[3] - 1) / (r[2] - r[1]) for r in out if r[3] > 1 and r[2] > r[1]]
    return total / wall, ttft, statistics.median(speeds), sum(speeds)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "glmtool"], check=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags)
    results = {}
    for rnd in range(ROUNDS):
        for tool in TOOLS:
            proc, base = start(tool, model)
            try:
                stream(base, "warm up", [], tool == "llama.cpp")
                for c in CLIENTS:
                    r = round_(base, c, f"r{rnd}c{c}", tool == "llama.cpp")
                    results.setdefault((tool, c), []).append(r)
                    print(f"{tool} {c} clients: {r[0]:.2f} t/s aggregate, ttft {r[1]:.2f} s, "
                          f"{r[2]:.2f} t/s per stream, {r[3]:.2f} t/s decode aggregate",
                          file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
    print(f"\n{cpu} ({isa}), {THREADS} threads, {SLOTS} slots, prompt {PROMPT} words, "
          f"{TOKENS} tokens per client, {os.path.basename(model)}; best of {ROUNDS} round(s)\n")
    print("| clients | tool | aggregate t/s | × own 1 client | TTFT s (median) | per-stream t/s | × own 1 client | decode aggregate t/s | × own 1 client | glmtool ÷ llama.cpp (aggregate) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    best = {k: max(v, key=lambda r: r[0]) for k, v in results.items()}
    for c in CLIENTS:
        for tool in TOOLS:
            agg, ttft, dec, dec_all = best[(tool, c)]
            one = best[(tool, 1)] if (tool, 1) in best else best[(tool, c)]
            anchor = best.get(("llama.cpp", c))
            vs = f"{agg / anchor[0]:.2f}" if tool == "glmtool" and anchor else ""
            together = (f"{dec_all:.2f} | {dec_all / one[3]:.2f}" if c <= SLOTS else "— | —")
            print(f"| {c} | {tool} | {agg:.2f} | {agg / one[0]:.2f} | {ttft:.2f} | {dec:.2f} | "
                  f"{dec / one[2]:.2f} | {together} | {vs} |")


if __name__ == "__main__":
    main()
