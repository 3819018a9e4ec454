#!/usr/bin/env python3
"""Write a calibration text for `glmtool imatrix` that shares nothing with an evaluation text.

The tiny fixture model (tests/fixtures/tiny-chatglm3) was trained on Debian's fortune cookie
databases and evaluated on tests/fixtures/tiny-chatglm3/heldout.txt, whole fortunes kept out of
training. An importance matrix is computed on text like the training text (as llama.cpp users
compute one on wiki.train and measure on wiki.test), so this takes whole fortunes from the same
databases, skips every one that occurs in the evaluation text, alternates English and Chinese as
heldout.txt does, and stops at --bytes.

    apt-get install fortunes fortunes-min fortunes-zh
    python3 tools/make_calibration_text.py OUT.txt [--exclude tests/fixtures/tiny-chatglm3/heldout.txt]

The fortunes are read and cleaned (ANSI colours, overstrikes) by make_tiny_model.py's own
loader, so they look like the text the model was trained on. Deterministic: the databases are
read in sorted file order and shuffled with a fixed seed. Needs numpy (make_tiny_model.py
imports it): /work/pyenv/bin/python, see tools/requirements.txt.
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_model import load_fortunes  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--fortunes-dir", default="/usr/share/games/fortunes")
    p.add_argument("--exclude", default="tests/fixtures/tiny-chatglm3/heldout.txt")
    p.add_argument("--bytes", type=int, default=60000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    held = open(args.exclude, encoding="utf-8").read()
    english, chinese = [], []
    for name, is_zh, e in load_fortunes(args.fortunes_dir):
        if e in held or len(e.encode()) > 700 or name in ("art", "ascii-art"):
            continue
        (chinese if is_zh else english).append(e)
    rng = random.Random(args.seed)
    rng.shuffle(english)
    rng.shuffle(chinese)
    out, size = [], 0
    for en, zh in zip(english, chinese):
        for e in (en, zh):
            if size >= args.bytes:
                break
            out.append(e)
            size += len(e.encode()) + 1
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {args.out}: {len(out)} fortunes, {size} bytes "
          f"(from {len(english)} English and {len(chinese)} Chinese candidates)")


if __name__ == "__main__":
    main()
