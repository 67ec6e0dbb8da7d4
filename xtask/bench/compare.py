#!/usr/bin/env python3
"""Throughput of `align embed-images` / `align embed-texts` against ONNX Runtime and PyTorch
eager, on the same inputs, on this machine, with the runs interleaved.

Run through `cargo xtask bench` (which builds the release `align` binary first), or:

    python3 xtask/bench/compare.py --align target/release/align \
        [--model test-data/align-base-random] [--images 16] [--texts 64] [--rounds 3]

Needs: torch, transformers, onnxruntime, onnx, onnxscript, scikit-image, Pillow
(`pip install -r xtask/bench/requirements.txt`).

What is timed (startup excluded everywhere):
  * ours: the `align` CLI on the converted directory (model.bpk), the rate it reports on stderr
    after loading: decoding + preprocessing / tokenising, inference, writing the .npy. Also its
    load time and peak RSS (from wait4).
  * ONNX Runtime: InferenceSession.run on the towers exported with torch.onnx from the same
    checkpoint, fed the HF processor's outputs (preprocessing NOT counted, in ORT's favour);
    texts three ways: padded to 64 as AlignProcessor does; padded to each batch's longest
    text; and in the very batches our CLI forms (texts sorted by token count, cut by
    `align_model::length_batches`, each padded to its longest: the [CLS] output does not depend
    on padding), which compares the engines on identical work.
  * identical batches: long captions (more than 64 tokens, so every one is cut to 64), our
    CLI in batches of 32 and of 1 against ONNX Runtime on the very same token ids in the same
    batches (32 x 64 and 1 x 64): the engines on the same work, no padding to gain or lose.
  * PyTorch eager: AlignModel.get_*_features under torch.inference_mode, same inputs.
Batches: images 8, texts 32 (the CLI's defaults on flex); ONNX Runtime also runs the images one
at a time (batch 1), and the ratio is taken against its faster setting.
Warm-up: ONNX Runtime and PyTorch are timed in this process after a first untimed run, with
their memory already in use. Each timed run of our CLI is a fresh process whose first batch
touches its buffers for the first time; on a VM whose host takes back the memory a guest has
freed (free page reporting), those pages then cost a host fault and zeroing each, and the
first `align` run after ONNX Runtime's ran measurably slower than the next one. So in every round
our CLI first runs once on the same inputs (printed as "ours, first after ORT", with its
ratio), then the timed runs follow (--no-warm-up: no such run, the timed one first).
Threads: all cores for every runtime.
Each round runs every system once (images, then texts); medians over rounds are reported.
With --baseline, a second build runs in every round too (before ours in odd rounds, after in
even ones), and the per-round ratios to ONNX Runtime and between the builds are printed.
Our embeddings are checked against PyTorch's on the same inputs (max abs diff printed), and
every system's against PyTorch run in float64 (what float32 rounding costs each).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

PHOTOS = ["astronaut", "chelsea", "coffee", "camera", "rocket", "cat", "hubble_deep_field",
          "immunohistochemistry", "coins", "logo", "page", "retina"]

CAPTIONS = [
    "a photo of a cat",
    "a dog",
    "an astronaut in a white space suit standing in front of the american flag",
    "a cup of coffee on a saucer",
    "a rocket on the launch pad at sunset, with clouds of smoke around it",
    "black and white photo of a man with a camera on a tripod",
    "a tabby cat lying on a red blanket and looking at the camera",
    "the hubble deep field: thousands of galaxies in a tiny patch of sky",
    "a pile of old coins on a table",
    "the logo of a python library",
    "a page of printed text",
    "a retina photographed through an ophthalmoscope",
    "two dogs playing in the snow in a park near the river on a cold winter morning",
    "naïve café au lait, s'il vous plaît",
    "東京の夜景",
    "a very long caption that keeps describing the scene in more and more detail: the sky, the "
    "buildings, the people walking on the pavement, the cars, the trees, the light of the shops "
    "and the reflections on the wet road after the rain",
]


def long_captions(n):
    """`n` distinct captions of well over 64 tokens (alt-text-like word salad, seeded)."""
    import random

    rng = random.Random(0)
    words = ("a photo of the red car parked near an old stone bridge over the river with trees "
             "and people walking their dogs in the sunny afternoon light of a busy city street "
             "market at dusk").split()
    return [" ".join(rng.choice(words) for _ in range(90)) for _ in range(n)]


def length_batches(lens, max_batch, pass_cost=32):
    """`align_model::length_batches` (crates/align-model/src/pipeline.rs), for texts sorted by
    decreasing length: the cut into batches of at most max_batch that minimises the padded
    token count plus pass_cost (`PASS_COST_TOKENS`) per batch."""
    n = len(lens)
    cost, start = [0] * (n + 1), [0] * (n + 1)
    for i in range(1, n + 1):
        cost[i] = None
        for j in range(max(0, i - max_batch), i):
            c = cost[j] + (i - j) * lens[j] + pass_cost
            if cost[i] is None or c < cost[i]:
                cost[i], start[i] = c, j
    out, end = [], n
    while end > 0:
        out.append((start[end], end))
        end = start[end]
    return out[::-1]


def pil_processor(model_dir):
    """AlignProcessor with the Pillow image processor, whatever is installed: with torchvision
    present, transformers picks its torchvision one, whose resize differs from Pillow's (what
    align-base was trained with and what align-processor reproduces) by up to one level in 255
    per pixel, which moves the random network's embeddings by up to 4e-2 (the nearly black
    Hubble photo; 7e-5 to 7e-4 for the others)."""
    from transformers import AlignProcessor
    from transformers.models.efficientnet.image_processing_pil_efficientnet import (
        EfficientNetImageProcessorPil,
    )

    processor = AlignProcessor.from_pretrained(model_dir)
    processor.image_processor = EfficientNetImageProcessorPil.from_pretrained(model_dir)
    return processor


def cli_batches(tok64, max_batch):
    """The text batches our CLI forms from the processor's 64-token output: texts sorted by
    length (stable, longest first), cut by `length_batches`, each cut to its longest text.
    Returns (batches, order): row k of the concatenated outputs is text order[k]."""
    lens = tok64["attention_mask"].sum(1).tolist()
    order = sorted(range(len(lens)), key=lambda i: -lens[i])
    batches = []
    for a, b in length_batches([lens[i] for i in order], max_batch):
        rows, width = order[a:b], lens[order[a]]
        batches.append({k: tok64[k][rows, :width]
                        for k in ("input_ids", "attention_mask", "token_type_ids")})
    return batches, order


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_inputs(tmp, n_images, n_texts):
    from PIL import Image
    from skimage import data as skdata

    paths = []
    for i in range(n_images):
        name = PHOTOS[i % len(PHOTOS)]
        arr = getattr(skdata, name)()
        img = Image.fromarray(arr)
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        path = os.path.join(tmp, f"{i:03d}_{name}.jpg")
        img.save(path, quality=92)
        paths.append(path)
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(n_texts)]
    return paths, texts


def run_measured(args):
    """Runs a command; returns (exit code, stdout, stderr, peak RSS MiB). The peak is VmHWM of
    the process's own address space, polled from /proc (ru_maxrss of a child forked from this
    Python process would count Python's memory too)."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True)
        peak_kib = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), peak_kib / 1024


