"""`align index` against the artefacts its users read: .npy files through numpy, parquet
through pyarrow, and clip-retrieval's own index builder; kill -9 / resume, incremental
updates and shards checked on the files themselves."""

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from conftest import (TINY, align_bin, load_clip_retrieval_module, make_collection, noise_image,
                      run_align, save, summary, write_shard)


def read_out(out, text=False):
    """Every row of OUT as {image_path: (img_emb, text_emb or None, metadata dict)}, checking
    the row alignment of each partition and that no path is there twice."""
    rows = {}
    metas = sorted((out / "metadata").glob("*.parquet"))
    imgs = sorted((out / "img_emb").glob("*.npy"))
    assert [p.name[len("metadata_"):-len(".parquet")] for p in metas] == \
        [p.name[len("img_emb_"):-len(".npy")] for p in imgs]
    for meta_path, img_path in zip(metas, imgs):
        table = pq.read_table(meta_path).to_pylist()
        img = np.load(img_path)
        assert img.ndim == 2 and img.shape[0] == len(table)
        txt = None
        if text:
            txt = np.load(out / "text_emb" / img_path.name.replace("img_emb", "text_emb"))
            assert txt.shape == img.shape
        for i, row in enumerate(table):
            assert row["image_path"] not in rows, f"{row['image_path']} twice"
            rows[row["image_path"]] = (img[i], None if txt is None else txt[i], row)
    return rows


def failures(out):
    lines = []
    for f in sorted((out / "failures").glob("*.jsonl")):
        lines += [json.loads(l) for l in f.read_text().splitlines()]
    return {l["image_path"]: l for l in lines}


def no_temporaries(out):
    leftovers = [p for p in out.rglob(".*.tmp")]
    assert leftovers == []


def embed_images(paths, tmp):
    out = tmp / f"ref_{len(list(tmp.glob('ref_*')))}.npy"
    run_align("embed-images", "--model", TINY, "--out", out, *paths)
    return np.load(out)


def embed_texts(texts, tmp):
    out = tmp / f"reft_{len(list(tmp.glob('reft_*')))}.npy"
    run_align("embed-texts", "--model", TINY, "--out", out, *texts)
    return np.load(out)


