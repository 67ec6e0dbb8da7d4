#!/usr/bin/env python3
"""Full-size random ALIGN (align-base config) and reference vision outputs on real photos.

    python3 tests/reference/make_align_base_random.py [--out test-data/align-base-random]

Writes (git-ignored, ~700 MB):
  <out>/config.json, model.safetensors      AlignModel.save_pretrained (real key layout)
  <out>/preprocessor_config.json            align-base image settings (PIL backend)
  <out>/reference/<photo>_pixel_values.npy  [1,3,289,289] f32, what the Rust tests feed
  <out>/reference/<photo>_pooled.npy        [1,640] vision pooler_output
  <out>/reference/<photo>_stage_<i>.npy     output of the last block of stage i (i = 0..6)
  <out>/reference/meta.json                 photos, stage ends, fp32-vs-fp64 drift of the reference
for scikit-image's chelsea, coffee and astronaut.

Vision weights follow align-spec.md section 8 (He-normal convs, BN gamma ~U(0.8,1.2),
beta ~U(0,0.6), project_bn gamma ~U(0.2,0.6), running stats calibrated in train mode with
momentum None over synthetic images), so the tower is neither collapsed nor exploding. The
text tower keeps transformers' default init (N(0, 0.02) linears, LayerNorm 1/0), which is sane
for a post-LN BERT.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn
from transformers import AlignConfig, AlignModel, AlignTextConfig, AlignVisionConfig
from transformers.image_utils import PILImageResampling
from transformers.models.efficientnet.image_processing_pil_efficientnet import (
    EfficientNetImageProcessorPil,
)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PHOTOS = ["chelsea", "coffee", "astronaut"]
SEED = 20261127


def spec_init(vision: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, m in vision.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                if name.endswith("project_bn"):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4 + 0.2)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
                else:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4 + 0.8)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.6)
            elif isinstance(m, nn.Linear):  # a standalone EfficientNet's classifier
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / m.in_features) ** 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)


def synthetic_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Textures, colour blocks, gradients + noise in [-1, 1]."""
    ys = torch.linspace(-1, 1, size).view(1, size, 1)
    xs = torch.linspace(-1, 1, size).view(1, 1, size)
    out = []
    for i in range(n):
        c = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        a = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        img = c * xs + a * ys
        if i % 3 == 0:  # colour blocks
            cells = 2 + i % 7
            blk = torch.rand(3, cells, cells, generator=gen) * 2 - 1
            rep = (size + cells - 1) // cells
            img = img + blk.repeat_interleave(rep, 1).repeat_interleave(rep, 2)[:, :size, :size]
        elif i % 3 == 1:  # texture: sums of oriented sinusoids
            f = torch.rand(3, 2, generator=gen) * 20 + 2
            img = img + 0.5 * torch.sin(f[:, :1, None] * xs + f[:, 1:, None] * ys)
        img = img + (0.1 + 0.2 * (i % 2)) * torch.randn(3, size, size, generator=gen)
        out.append(img.clamp(-1, 1))
    return torch.stack(out)


def calibrate(vision: nn.Module, size: int, gen: torch.Generator, batches: int = 3,
              images=None) -> None:
    """Running statistics from train-mode BN (cumulative average, momentum None) over
    `batches` batches of 8 synthetic images (`images(n, size, gen)`)."""
    images = images or synthetic_images
    for m in vision.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    vision.train()
    for m in vision.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        for b in range(batches):
            vision(pixel_values=images(8, size, gen))
            print(f"calibration batch {b + 1}/{batches}", file=sys.stderr)
    vision.eval()


def stage_ends(cfg) -> list:
    ends, total = [], 0
    for r in cfg.num_block_repeats:
        total += int(np.ceil(cfg.depth_coefficient * r))
        ends.append(total - 1)
    return ends


def run_vision(vision, pixel_values, ends):
    captured = {}
    hooks = [
        vision.encoder.blocks[b].register_forward_hook(
            lambda m, i, o, s=s: captured.__setitem__(s, o)
        )
        for s, b in enumerate(ends)
    ]
    with torch.no_grad():
        out = vision(pixel_values=pixel_values)
    for h in hooks:
        h.remove()
    return out.pooler_output, [captured[s] for s in range(len(ends))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "test-data", "align-base-random"))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    config = AlignConfig(
        text_config=AlignTextConfig().to_dict(),
        vision_config=AlignVisionConfig(image_size=289, hidden_dim=640).to_dict(),
        projection_dim=640,
        temperature_init_value=1.0,
    )
    model = AlignModel(config).eval()
    vision = model.vision_model
    spec_init(vision, gen)
    calibrate(vision, 289, gen)
    model.eval()

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    processor = EfficientNetImageProcessorPil(
        do_resize=True,
        size={"height": 346, "width": 346},
        resample=PILImageResampling.BILINEAR,
        do_center_crop=True,
        crop_size={"height": 289, "width": 289},
        do_rescale=True,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )
    processor.save_pretrained(args.out)

    ref = os.path.join(args.out, "reference")
    os.makedirs(ref, exist_ok=True)
    ends = stage_ends(config.vision_config)
    vision64 = AlignModel(config).vision_model
    vision64.load_state_dict(vision.state_dict())
    vision64 = vision64.double().eval()
    meta = {"photos": PHOTOS, "stage_ends": ends, "seed": SEED, "fp32_vs_fp64": {}}
    for name in PHOTOS:
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        pv = processor(images=img, return_tensors="pt")["pixel_values"].float()
        assert tuple(pv.shape) == (1, 3, 289, 289), pv.shape
        pooled, stages = run_vision(vision, pv, ends)
        pooled64, stages64 = run_vision(vision64, pv.double(), ends)
        np.save(os.path.join(ref, f"{name}_pixel_values.npy"), pv.numpy().astype(np.float32))
        np.save(os.path.join(ref, f"{name}_pooled.npy"), pooled.numpy().astype(np.float32))
        for s, t in enumerate(stages):
            np.save(os.path.join(ref, f"{name}_stage_{s}.npy"), t.numpy().astype(np.float32))
        meta["fp32_vs_fp64"][name] = {
            "pooled": float((pooled.double() - pooled64).abs().max()),
            "stages": [float((a.double() - b).abs().max()) for a, b in zip(stages, stages64)],
            "pooled_norm": float(pooled.norm()),
            "stage_abs_max": [float(t.abs().max()) for t in stages],
        }
        print(name, json.dumps(meta["fp32_vs_fp64"][name]), file=sys.stderr)
    with open(os.path.join(ref, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print("wrote", args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
