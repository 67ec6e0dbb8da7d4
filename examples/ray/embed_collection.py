#!/usr/bin/env python3
"""Embeds a collection on a Ray cluster with `align_rs`, into the folder `align index` writes.

    python examples/ray/embed_collection.py --model DIR --out OUT [--text] \\
        [--concurrency N] [--num-cpus C] [--address ADDR] INPUT...

INPUT: folders (walked recursively), image files and webdataset `.tar` shards, listed exactly
as `align index` lists them (same image extensions, hidden names skipped, `NAME.txt` /
`NAME.json` sidecars, shard members grouped by key). The samples are read by Ray tasks,
embedded by `--concurrency` actors holding one model each (`--num-cpus` cores apiece), and
written as partitions by Ray tasks; the driver commits them. OUT is then an `align index`
output in every respect: clip-retrieval, `align search`, `align serve` and `align index`
itself read it (run `align index` with the same inputs on OUT later to take in added, changed
or removed files, or to build the HNSW index ahead of the first search).

Failures: a worker that dies is restarted by Ray and its batch done again. Partitions are
written under temporary names that only the driver renames, once Ray has handed it their
result: a retried batch leaves no second copy. Rerunning the same command after the job
itself failed embeds only what OUT does not hold yet. Do not run two jobs (or a job and
`align index`) on the same OUT at the same time.

Requires `pip install ./crates/align-py "ray[data]" pyarrow` on every node; the inputs, the
model and OUT must be at the same paths on every node (a shared file system).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

#: Image extensions taken from folders, in any letter case (as `align index`).
IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"}
#: Metadata columns of every partition; JSON fields of the same name are dropped.
FIXED_COLUMNS = ["image_path", "key", "caption", "similarity", "width", "height"]
#: Partition names of an unsharded `align index` output: sequence numbers.
PARTITION = re.compile(r"^[0-9]+$")


# ---------------------------------------------------------------------------------------
# Listing (on the driver; tar shards are opened by the read tasks)


def stamp(st: os.stat_result) -> str:
    """A file's fingerprint part: size and modification time in nanoseconds."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def is_image(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def file_source(path: str, key: str, st: os.stat_result, caption: Optional[str],
                meta: Optional[str]) -> Dict[str, Any]:
    fingerprint = stamp(st)
    for tag, side in [("txt", caption), ("json", meta)]:
        if side is not None:
            fingerprint += f" {tag}={stamp(os.stat(side))}"
    return {"kind": "file", "path": path, "key": key, "caption_path": caption,
            "json_path": meta, "fingerprint": fingerprint, "error": None}


def failure_source(path: str, error: str) -> Dict[str, Any]:
    return {"kind": "unreadable", "path": path, "key": "", "caption_path": None,
            "json_path": None, "fingerprint": "", "error": f"{path}: {error}"}


def walk(root: str, folder: str, include_hidden: bool) -> Iterator[Dict[str, Any]]:
    """A folder's images in `align index`'s order: files by name, then sub-folders by name;
    links to files followed, links to folders not."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
    except OSError as e:
        yield failure_source(folder, e.strerror or str(e))
        return
    files: Dict[str, str] = {}
    dirs = []
    for entry in entries:
        if entry.name.startswith(".") and not include_hidden:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                dirs.append(entry.path)
            elif entry.is_file():
                files[entry.name] = entry.path
        except OSError:
            continue
    for name, path in files.items():
        if not is_image(name):
            continue
        stem = Path(name).stem
        side = lambda ext: files.get(f"{stem}.{ext}")  # noqa: E731
        key = os.path.relpath(path, root)
        yield file_source(path, key, os.stat(path), side("txt"), side("json"))
    for d in dirs:
        yield from walk(root, d, include_hidden)


def list_sources(inputs: List[str], include_hidden: bool,
                 known: Dict[str, str]) -> Iterator[Dict[str, Any]]:
    """One row per image file, tar shard or unreadable input; files OUT already holds with
    the same fingerprint are left out, and so are a shard's samples it holds."""
    shards = {item for item in inputs if item.lower().endswith(".tar")}
    # (shard, fingerprint) -> the shard's samples OUT holds: `SHARD/KEY.EXT` paths.
    held: Dict[tuple, List[str]] = {}
    for p, f in known.items():
        at = p.lower().find(".tar/")
        while at >= 0:
            if p[:at + 4] in shards:
                held.setdefault((p[:at + 4], f), []).append(p)
                break
            at = p.lower().find(".tar/", at + 1)
    for item in inputs:
        try:
            st = os.stat(item)
        except OSError as e:
            yield failure_source(item, e.strerror or str(e))
            continue
        if os.path.isdir(item):
            sources = walk(item, item, include_hidden)
        elif item.lower().endswith(".tar"):
            fingerprint = stamp(st)
            done = held.get((item, fingerprint), [])
            sources = iter([{"kind": "tar", "path": item, "key": "", "caption_path": None,
                             "json_path": None, "fingerprint": fingerprint, "error": None,
                             "done": json.dumps(done)}])
        else:
            def side(ext: str) -> Optional[str]:
                p = str(Path(item).with_suffix(f".{ext}"))
                return p if os.path.isfile(p) else None
            sources = iter([file_source(item, os.path.basename(item), st, side("txt"),
                                        side("json"))])
        for s in sources:
            if s["kind"] == "file" and known.get(s["path"]) == s["fingerprint"]:
                continue
            s.setdefault("done", "[]")
            yield s