def test_layout_values_metadata_and_failures(tmp_path):
    photos, good, bad = make_collection(tmp_path)
    shard = tmp_path / "shard-00000.tar"
    samples = write_shard(shard, 8, corrupt={3})
    out = tmp_path / "out"
    proc = run_align("index", "--model", TINY, "--out", out, "--text", "--emb-dtype", "f32",
                     photos, shard)
    s = summary(proc)
    readable_shard = [k for k in samples if k != "000000003"]
    assert s["embedded"] == len(good) + len(readable_shard)
    assert s["failed"] == len(bad) + 1
    assert s["present"] == 0 and s["removed"] == 0
    rows = read_out(out, text=True)
    expected = {str(p) for p in good} | {f"{shard}/{k}.jpg" for k in readable_shard}
    assert set(rows) == expected
    assert not any(".hidden" in p or ".dot" in p for p in rows)
    no_temporaries(out)

    # Image embeddings equal `align embed-images` on the same files (f32: 1e-6).
    members = tmp_path / "members"
    with tarfile.open(shard) as tar:
        tar.extractall(members, filter="data")
    files = [Path(p) for p in sorted(expected) if not p.startswith(str(shard))]
    files += [members / f"{k}.jpg" for k in readable_shard]
    ref = embed_images(files, tmp_path)
    ours = np.stack([rows[p][0] for p in sorted(expected) if not p.startswith(str(shard))]
                    + [rows[f"{shard}/{k}.jpg"][0] for k in readable_shard])
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)

    # Captions: embedded as `align embed-texts` does; zero rows and null similarity without one.
    captioned = {p: r for p, r in rows.items() if r[2]["caption"] is not None}
    caps = sorted(captioned)
    ref_t = embed_texts([captioned[p][2]["caption"] for p in caps], tmp_path)
    np.testing.assert_allclose(np.stack([captioned[p][1] for p in caps]), ref_t, atol=1e-6, rtol=0)
    for p, (img, txt, meta) in rows.items():
        if meta["caption"] is None:
            assert not txt.any() and meta["similarity"] is None
        else:
            assert meta["similarity"] == pytest.approx(float(img @ txt), abs=1e-6)
    assert rows[str(photos / "skimage/chelsea.png")][2]["caption"] == "a cat lying on a rug"
    assert rows[f"{shard}/000000005.jpg"][2]["caption"] == "shard caption 5"

    # Metadata columns: fixed ones, then the JSON flattened like pandas.json_normalize.
    coffee = rows[str(photos / "skimage/coffee.jpg")][2]
    assert coffee["key"] == "skimage/coffee.jpg"
    assert coffee["caption"] == "a cup of coffee"
    assert coffee["exif.Make"] == "Canon" and coffee["exif.ISO"] == 100
    assert coffee["url"] == "http://example.com/coffee.jpg"
    assert json.loads(coffee["tags"]) == ["cup", "drink"]
    for p in good:  # the decoded size, EXIF orientation applied
        meta = rows[str(p)][2]
        assert (meta["width"], meta["height"]) == ImageOps.exif_transpose(Image.open(p)).size
    member = rows[f"{shard}/000000002.jpg"][2]
    assert member["key"] == "000000002" and member["status"] == "success"
    assert member["original_width"] == 560 and (member["width"], member["height"]) == (56, 44)
    first = pq.read_table(sorted((out / "metadata").glob("*.parquet"))[0])
    assert first.column_names[:6] == ["image_path", "key", "caption", "similarity", "width", "height"]

    # Every bad sample is in failures/ with a one-line error naming it.
    fails = failures(out)
    assert set(fails) == {str(p) for p in bad} | {f"{shard}/000000003.jpg"}
    for path, f in fails.items():
        assert path in f["error"] and "\n" not in f["error"]

    # The .npy files are byte for byte what numpy.save writes (readers parse its header text).
    for f in [*(out / "img_emb").glob("*.npy"), *(out / "text_emb").glob("*.npy")]:
        buf = io.BytesIO()
        np.save(buf, np.load(f))
        assert f.read_bytes() == buf.getvalue(), f

    # The default f16 files hold the f32 values rounded to f16.
    out16 = tmp_path / "out16"
    run_align("index", "--model", TINY, "--out", out16, photos, shard)
    rows16 = read_out(out16)
    assert next(iter(rows16.values()))[0].dtype == np.float16
    for f in (out16 / "img_emb").glob("*.npy"):
        buf = io.BytesIO()
        np.save(buf, np.load(f))
        assert f.read_bytes() == buf.getvalue(), f
    for p, (img, _, _) in rows.items():
        np.testing.assert_array_equal(rows16[p][0], img.astype(np.float16))

    # A second run over the same inputs does nothing.
    again = summary(run_align("index", "--model", TINY, "--out", out16, photos, shard))
    assert again["embedded"] == 0 and again["removed"] == 0
    assert again["present"] == s["embedded"] + s["failed"]


def many_images(root, n):
    for i in range(n):
        save(noise_image(500 + i, size=(40, 32)), root / f"d{i % 4}" / f"p{i:03d}.png")
    return sorted(str(p) for p in root.rglob("*.png"))


