#!/usr/bin/env python3
"""Per-kernel totals from CubeCL's profiling log (burn's wgpu / cuda backends).

CubeCL times every kernel it launches when its profiling logger is on: put a `cubecl.toml` in
the directory the program runs from (CubeCL looks there and in its parents),

    [profiling.logger]
    file = "/tmp/cubecl-profile.log"
    level = "basic"

run e.g. `align --device wgpu embed-images ...`, then

    python3 xtask/bench/cubecl_profile.py /tmp/cubecl-profile.log

Each log line is `| <duration> | <kernel name>`. The first call of each kernel (name and hash)
is left out: it includes compiling the kernel. Kernels are grouped by name without the hash
(e.g. all element-wise multiplies together) and by kind (matrix products, convolutions,
element-wise, reductions, copies, fills, fused kernels). Timing every kernel serialises them,
so the totals show shares, not the throughput of a normal run.
"""

import argparse
import collections
import re
import statistics

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
KINDS = ("Matmul", "Conv", "Fuse", "Binop", "Unary", "Reduce", "Copy", "Full")


def seconds(text):
    m = re.fullmatch(r"([\d.]+)\s*(ns|µs|us|ms|s)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def kind(name):
    return next((k for k in KINDS if k.lower() in name.lower()), "other")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="the profiling log CubeCL wrote")
    ap.add_argument("--top", type=int, default=30, help="kernel groups to list")
    args = ap.parse_args()

    times = collections.defaultdict(list)
    seen = set()
    with open(args.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 3 or (t := seconds(parts[1])) is None:
                continue
            name = "|".join(p.strip() for p in parts[2:])
            if name not in seen:  # first use: compilation included
                seen.add(name)
                continue
            name = re.sub(r"_[0-9a-f]{8}$", "", name)
            # matrix products: the family that was chosen, not every tiling parameter
            name = re.sub(r"MatmulEntry.*?(\w+Family).*", r"Matmul \1", name)
            times[name].append(t)
    if not times:
        raise SystemExit(f"no timed kernels in {args.log}")
    total = sum(sum(v) for v in times.values())
    by_kind = collections.Counter()
    for name, v in times.items():
        by_kind[kind(name)] += sum(v)
    print(f"total {total * 1e3:.1f} ms in {sum(map(len, times.values()))} kernel runs "
          "(each kernel's first run left out)")
    print("by kind: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({100 * v / total:.0f} %)"
                                  for k, v in by_kind.most_common()))
    rows = sorted(((sum(v), len(v), statistics.median(v), n) for n, v in times.items()),
                  reverse=True)
    for s, count, median, name in rows[:args.top]:
        print(f"{s * 1e3:9.2f} ms {count:6d} runs, median {median * 1e6:9.1f} us  {name[:110]}")


if __name__ == "__main__":
    main()
