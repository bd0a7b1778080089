"""Decode attention alone: one layer's int8 KV cache of n positions, the engine's decode_attention timed in C++ call
by call, A/B of the query path (float products vs the int8 query's integer dot products) in the same process.

    python benchmarks/attention.py [--shape smollm2] [--n 512,2048,4096] [--threads 1,2] [--isa best,avx2] [--json f]

For each (ISA tier, threads, n) the two query paths run in 5 interleaved rounds of `calls` calls each (so a busy
spell of this shared host falls on both), and each row gives the median seconds per call, the cache bytes a call
reads (n x the cache's bytes per position per layer), those bytes over the time (GB/s), that over a plain read of
the same bytes with the same threads measured in the same round (read_fraction), and the int8 path's speed-up
over the float path (median of the per-round ratios).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from bluelm_v import _core

SHAPES = {"smollm2": (3, 3, 64), "bluelm-v-3b": (36, 1, 64)}  # kv_heads, GQA groups, head size


def kv_bytes(n: int, kv_heads: int, hd: int) -> int:
    gs = 32 if hd % 32 == 0 else hd
    return n * 2 * kv_heads * (hd + 4 * (hd // gs))


def rows_for(shape: str, n: int, threads: int, isa: str, calls: int, rounds: int = 5) -> list[dict]:
    kvh, groups, hd = SHAPES[shape]
    rng = np.random.default_rng(n)
    k = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    k[..., 3::17] *= 6
    v = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    q = rng.standard_normal((kvh * groups, hd), dtype=np.float32)
    nbytes = kv_bytes(n, kvh, hd)
    per = {"f32": [], "int8": []}
    reads = []
    saved = _core.decode_query()
    try:
        for _ in range(rounds):
            reads.append(_core.read_bandwidth(nbytes, threads, 3) * 1e9)  # GB/s -> B/s
            for mode in per:
                _core.set_decode_query(mode)
                per[mode].append(float(np.median(_core.time_decode_attention(q, k, v, "int8", calls))))
    finally:
        _core.set_decode_query(saved)
    read = statistics.median(reads)
    out = []
    for mode, times in per.items():
        med = statistics.median(times)
        row = {"shape": shape, "n": n, "threads": threads, "isa": isa, "query": mode, "median_s": med,
               "bytes": nbytes, "gbps": round(nbytes / med / 1e9, 2), "read_gbps": round(read / 1e9, 2),
               "read_fraction": round(nbytes / med / read, 3)}
        if mode == "int8":
            row["speedup_vs_f32"] = round(statistics.median(a / b for a, b in zip(per["f32"], times)), 3)
        out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--n", default="512,2048,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--isa", default="best,avx2", help="tiers to run: best (the dispatcher's pick) and/or names")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    saved = _core.active_isa()
    rows = []
    try:
        for isa in args.isa.split(","):
            name = saved if isa == "best" else isa
            if not _core.isa_supported(name):
                print(f"{name}: not supported here, skipped")
                continue
            _core.set_active_isa(name)
            for t in (int(x) for x in args.threads.split(",")):
                _core.set_num_threads(t)
                for n in (int(x) for x in args.n.split(",")):
                    rows += rows_for(args.shape, n, t, name, args.calls)
    finally:
        _core.set_active_isa(saved)
    for r in rows:
        print(f"{r['shape']:>11} {r['isa']:>6} t={r['threads']} n={r['n']:>5} {r['query']:>4}: "
              f"{r['median_s'] * 1e6:8.1f} us  {r['gbps']:6.2f} GB/s  read {r['read_gbps']:6.2f} GB/s  "
              f"fraction {r['read_fraction']:.3f}" + (f"  x{r['speedup_vs_f32']}" if "speedup_vs_f32" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