# ---------------------------------------------------------------------------------------
# Reading (Ray tasks)


def sample(image_path: str, key: str, fingerprint: str, image: Optional[bytes],
           caption: Optional[bytes], meta: Optional[bytes], error: Optional[str]):
    """One sample row. Columns hold no nulls (Ray gives a column of nulls no type): an
    absent caption is empty (as an empty caption is), an absent JSON is flagged, no error
    is empty."""
    return {"image_path": image_path, "key": key, "fingerprint": fingerprint,
            "image": image or b"", "caption": caption or b"", "json": meta or b"",
            "has_json": meta is not None, "error": error or ""}


def read_samples(source: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The samples of one source row, with their bytes."""
    kind, path = source["kind"], source["path"]
    if kind == "unreadable":
        yield sample(path, "", "", None, None, None, source["error"])
    elif kind == "file":
        def read(p: Optional[str]) -> Optional[bytes]:
            if p is None:
                return None
            with open(p, "rb") as f:
                return f.read()
        try:
            yield sample(path, source["key"], source["fingerprint"], read(path),
                         read(source["caption_path"]), read(source["json_path"]), None)
        except OSError as e:
            yield sample(path, source["key"], source["fingerprint"], None, None, None,
                         f"{e.filename}: {e.strerror}")
    else:
        yield from read_tar(path, source["fingerprint"], set(json.loads(source["done"])))


def read_tar(path: str, fingerprint: str, done: set) -> Iterator[Dict[str, Any]]:
    """A webdataset shard's samples: consecutive members with the same key (up to the first
    `.` of the member's base name) form one sample; its image is the member with an image
    extension."""

    def emit(key: str, members: Dict[str, bytes]):
        image = next(((ext, data) for ext, data in members.items()
                      if is_image(f".{ext}")), None)
        if image is None:
            return None
        image_path = f"{path}/{key}.{image[0]}"
        if image_path in done:
            return None
        pick = lambda e: next((d for x, d in members.items() if x.lower() == e), None)  # noqa: E731
        return sample(image_path, key, fingerprint, image[1], pick("txt"), pick("json"), None)

    current: Optional[str] = None
    members: Dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
                base_start = name.rfind("/") + 1
                dot = name.find(".", base_start)
                if dot < 0 or dot == len(name) - 1 or name[base_start] == ".":
                    continue
                key, ext = name[:dot], name[dot + 1:]
                if key != current:
                    if current is not None and (s := emit(current, members)):
                        yield s
                    current, members = key, {}
                f = tar.extractfile(info)
                members.setdefault(ext, f.read() if f else b"")
    except (OSError, tarfile.TarError, EOFError) as e:
        if current is not None and (s := emit(current, members)):
            yield s
        yield sample(path, "", "", None, None, None, f"{path}: unreadable tar archive: {e}")
        return
    if current is not None and (s := emit(current, members)):
        yield s


# ---------------------------------------------------------------------------------------
# Embedding (Ray actors, one model each)


def flatten_json(value: Any) -> Dict[str, Any]:
    """Flattens JSON as pandas' json_normalize names its columns (`exif.Make`), as
    `align index` does; a JSON document that is not an object is one column, `json`."""
    out: Dict[str, Any] = {}

    def walk_json(prefix: str, v: Any):
        if isinstance(v, dict) and (v or not prefix):
            for k, x in v.items():
                walk_json(f"{prefix}.{k}" if prefix else k, x)
        else:
            out[prefix] = v

    if isinstance(value, dict):
        walk_json("", value)
    else:
        out["json"] = value
    return {k: v for k, v in out.items() if k not in FIXED_COLUMNS}


class Embedder:
    """One model per actor: decodes and embeds a batch of samples (and their captions)."""

    def __init__(self, model: str, text: bool, threads: int):
        # Before the first use of align_rs: its thread pool takes this actor's cores only.
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        import align_rs

        self.model = align_rs.Align.from_pretrained(model)
        self.text = text

    def decode(self, images: List[bytes], paths: List[str]):
        """The pixels of each image, or the one-line error that names it."""
        try:
            return [(a, None) for a in self.model.decode(images)]
        except (ValueError, TypeError, OSError):
            pass
        out = []
        for data, path in zip(images, paths):
            try:
                out.append((self.model.decode([data])[0], None))
            except (ValueError, TypeError, OSError) as e:
                message = str(e).removeprefix("images[0]: ")
                out.append((None, f"{path}: {message}"))
        return out

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = len(batch["image_path"])
        errors = [e or None for e in batch["error"]]
        ok = [i for i in range(n) if errors[i] is None]
        decoded = self.decode([batch["image"][i] for i in ok],
                              [batch["image_path"][i] for i in ok])
        pixels = {}
        for i, (array, error) in zip(ok, decoded):
            if error is None:
                pixels[i] = array
            else:
                errors[i] = error
        captions: List[Optional[str]] = [None] * n
        metas: List[str] = ["{}"] * n
        for i in pixels:
            text = bytes(batch["caption"][i]).decode("utf-8", errors="replace").strip()
            captions[i] = text or None
            if batch["has_json"][i]:
                try:
                    metas[i] = json.dumps(flatten_json(json.loads(bytes(batch["json"][i]))))
                except ValueError as e:
                    errors[i] = f"{batch['image_path'][i]}: sidecar JSON: {e}"
        rows = [i for i in range(n) if errors[i] is None]
        dim = self.model.dim
        img = np.zeros((n, dim), np.float32)
        txt = np.zeros((n, dim), np.float32)
        if rows:
            img[rows] = self.model.embed_images([pixels[i] for i in rows])
            with_caption = [i for i in rows if captions[i] is not None]
            if self.text and with_caption:
                txt[with_caption] = self.model.embed_texts([captions[i] for i in with_caption])
        # NaN: no similarity (without --text, or without a caption).
        similarity = np.full(n, np.nan, np.float32)
        if self.text:
            for i in rows:
                if captions[i] is not None:
                    similarity[i] = np.dot(img[i], txt[i])
        shape = lambda i: pixels[i].shape if i in pixels else (0, 0)  # noqa: E731
        embeddings = {"img_emb": img, "text_emb": txt} if self.text else {"img_emb": img}
        return {
            "image_path": batch["image_path"],
            "key": batch["key"],
            "fingerprint": batch["fingerprint"],
            "error": np.array([e or "" for e in errors], dtype=object),
            "caption": np.array([c or "" for c in captions], dtype=object),
            "similarity": similarity,
            "width": np.array([shape(i)[1] for i in range(n)], np.int64),
            "height": np.array([shape(i)[0] for i in range(n)], np.int64),
            "json": np.array(metas, dtype=object),
            **embeddings,
        }


# ---------------------------------------------------------------------------------------
# Writing (Ray tasks) and committing (the driver)


def json_column(values: List[Any]) -> pa.Array:
    """One metadata column of JSON values, typed as `align index` types it."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63
           for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    text = [v if isinstance(v, str) or v is None
            else json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values]
    return pa.array(text, pa.string())


def metadata_table(batch: Dict[str, np.ndarray], rows: List[int], text: bool) -> pa.Table:
    columns = {
        "image_path": pa.array([batch["image_path"][i] for i in rows], pa.string()),
        "key": pa.array([batch["key"][i] for i in rows], pa.string()),
        "caption": pa.array([batch["caption"][i] or None for i in rows], pa.string()),
    }
    if text:
        similarity = [float(batch["similarity"][i]) for i in rows]
        columns["similarity"] = pa.array([None if np.isnan(x) else x for x in similarity],
                                         pa.float32())
    columns["width"] = pa.array([int(batch["width"][i]) for i in rows], pa.int64())
    columns["height"] = pa.array([int(batch["height"][i]) for i in rows], pa.int64())
    metas = [json.loads(batch["json"][i]) for i in rows]
    names = sorted({k for m in metas for k in m})
    for name in names:
        columns[name] = json_column([m.get(name) for m in metas])
    schema = pa.schema([pa.field(k, v.type, nullable=k not in ("image_path", "key", "width",
                                                                 "height"))
                        for k, v in columns.items()])
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def temporary(out: str, folder: str, prefix: str, ext: str, token: str) -> str:
    return os.path.join(out, folder, f".{prefix}_{token}{ext}.tmp")


def write_partition(batch: Dict[str, np.ndarray], out: str, text: bool, dtype: str,
                    run: str) -> Dict[str, np.ndarray]:
    """Writes one partition's files under temporary names (the driver renames them) and
    returns its manifest."""
    token = f"ray-{run}-{uuid.uuid4().hex}"
    n = len(batch["image_path"])
    rows = [i for i in range(n) if not batch["error"][i]]
    failed = [i for i in range(n) if batch["error"][i]]
    emb_dtype = np.float16 if dtype == "f16" else np.float32
    if rows:
        for name in ["img_emb", "text_emb"] if text else ["img_emb"]:
            with open(temporary(out, name, name, ".npy", token), "wb") as f:
                np.save(f, np.ascontiguousarray(batch[name][rows].astype(emb_dtype)))
        pq.write_table(metadata_table(batch, rows, text),
                       temporary(out, "metadata", "metadata", ".parquet", token))
    failures = [{"image_path": batch["image_path"][i], "key": batch["key"][i],
                 "error": batch["error"][i].replace("\n", " "),
                 "fingerprint": batch["fingerprint"][i]} for i in failed]
    if failures:
        with open(temporary(out, "failures", "failures", ".jsonl", token), "w") as f:
            for x in failures:
                f.write(json.dumps({k: x[k] for k in ("image_path", "key", "error")},
                                   ensure_ascii=False) + "\n")
    manifest = {"rows": [{"image_path": batch["image_path"][i],
                          "fingerprint": batch["fingerprint"][i]} for i in rows],
                "failures": failures}
    return {"token": np.array([token], dtype=object),
            "manifest": np.array([json.dumps(manifest)], dtype=object)}


def write_atomic(path: str, data: str):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_out(out: str, settings: Dict[str, Any]) -> Dict[str, str]:
    """Creates OUT (or checks its align.json against these settings), removes what earlier
    jobs left under temporary names, and returns what OUT holds: image path -> fingerprint."""
    for d in ["img_emb", "text_emb", "metadata", "failures", "manifest"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    path = os.path.join(out, "align.json")
    if os.path.exists(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except ValueError as e:
                raise ValueError(
                    f"{path}: not an align.json written by `align index`: {e}") from None
        for field in ["model", "dim", "emb_dtype", "text", "shards"]:
            if old.get(field) != settings[field]:
                raise ValueError(f"{path}: this collection was made with {field} "
                                 f"{old.get(field)!r}, this job has {settings[field]!r}; use "
                                 f"the same settings or another --out")
    else:
        write_atomic(path, json.dumps(settings, indent=2))
    remove_temporaries(out, "ray-")
    known = {}
    for name in own_partitions(out):
        with open(os.path.join(out, "manifest", f"{name}.json")) as f:
            manifest = json.load(f)
        for e in manifest["rows"] + manifest["failures"]:
            if e["fingerprint"]:
                known[e["image_path"]] = e["fingerprint"]
    return known


def own_partitions(out: str) -> List[str]:
    names = [p[:-5] for p in os.listdir(os.path.join(out, "manifest"))
             if p.endswith(".json") and not p.startswith(".")]
    return sorted((p for p in names if PARTITION.match(p)), key=int)


def remove_temporaries(out: str, prefix: str):
    for folder, stem in [("img_emb", "img_emb"), ("text_emb", "text_emb"),
                         ("metadata", "metadata"), ("failures", "failures")]:
        d = os.path.join(out, folder)
        for name in os.listdir(d):
            if name.startswith(f".{stem}_{prefix}") and name.endswith(".tmp"):
                os.remove(os.path.join(d, name))


def commit(out: str, token: str, manifest: str, name: str) -> Dict[str, Any]:
    """Renames a written partition into place as partition `name`, its manifest last (the
    commit), as `align index` commits a partition; returns the manifest."""
    for folder, stem, ext in [("img_emb", "img_emb", ".npy"), ("text_emb", "text_emb", ".npy"),
                              ("metadata", "metadata", ".parquet"),
                              ("failures", "failures", ".jsonl")]:
        tmp = temporary(out, folder, stem, ext, token)
        if os.path.exists(tmp):
            os.replace(tmp, os.path.join(out, folder, f"{stem}_{name}{ext}"))
    write_atomic(os.path.join(out, "manifest", f"{name}.json"), manifest)
    return json.loads(manifest)


# ---------------------------------------------------------------------------------------


def model_name(model: str) -> str:
    """The model as `align index` records it: a directory's absolute path, or a hub id."""
    return os.path.realpath(model) if os.path.isdir(model) else model


def embed_collection(inputs: List[str], out: str, model: str, text: bool = False,
                     emb_dtype: str = "f16", concurrency: int = 1, num_cpus: int = 1,
                     batch_size: int = 32, partition_rows: int = 100_000,
                     include_hidden: bool = False) -> Dict[str, int]:
    """Embeds `inputs` into OUT on the Ray cluster this process is connected to; returns
    counts of what was done."""
    import align_rs

    for item in inputs:
        if not os.path.exists(item):
            raise FileNotFoundError(f"{item}: no such file or folder")
    # Loaded here once: a model that cannot load fails the job before any work is handed out.
    dim = align_rs.Align.from_pretrained(model).dim
    settings = {"model": model_name(model), "dim": dim, "emb_dtype": emb_dtype,
                "text": text, "shards": 1}
    known = prepare_out(out, settings)
    sources = list(list_sources(inputs, include_hidden, known))
    if not sources:
        return {"embedded": 0, "failed": 0, "partitions_written": 0}
    run = uuid.uuid4().hex[:12]
    ds = (
        ray.data.from_items(sources)
        # Reading and writing are I/O: they take no core from the model actors (a task
        # asking for one could wait forever for the cores the actors hold).
        .flat_map(read_samples, num_cpus=0,
                  compute=ray.data.TaskPoolStrategy(size=2 * concurrency))
        .map_batches(Embedder, fn_constructor_kwargs={"model": model, "text": text,
                                                      "threads": num_cpus},
                     batch_size=batch_size, num_cpus=num_cpus,
                     compute=ray.data.ActorPoolStrategy(size=concurrency),
                     batch_format="numpy", zero_copy_batch=True)
        .map_batches(write_partition, fn_kwargs={"out": out, "text": text,
                                                 "dtype": emb_dtype, "run": run},
                     batch_size=partition_rows, batch_format="numpy", num_cpus=0,
                     compute=ray.data.TaskPoolStrategy(size=concurrency))
    )
    parts = own_partitions(out)
    seq = int(parts[-1]) + 1 if parts else 0
    done = {"embedded": 0, "failed": 0, "partitions_written": 0}
    try:
        # Each partition is committed as soon as Ray hands over its result: a job that dies
        # keeps what it committed, and running it again embeds the rest.
        for written in ds.iter_rows():
            manifest = commit(out, written["token"], written["manifest"], f"{seq:06d}")
            seq += 1
            done["embedded"] += len(manifest["rows"])
            done["failed"] += len(manifest["failures"])
            done["partitions_written"] += 1
    finally:
        # What failed attempts left (a job killed outright leaves them to the next run).
        remove_temporaries(out, f"ray-{run}-")
    return done


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="folders, image files and webdataset .tar shards")
    p.add_argument("--out", required=True, help="the output folder (align index's layout)")
    p.add_argument("--model", required=True,
                   help="a model directory or a hub id (align_rs.Align.from_pretrained)")
    p.add_argument("--text", action="store_true", help="embed the captions too (text_emb/)")
    p.add_argument("--emb-dtype", choices=["f16", "f32"], default="f16")
    p.add_argument("--concurrency", type=int, default=1, help="model actors (default 1)")
    p.add_argument("--num-cpus", type=int, default=1,
                   help="cores per model actor, its threads (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per actor call")
    p.add_argument("--partition-rows", type=int, default=100_000,
                   help="samples per partition written (default 100000)")
    p.add_argument("--include-hidden", action="store_true")
    p.add_argument("--address", default=None,
                   help="the Ray cluster (default: RAY_ADDRESS, else a local one)")
    args = p.parse_args(argv)
    for name in ["concurrency", "num_cpus", "batch_size", "partition_rows"]:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be at least 1")
    missing = [i for i in args.inputs if not os.path.exists(i)]
    if missing:
        print(f"error: {missing[0]}: no such file or folder", file=sys.stderr)
        return 1
    if not ray.is_initialized():
        ray.init(address=args.address)
    try:
        done = embed_collection(args.inputs, args.out, args.model, args.text, args.emb_dtype,
                                args.concurrency, args.num_cpus, args.batch_size,
                                args.partition_rows, args.include_hidden)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