def wait_for_partitions(out, count, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        manifests = list((out / "manifest").glob("*.json")) if (out / "manifest").exists() else []
        if len(manifests) >= count:
            return True
        time.sleep(0.005)
    return False


def test_kill_9_then_resume_gives_every_image_exactly_once(tmp_path):
    paths = many_images(tmp_path / "imgs", 48)
    ref_out = tmp_path / "ref"
    run_align("index", "--model", TINY, "--out", ref_out, "--emb-dtype", "f32", tmp_path / "imgs")
    ref = read_out(ref_out)
    assert set(ref) == set(paths)

    out = tmp_path / "out"
    args = [str(align_bin()), "index", "--model", str(TINY), "--out", str(out), "--emb-dtype",
            "f32", "--batch-size", "2", "--partition-rows", "3", str(tmp_path / "imgs")]
    kills = 0
    for target in [1, 3, 6, 10]:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_for_partitions(out, target, proc):
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # No file is half-written, and the committed partitions hold no path twice.
        for f in (out / "img_emb").glob("*.npy"):
            np.load(f)
        for f in (out / "metadata").glob("*.parquet"):
            pq.read_table(f)
        committed = [r["image_path"] for m in (out / "manifest").glob("*.json")
                     for r in json.loads(m.read_text())["rows"]]
        assert len(committed) == len(set(committed)) and set(committed) <= set(paths)
    assert kills >= 2, "the runs finished before they could be killed"
    s = summary(run_align(*args[1:]))
    rows = read_out(out)
    assert set(rows) == set(paths)
    assert s["present"] + s["embedded"] == len(paths)
    for p, (img, _, _) in rows.items():
        np.testing.assert_allclose(img, ref[p][0], atol=1e-6, rtol=0)
    no_temporaries(out)
    manifests = list((out / "manifest").glob("*.json"))
    assert len(manifests) == len(list((out / "img_emb").glob("*.npy")))


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    paths = many_images(tmp_path / "imgs", 6)
    out = tmp_path / "out"
    run_align("index", "--model", TINY, "--out", out, "--partition-rows", "2", tmp_path / "imgs")
    # What a kill between renames leaves: a partition's data files without its manifest, and
    # temporary files.
    victim = sorted((out / "manifest").glob("*.json"))[-1]
    victim.unlink()
    (out / "img_emb" / ".img_emb_000009.npy.tmp").write_bytes(b"half")
    (out / "metadata" / ".metadata_000009.parquet.tmp").write_bytes(b"half")
    s = summary(run_align("index", "--model", TINY, "--out", out, tmp_path / "imgs"))
    assert s["embedded"] == 2
    rows = read_out(out)
    assert set(rows) == set(paths)
    no_temporaries(out)


def test_incremental_update_after_add_change_delete(tmp_path):
    imgs = tmp_path / "imgs"
    paths = many_images(imgs, 12)
    out = tmp_path / "out"
    run_align("index", "--model", TINY, "--out", out, "--emb-dtype", "f32",
              "--partition-rows", "5", imgs)
    before = read_out(out)
    deleted = [paths[1], paths[7]]
    for p in deleted:
        os.unlink(p)
    changed = paths[4]
    save(noise_image(9999, size=(40, 32)), Path(changed))
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    added = [str(save(noise_image(7000 + i), imgs / "new" / f"n{i}.png")) for i in range(3)]
    s = summary(run_align("index", "--model", TINY, "--out", out, "--emb-dtype", "f32",
                          "--partition-rows", "5", imgs))
    assert s["embedded"] == len(added) + 1
    assert s["removed"] == len(deleted) + 1  # the changed file's old row
    assert s["present"] == 12 - len(deleted) - 1
    rows = read_out(out)
    current = sorted(str(p) for p in imgs.rglob("*.png"))
    assert set(rows) == set(current)
    fresh = embed_images([changed, *added], tmp_path)
    np.testing.assert_allclose(rows[changed][0], fresh[0], atol=1e-6, rtol=0)
    assert np.abs(rows[changed][0] - before[changed][0]).max() > 1e-3
    for i, p in enumerate(added):
        np.testing.assert_allclose(rows[p][0], fresh[1 + i], atol=1e-6, rtol=0)
    for p in current:
        if p in before and p != changed:
            np.testing.assert_array_equal(rows[p][0], before[p][0])
    # Other inputs' rows are kept: indexing a second folder into OUT adds to it.
    other = tmp_path / "other"
    save(noise_image(4242), other / "o.png")
    summary(run_align("index", "--model", TINY, "--out", out, "--emb-dtype", "f32", other))
    assert set(read_out(out)) == set(current) | {str(other / "o.png")}


def folder_and_shard(tmp_path, images, samples):
    """A folder of `images` generated images and a shard of `samples` samples."""
    imgs, shard = tmp_path / "imgs", tmp_path / "s.tar"
    many_images(imgs, images)
    write_shard(shard, samples)
    return imgs, shard


def test_shards_together_equal_one_run(tmp_path):
    imgs, shard = folder_and_shard(tmp_path, 20, 10)
    whole = tmp_path / "whole"
    run_align("index", "--model", TINY, "--out", whole, "--emb-dtype", "f32", imgs, shard)
    together = tmp_path / "together"
    procs = [subprocess.Popen([str(align_bin()), "index", "--model", str(TINY), "--out",
                               str(together), "--emb-dtype", "f32", "--shard", f"{i}/3",
                               str(imgs), str(shard)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    counts = []
    for p in procs:
        stdout, stderr = p.communicate()
        assert p.returncode == 0, stderr
        counts.append(json.loads(stdout)["embedded"])
    assert all(c > 0 for c in counts) and sum(counts) == 30
    a, b = read_out(whole), read_out(together)
    assert {(m["key"], p) for p, (_, _, m) in a.items()} == {(m["key"], p) for p, (_, _, m) in b.items()}
    for p in a:
        np.testing.assert_array_equal(a[p][0], b[p][0])
    names = sorted(f.name for f in (together / "img_emb").glob("*.npy"))
    assert len(names) == len(set(names)) >= 3


def test_bad_invocations_fail_with_one_line_naming_the_culprit(tmp_path):
    imgs = tmp_path / "imgs"
    many_images(imgs, 2)
    out = tmp_path / "out"
    cases = [
        (["index", "--model", TINY, "--out", out, tmp_path / "missing"], "missing"),
        (["index", "--model", TINY, "--out", out, "--shard", "3/3", imgs], "3/3"),
        (["index", "--model", TINY, "--out", out, "--files-from", tmp_path / "nolist"], "nolist"),
        (["index", "--model", TINY, "--out", out], "no inputs"),
    ]
    for args, culprit in cases:
        proc = run_align(*args, check=False)
        assert proc.returncode != 0
        assert culprit in proc.stderr, proc.stderr
    run_align("index", "--model", TINY, "--out", out, imgs)
    # Another element type than the collection's.
    proc = run_align("index", "--model", TINY, "--out", out, "--emb-dtype", "f32", imgs, check=False)
    assert proc.returncode == 1 and "align.json" in proc.stderr and "f16" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # A manifest that is not one.
    manifest = sorted((out / "manifest").glob("*.json"))[0]
    manifest.write_text("{broken")
    proc = run_align("index", "--model", TINY, "--out", out, imgs, check=False)
    assert proc.returncode == 1 and manifest.name in proc.stderr
    # --files-from - reads standard input.
    out2 = tmp_path / "out2"
    listing = "\n".join(str(p) for p in sorted(imgs.rglob("*.png"))) + "\n"
    s = summary(run_align("index", "--model", TINY, "--out", out2, "--files-from", "-", input=listing))
    assert s["embedded"] == 2
    # A file given by itself keeps its sidecars.
    photo = sorted(imgs.rglob("*.png"))[0]
    photo.with_suffix(".txt").write_text("a listed caption")
    out3 = tmp_path / "out3"
    run_align("index", "--model", TINY, "--out", out3, "--text", photo)
    (row,) = read_out(out3, text=True).values()
    assert row[2]["caption"] == "a listed caption" and row[2]["key"] == photo.name


def test_clip_retrieval_builds_an_index_from_the_output(tmp_path):
    import faiss
    import pandas as pd

    imgs, shard = folder_and_shard(tmp_path, 30, 10)
    out = tmp_path / "out"
    run_align("index", "--model", TINY, "--out", out, "--text", "--partition-rows", "7", imgs, shard)
    clip_index = load_clip_retrieval_module("clip_index")
    index_dir = tmp_path / "index"
    clip_index.clip_index(str(out), str(index_dir), max_index_memory_usage="100M",
                          current_memory_available="1G", nb_cores=1)
    image_index = faiss.read_index(str(index_dir / "image.index"))
    text_index = faiss.read_index(str(index_dir / "text.index"))
    rows = read_out(out, text=True)
    assert image_index.ntotal == len(rows) == 40
    assert text_index.ntotal == len(rows)
    # clip-back's metadata order (sorted parquet files, concatenated) matches the index ids.
    meta = pd.concat(pd.read_parquet(p) for p in sorted((index_dir / "metadata").glob("*.parquet")))
    embs = np.concatenate([np.load(p) for p in sorted((out / "img_emb").glob("*.npy"))]).astype(np.float32)
    for q in range(0, 40, 7):
        _, ids = image_index.search(embs[q:q + 1], 1)
        assert meta.iloc[ids[0][0]]["image_path"] == meta.iloc[q]["image_path"]


def test_truncated_shard_keeps_its_readable_samples(tmp_path):
    shard = tmp_path / "cut.tar"
    write_shard(shard, 6)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    s = summary(run_align("index", "--model", TINY, "--out", out, shard))
    assert s["listing_complete"] is False and s["failed"] >= 1
    rows = read_out(out)
    assert 0 < len(rows) < 6
    assert all(p.startswith(f"{shard}/") for p in rows)
    fails = failures(out)
    assert any("tar" in f["error"] and str(shard) in f["error"] for f in fails.values())
