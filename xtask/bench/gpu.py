#!/usr/bin/env python3
"""`align embed-images` / `align embed-texts` on a GPU (burn's wgpu backend, Vulkan) against
PyTorch on the same GPU, same inputs, with parity, in one run.

    python3 xtask/bench/gpu.py --align wgpu=path/to/align [--align other=path ...] \
        [--model DIR] [--processor-files DIR] [--work DIR] [--images 64] [--texts 512]

--model is a full-size align-base checkpoint directory; when it holds no model.safetensors it
is made there first with tests/reference/make_align_base_random.py (random weights, align-base's
shapes and key names) and the tokenizer / processor files are copied in from
--processor-files (a directory such as test-data/align-base-random made by
tests/reference/make_align_fixtures.py). Each `--align NAME=BINARY` is a release `align` binary
built with `--features wgpu` (several builds, e.g. with and without burn's fusion, can be
compared in one run), each run with every `--dtypes` value (the CLI's `--dtype`). Needs torch (CUDA), transformers, scikit-image, Pillow.

What is timed:
  * ours: the CLI with `--device wgpu`, the rate it prints after loading (decoding and
    preprocessing / tokenising, inference, writing the .npy), after one untimed warm-up run of
    the same command (so that first-use costs that outlive a process, such as a driver's
    shader cache, are paid outside the timings). Also the marginal rate between
    a run over all inputs and a run over the first quarter: (N - N/4) / (t_N - t_N/4), which
    takes out whatever each process pays once (first-use kernel compilation left after
    warm-up, the first batch's allocations).
  * PyTorch eager on the GPU: AlignModel's towers as get_*_features runs them, fed the HF
    processor's outputs (preprocessing NOT counted, in PyTorch's favour), host-to-device copy
    and the copy of the features back included, median of 3 timings of about a second each,
    in three precisions: float32 with TF32 off (the reference),
    PyTorch's defaults (cuDNN convolutions in TF32), and float16 weights and inputs.
Batches: images --image-batch (default 8, the CLI's default), texts 32: PyTorch padded to 64
tokens as AlignProcessor does, and in the batches our CLI forms.
Parity: max abs diff of the L2-normalised embeddings against PyTorch float32 (TF32 off) and
float64, both on the GPU (the float32 ones are saved in --work as torch_f32_*.npy).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (inputs, length_batches: the same as the CPU benchmark's)

PROCESSOR_FILES = ["tokenizer.json", "tokenizer_config.json", "processor_config.json",
                   "preprocessor_config.json"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_model(model, processor_files):
    if not os.path.isfile(os.path.join(model, "model.safetensors")):
        log(f"making the random full-size checkpoint in {model}")
        t = time.time()
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "reference",
                                                     "make_align_base_random.py"), "--out",
                        model], check=True)
        log(f"checkpoint made in {time.time() - t:.0f} s")
    for name in PROCESSOR_FILES:
        src = os.path.join(processor_files, name)
        if not os.path.isfile(os.path.join(model, name)):
            shutil.copy(src, model)


def run_ours(align, args_tail, timeout=None):
    """Runs `align`; returns (items, seconds after load, load s, stderr)."""
    try:
        p = subprocess.run([align] + args_tail, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(args_tail[:3])} took over {timeout} s")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args_tail[:3])} failed:\n{p.stderr[-3000:]}")
    m = re.search(r"model load ([\d.]+) s; (\d+) \w+ in ([\d.]+) s", p.stderr)
    if not m:
        raise RuntimeError(f"no timing line in:\n{p.stderr[-3000:]}")
    return int(m.group(2)), float(m.group(3)), float(m.group(1)), p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--align", action="append", required=True,
                    help="NAME=BINARY[@DTYPE,...], a release `align` built with --features wgpu, "
                    "run with each --dtypes value or those given (repeatable)")
    ap.add_argument("--model", default=os.path.join(ROOT, "target", "gpu", "align-base-random"))
    ap.add_argument("--processor-files", default=os.path.join(ROOT, "test-data",
                                                              "align-base-random"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "gpu"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-device", default="cuda")
    ap.add_argument("--device", default="wgpu", help="our backend")
    ap.add_argument("--dtypes", default="f32,f16", help="our --dtype values to run")
    ap.add_argument("--timeout", type=float, default=180,
                    help="seconds one run of our CLI may take (else that build is skipped)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch
    from PIL import Image
    from transformers import AlignModel

    variants = {}
    for a in args.align:
        name, binary = a.split("=", 1)
        binary, _, dtypes = binary.partition("@")
        for dtype in (dtypes or args.dtypes).split(","):
            variants[f"{name}-{dtype}"] = (binary, dtype)
    first = next(iter(variants.values()))[0]
    os.makedirs(args.work, exist_ok=True)
    ensure_model(args.model, args.processor_files)
    converted = os.path.join(args.work, "bpk")
    if not os.path.isfile(os.path.join(converted, "model.bpk")):
        t = time.time()
        subprocess.run([first, "--device", "flex", "convert-weights", "--input", args.model,
                        "--output", converted], check=True)
        log(f"converted in {time.time() - t:.0f} s")

    inputs = os.path.join(args.work, "inputs")
    os.makedirs(inputs, exist_ok=True)
    paths, texts = compare.make_inputs(inputs, args.images, args.texts)
    dev = torch.device(args.torch_device)
    processor = compare.pil_processor(args.model)
    model = AlignModel.from_pretrained(args.model).eval().to(dev)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths],
                       return_tensors="pt")["pixel_values"]
    tok64 = processor(text=texts, padding="max_length", max_length=64, truncation=True,
                      return_tensors="pt")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    img_batches = [pixels[i:i + args.image_batch] for i in range(0, len(paths), args.image_batch)]
    txt64 = [{k: tok64[k][i:i + args.text_batch] for k in keys}
             for i in range(0, len(texts), args.text_batch)]
    txt_grouped, _ = compare.cli_batches(tok64, args.text_batch)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def images_fn(m, dtype):
        def f(b):
            out = m.vision_model(pixel_values=b.to(dev, dtype)).pooler_output
            return out.float().cpu().numpy()
        return f

    def texts_fn(m):
        def f(b):
            h = m.text_model(**{k: v.to(dev) for k, v in b.items()}).last_hidden_state
            return m.text_projection(h[:, 0, :]).float().cpu().numpy()
        return f

    def normalise(x):
        x = np.concatenate(x).astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def run_all(fn, batches):
        with torch.inference_mode():
            sync()
            t = time.perf_counter()
            outs = [fn(b) for b in batches]
            sync()
            return time.perf_counter() - t, outs

    def torch_rates(fn, batches, n):
        """Items per second: median of 3 timings, each of as many passes over the batches as
        fill about a second (a single pass takes well under one on a large GPU)."""
        once = run_all(fn, batches)[0]  # warm-up (cuDNN algorithm choice, allocator)
        passes = max(1, int(1.0 / max(once, 1e-3)))
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(passes):
                run_all(fn, batches)
            rates.append(n * passes / (time.perf_counter() - t))
        return statistics.median(rates)

    results, parity, per_photo = {}, {}, {}
    # float64 reference on the GPU.
    model64 = AlignModel.from_pretrained(args.model).eval().to(dev).double()
    ref64_img = normalise(run_all(images_fn(model64, torch.float64), img_batches)[1])
    ref64_txt = normalise(run_all(texts_fn(model64), txt64)[1])
    del model64
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref_img = normalise(run_all(images_fn(model, torch.float32), img_batches)[1])
    ref_txt = normalise(run_all(texts_fn(model), txt64)[1])
    np.save(os.path.join(args.work, "torch_f32_images.npy"), ref_img)
    np.save(os.path.join(args.work, "torch_f32_texts.npy"), ref_txt)
    parity["torch_f32_vs_f64_images"] = float(np.abs(ref_img - ref64_img).max())
    parity["torch_f32_vs_f64_texts"] = float(np.abs(ref_txt - ref64_txt).max())
    results["torch_f32_img"] = torch_rates(images_fn(model, torch.float32), img_batches, len(paths))
    results["torch_f32_txt64"] = torch_rates(texts_fn(model), txt64, len(texts))
    results["torch_f32_txt_ours"] = torch_rates(texts_fn(model), txt_grouped, len(texts))
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    results["torch_default_img"] = torch_rates(images_fn(model, torch.float32), img_batches,
                                               len(paths))
    tf32 = normalise(run_all(images_fn(model, torch.float32), img_batches)[1])
    parity["torch_default_tf32_vs_f64_images"] = float(np.abs(tf32 - ref64_img).max())
    model.half()
    results["torch_f16_img"] = torch_rates(images_fn(model, torch.float16), img_batches,
                                           len(paths))
    results["torch_f16_txt64"] = torch_rates(texts_fn(model), txt64, len(texts))
    h_img = normalise(run_all(images_fn(model, torch.float16), img_batches)[1])
    h_txt = normalise(run_all(texts_fn(model), txt64)[1])
    parity["torch_f16_vs_f64_images"] = float(np.abs(h_img - ref64_img).max())
    parity["torch_f16_vs_f64_texts"] = float(np.abs(h_txt - ref64_txt).max())
    del model
    log("torch: " + ", ".join(f"{k} {v:.1f}" for k, v in results.items()))

    out_img, out_txt = os.path.join(args.work, "img.npy"), os.path.join(args.work, "txt.npy")
    quarter_img, quarter_txt = max(1, len(paths) // 4), max(1, len(texts) // 4)
    loads = {}

    def measure(name, binary, dtype):
        def cmd(what, out, items, batch):
            return ["--device", args.device, what, "--model", converted, "--dtype", dtype,
                    "--out", out, "--batch-size", str(batch)] + items
        t = time.time()
        _, first_s, _, _ = run_ours(binary, cmd("embed-images", out_img, paths,
                                                args.image_batch), args.timeout)
        run_ours(binary, cmd("embed-texts", out_txt, texts, args.text_batch), args.timeout)
        log(f"{name}: warm-up runs took {time.time() - t:.0f} s (first images pass "
            f"{len(paths) / first_s:.1f} images/s)")
        for what, out, items, batch, quarter, key in [
                ("embed-images", out_img, paths, args.image_batch, quarter_img, "img"),
                ("embed-texts", out_txt, texts, args.text_batch, quarter_txt, "txt")]:
            full, part, load = [], [], []
            for _ in range(args.rounds):
                _, secs, ld, _ = run_ours(binary, cmd(what, out, items, batch), args.timeout)
                full.append(secs)
                load.append(ld)
                _, s4, _, _ = run_ours(binary, cmd(what, out + ".q.npy", items[:quarter],
                                                    batch), args.timeout)
                part.append(s4)
            t_full, t_part = statistics.median(full), statistics.median(part)
            results[f"{name}_{key}"] = len(items) / t_full
            results[f"{name}_{key}_marginal"] = ((len(items) - quarter) / (t_full - t_part)
                                                 if t_full > t_part else float("nan"))
            loads[f"{name}_{key}"] = statistics.median(load)
        ours_img = np.load(out_img).astype(np.float64)
        ours_txt = np.load(out_txt).astype(np.float64)
        parity[f"{name}_vs_torch_f32_images"] = float(np.abs(ours_img - ref_img).max())
        parity[f"{name}_vs_f64_images"] = float(np.abs(ours_img - ref64_img).max())
        parity[f"{name}_vs_torch_f32_texts"] = float(np.abs(ours_txt - ref_txt).max())
        parity[f"{name}_vs_f64_texts"] = float(np.abs(ours_txt - ref64_txt).max())
        per_image = np.abs(ours_img - ref_img).max(axis=1)
        per_photo[name] = {os.path.basename(p): float(d) for p, d in zip(paths, per_image)}
        worst = np.argsort(-per_image)[:4]
        log(f"{name}: images over 1e-4 vs PyTorch f32: {int((per_image > 1e-4).sum())} of "
            f"{len(paths)}; worst " + ", ".join(
                f"{os.path.basename(paths[i])} {per_image[i]:.1e}" for i in worst))
        log(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in results.items()
                                    if k.startswith(name) and isinstance(v, float)))

    for name, (binary, dtype) in variants.items():
        try:
            measure(name, binary, dtype)
        except RuntimeError as e:
            log(f"{name}: {e}")
            results[f"{name}_failed"] = str(e)[-2000:]

    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else str(dev)
    print(f"GPU: {gpu}; torch {torch.__version__}; {len(paths)} photos (batch "
          f"{args.image_batch}), {len(texts)} captions (batch {args.text_batch}); "
          f"{args.rounds} rounds, medians")
    print(f"{'':36}{'images/s':>10}{'texts/s':>10}")
    for label, img, txt in [
            ("PyTorch f32 (TF32 off), 64 tok", "torch_f32_img", "torch_f32_txt64"),
            ("PyTorch f32, our text batches", None, "torch_f32_txt_ours"),
            ("PyTorch defaults (cuDNN TF32)", "torch_default_img", None),
            ("PyTorch f16, 64 tok", "torch_f16_img", "torch_f16_txt64")] + [
            (f"ours {n} (CLI e2e)", f"{n}_img", f"{n}_txt") for n in variants] + [
            (f"ours {n} (marginal)", f"{n}_img_marginal", f"{n}_txt_marginal")
            for n in variants]:
        cell = [f"{results[k]:10.1f}" if k in results else f"{'':10}" for k in (img, txt)]
        print(f"{label:36}{cell[0]}{cell[1]}")
    print("ours: model load " + ", ".join(f"{k} {v:.2f} s" for k, v in loads.items()))
    print("parity (max abs diff, L2-normalised embeddings): " +
          ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))
    for k, v in results.items():
        if k.endswith("_failed"):
            print(f"{k}: {v[-500:]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "torch": torch.__version__, "results": results,
                       "parity": parity, "per_photo_vs_torch_f32": per_photo,
                       "load_s": loads, "images": len(paths),
                       "texts": len(texts)}, f, indent=1)


if __name__ == "__main__":
    main()