def run_ours(align, model, cmd, out, items, batch, device):
    """Runs the CLI; returns (items/s after load, load s, peak RSS MiB)."""
    args = [align, "--device", device, cmd, "--model", model, "--out", out,
            "--batch-size", str(batch)] + items
    code, _, stderr, peak_mib = run_measured(args)
    if code != 0:
        sys.exit(f"align {cmd} failed:\n{stderr}")
    m = re.search(r"model load ([\d.]+) s; (\d+) \w+ in ([\d.]+) s", stderr)
    if not m:
        sys.exit(f"align {cmd}: no timing line in:\n{stderr}")
    load_s, n, run_s = float(m.group(1)), int(m.group(2)), float(m.group(3))
    return n / run_s, load_s, peak_mib


def timed(fn, batches):
    t = time.perf_counter()
    outs = [fn(b) for b in batches]
    return time.perf_counter() - t, outs


def has_tokenizer(d):
    return any(os.path.isfile(os.path.join(d, f)) for f in ("tokenizer.json", "vocab.txt"))


def converted_dir(align, model, work):
    """Our converted copy of `model` under `work` (made again if an earlier one lacks the
    tokenizer)."""
    converted = os.path.join(work, os.path.basename(os.path.normpath(model)) + "-bpk")
    if not (os.path.isfile(os.path.join(converted, "model.bpk")) and has_tokenizer(converted)):
        log(f"converting {model} -> {converted}")
        subprocess.run([align, "convert-weights", "--input", model, "--output", converted],
                       check=True)
    return converted


