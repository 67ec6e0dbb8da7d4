#!/usr/bin/env python3
"""Speed of `align eval zero-shot` at ImageNet's shape: 1,000 classes x 80 templates (80,000
prompts, each embedded once) and 1,000 photos (one per class folder), run twice: first with an
empty classifier cache (every prompt embedded), then again (the classifier read back, as by a
later run on another dataset with the same classes).

    python3 xtask/bench/eval.py --align target/release/align [--model test-data/align-base-random]

(`cargo xtask bench eval` runs it after building the release binary.) Prints the CLI's own
timing lines: the classifier's time and the images' rate, model loading excluded. Class names are two or three words from a fixed list (ImageNet's average about as
many tokens).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collection import make_photos  # noqa: E402
from compare import ROOT, converted_dir, log  # noqa: E402

WORDS = ["red", "great", "grey", "spotted", "common", "american", "sea", "river", "mountain",
         "wild", "golden", "black", "little", "house", "snow", "desert", "paper", "steel",
         "wooden", "electric", "fox", "owl", "snake", "crab", "lamp", "chair", "boat", "clock",
         "bottle", "guitar", "truck", "drum", "bridge", "tower", "shell", "kite", "tiger", "moth"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--align", required=True)
    ap.add_argument("--model", default=os.path.join(ROOT, "test-data", "align-base-random"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--templates", default="imagenet")
    args = ap.parse_args()

    converted = converted_dir(args.align, args.model, args.work)
    photos = make_photos(os.path.join(args.work, f"collection-{args.classes}"), args.classes)
    dataset = os.path.join(args.work, f"imagefolder-{args.classes}")
    rng = np.random.default_rng(0)
    names = set()
    while len(names) < args.classes:
        names.add(" ".join(rng.choice(WORDS, size=int(rng.integers(2, 4)), replace=False)))
    if not os.path.isdir(dataset):
        for i, (name, photo) in enumerate(zip(sorted(names), photos)):
            d = os.path.join(dataset, f"{i:04d}_{name.replace(' ', '_')}")
            os.makedirs(d)
            os.symlink(photo, os.path.join(d, os.path.basename(photo)))
    log(f"{args.classes} classes, {len(photos)} photos, templates {args.templates}")
    print(f"machine: {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ALIGN_CACHE_DIR": cache}
        for run in ["first run (empty cache)", "second run (classifier cached)"]:
            start = time.perf_counter()
            proc = subprocess.run([args.align, "eval", "zero-shot", "--model", converted, "--dataset",
                                   dataset, "--templates", args.templates],
                                  capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            timing = [l for l in proc.stderr.splitlines() if l.startswith("classifier:")]
            print(f"{run}: {timing[-1] if timing else proc.stderr}")
            print(f"  whole run, model load included: {wall:.1f} s")
    print(proc.stdout.strip())

if __name__ == "__main__":
    main()
