#!/usr/bin/env python3
"""End-to-end speed of `align index` on a collection of JPEG photos of mixed sizes, against
`align embed-images` on the same files and against a Python pipeline doing what
clip-retrieval's `clip-inference` does, with ONNX Runtime as the engine.

    python3 xtask/bench/collection.py --align target/release/align \\
        [--model test-data/align-base-random] [--photos 320] [--rounds 3]

(`cargo xtask bench -- --collection` runs it after building the release binary.)

What is timed, model loading excluded everywhere:
  * `align index --out <fresh folder> <photo folder>`: listing, reading, decoding, inference and
    writing the .npy/.parquet partitions; the rate it prints in its JSON summary. Also its peak
    RSS (VmHWM polled from /proc).
  * `align embed-images --out x.npy <photos>`: the rate it prints on stderr after loading
    (decoding overlapped with inference, the whole array written at the end).
  * `align_rs.Align.embed_images(paths)` from Python (crates/align-py, installed with `pip
    install ./crates/align-py`): the same batches of 8 as `embed-images`, embeddings returned
    as a NumPy array and saved with numpy (left out if the package is not installed).
  * Python + ONNX Runtime: a pool of worker processes (one per core, like clip-inference's
    DataLoader workers) opens each photo with PIL and runs transformers' AlignProcessor (Pillow
    path) on it; the main process stacks batches of 8 and runs the exported vision tower in an
    InferenceSession (all cores), then writes the embeddings with numpy.
Each round runs each once, in that order; medians over rounds are reported.
Needs what compare.py needs (`pip install -r xtask/bench/requirements.txt`).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from multiprocessing import Pool

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (  # noqa: E402
    ROOT, converted_dir, export_vision, log, pil_processor, run_measured, vision_tower)

SOURCES = ["astronaut", "chelsea", "coffee", "camera", "rocket", "cat", "hubble_deep_field",
           "immunohistochemistry", "coins", "logo", "page", "retina", "stereo_motorcycle"]


def make_photos(folder, n, seed=0):
    """n JPEGs from scikit-image's photos, rescaled (0.4x-2.5x) and cropped to mixed aspect
    ratios, at JPEG quality 80-95: sizes from about 150 to 2,000 pixels a side."""
    from PIL import Image
    from skimage import data as skdata

    if os.path.isdir(folder) and len(os.listdir(folder)) == n:
        return sorted(os.path.join(folder, f) for f in os.listdir(folder))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    bases = []
    for name in SOURCES:
        loader = getattr(skdata, name)
        arr = loader()[0] if name == "stereo_motorcycle" else loader()
        bases.append(Image.fromarray(arr).convert("RGB"))
    paths = []
    for i in range(n):
        img = bases[i % len(bases)]
        scale = float(rng.uniform(0.4, 2.5))
        w, h = max(64, int(img.width * scale)), max(64, int(img.height * scale))
        img = img.resize((w, h), Image.BILINEAR)
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        path = os.path.join(folder, f"{i:04d}.jpg")
        img.crop((x, y, x + cw, y + ch)).save(path, quality=int(rng.integers(80, 96)))
        paths.append(path)
    return paths


def run(args):
    """Runs a command; returns (stdout, stderr, peak RSS MiB), or exits on failure."""
    code, out, err, peak = run_measured(args)
    if code != 0:
        sys.exit(f"{' '.join(args[:3])} failed:\n{err}")
    return out, err, peak


_processor = None


def _init_worker(model_dir):
    global _processor
    _processor = pil_processor(model_dir)


def _preprocess(path):
    from PIL import Image

    return _processor(images=[Image.open(path).convert("RGB")], return_tensors="np")["pixel_values"][0]


def python_ort(paths, model_dir, vision_onnx, out, batch=8):
    """clip-inference's shape with ONNX Runtime: decode + preprocess in worker processes,
    batches of `batch` through the session, embeddings saved. Returns images/s (session and
    workers created before the clock starts)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(vision_onnx, so, providers=["CPUExecutionProvider"])
    with Pool(os.cpu_count(), initializer=_init_worker, initargs=(model_dir,)) as pool:
        pool.map(_preprocess, paths[:os.cpu_count()])  # workers up and warm
        start = time.perf_counter()
        rows, pending = [], []
        for px in pool.imap(_preprocess, paths, chunksize=1):
            pending.append(px)
            if len(pending) == batch:
                rows.append(sess.run(None, {"pixel_values": np.stack(pending)})[0])
                pending = []
        if pending:
            rows.append(sess.run(None, {"pixel_values": np.stack(pending)})[0])
        emb = np.concatenate(rows)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        np.save(out, emb.astype(np.float16))
        return len(paths) / (time.perf_counter() - start)


