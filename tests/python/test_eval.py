"""`align eval` against the numbers of tests/reference/make_eval_fixtures.py: transformers'
AlignModel with CLIP_benchmark's own metric functions, on the committed small datasets."""

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, TINY, run_align

EVAL = ROOT / "tests/fixtures/eval"
EXPECTED = json.loads((EVAL / "expected.json").read_text())
ZERO_SHOT_KEYS = {"dataset", "task", "model", "n", "acc1", "acc5", "mean_per_class_recall", "failed"}


def eval_json(*args):
    proc = run_align("eval", *args)
    return json.loads(proc.stdout), proc.stderr


def check_zero_shot(result, preds_path, key_of):
    exp = EXPECTED["zero_shot"]
    assert set(result) == ZERO_SHOT_KEYS
    assert result["task"] == "zeroshot_classification"
    assert (result["n"], result["failed"]) == (exp["n"], exp["failed"])
    for k in ["acc1", "acc5", "mean_per_class_recall"]:
        assert result[k] == pytest.approx(exp[k], abs=1e-6), k
    table = pq.read_table(preds_path).to_pylist()
    assert len(table) == exp["n"]
    got = {key_of(r["image_path"]): r["top_ids"] for r in table}
    assert got == exp["predictions"]
    for r in table:
        assert r["top_scores"] == sorted(r["top_scores"], reverse=True)


def test_zero_shot_image_folder_equals_clip_benchmark(tmp_path):
    folder = EVAL / "imagefolder"
    preds, clf = tmp_path / "p.parquet", tmp_path / "clf.npy"
    result, stderr = eval_json("zero-shot", "--model", TINY, "--dataset", folder,
                               "--predictions", preds, "--save-classifier", clf)
    check_zero_shot(result, preds, lambda p: str(p)[len(str(folder)) + 1:])
    assert "broken.jpg" in stderr
    # The classifier from the 80 imagenet templates, class by class.
    np.testing.assert_allclose(np.load(clf), np.load(EVAL / "classifier.npy"), atol=1e-6, rtol=0)


def test_the_classifier_is_cached_between_runs_or_read_from_a_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(cache))
    folder = EVAL / "imagefolder"
    base = ["zero-shot", "--model", TINY, "--dataset", folder]
    key_of = lambda p: str(p)[len(str(folder)) + 1:]
    first, err = eval_json(*base, "--predictions", tmp_path / "1.parquet",
                           "--save-classifier", tmp_path / "saved.npy")
    assert "80 templates embedded" in err
    assert len(list((cache / "classifiers").glob("*.npy"))) == 1
    second, err = eval_json(*base, "--predictions", tmp_path / "2.parquet")
    assert "read from the cache" in err and second == first
    check_zero_shot(second, tmp_path / "2.parquet", key_of)
    # Other templates, another classifier; --no-cache neither reads nor stores.
    _, err = eval_json(*base, "--templates", "simple")
    assert "1 templates embedded" in err
    _, err = eval_json(*base, "--no-cache")
    assert "80 templates embedded" in err
    assert len(list((cache / "classifiers").glob("*.npy"))) == 2
    # A classifier saved by --save-classifier gives the same numbers.
    result, err = eval_json(*base, "--classifier", tmp_path / "saved.npy",
                            "--predictions", tmp_path / "3.parquet")
    assert "read from --classifier" in err and result == first
    check_zero_shot(result, tmp_path / "3.parquet", key_of)
    wrong = np.load(EVAL / "classifier.npy")[:3]
    np.save(tmp_path / "wrong.npy", wrong)
    proc = run_align("eval", *base, "--classifier", tmp_path / "wrong.npy", check=False)
    assert proc.returncode == 1 and "wrong.npy" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_zero_shot_webdataset_with_cls(tmp_path):
    folder = EVAL / "imagefolder"
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    shards = tmp_path / "wds"
    (shards / "test").mkdir(parents=True)
    (shards / "classnames.txt").write_text("".join(c.replace("_", " ") + "\n" for c in classes))
    with tarfile.open(shards / "test" / "0.tar", "w") as tar:
        for label, c in enumerate(classes):
            for img in sorted((folder / c).iterdir()):
                key = f"{c}__{img.stem}"
                for ext, data in [("jpg", img.read_bytes()), ("cls", str(label).encode())]:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    preds = tmp_path / "p.parquet"
    result, _ = eval_json("zero-shot", "--model", TINY, "--dataset", shards, "--predictions", preds)

    def key_of(path):
        name = path.rsplit("/", 1)[1].rsplit(".", 1)[0]
        c, stem = name.split("__")
        return f"{c}/{stem}.jpg"

    check_zero_shot(result, preds, key_of)


