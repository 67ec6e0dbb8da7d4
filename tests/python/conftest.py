"""Shared fixtures of the Python test suite: the `align` binary, the tiny checkpoint, and
generated collections (real photos from scikit-image's data, generated images, bad files,
webdataset shards)."""

import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/align/tiny"
PHOTOS = ROOT / "tests/fixtures/processor/images"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Caches (`align eval`'s classifiers) go to a folder of the test session, not ~/.cache."""
    os.environ["ALIGN_CACHE_DIR"] = str(tmp_path_factory.mktemp("align-cache"))


def align_bin():
    path = Path(os.environ.get("ALIGN_BIN", ROOT / "target/debug/align"))
    if not path.is_file():
        pytest.fail(f"{path}: no align binary; build it (cargo build -p align-cli) or set ALIGN_BIN")
    return path


def run_align(*args, check=True, **kwargs):
    """Runs `align ARGS`; returns the CompletedProcess (text mode)."""
    proc = subprocess.run(
        [str(align_bin()), *map(str, args)], capture_output=True, text=True, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"align {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def summary(proc):
    """The JSON summary `align index` prints on stdout."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def noise_image(seed, size=(48, 40), mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    # Smooth gradients plus noise: compresses like a photo, differs per seed.
    base = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return Image.fromarray(base, mode)


def save(img, path, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_collection(root):
    """A folder with nested sub-folders, sidecars, every image format, grey and RGBA images,
    upper-case extensions, hidden files and folders, and bad files; returns
    (folder, readable image paths, bad image paths)."""
    photos = root / "photos"
    good, bad = [], []
    for name in ["chelsea.png", "coffee.jpg", "astronaut.jpg", "immuno.webp", "coffee_small.bmp",
                 "chelsea_small.gif", "rocket_small.tif", "camera_grey.png", "logo_rgba.png"]:
        dst = photos / "skimage" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / name, dst)
        good.append(dst)
    (photos / "skimage/chelsea.txt").write_text("a cat lying on a rug\n")
    (photos / "skimage/coffee.txt").write_text("a cup of coffee")
    (photos / "skimage/coffee.json").write_text(json.dumps(
        {"url": "http://example.com/coffee.jpg", "exif": {"Make": "Canon", "ISO": 100},
         "tags": ["cup", "drink"], "score": 0.5, "caption": "ignored: the sidecar wins"}))
    for i in range(6):
        p = save(noise_image(i), photos / "nested" / f"level{i % 2}" / f"img_{i}.jpg")
        (p.with_suffix(".txt")).write_text(f"generated picture number {i}")
        (p.with_suffix(".json")).write_text(json.dumps({"index": i, "exif": {"ISO": 100 + i}}))
        good.append(p)
    good.append(save(noise_image(10), photos / "UPPER.JPG", "JPEG"))
    good.append(save(noise_image(11, mode="L"), photos / "grey.png"))
    good.append(save(noise_image(12, mode="RGBA"), photos / "rgba.PNG", "PNG"))
    good.append(save(noise_image(13), photos / "x.TIFF", "TIFF"))
    # Hidden: skipped unless --include-hidden.
    save(noise_image(20), photos / ".hidden" / "h.jpg")
    save(noise_image(21), photos / ".dot.jpg")
    # Bad files: corrupt, truncated, empty, not an image at all.
    rng = np.random.default_rng(7)
    bad_dir = photos / "bad"
    bad_dir.mkdir()
    (bad_dir / "random.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    jpeg = (photos / "skimage/coffee.jpg").read_bytes()
    (bad_dir / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (bad_dir / "empty.png").write_bytes(b"")
    (bad_dir / "text.png").write_text("this is not a picture")
    bad += [bad_dir / n for n in ["empty.png", "random.jpg", "text.png", "truncated.jpg"]]
    # Not images: ignored.
    (photos / "notes.md").write_text("not an image")
    return photos, good, bad


def write_shard(path, n, start=0, corrupt=()):
    """A webdataset shard as img2dataset writes it: KEY.jpg, KEY.txt, KEY.json per sample.
    Returns {key: (jpeg bytes, caption)}."""
    samples = {}
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            key = f"{i:09d}"
            buf = io.BytesIO()
            noise_image(1000 + i, size=(56, 44)).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
            if i in corrupt:
                data = data[:100]
            caption = f"shard caption {i}"
            meta = {"url": f"http://example.com/{key}.jpg", "key": key, "status": "success",
                    "width": 56, "height": 44, "original_width": 560}
            for ext, payload in [("jpg", data), ("txt", caption.encode()),
                                 ("json", json.dumps(meta).encode())]:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            samples[key] = (data, caption)
    return samples


def load_clip_retrieval_module(name):
    """A module of the installed clip-retrieval package, loaded from its file: the package's
    __init__ imports torch, which the tests do not install."""
    spec = importlib.util.find_spec("clip_retrieval")
    assert spec is not None, "pip install --no-deps clip-retrieval"
    path = Path(spec.submodule_search_locations[0]) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"clip_retrieval_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