def python_align_rs(model, paths, out):
    """`align_rs` from Python: images/s of embed_images on the paths (model loaded before)."""
    start = time.perf_counter()
    np.save(out, model.embed_images(paths, batch_size=8))
    return len(paths) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--align", required=True, help="the release `align` binary")
    ap.add_argument("--model", default=os.path.join(ROOT, "test-data", "align-base-random"),
                    help="HF checkpoint directory (converted for our CLI under --work)")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--photos", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-ort", action="store_true", help="leave the Python pipeline out")
    ap.add_argument("--rss", type=int, metavar="N",
                    help="instead: one `align index` run over N images (links to the photos of "
                         "at most 1 Mpixel, in folders of 1,000), printing its peak RSS")
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    converted = converted_dir(args.align, args.model, args.work)
    photos_dir = os.path.join(args.work, f"collection-{args.photos}")
    paths = make_photos(photos_dir, args.photos)
    if args.rss:
        return memory(args, converted, paths)
    vision_onnx = os.path.join(args.work, "vision.onnx")
    if not args.skip_ort:
        from PIL import Image
        from transformers import AlignModel

        model = AlignModel.from_pretrained(args.model).eval()
        example = pil_processor(args.model)(images=[Image.open(paths[0]).convert("RGB")],
                                            return_tensors="pt")["pixel_values"]
        export_vision(vision_tower(model), example, vision_onnx)
        del model

    sizes = []
    from PIL import Image
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.width * im.height)
    log(f"{len(paths)} photos, {min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f} Mpixel "
        f"(median {statistics.median(sizes) / 1e6:.2f}), {sum(os.path.getsize(p) for p in paths) / 2**20:.0f} MiB")

    try:
        import align_rs

        py_model = align_rs.Align.from_pretrained(converted, device="flex")
        # The vision weights are packed on the first image call: part of loading, as the
        # CLI's times exclude it.
        py_model.embed_images(paths[:1])
    except ImportError:
        log("align_rs is not installed (pip install ./crates/align-py): left out")
        py_model = None
    results = {"index": [], "embed_images": [], "align_rs": [], "python_ort": [],
               "index_rss_mib": []}
    for r in range(args.rounds):
        out = os.path.join(args.work, "collection-out")
        shutil.rmtree(out, ignore_errors=True)
        stdout, _, rss = run([args.align, "index", "--model", converted, "--out", out, photos_dir])
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["embedded"] == len(paths), summary
        results["index"].append(summary["images_per_second"])
        results["index_rss_mib"].append(rss)
        _, err, _ = run([args.align, "embed-images", "--model", converted, "--out",
                              os.path.join(args.work, "collection-embed.npy"), *paths])
        m = re.search(r"(\d+) images in ([\d.]+) s", err)
        results["embed_images"].append(int(m.group(1)) / float(m.group(2)))
        if py_model is not None:
            results["align_rs"].append(python_align_rs(
                py_model, paths, os.path.join(args.work, "collection-align-rs.npy")))
        if not args.skip_ort:
            results["python_ort"].append(python_ort(paths, args.model, vision_onnx,
                                                    os.path.join(args.work, "collection-ort.npy")))
        log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in results.items() if v))

    med = {k: statistics.median(v) for k, v in results.items() if v}
    print(f"machine: {os.cpu_count()} cores; {len(paths)} photos; medians of {args.rounds} rounds")
    print(f"align index          {med['index']:7.2f} images/s  (peak RSS {med['index_rss_mib']:.0f} MiB)")
    print(f"align embed-images   {med['embed_images']:7.2f} images/s  -> index / embed-images "
          f"{med['index'] / med['embed_images']:.2f}x")
    if "align_rs" in med:
        print(f"align_rs (Python)    {med['align_rs']:7.2f} images/s  -> align_rs / embed-images "
              f"{med['align_rs'] / med['embed_images']:.2f}x")
    if "python_ort" in med:
        print(f"Python + ONNX Runtime {med['python_ort']:6.2f} images/s  -> index / ORT pipeline "
              f"{med['index'] / med['python_ort']:.2f}x")


def memory(args, converted, paths):
    """Peak RSS of `align index` over `args.rss` images: does memory grow with the collection?"""
    from PIL import Image

    small = []
    for p in paths:
        with Image.open(p) as im:
            if im.width * im.height <= 1_000_000:
                small.append(p)
    tree = os.path.join(args.work, f"rss-{args.rss}")
    if not os.path.isdir(tree):
        for i in range(args.rss):
            folder = os.path.join(tree, f"d{i // 1000:02d}")
            os.makedirs(folder, exist_ok=True)
            os.symlink(small[i % len(small)], os.path.join(folder, f"{i:05d}.jpg"))
    out = os.path.join(args.work, "rss-out")
    shutil.rmtree(out, ignore_errors=True)
    stdout, _, peak = run([args.align, "index", "--model", converted, "--out", out, tree])
    summary = json.loads(stdout.strip().splitlines()[-1])
    print(f"align index over {summary['embedded']} images ({len(small)} photos of <= 1 Mpixel, "
          f"linked): peak RSS {peak:.0f} MiB, {summary['images_per_second']:.2f} images/s")


if __name__ == "__main__":
    main()
