"""faiss's HNSW on the vectors `align search`'s benchmark measured, for the comparison in
docs/performance.md: recall@10 against exact search and one-thread query latency.

    cargo xtask bench search --rows 100000 --keep target/ann-100k
    python3 xtask/bench/ann_faiss.py target/ann-100k

(faiss-cpu from tests/python/requirements.txt; M 16 and efConstruction 128 as align-search's
index; IndexHNSWFlat stores f32, IndexHNSWSQ fp16 stores f16 as usearch does.)"""

import argparse
import time
from pathlib import Path

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--ef", default="16,32,64,128")
    ap.add_argument("--threads", type=int, default=2, help="threads to build with")
    args = ap.parse_args()
    data = np.concatenate([np.load(p).astype(np.float32)
                           for p in sorted((args.dir / "img_emb").glob("img_emb_*.npy"))])
    queries = np.load(args.dir / "queries.npy").astype(np.float32)
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    print(f"{data.shape[0]} rows, {len(queries)} queries")
    print("| index | ef | recall@10 | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, index in [
        ("faiss HNSWFlat (f32)", faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)),
        ("faiss HNSWSQ (fp16)", faiss.IndexHNSWSQ(data.shape[1], faiss.ScalarQuantizer.QT_fp16, 16,
                                                   faiss.METRIC_INNER_PRODUCT)),
    ]:
        index.hnsw.efConstruction = 128
        faiss.omp_set_num_threads(args.threads)
        if not index.is_trained:
            index.train(data)
        t = time.perf_counter()
        index.add(data)
        build = time.perf_counter() - t
        print(f"{name}: built in {build:.1f} s on {args.threads} threads "
              f"({len(data) / build:.0f} vectors/s)")
        faiss.omp_set_num_threads(1)
        for ef in map(int, args.ef.split(",")):
            index.hnsw.efSearch = ef
            for q in queries[:50]:
                index.search(q[None], 10)
            found, ms = 0, []
            for q, want in zip(queries, truth):
                t = time.perf_counter()
                _, ids = index.search(q[None], 10)
                ms.append((time.perf_counter() - t) * 1e3)
                found += len(set(ids[0]) & set(want))
            p50, p99 = np.percentile(ms, [50, 99])
            print(f"| {name} | {ef} | {found / (10 * len(queries)):.3f} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