def vision_tower(model):
    """AlignModel's vision tower as a module: pixel_values -> pooled features."""
    import torch

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.vision_model(pixel_values=pixel_values).pooler_output

    return Vision(model).eval()


def export_vision(vision, example, path):
    """Exports the vision tower (pixel_values -> pooled features) to ONNX, once."""
    import torch

    if os.path.isfile(path):
        return
    log("exporting the vision tower to ONNX")
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(vision, (example,), path, input_names=["pixel_values"],
                          output_names=["image_features"],
                          dynamic_axes={"pixel_values": {0: "batch"}}, dynamo=False,
                          opset_version=17)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--align", required=True, help="the release `align` binary")
    ap.add_argument("--model", default=os.path.join(ROOT, "test-data", "align-base-random"),
                    help="HF checkpoint directory (default: the full-size random align-base)")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench"),
                    help="where the converted model and ONNX files are cached")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=32)
    ap.add_argument("--same-texts", type=int, default=64, help="long captions for the "
                    "identical-batch lines (batches of 32 x 64 and 1 x 64 tokens)")
    ap.add_argument("--skip-images", action="store_true", help="time the text tower only")
    ap.add_argument("--device", default="flex", help="our backend (flex, ndarray, wgpu)")
    ap.add_argument("--skip-torch", action="store_true", help="leave PyTorch eager out")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--baseline", help="another `align` binary (e.g. a build of an earlier "
                    "commit), run next to ours in every round (first in odd rounds, second in "
                    "even ones): the same machine minutes for both builds and ONNX Runtime")
    ap.add_argument("--no-warm-up", action="store_true", help="no untimed run of our CLI "
                    "before the timed ones in each round (see the warm-up paragraph above)")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    from transformers import AlignModel

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    os.makedirs(args.work, exist_ok=True)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit(f"{args.model}: no config.json (make it with "
                 "`python3 tests/reference/make_align_base_random.py`, then add the tokenizer "
                 "with `MINILM_DIR=$(cargo xtask fetch-test-data) python3 "
                 "tests/reference/make_align_fixtures.py full`)")
    if not has_tokenizer(args.model):
        sys.exit(f"{args.model}: no tokenizer.json or vocab.txt (add them with "
                 "`MINILM_DIR=$(cargo xtask fetch-test-data) python3 "
                 "tests/reference/make_align_fixtures.py full`)")

    converted = converted_dir(args.align, args.model, args.work)

    model = AlignModel.from_pretrained(args.model).eval()
    processor = pil_processor(args.model)

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m.text_model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            return self.m.text_projection(h[:, 0, :])

    vision, text = vision_tower(model), Text(model).eval()

    with tempfile.TemporaryDirectory() as tmp:
        paths, texts = make_inputs(tmp, args.images, args.texts)
        from PIL import Image

        pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
        tok64 = processor(text=texts, padding="max_length", max_length=64, truncation=True,
                          return_tensors="pt")
        img_batches = [pixels[i:i + args.image_batch] for i in range(0, len(paths), args.image_batch)]
        img_singles = [pixels[i:i + 1] for i in range(len(paths))]

        def text_batches(longest):
            out = []
            for i in range(0, len(texts), args.text_batch):
                if longest:
                    t = processor(text=texts[i:i + args.text_batch], padding="longest",
                                  max_length=64, truncation=True, return_tensors="pt")
                else:
                    t = {k: v[i:i + args.text_batch] for k, v in tok64.items()}
                out.append({k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            return out

        txt64, txt_longest = text_batches(False), text_batches(True)
        tokens64 = sum(int(b["input_ids"].shape[1]) * len(b["input_ids"]) for b in txt64)
        tokens_longest = sum(int(b["input_ids"].shape[1]) * len(b["input_ids"]) for b in txt_longest)
        txt_grouped, order = cli_batches(tok64, args.text_batch)
        # Identical batches: every long caption is cut to 64 tokens, so our CLI's batches of
        # 32 (or 1) are [32, 64] (or [1, 64]) like ONNX Runtime's.
        same = long_captions(args.same_texts)
        same_tok = processor(text=same, padding="max_length", max_length=64, truncation=True,
                             return_tensors="pt")
        assert int(same_tok["attention_mask"].sum()) == 64 * len(same), "a caption under 64 tokens"
        same_batches = {b: [{k: same_tok[k][i:i + b] for k in
                             ("input_ids", "attention_mask", "token_type_ids")}
                            for i in range(0, len(same), b)] for b in (32, 1)}
        inverse = np.argsort(order)
        tokens_grouped = sum(int(b["input_ids"].numel()) for b in txt_grouped)

        # ONNX export (cached).
        vpath = os.path.join(args.work, "vision.onnx")
        tpath = os.path.join(args.work, "text.onnx")
        with torch.inference_mode(False), torch.no_grad():
            export_vision(vision, pixels[:1], vpath)
            if not os.path.isfile(tpath):
                log("exporting the text tower to ONNX")
                b = txt64[0]
                torch.onnx.export(text, (b["input_ids"][:2], b["attention_mask"][:2],
                                         b["token_type_ids"][:2]), tpath,
                                  input_names=["input_ids", "attention_mask", "token_type_ids"],
                                  output_names=["text_features"],
                                  dynamic_axes={k: {0: "batch", 1: "seq"} for k in
                                                ["input_ids", "attention_mask", "token_type_ids"]},
                                  dynamo=False, opset_version=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        vsess = ort.InferenceSession(vpath, so, providers=["CPUExecutionProvider"])
        tsess = ort.InferenceSession(tpath, so, providers=["CPUExecutionProvider"])

        def ort_images(b):
            return vsess.run(None, {"pixel_values": b.numpy()})[0]

        def ort_texts(b):
            return tsess.run(None, {k: v.numpy().astype(np.int64) for k, v in b.items()})[0]

        def torch_images(b):
            with torch.inference_mode():
                return vision(b).numpy()

        def torch_texts(b):
            with torch.inference_mode():
                return text(**b).numpy()

        def normalise(x):
            x = np.concatenate(x)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        # Warm-up (and references).
        ref_img = normalise([torch_images(b) for b in img_batches])
        ref_txt = normalise([torch_texts(b) for b in txt64])
        ort_img = normalise([ort_images(b) for b in img_batches])
        ort_images(img_singles[0])
        ort_txt = normalise([ort_texts(b) for b in txt64])
        ort_txt_l = normalise([ort_texts(b) for b in txt_longest])
        ort_txt_g = normalise([ort_texts(b) for b in txt_grouped])[inverse]

        # Float64 references: what float32 rounding costs each system on these inputs (the
        # random network amplifies rounding on some photos, e.g. the nearly black Hubble one).
        import copy
        model64 = copy.deepcopy(model).double()
        vision64, text64 = vision_tower(model64), Text(model64).eval()
        with torch.inference_mode():
            ref64_img = normalise([vision64(b.double()).numpy() for b in img_batches])
            ref64_txt = normalise([text64(**b).numpy() for b in txt64])
        del model64, vision64, text64

        out_img, out_txt = os.path.join(tmp, "img.npy"), os.path.join(tmp, "txt.npy")
        out_same = os.path.join(tmp, "same.npy")
        ort_texts(same_batches[32][0])
        results = {k: [] for k in ["cold_img", "ours_img", "base_img", "ort_img", "ort_img_b1",
                                   "torch_img", "cold_txt", "ours_txt", "base_txt", "ort_txt64",
                                   "ort_txt_longest", "ort_txt_grouped", "torch_txt64",
                                   "ours_same32", "ort_same32", "ours_same1", "ort_same1"]}
        loads, rss = [], []
        for r in range(args.rounds):
            def ours_and_baseline(cmd, out, items, batch, kind):
                # (with a baseline, odd rounds run it first; the warm-up run first of all)
                runs = [("ours", args.align, out)]
                if args.baseline:
                    runs.insert(r % 2, ("base", args.baseline, out + ".base"))
                if not args.no_warm_up:
                    runs.insert(0, ("cold", args.align, out + ".cold"))
                for name, binary, path in runs:
                    rate, load_s, mem = run_ours(binary, converted, cmd, path, items, batch,
                                                 args.device)
                    results[f"{name}_{kind}"].append(rate)
                    if name == "ours":
                        loads.append(load_s); rss.append(mem)

            if not args.skip_images:
                ours_and_baseline("embed-images", out_img, paths, args.image_batch, "img")
                results["ort_img"].append(len(paths) / timed(ort_images, img_batches)[0])
                results["ort_img_b1"].append(len(paths) / timed(ort_images, img_singles)[0])
                if not args.skip_torch:
                    results["torch_img"].append(len(paths) / timed(torch_images, img_batches)[0])
            ours_and_baseline("embed-texts", out_txt, texts, args.text_batch, "txt")
            results["ort_txt64"].append(len(texts) / timed(ort_texts, txt64)[0])
            results["ort_txt_longest"].append(len(texts) / timed(ort_texts, txt_longest)[0])
            results["ort_txt_grouped"].append(len(texts) / timed(ort_texts, txt_grouped)[0])
            if not args.skip_torch:
                results["torch_txt64"].append(len(texts) / timed(torch_texts, txt64)[0])
            for b in (32, 1):
                rate, _, _ = run_ours(args.align, converted, "embed-texts", out_same, same, b,
                                      args.device)
                results[f"ours_same{b}"].append(rate)
                results[f"ort_same{b}"].append(len(same) / timed(ort_texts, same_batches[b])[0])
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.2f}" for k, v in results.items() if v))

        ours_img = np.load(out_img) if not args.skip_images else np.full_like(ref_img, np.nan)
        ours_txt = np.load(out_txt)
        parity = {
            "ours_vs_torch_image_embeds": float(np.abs(ours_img - ref_img).max()),
            "ours_vs_torch_text_embeds": float(np.abs(ours_txt - ref_txt).max()),
            "ort_vs_torch_image_embeds": float(np.abs(ort_img - ref_img).max()),
            "ort_vs_torch_text_embeds": float(np.abs(ort_txt - ref_txt).max()),
            "ort_longest_vs_torch_text_embeds": float(np.abs(ort_txt_l - ref_txt).max()),
            "ort_grouped_vs_torch_text_embeds": float(np.abs(ort_txt_g - ref_txt).max()),
        }
        parity64 = {
            "ours_vs_f64_image_embeds": float(np.abs(ours_img - ref64_img).max()),
            "ort_vs_f64_image_embeds": float(np.abs(ort_img - ref64_img).max()),
            "torch_vs_f64_image_embeds": float(np.abs(ref_img - ref64_img).max()),
            "ours_vs_f64_text_embeds": float(np.abs(ours_txt - ref64_txt).max()),
            "ort_grouped_vs_f64_text_embeds": float(np.abs(ort_txt_g - ref64_txt).max()),
            "torch_vs_f64_text_embeds": float(np.abs(ref_txt - ref64_txt).max()),
        }

    med = {k: statistics.median(v) for k, v in results.items() if v}
    print(f"machine: {os.cpu_count()} cores; onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"our device: {args.device}")
    print(f"inputs: {len(paths)} JPEG photos (batch {args.image_batch}), {len(texts)} captions "
          f"(batch {args.text_batch}; {tokens64} tokens padded to 64, {tokens_longest} padded to "
          f"each batch's longest, {tokens_grouped} in our length-grouped batches); "
          f"{args.rounds} interleaved rounds, medians")
    print(f"identical batches ({len(same)} captions cut to 64 tokens), texts/s: "
          f"32 x 64: ours {med['ours_same32']:.2f}, ONNX Runtime {med['ort_same32']:.2f}, "
          f"ratio {med['ours_same32'] / med['ort_same32']:.2f}x; "
          f"1 x 64: ours {med['ours_same1']:.2f}, ONNX Runtime {med['ort_same1']:.2f}, "
          f"ratio {med['ours_same1'] / med['ort_same1']:.2f}x")
    for b in (32, 1):
        r = [x / o for x, o in zip(results[f"ours_same{b}"], results[f"ort_same{b}"])]
        print(f"identical batches {b} x 64, ours / ORT round by round: " +
              ", ".join(f"{x:.2f}" for x in r))
    if args.skip_images:
        for k in ("ours_img", "cold_img", "base_img", "ort_img", "ort_img_b1", "torch_img"):
            med[k] = float("nan")
    print(f"{'':28}{'images/s':>10}{'texts/s':>10}")
    print(f"{'ours (align CLI, e2e)':28}{med['ours_img']:10.2f}{med['ours_txt']:10.2f}")
    if not args.no_warm_up:
        print(f"{'ours, first after ORT':28}{med['cold_img']:10.2f}{med['cold_txt']:10.2f}")
    if args.baseline:
        print(f"{'baseline build (--baseline)':28}{med['base_img']:10.2f}{med['base_txt']:10.2f}")
    print(f"{f'ONNX Runtime (b{args.image_batch}, 64 tok)':28}{med['ort_img']:10.2f}{med['ort_txt64']:10.2f}")
    print(f"{'ONNX Runtime (images b1)':28}{med['ort_img_b1']:10.2f}")
    print(f"{'ONNX Runtime (longest)':28}{'':10}{med['ort_txt_longest']:10.2f}")
    print(f"{'ONNX Runtime (our batches)':28}{'':10}{med['ort_txt_grouped']:10.2f}")
    if not args.skip_torch:
        print(f"{'PyTorch eager (64 tokens)':28}{med['torch_img']:10.2f}{med['torch_txt64']:10.2f}")
    ort_best = max(med['ort_img'], med['ort_img_b1'])
    print(f"ratio ours / ORT: images {med['ours_img'] / ort_best:.2f}x (vs ORT's faster batching; "
          f"{med['ours_img'] / med['ort_img']:.2f}x vs batch {args.image_batch}, "
          f"{med['ours_img'] / med['ort_img_b1']:.2f}x vs batch 1), texts "
          f"{med['ours_txt'] / med['ort_txt64']:.2f}x vs 64-token ORT, "
          f"{med['ours_txt'] / med['ort_txt_longest']:.2f}x vs longest-padded ORT, "
          f"{med['ours_txt'] / med['ort_txt_grouped']:.2f}x vs ORT on our batches")
    if not args.no_warm_up:
        print(f"ratio of our first run after ORT (a fresh process's memory cold, see --help): "
              f"images {med['cold_img'] / ort_best:.2f}x, texts "
              f"{med['cold_txt'] / med['ort_txt64']:.2f}x vs 64-token ORT, "
              f"{med['cold_txt'] / med['ort_txt_grouped']:.2f}x vs ORT on our batches")
    ort_round = [max(a, b) for a, b in zip(results["ort_img"], results["ort_img_b1"])]
    r = [x / o for x, o in zip(results["ours_img"], ort_round)]
    if r:
        print(f"ours / ORT's faster setting, images, round by round: " +
              ", ".join(f"{x:.2f}" for x in r) + f" (median {statistics.median(r):.2f}x)")
    if args.baseline and r:
        r = [x / o for x, o in zip(results["base_img"], ort_round)]
        print(f"base / ORT's faster setting, images, round by round: " +
              ", ".join(f"{x:.2f}" for x in r) + f" (median {statistics.median(r):.2f}x)")
        paired = [a / b for a, b in zip(results["ours_img"], results["base_img"])]
        paired_t = [a / b for a, b in zip(results["ours_txt"], results["base_txt"])]
        print(f"ours / baseline, round by round: images " +
              ", ".join(f"{x:.3f}" for x in paired) + "; texts " +
              ", ".join(f"{x:.3f}" for x in paired_t))
    print(f"ours: model load {statistics.median(loads):.2f} s (median), peak RSS "
          f"{max(rss):.0f} MiB (max)")
    if args.skip_images:  # (no image embeddings of ours to compare)
        parity = {k: v for k, v in parity.items() if not k.startswith("ours_vs_torch_image")}
        parity64 = {k: v for k, v in parity64.items() if not k.startswith("ours_vs_f64_image")}
    print("parity (max abs diff of L2-normalised embeddings vs PyTorch): " +
          ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))
    print("accuracy (max abs diff vs PyTorch in float64 on the same inputs): " +
          ", ".join(f"{k} {v:.2e}" for k, v in parity64.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": results, "median": med, "load_s": loads, "peak_rss_mib": rss,
                       "parity": parity, "parity_f64": parity64}, f, indent=1)


if __name__ == "__main__":
    main()
