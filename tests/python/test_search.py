"""`align search` and `align serve` against numpy's exact search and clip-retrieval's own
`ClipClient`; bad requests, thumbnails, metrics and a bounded load test on a loopback port."""

import base64
import io
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import (PHOTOS, ROOT, TINY, align_bin, load_clip_retrieval_module, noise_image,
                      run_align, save, write_shard)

ARTIFACTS = ROOT / "target/test-artifacts"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Real photos and generated images with captions, plus a webdataset shard, indexed with
    --text into two partitions."""
    root = tmp_path_factory.mktemp("search")
    imgs = root / "imgs"
    for name in ["chelsea.png", "coffee.jpg", "astronaut.jpg", "immuno.webp", "rocket_small.tif"]:
        dst = imgs / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((PHOTOS / name).read_bytes())
    (imgs / "chelsea.txt").write_text("a cat lying on a rug")
    (imgs / "coffee.txt").write_text("a cup of coffee")
    for i in range(12):
        p = save(noise_image(300 + i), imgs / "gen" / f"g{i:02d}.jpg")
        if i % 3:
            p.with_suffix(".txt").write_text(f"generated picture number {i}")
    # A near-duplicate of g00 (re-encoded): deduplication drops one of the two.
    save(Image.open(imgs / "gen/g00.jpg"), imgs / "gen/g00_copy.png")
    shard = root / "s.tar"
    write_shard(shard, 6)
    out = root / "out"
    run_align("index", "--model", TINY, "--out", out, "--text", "--partition-rows", "12", imgs, shard)
    return out, imgs, shard


def exact(out, query, modality="image", k=10):
    """numpy's exact search over OUT: ids (positions in the sorted .npy files) and
    similarities, best first; caption-less rows excluded from text search."""
    folder, prefix = ("img_emb", "img_emb") if modality == "image" else ("text_emb", "text_emb")
    emb = np.concatenate([np.load(p).astype(np.float32)
                          for p in sorted((out / folder).glob(f"{prefix}_*.npy"))])
    sims = emb @ np.asarray(query, np.float32)
    ids = [i for i in np.lexsort((np.arange(len(sims)), -sims)) if emb[i].any()]
    return [(int(i), float(sims[i])) for i in ids[:k]]


def search(*args):
    proc = run_align("search", *map(str, args))
    return [json.loads(l) for l in proc.stdout.splitlines()]


def embed_texts(texts, tmp):
    out = tmp / "t.npy"
    run_align("embed-texts", "--model", TINY, "--out", out, *texts)
    return np.load(out)


def embed_image(path, tmp):
    out = tmp / "i.npy"
    run_align("embed-images", "--model", TINY, "--out", out, path)
    return np.load(out)[0]


def same(results, expected):
    assert [r["id"] for r in results] == [i for i, _ in expected]
    np.testing.assert_allclose([r["similarity"] for r in results], [s for _, s in expected], atol=1e-5)


def test_search_equals_exact_search_by_text_image_and_embedding(collection, tmp_path):
    out, imgs, _ = collection
    # Text (the model recorded in align.json is used without --model).
    q = embed_texts(["a cat lying on a rug"], tmp_path)[0]
    results = search("--index", out, "--k", 7, "a cat lying on a rug")
    same(results, exact(out, q, k=7))
    assert [r["rank"] for r in results] == list(range(1, 8))
    assert set(results[0]) == {"rank", "id", "similarity", "image_path", "caption"}
    # Image: the photo itself comes first.
    q = embed_image(imgs / "coffee.jpg", tmp_path)
    results = search("--index", out, "--image", imgs / "coffee.jpg")
    same(results, exact(out, q))
    assert results[0]["image_path"].endswith("coffee.jpg") and results[0]["caption"] == "a cup of coffee"
    # Embedding (.npy of [1, dim], normalised on reading), over the captions.
    raw = (q * 3.0).astype(np.float32)[None]
    np.save(tmp_path / "q.npy", raw)
    results = search("--index", out, "--embedding", tmp_path / "q.npy", "--modality", "text", "--k", 20)
    same(results, exact(out, q, "text", 20))
    assert all(r["caption"] is not None for r in results)
    # Exact, HNSW and auto agree on a small collection.
    for method in ["exact", "ann"]:
        assert search("--index", out, "--image", imgs / "coffee.jpg", "--method", method) == \
            search("--index", out, "--image", imgs / "coffee.jpg")


def test_query_arithmetic_paths_and_metadata(collection, tmp_path):
    out, imgs, _ = collection
    e = embed_texts(["a cat", "a cup of coffee", "a rug"], tmp_path)
    q = 2 * e[0] + e[1] - 0.5 * e[2]
    q /= np.linalg.norm(q)
    results = search("--index", out, '2:"a cat" + "a cup of coffee" - 0.5:"a rug"')
    same(results, exact(out, q))
    paths = run_align("search", "--index", out, "--paths", "--k", 3, "a cat").stdout.splitlines()
    assert paths == [r["image_path"] for r in search("--index", out, "--k", 3, "a cat")]
    rows = search("--index", out, "--metadata", "--k", 40, "a cat")
    tar_rows = [r for r in rows if r["key"].startswith("0000")]
    assert len(tar_rows) == 6 and all(r["url"].startswith("http://example.com/") for r in tar_rows)
    assert {"width", "height", "key"} <= set(rows[0])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((imgs / "coffee.jpg").read_bytes()[:1500])
    for bad, culprit in [(['"a cat" "dog"'], "query"), (["--embedding", tmp_path / "none.npy"], "none.npy"),
                         (["--k", "0", "x"], "--k"), (["--index", tmp_path, "x"], "align.json"),
                         (["--image", corrupt], "corrupt.jpg"),
                         (["--image", tmp_path / "missing.jpg"], "missing.jpg")]:
        args = ["search", "--index", out, *bad] if bad[0] != "--index" else ["search", *bad]
        proc = run_align(*args, check=False)
        # One line naming the culprit (clap adds a usage hint below its own).
        assert proc.returncode != 0 and culprit in proc.stderr.splitlines()[0], proc.stderr


class Server:
    def __init__(self, *args):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log = open(ARTIFACTS / "serve.log", "w")
        self.proc = subprocess.Popen([str(align_bin()), "serve", "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line, f"align serve exited with {self.proc.wait()}"
        info = json.loads(line)
        self.url, self.indices = info["url"], info["indices"]
        assert self.url.startswith("http://127.0.0.1:")

    def post(self, route, body, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + route, data=data, timeout=120, **kw)

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def server(collection, tmp_path_factory):
    out, _, _ = collection
    plain = tmp_path_factory.mktemp("plain") / "out"
    run_align("index", "--model", TINY, "--out", plain, PHOTOS / "chelsea.png", PHOTOS / "coffee.jpg")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    s = Server("--model", TINY, "--index", f"photos={out}", "--index", f"plain={plain}",
               "--max-body-mb", "1", "--max-megapixels", "1", "--cors-origin", "https://front.example")
    yield s
    s.stop()


def test_clip_client_matches_align_search(collection, server, tmp_path):
    out, imgs, _ = collection
    clip_client = load_clip_retrieval_module("clip_client")
    assert requests.get(server.url + "/indices-list").json() == ["photos", "plain"]
    client = clip_client.ClipClient(url=server.url + "/knn-service", indice_name="photos",
                                    num_images=8, deduplicate=False)
    by_text = client.query(text="a cat lying on a rug")
    cli = search("--index", out, "--k", 8, "a cat lying on a rug")
    assert [r["id"] for r in by_text] == [r["id"] for r in cli]
    np.testing.assert_allclose([r["similarity"] for r in by_text], [r["similarity"] for r in cli], atol=1e-6)
    assert [r["caption"] for r in by_text] == [r["caption"] for r in cli]
    by_image = client.query(image=str(imgs / "chelsea.png"))
    assert [r["id"] for r in by_image] == \
        [r["id"] for r in search("--index", out, "--k", 8, "--image", imgs / "chelsea.png")]
    q = embed_image(imgs / "astronaut.jpg", tmp_path)
    by_embedding = client.query(embedding_input=q.tolist())
    np.save(tmp_path / "q.npy", q)
    assert [r["id"] for r in by_embedding] == \
        [r["id"] for r in search("--index", out, "--k", 8, "--embedding", tmp_path / "q.npy")]
    # The caption index; the webdataset rows carry their url.
    text_client = clip_client.ClipClient(url=server.url + "/knn-service", indice_name="photos",
                                         modality=clip_client.Modality.TEXT, num_images=30,
                                         deduplicate=False)
    by_caption = text_client.query(text="shard caption 3")
    same(by_caption, exact(out, embed_texts(["shard caption 3"], tmp_path)[0], "text", 30))
    assert any(r.get("url") == "http://example.com/000000003.jpg" for r in by_caption)


def test_deduplicate_drops_near_identical_results(collection, server):
    out, imgs, _ = collection
    body = {"image": base64.b64encode((imgs / "gen/g00.jpg").read_bytes()).decode(),
            "indice_name": "photos", "modality": "image", "num_images": 30, "num_result_ids": 30}
    full = server.post("/knn-service", {**body, "deduplicate": False}).json()
    dedup = server.post("/knn-service", {**body, "deduplicate": True}).json()
    emb = np.concatenate([np.load(p).astype(np.float32) for p in sorted((out / "img_emb").glob("*.npy"))])
    kept = [r["id"] for r in dedup]
    # What clip-back keeps: walk best first, drop anything >= 0.94 to a result already seen in
    # its group (connected components over the candidates).
    ids = [r["id"] for r in full]
    sims = emb[ids] @ emb[ids].T
    group = list(range(len(ids)))
    def root(i):
        while group[i] != i:
            i = group[i]
        return i
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if sims[i, j] >= 0.94:
                a, b = root(i), root(j)
                group[max(a, b)] = min(a, b)
    assert kept == [ids[i] for i in range(len(ids)) if root(i) == i]
    assert len(kept) < len(ids)  # g00 and its copy


def test_metadata_images_health_and_metrics(collection, server):
    out, imgs, shard = collection
    meta = server.post("/metadata", {"indice_name": "photos", "ids": [0, 3]}).json()
    assert [m["id"] for m in meta] == [0, 3] and "image_path" in meta[0]["metadata"]
    rows = search("--index", out, "--k", 30, "--metadata", "x")
    for row in rows:
        r = requests.get(f"{server.url}/image/photos/{row['id']}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(r.content))
        assert max(img.size) <= 512
        if max(row["width"], row["height"]) <= 512:
            assert img.size == (row["width"], row["height"])
    assert any(".tar/" in r["image_path"] for r in rows)
    assert requests.get(server.url + "/health").json() == "ok"
    metrics = requests.get(server.url + "/metrics").text
    assert 'align_serve_requests_total{route="/image",status="200"}' in metrics
    assert "align_serve_request_duration_seconds_bucket" in metrics


def test_only_the_given_origins_may_call_from_a_browser(server, collection):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    r = requests.options(server.url + "/knn-service", headers={"Origin": "https://front.example", **preflight})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://front.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = server.post("/knn-service", {"text": "x", "indice_name": "photos", "num_images": 1},
                    headers={"Origin": "https://front.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://front.example"
    for origin in ["https://elsewhere.example", "null"]:
        r = requests.get(server.url + "/indices-list", headers={"Origin": origin})
        assert "access-control-allow-origin" not in r.headers
    out, _, _ = collection
    proc = run_align("serve", "--model", TINY, "--index", f"p={out}", "--port", "0",
                     "--cors-origin", "front.example", check=False)
    assert proc.returncode == 1 and "--cors-origin" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_requests_get_a_json_4xx_and_the_server_keeps_serving(server):
    png = io.BytesIO()
    Image.new("RGB", (2000, 1000)).save(png, "PNG")  # 2 megapixels, a few kB
    good = {"indice_name": "photos", "modality": "image", "num_images": 5}
    cases = [
        ("{not json", 400, "malformed JSON"),
        ({**good, "indice_name": "nope"}, 404, "nope"),
        ({**good}, 400, "empty query"),
        ({**good, "text": "   "}, 400, "empty query"),
        ({**good, "text": "x", "num_images": 0}, 400, "num_images"),
        ({**good, "text": "x", "num_images": 10**9}, 400, "num_images"),
        ({**good, "text": "x", "modality": "audio"}, 400, "modality"),
        ({**good, "indice_name": "plain", "text": "x", "modality": "text"}, 400, "--text"),
        ({**good, "image": "%%% not base64"}, 400, "base64"),
        ({**good, "image": base64.b64encode(b"not an image at all").decode()}, 400, "image"),
        ({**good, "image": base64.b64encode(png.getvalue()).decode()}, 400, "pixels"),
        ({**good, "image_url": "http://example.com/a.jpg"}, 400, "image_url"),
        ({**good, "embedding_input": [0.1, 0.2]}, 400, "values"),
        ({**good, "embedding_input": [0.0] * 640}, 400, "zero"),
        ({**good, "text": "x" * (2 << 20)}, 413, "larger than"),
    ]
    for body, status, needle in cases:
        r = server.post("/knn-service", body)
        assert r.status_code == status, (body if len(str(body)) < 200 else str(body)[:200], r.text)
        assert needle in r.json()["error"], r.text
    for body, status in [({"indice_name": "photos", "ids": [10**6]}, 400),
                         ({"indice_name": "photos", "ids": [-1]}, 400),
                         ({"indice_name": "photos"}, 400)]:
        r = server.post("/metadata", body)
        assert r.status_code == status and "error" in r.json(), r.text
    for path, status in [("/image/photos/999999", 404), ("/image/photos/abc", 400),
                         ("/image/nope/0", 404), ("/image/photos/..%2F..%2Fetc%2Fpasswd", 400),
                         ("/no-such-route", 404)]:
        r = requests.get(server.url + path)
        assert r.status_code == status and "error" in r.json(), (path, r.text)
    assert server.post("/knn-service", {**good, "text": "still serving"}).status_code == 200


def test_load_2000_queries_from_16_clients(collection, server, tmp_path):
    out, imgs, _ = collection
    image = base64.b64encode((imgs / "coffee.jpg").read_bytes()).decode()
    q = embed_image(imgs / "chelsea.png", tmp_path).tolist()
    bodies = [{"text": "a photo number %d" % i} if i % 4 < 2 else
              {"embedding_input": q} if i % 4 == 2 else {"image": image} for i in range(2000)]
    common = {"indice_name": "photos", "modality": "image", "num_images": 10, "deduplicate": True}

    def run(chunk, latencies, errors):
        with requests.Session() as s:
            for body in chunk:
                t = time.perf_counter()
                r = s.post(server.url + "/knn-service", data=json.dumps({**common, **body}), timeout=120)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200 or len(r.json()) == 0:
                    errors.append(r.text)

    def load(bodies):
        latencies, errors = [], []
        threads = [threading.Thread(target=run, args=(bodies[i::16], latencies, errors)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return latencies, errors

    load(bodies[:400])  # warm-up: allocator pools, the blocking pool's threads
    latencies, errors, rss = [], [], []
    for i in range(8):
        lat, err = load(bodies[i * 250:(i + 1) * 250])
        latencies += lat
        errors += err
        rss.append(server.rss_kib())
    assert errors == [] and len(latencies) == 2000
    p50, p99 = np.percentile(latencies, [50, 99])
    report = {"queries": 2000, "clients": 16, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
              "rss_kib_after_each_250": rss}
    (ARTIFACTS / "serve_load.json").write_text(json.dumps(report, indent=1))
    print(report)
    # Not growing: RSS moves by a MiB or two from one moment to the next (the allocator's
    # pools) without a trend, so the medians of the first and last 1,000 queries' samples are
    # compared; keeping 4 kB of every query (a result list, an image query's bytes) would set
    # them 4 MiB apart.
    assert np.median(rss[4:]) - np.median(rss[:4]) < 4 * 1024, report