def check_retrieval(result, exp, ks):
    assert result["task"] == "zeroshot_retrieval"
    assert (result["n_images"], result["n_texts"]) == (exp["n_images"], exp["n_texts"])
    for k in ks:
        for what in ["image", "text"]:
            key = f"{what}_retrieval_recall@{k}"
            assert result[key] == pytest.approx(exp[key], abs=1e-6), key


def test_retrieval_equals_clip_benchmark():
    result, _ = eval_json("retrieval", "--model", TINY, "--dataset", EVAL / "retrieval")
    check_retrieval(result, EXPECTED["retrieval"], [1, 5, 10])
    assert result["failed"] == 0 and result["skipped"] == 0


def test_retrieval_from_an_index(tmp_path):
    out = tmp_path / "out"
    run_align("index", "--model", TINY, "--out", out, "--text", "--emb-dtype", "f32",
              EVAL / "retrieval_single")
    result, _ = eval_json("retrieval", "--from-index", out, "--recall-k", "1,5")
    check_retrieval(result, EXPECTED["retrieval_single"], [1, 5])
    assert result["model"] == str(TINY)
    # Without --text there is nothing to retrieve with.
    plain = tmp_path / "plain"
    run_align("index", "--model", TINY, "--out", plain, EVAL / "retrieval_single")
    proc = run_align("eval", "retrieval", "--from-index", plain, check=False)
    assert proc.returncode == 1 and "--text" in proc.stderr


def test_bad_datasets_fail_with_one_line_or_are_skipped(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {c}.\nno placeholder\n")
    cases = [
        (["zero-shot", "--model", TINY, "--dataset", empty], "no class folders"),
        (["zero-shot", "--model", TINY, "--dataset", tmp_path / "missing"], "missing"),
        (["zero-shot", "--model", TINY, "--dataset", EVAL / "imagefolder", "--templates", templates],
         "t.txt:2:"),
        (["zero-shot", "--model", TINY, "--dataset", EVAL / "imagefolder", "--classnames",
          tmp_path / "nonames.txt"], "nonames.txt"),
    ]
    for args, culprit in cases:
        proc = run_align("eval", *args, check=False)
        assert proc.returncode == 1, proc.stderr
        assert culprit in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # A class folder without images stays a class (documented) and is reported.
    folder = tmp_path / "folder"
    for c in ["a_cat", "b_dog", "c_empty"]:
        (folder / c).mkdir(parents=True)
    for i, c in enumerate(["a_cat", "b_dog"]):
        (folder / c / "x.jpg").write_bytes((EVAL / "imagefolder/astronaut/0.jpg").read_bytes())
    result, stderr = eval_json("zero-shot", "--model", TINY, "--dataset", folder, "--templates", "simple")
    assert result["n"] == 2 and result["acc5"] is None
    assert "c_empty" in stderr
    # An empty caption file: that image is skipped and counted.
    ret = tmp_path / "ret"
    ret.mkdir()
    for i in range(3):
        (ret / f"{i}.jpg").write_bytes((EVAL / f"retrieval/img0{i}.jpg").read_bytes())
        (ret / f"{i}.txt").write_text("" if i == 0 else f"caption {i}\n")
    result, stderr = eval_json("retrieval", "--model", TINY, "--dataset", ret, "--recall-k", "1")
    assert (result["n_images"], result["n_texts"], result["skipped"]) == (2, 2, 1)
