"""The Python package `align_rs` (crates/align-py, `pip install ./crates/align-py`): every
method against transformers' reference outputs for the tiny checkpoint
(tests/reference/make_align_fixtures.py tiny) and against the `align` command line on the same
inputs; every kind of image input; errors; several threads at once; the GIL released."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PHOTOS, TINY, run_align

REF = TINY / "reference"
TINY_IMAGES = [TINY / "image0.png", TINY / "image1.png"]
LABELS = json.loads((REF / "texts.json").read_text())
# Photos whose decoding by Pillow and by the processor agree pixel for pixel (every format the
# processor reads, grey, palette and alpha included), none with an EXIF rotation.
MIXED = ["chelsea.png", "coffee.jpg", "astronaut.jpg", "immuno.webp", "logo_rgba.png",
         "camera_grey.png", "palette_p.png", "grey_alpha_la.png", "chelsea_small.gif",
         "coffee_small.bmp", "rocket_small.tif", "small_40x30.png", "tiny_5x7.png"]


@pytest.fixture(scope="module")
def align_rs():
    try:
        import align_rs
    except ImportError as e:
        pytest.fail(f"the align_rs package is not installed ({e}): pip install ./crates/align-py",
                    pytrace=False)
    return align_rs


@pytest.fixture(scope="module")
def model(align_rs):
    # The CLI runs below name --device flex too: BURN_DEVICE may name another backend of the
    # test binary.
    return align_rs.Align.from_pretrained(str(TINY), device="flex")


def ref(name):
    return np.load(REF / f"{name}.npy")


def cli_npy(tmp_path, *args):
    out = tmp_path / f"cli_{len(list(tmp_path.glob('cli_*')))}.npy"
    run_align(*args, "--device", "flex", "--model", TINY, "--out", out)
    return np.load(out)


def cli_error(*args):
    """The message of a failing `align` run (`align: MESSAGE` on stderr)."""
    proc = run_align(*args, "--device", "flex", check=False)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("align: "), line
    return line[len("align: "):]


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def test_package_layout_stubs_and_docstrings(align_rs, model):
    package = Path(align_rs.__file__).parent
    assert (package / "py.typed").is_file()
    stubs = (package / "__init__.pyi").read_text()
    methods = ["from_pretrained", "embed_images", "embed_texts", "zero_shot", "preprocess",
               "tokenize", "dim", "device"]
    for name in methods:
        assert f"def {name}(" in stubs, name
        assert getattr(align_rs.Align, name).__doc__, name
    assert align_rs.Align.__doc__ and align_rs.__doc__
    assert align_rs.DEVICES == ["flex"]
    assert isinstance(align_rs.__version__, str)
    assert (model.dim, model.device) == (40, "flex")
    assert "tiny" in repr(model)


def test_embed_images_equals_transformers_and_the_cli(model, tmp_path):
    got = model.embed_images([str(p) for p in TINY_IMAGES])
    assert got.dtype == np.float32 and got.shape == (2, 40) and got.flags["C_CONTIGUOUS"]
    # 9.3e-7 measured (the crate's own parity test allows 1e-5).
    assert max_diff(got, ref("image_embeds")) <= 1e-6
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    cli = cli_npy(tmp_path, "embed-images", *TINY_IMAGES)
    assert max_diff(got, cli) <= 1e-6
    # Batches of any size: the same rows.
    for batch_size in [1, 2, 3]:
        assert max_diff(model.embed_images(TINY_IMAGES, batch_size=batch_size), got) <= 1e-6


def test_embed_texts_equals_transformers_and_the_cli(model, tmp_path):
    got = model.embed_texts(LABELS)
    assert got.dtype == np.float32 and got.shape == (len(LABELS), 40)
    assert max_diff(got, ref("text_embeds")) <= 1e-6
    cli = cli_npy(tmp_path, "embed-texts", *LABELS)
    assert max_diff(got, cli) <= 1e-6
    # One at a time: the same rows (padding does not change them).
    one_by_one = np.concatenate([model.embed_texts([t]) for t in LABELS])
    assert max_diff(one_by_one, got) <= 1e-6


def test_half_precision_equals_the_cli(align_rs, model, tmp_path):
    half = align_rs.Align.from_pretrained(str(TINY), device="flex", dtype="f16")
    images = half.embed_images(TINY_IMAGES)
    texts = half.embed_texts(LABELS)
    assert images.dtype == texts.dtype == np.float32
    assert max_diff(images, cli_npy(tmp_path, "embed-images", "--dtype", "f16",
                                    *TINY_IMAGES)) <= 1e-6
    assert max_diff(texts, cli_npy(tmp_path, "embed-texts", "--dtype", "f16", *LABELS)) <= 1e-6
    # Half precision moves the embeddings (it is not the f32 computation by another name).
    assert max_diff(images, model.embed_images(TINY_IMAGES)) > 0


def test_zero_shot_equals_transformers_and_the_cli(model):
    logits, probs = model.zero_shot(TINY_IMAGES, LABELS)
    assert logits.dtype == probs.dtype == np.float32
    assert logits.shape == probs.shape == (2, len(LABELS))
    # Logits are ~20x the cosines: as the crate's parity test, within 1e-5 of the float64
    # network and 2e-5 of transformers' float32 output (2.1e-6 and 8.5e-6 measured; probs 1.3e-6).
    assert max_diff(logits, ref("logits_per_image_f64")) <= 1e-5
    assert max_diff(logits, ref("logits_per_image")) <= 2e-5
    assert max_diff(probs, ref("probs")) <= 1e-5
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    args = [a for label in LABELS for a in ("--label", label)]
    proc = run_align("classify", "--device", "flex", "--model", TINY, *args, *TINY_IMAGES)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in TINY_IMAGES]
    assert all(line["labels"] == LABELS for line in lines)
    assert max_diff(logits, np.array([line["logits"] for line in lines], np.float32)) <= 1e-6
    assert max_diff(probs, np.array([line["probs"] for line in lines], np.float32)) <= 1e-6


def test_preprocess_equals_transformers_and_the_cli(model, tmp_path):
    got = model.preprocess(TINY_IMAGES)
    assert got.dtype == np.float32 and got.shape == (2, 3, 45, 45)
    assert max_diff(got, ref("pixel_values")) <= 1e-6
    photos = [PHOTOS / name for name in MIXED]
    cli = cli_npy(tmp_path, "preprocess", *photos)
    assert np.array_equal(model.preprocess(photos), cli)


def test_tokenize_equals_transformers_and_the_cli(model):
    got = model.tokenize(LABELS)
    assert set(got) == {"input_ids", "attention_mask", "token_type_ids"}
    for key, value in got.items():
        assert value.dtype == np.int64 and value.shape == (len(LABELS), 64), key
    assert np.array_equal(got["input_ids"], ref("input_ids"))
    assert np.array_equal(got["attention_mask"], ref("attention_mask"))
    assert not got["token_type_ids"].any()
    proc = run_align("tokenize", "--model", TINY, *LABELS)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert np.array_equal(got["input_ids"], np.array([line["input_ids"] for line in lines]))
    assert np.array_equal(got["attention_mask"],
                          np.array([line["attention_mask"] for line in lines]))


def test_paths_bytes_pil_images_and_arrays_give_identical_embeddings(model, tmp_path):
    paths = [PHOTOS / name for name in MIXED]
    expected = model.embed_images([str(p) for p in paths])
    assert max_diff(expected, cli_npy(tmp_path, "embed-images", *paths)) <= 1e-6
    as_path = model.embed_images(paths)
    as_bytes = model.embed_images([p.read_bytes() for p in paths])
    as_bytearray = model.embed_images([bytearray(p.read_bytes()) for p in paths])
    as_pil = model.embed_images([Image.open(p) for p in paths])
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    as_array = model.embed_images(rgb)
    # Arrays with other strides: Fortran order, and a view of the RGB channels of RGBA data.
    as_fortran = model.embed_images([np.asfortranarray(a) for a in rgb])
    views = []
    for a in rgb:
        rgba = np.zeros(a.shape[:2] + (4,), np.uint8)
        rgba[..., :3] = a
        views.append(rgba[..., :3])
    as_view = model.embed_images(views)
    # A 4-D batch is a sequence of HxWx3 images.
    stacked = model.embed_images(np.stack([rgb[0], rgb[0]]))
    # Mixed in one list, in one batch.
    kinds = [str(paths[0]), paths[1].read_bytes(), Image.open(paths[2]), rgb[3], paths[4]]
    mixed = model.embed_images(kinds, batch_size=len(kinds))
    for name, got in [("Path", as_path), ("bytes", as_bytes), ("bytearray", as_bytearray),
                      ("PIL", as_pil), ("array", as_array), ("Fortran array", as_fortran),
                      ("strided view", as_view)]:
        assert np.array_equal(got, expected), name
    assert np.array_equal(stacked, expected[[0, 0]])
    assert np.array_equal(mixed, expected[:5])
    # The same for preprocessing and zero-shot classification.
    assert np.array_equal(model.preprocess(kinds), model.preprocess(paths[:5]))
    for a, b in zip(model.zero_shot(kinds, LABELS[:2]), model.zero_shot(paths[:5], LABELS[:2])):
        assert np.array_equal(a, b)


def test_decode_gives_pillows_pixels_and_the_same_embeddings(model, tmp_path):
    paths = [PHOTOS / name for name in MIXED]
    decoded = model.decode(paths)
    assert len(decoded) == len(paths)
    for path, pixels in zip(paths, decoded):
        assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous
        assert np.array_equal(pixels, np.asarray(Image.open(path).convert("RGB"))), path.name
    assert np.array_equal(model.embed_images(decoded), model.embed_images(paths))
    # EXIF orientation 6 (rotate 90 degrees clockwise) applied, as ImageOps.exif_transpose does.
    rotated = PHOTOS / "chelsea_exif6.jpg"
    [pixels] = model.decode([rotated.read_bytes()])
    from PIL import ImageOps
    upright = np.asarray(ImageOps.exif_transpose(Image.open(rotated)).convert("RGB"))
    assert pixels.shape == upright.shape and pixels.shape[0] > pixels.shape[1]
    assert np.array_equal(pixels, upright)
    with pytest.raises(ValueError, match=r"^images\[1\]: cannot decode image"):
        model.decode([paths[0], b"not an image"])
    assert model.decode([]) == []


def test_bad_images_raise_and_the_next_call_works(model, tmp_path):
    good = model.embed_images(TINY_IMAGES)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((PHOTOS / "coffee.jpg").read_bytes()[:2000])
    text = tmp_path / "text.png"
    text.write_text("this is not a picture")
    missing = tmp_path / "missing.jpg"
    # Files: the CLI's messages, as ValueError / FileNotFoundError.
    for path, error in [(truncated, ValueError), (text, ValueError),
                        (missing, FileNotFoundError)]:
        message = cli_error("embed-images", "--model", TINY, "--out", tmp_path / "x.npy", path)
        for call in [lambda: model.embed_images([TINY_IMAGES[0], path]),
                     lambda: model.preprocess([path]),
                     lambda: model.zero_shot([path], LABELS)]:
            with pytest.raises(error) as info:
                call()
            assert str(info.value) == message
        assert np.array_equal(model.embed_images(TINY_IMAGES), good)
    # In-memory inputs: named by their position in the list.
    with pytest.raises(ValueError, match=r"^images\[1\]: cannot decode image"):
        model.embed_images([TINY_IMAGES[0], b"not an image"])
    with pytest.raises(ValueError, match=r"images\[0\]: expected an HxWx3 uint8 array"):
        model.embed_images([np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match=r"images\[0\]: expected an HxWx3 uint8 array"):
        model.embed_images([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="no pixels"):
        model.embed_images([np.zeros((0, 4, 3), np.uint8)])
    with pytest.raises(TypeError, match=r"images\[0\]: expected a path"):
        model.embed_images([42])
    with pytest.raises(TypeError, match="a single one"):
        model.embed_images(str(TINY_IMAGES[0]))
    with pytest.raises(TypeError, match="NxHxWx3"):
        model.embed_images(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        model.embed_images(TINY_IMAGES, batch_size=0)
    with pytest.raises(ValueError, match="at least one label"):
        model.zero_shot(TINY_IMAGES, [])
    with pytest.raises(TypeError):
        model.embed_texts("not a list")
    assert np.array_equal(model.embed_images(TINY_IMAGES), good)


def test_empty_lists_give_empty_arrays(model):
    assert model.embed_images([]).shape == (0, 40)
    assert model.embed_texts([]).shape == (0, 40)
    assert model.preprocess([]).shape[0] == 0
    assert all(v.shape == (0, 64) for v in model.tokenize([]).values())
    logits, probs = model.zero_shot([], LABELS)
    assert logits.shape == probs.shape == (0, len(LABELS))


def test_from_pretrained_arguments_and_errors(align_rs, tmp_path, monkeypatch):
    Align = align_rs.Align
    # A path object, "auto" (flex, the one backend compiled in) and f32 spelled out: the same
    # model.
    monkeypatch.delenv("BURN_DEVICE", raising=False)
    other = Align.from_pretrained(TINY, device="auto", dtype="f32")
    assert np.array_equal(other.embed_texts(LABELS[:2]),
                          Align.from_pretrained(str(TINY), device="flex").embed_texts(LABELS[:2]))
    missing = tmp_path / "no-such-model"
    for name in [missing, str(missing), "./no-such-model"]:
        with pytest.raises(FileNotFoundError, match="not a directory"):
            Align.from_pretrained(name)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        Align.from_pretrained(TINY / "config.json")
    # A directory without a model: the CLI's message.
    message = cli_error("embed-texts", "--model", tmp_path, "--out", tmp_path / "x.npy", "a")
    with pytest.raises(FileNotFoundError) as info:
        Align.from_pretrained(tmp_path)
    assert str(info.value) == message
    # A model directory without its config.json: the CLI's message, as FileNotFoundError.
    no_config = tmp_path / "no-config"
    shutil.copytree(TINY, no_config)
    (no_config / "config.json").unlink()
    message = cli_error("embed-texts", "--model", no_config, "--out", tmp_path / "x.npy", "a")
    assert "config.json" in message
    with pytest.raises(FileNotFoundError) as info:
        Align.from_pretrained(no_config)
    assert str(info.value) == message
    with pytest.raises(ValueError, match='device: unknown or not compiled backend "cuda"; '
                                         'compiled: flex'):
        Align.from_pretrained(TINY, device="cuda")
    with pytest.raises(ValueError, match="dtype"):
        Align.from_pretrained(TINY, dtype="int8")
    monkeypatch.setenv("BURN_DEVICE", "nosuch")
    with pytest.raises(ValueError, match="environment variable BURN_DEVICE"):
        Align.from_pretrained(TINY)
    monkeypatch.setenv("BURN_DEVICE", "flex")
    assert Align.from_pretrained(TINY).device == "flex"
    # A hub id that is not in the cache, offline: an OSError naming it.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="kakaobrain/align-base"):
        Align.from_pretrained("kakaobrain/align-base")


def test_four_threads_at_once_give_the_results_of_one(model):
    paths = [PHOTOS / name for name in MIXED[:6]]
    images = model.embed_images(paths)
    texts = model.embed_texts(LABELS)
    logits, probs = model.zero_shot(TINY_IMAGES, LABELS)
    pixels = model.preprocess(paths)

    def work(i):
        out = []
        for _ in range(3):
            out.append(("images", model.embed_images(paths[i:] + paths[:i]), i))
            out.append(("texts", model.embed_texts(LABELS[i:] + LABELS[:i]), i))
            out.append(("zero_shot", model.zero_shot(TINY_IMAGES, LABELS), i))
            out.append(("preprocess", model.preprocess(paths), i))
        return out

    with ThreadPoolExecutor(4) as pool:
        results = [r for rs in pool.map(work, range(4)) for r in rs]
    roll = lambda a, i: np.concatenate([a[i:], a[:i]])  # noqa: E731
    for what, got, i in results:
        if what == "images":
            assert np.array_equal(got, roll(images, i)), what
        elif what == "texts":
            assert max_diff(got, roll(texts, i)) <= 1e-6, what
        elif what == "zero_shot":
            assert np.array_equal(got[0], logits) and np.array_equal(got[1], probs), what
        else:
            assert np.array_equal(got, pixels), what


def test_the_gil_is_released_while_computing(model):
    """A Python thread keeps running while another is inside a call: with the GIL held, the
    longest pause between its steps would be the length of the call."""
    photos = [PHOTOS / "hubble_3000x2000.jpg"] * 6
    start = time.perf_counter()
    model.preprocess(photos)
    duration = time.perf_counter() - start
    assert duration > 0.05, f"{duration:.3f} s: too short to tell"
    done = threading.Event()

    def call():
        model.preprocess(photos)
        done.set()

    worker = threading.Thread(target=call)
    worker.start()
    longest, last = 0.0, time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
        time.sleep(0.001)
    worker.join()
    assert longest < duration / 2, f"paused {longest:.3f} s during a {duration:.3f} s call"
