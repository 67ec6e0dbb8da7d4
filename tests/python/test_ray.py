"""examples/ray/embed_collection.py on a real local Ray cluster: its output equals `align
index`'s on the same collection, `align index` takes it as its own, and a model worker killed
mid-run is restarted by Ray without a sample lost or written twice."""

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import ray

from conftest import ROOT, TINY, make_collection, run_align, summary, write_shard
from test_index import failures, no_temporaries, read_out

EXAMPLE = ROOT / "examples/ray/embed_collection.py"


def load_example():
    spec = importlib.util.spec_from_file_location("embed_collection", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs (a head node started by this process), reporting no
    usage statistics (the tests reach no network)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"BURN_DEVICE": "flex"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A folder (with sidecars, every format, bad files) and two webdataset shards (one with
    a corrupt image)."""
    root = tmp_path_factory.mktemp("ray-collection")
    photos, good, bad = make_collection(root)
    shards = [root / "shard-00000.tar", root / "shard-00001.tar"]
    write_shard(shards[0], 15, corrupt={4})
    write_shard(shards[1], 16, start=15)
    return [str(photos), *map(str, shards)]


@pytest.fixture(scope="module")
def reference(collection, tmp_path_factory):
    """`align index`'s output on the collection, and its summary."""
    out = tmp_path_factory.mktemp("ray-reference") / "out"
    s = summary(run_align("index", "--model", TINY, "--out", out, "--text", *collection))
    assert s["embedded"] >= 40 and s["failed"] == 5
    return out, s


def same_output(out, reference):
    """OUT holds exactly the reference's samples, with the same embeddings, metadata and
    failures. Embeddings may round to neighbouring float16 values: batches are formed
    differently, and a product's summation order (so its last float32 bits) follows the
    batch's shape. 2^-11 is one float16 step below 1 (embeddings are unit vectors)."""
    got, want = read_out(out, text=True), read_out(reference[0], text=True)
    assert sorted(got) == sorted(want)
    for path, (img, txt, meta) in want.items():
        g_img, g_txt, g_meta = got[path]
        assert g_img.dtype == img.dtype == np.float16
        for g, w in [(g_img, img), (g_txt, txt)]:
            assert np.abs(g.astype(np.float32) - w.astype(np.float32)).max() <= 2**-11, path
        sim, g_sim = meta.pop("similarity"), g_meta.pop("similarity")
        assert (sim is None) == (g_sim is None), path
        if sim is not None:
            assert abs(sim - g_sim) < 1e-5, path
        # Columns of other partitions' JSON fields are null in this row's partition.
        present = lambda row: {k: v for k, v in row.items() if v is not None}  # noqa: E731
        assert present(g_meta) == present(meta), path
    got_f, want_f = failures(out), failures(reference[0])
    assert sorted(got_f) == sorted(want_f)
    for path in want_f:
        assert got_f[path]["key"] == want_f[path]["key"]
        assert path in got_f[path]["error"]
    no_temporaries(out)


def test_equals_align_index_and_align_index_takes_it_over(cluster, collection, reference,
                                                          tmp_path):
    example = load_example()
    out = tmp_path / "out"
    done = example.embed_collection(collection, str(out), str(TINY), text=True,
                                    concurrency=2, batch_size=4, partition_rows=16)
    assert done["embedded"] == reference[1]["embedded"] and done["failed"] == 5
    assert done["partitions_written"] >= 3
    same_output(out, reference)

    # `align index` with the same inputs finds everything there already.
    s = summary(run_align("index", "--model", TINY, "--out", out, "--text", *collection))
    assert s["embedded"] == 0 and s["removed"] == 0
    assert s["present"] == reference[1]["embedded"] + 5
    # ... and so does the example run again.
    again = example.embed_collection(collection, str(out), str(TINY), text=True)
    assert again == {"embedded": 0, "failed": 0, "partitions_written": 0}
    same_output(out, reference)


def model_actors():
    """{pid: process title} of the model actors' processes. Ray titles a worker process
    `ray::CLASS` when idle and `ray::CLASS.METHOD` while it runs a task."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::MapWorker(MapBatches(Embedder))"):
            found[int(pid)] = title
    return found


def test_a_killed_worker_is_retried_without_duplicates(cluster, collection, reference,
                                                       tmp_path):
    example = load_example()
    out = tmp_path / "out"
    result, error = {}, []

    def job():
        try:
            result.update(example.embed_collection(collection, str(out), str(TINY), text=True,
                                                   concurrency=1, batch_size=2,
                                                   partition_rows=8))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            error.append(e)

    before = set(model_actors())
    thread = threading.Thread(target=job)
    thread.start()
    # Kill the model actor's process while it runs one of its batches.
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        busy = [pid for pid, title in model_actors().items()
                if pid not in before and title.startswith("ray::MapWorker(MapBatches(Embedder)).")]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    assert killed is not None, "the job ended before its model actor ran a batch"
    assert thread.is_alive(), "the kill came after the job"
    thread.join(timeout=300)
    assert not error, error
    # The killed batch's samples are in OUT once, like every other: Ray restarted the actor
    # (in a new process) and ran the batch again.
    assert result["embedded"] == reference[1]["embedded"] and result["failed"] == 5
    same_output(out, reference)


def test_a_killed_job_is_resumed_by_running_it_again(cluster, collection, reference, tmp_path):
    out = tmp_path / "out"
    # The example's own command line, as a second driver on the test's cluster.
    job = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--address", ray.get_runtime_context().gcs_address,
         "--model", str(TINY), "--out", str(out), "--text", "--batch-size", "2",
         "--partition-rows", "4", *collection],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "manifest").glob("*.json")) and time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before committing a partition"
        time.sleep(0.01)
    assert job.poll() is None, "the job ended before it could be killed"
    job.kill()
    job.wait()
    committed = read_out(out, text=True)
    held = len(committed) + len(failures(out))
    assert 0 < held < reference[1]["embedded"] + 5, "the kill did not come mid-run"

    done = load_example().embed_collection(collection, str(out), str(TINY), text=True)
    # Only what the killed job had not committed, and every sample once in the end.
    assert done["embedded"] + done["failed"] == reference[1]["embedded"] + 5 - held
    same_output(out, reference)


def test_a_truncated_shard_is_a_failure_as_in_align_index(cluster, tmp_path):
    shard = tmp_path / "cut.tar"
    write_shard(shard, 6)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])
    want = tmp_path / "want"
    run_align("index", "--model", TINY, "--out", want, "--text", shard)
    got = tmp_path / "got"
    load_example().embed_collection([str(shard)], str(got), str(TINY), text=True)
    same_output(got, (want, None))
    assert list(failures(got)) == [str(shard)]


def test_bad_arguments_are_one_line_errors(collection, tmp_path, capsys):
    example = load_example()
    code = example.main(["--model", str(TINY), "--out", str(tmp_path / "o"),
                         str(tmp_path / "missing")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: no such file or folder" in err

    # An OUT made with other settings, or whose align.json is not one: nothing written.
    other = tmp_path / "other"
    run_align("index", "--model", TINY, "--out", other, collection[1])
    before = sorted(p.relative_to(other) for p in other.rglob("*"))
    code = example.main(["--model", str(TINY), "--out", str(other), "--text", collection[1]])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0, err
    assert "align.json: this collection was made with text False" in err
    (other / "align.json").write_text("{not json")
    assert example.main(["--model", str(TINY), "--out", str(other), collection[1]]) == 1
    assert "align.json: not an align.json written by `align index`" in capsys.readouterr().err
    assert sorted(p.relative_to(other) for p in other.rglob("*")) == before

    with pytest.raises(SystemExit):
        example.main(["--model", str(TINY), "--out", str(tmp_path / "o"), "--concurrency",
                      "0", *collection])
    assert "--concurrency: must be at least 1" in capsys.readouterr().err
