#!/usr/bin/env python3
"""Tiny random EfficientNet / ALIGN vision towers and their transformers outputs.

Writes tests/fixtures/efficientnet/<case>/{config.json, model.safetensors, pixel_values.npy,
pooled.npy, pooled_f64.npy, last_hidden_state.npy, embeddings.npy, stage_<i>.npy[, logits.npy]} for the parity
tests of crates/efficientnet. Run from anywhere:

    python3 tests/reference/make_efficientnet_fixtures.py

Weights are initialised as in align-spec.md section 8 (He-normal convs, BN gamma/beta ranges,
running statistics calibrated in train mode) so that activations are not degenerate.
"""

import copy
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AlignVisionConfig,
    AlignVisionModel,
    EfficientNetConfig,
    EfficientNetForImageClassification,
    EfficientNetModel,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_align_base_random import calibrate, spec_init, stage_ends  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "efficientnet")


def synthetic_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Gradients, colour blocks and noise in [-1, 1]."""
    ys = torch.linspace(-1, 1, size).view(1, size, 1)
    xs = torch.linspace(-1, 1, size).view(1, 1, size)
    out = []
    for i in range(n):
        c = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        a = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        img = c * xs + a * ys
        if i % 2 == 0:
            blk = (torch.rand(3, 4, 4, generator=gen) * 2 - 1).repeat_interleave((size + 3) // 4, 1)
            img = img + blk.repeat_interleave((size + 3) // 4, 2)[:, :size, :size]
        img = img + 0.3 * torch.randn(3, size, size, generator=gen)
        out.append(img.clamp(-1, 1))
    return torch.stack(out)


def save_npy(path: str, t: torch.Tensor) -> None:
    np.save(path, np.ascontiguousarray(t.detach().numpy().astype(np.float32)))


def make_case(name, model, cfg, size, batch, seed, prefix=None):
    gen = torch.Generator().manual_seed(seed)
    spec_init(model, gen)
    calibrate(model, size, gen, batches=2, images=synthetic_images)
    base = model.efficientnet if hasattr(model, "efficientnet") else model

    captured = {}
    hooks = [base.embeddings.register_forward_hook(lambda m, i, o: captured.__setitem__("embeddings", o))]
    ends = stage_ends(cfg)
    for s, b in enumerate(ends):
        hooks.append(
            base.encoder.blocks[b].register_forward_hook(
                lambda m, i, o, s=s: captured.__setitem__(f"stage_{s}", o)
            )
        )
    pixel_values = synthetic_images(batch, size, gen)
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    for h in hooks:
        h.remove()

    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(d, "config.json"))
        tensors = load_file(os.path.join(tmp, "model.safetensors"))
    if prefix:
        # the layout inside a full AlignModel checkpoint
        tensors = {prefix + k: v for k, v in tensors.items()}
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    save_npy(os.path.join(d, "pixel_values.npy"), pixel_values)
    if hasattr(out, "logits"):
        save_npy(os.path.join(d, "logits.npy"), out.logits)
        with torch.no_grad():
            out = base(pixel_values=pixel_values)
    save_npy(os.path.join(d, "pooled.npy"), out.pooler_output)
    # The same network in float64: the exact value that float32 results (the reference's and
    # ours) each approximate.
    with torch.no_grad():
        exact = copy.deepcopy(base).double()(pixel_values=pixel_values.double()).pooler_output
    save_npy(os.path.join(d, "pooled_f64.npy"), exact)
    save_npy(os.path.join(d, "last_hidden_state.npy"), out.last_hidden_state)
    for k, v in captured.items():
        save_npy(os.path.join(d, f"{k}.npy"), v)
    meta = {
        "input_size": size,
        "batch": batch,
        "stage_ends": ends,
        "pooled_abs_max": float(out.pooler_output.abs().max()),
        "key_prefix": prefix or "",
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(name, tuple(out.last_hidden_state.shape), "pooled |max|", meta["pooled_abs_max"], file=sys.stderr)


SMALL = dict(
    width_coefficient=0.25,
    depth_coefficient=1.2,
    depth_divisor=4,
    kernel_sizes=[3, 3, 5, 3, 5],
    in_channels=[32, 16, 24, 40, 80],
    out_channels=[16, 24, 40, 80, 112],
    strides=[1, 2, 2, 1, 2],
    num_block_repeats=[1, 2, 1, 1, 1],
    expand_ratios=[1, 6, 6, 4, 6],
)


def main():
    torch.manual_seed(0)
    # 1. ALIGN vision tower, odd input, mean pooling, keys as inside AlignModel (vision_model.)
    cfg = AlignVisionConfig(**SMALL, image_size=33, hidden_dim=64, pooling_type="mean")
    make_case("align_odd33", AlignVisionModel(cfg), cfg, 33, 2, 1, prefix="vision_model.")
    # 2. even input, depthwise_padding on two stride-2 blocks, max pooling, unprefixed keys
    cfg = AlignVisionConfig(
        **SMALL, image_size=32, hidden_dim=64, pooling_type="max", depthwise_padding=[2, 6]
    )
    make_case("align_even32_dwpad_max", AlignVisionModel(cfg), cfg, 32, 2, 2)
    # 3. standalone EfficientNet with top conv + classifier (EfficientNetForImageClassification)
    small = dict(SMALL, depth_coefficient=1.0)
    top = 4 * ((1280 * 0.25 + 2) // 4)  # round_filters(1280) for these numbers
    cfg = EfficientNetConfig(
        **small, image_size=29, hidden_dim=int(top), pooling_type="mean", num_labels=5
    )
    make_case("efficientnet_top29_cls", EfficientNetForImageClassification(cfg), cfg, 29, 2, 3)
    # 4. standalone EfficientNetModel (top conv, no classifier), even input
    cfg = EfficientNetConfig(**small, image_size=40, hidden_dim=int(top), pooling_type="mean")
    make_case("efficientnet_top40", EfficientNetModel(cfg), cfg, 40, 1, 4)


if __name__ == "__main__":
    main()
