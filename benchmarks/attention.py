"""Decode attention alone: one layer's KV cache of n positions, the engine's decode_attention timed in C++ call by
call, the int8 cache's two query paths (float products vs the int8 query's integer dot products) and the f16 cache
(the package default) in the same process.

    python benchmarks/attention.py [--shape smollm2] [--n 512,2048,4096] [--threads 1,2] [--isa best,avx2]
                                   [--kv int8-f32,int8,f16] [--json f]

For each (ISA tier, threads, n) the variants (--kv: `int8-f32` the int8 cache with the float query, `int8` with
the int8 query, `f16` the half cache) run in 5 interleaved rounds of `calls` calls each (so a busy spell of this
shared host falls on all), and each row gives the median seconds per call, the cache bytes a call reads (n x the
cache's bytes per position per layer), those bytes over the time (GB/s), that over a plain read of the same bytes
with the same threads measured in the same round (read_fraction), and its time over the int8 path's (median of
the per-round ratios: `vs_int8`, above 1 slower).

With --prefill T the same variants time prefill_attention instead: a chunk of T positions after n cached ones (the
engine's chunk is 128), and each row gives its attention FLOPs (4 hd per query head and visible key) per second
and that over the f32 FMA probe of the tier (fp32_fma_avx512 / fp32_fma_avx2, measured in the same round).
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


def kv_bytes(n: int, kv_heads: int, hd: int, cache: str = "int8") -> int:
    if cache == "f16":
        return n * 2 * kv_heads * hd * 2
    gs = 32 if hd % 32 == 0 else hd
    return n * 2 * kv_heads * (hd + 4 * (hd // gs))


VARIANTS = {"int8-f32": ("int8", "f32"), "int8": ("int8", "int8"), "f16": ("f16", "int8")}  # cache, decode query


PROBES = {"avx512": "fp32_fma_avx512", "avx2": "fp32_fma_avx2"}
# The int8 path's two products as register loops of their exact instructions (csrc/kernels/roofline_mix.cpp): the
# scores and the values take equal multiply-adds, so together they can run at most at the harmonic mean of the two.
PRODUCT_MIXES = {"avx2": ("mix_attn_scores_avx2", "mix_attn_values_avx2")}


def prefill_rows_for(shape: str, n: int, t: int, threads: int, isa: str, calls: int, variants: list[str],
                     rounds: int = 5) -> list[dict]:
    kvh, groups, hd = SHAPES[shape]
    rng = np.random.default_rng(n)
    k = rng.standard_normal((n + t, kvh, hd), dtype=np.float32)
    k[..., 3::17] *= 6
    v = rng.standard_normal((n + t, kvh, hd), dtype=np.float32)
    q = rng.standard_normal((t, kvh * groups, hd), dtype=np.float32)
    flops = 4 * hd * kvh * groups * (t * n + t * (t + 1) / 2)
    per = {name: [] for name in variants}
    probes, mixes = [], []
    saved = _core.decode_query()
    try:
        for _ in range(rounds):
            if isa in PROBES:
                probes.append(_core.measure_peak(PROBES[isa], threads, 3))
            if isa in PRODUCT_MIXES:
                a, b = (_core.measure_peak(name, threads, 3) for name in PRODUCT_MIXES[isa])
                mixes.append(2 / (1 / a + 1 / b))
            for name in variants:
                cache, query = VARIANTS[name]
                _core.set_decode_query(query)
                per[name].append(float(np.median(_core.time_prefill_attention(q, k, v, cache, calls))))
    finally:
        _core.set_decode_query(saved)
    out = []
    for name, times in per.items():
        med = statistics.median(times)
        row = {"shape": shape, "n": n, "chunk": t, "threads": threads, "isa": isa, "variant": name, "median_s": med,
               "gflops": round(flops / med / 1e9, 1)}
        if probes:
            row["fma_probe_gflops"] = round(statistics.median(probes), 1)
            row["fma_fraction"] = round(flops / med / 1e9 / row["fma_probe_gflops"], 3)
        if mixes and name == "int8":  # the integer path: how far from its own products' ceiling
            row["products_mix_gops"] = round(statistics.median(mixes), 1)
            row["mix_fraction"] = round(flops / med / 1e9 / row["products_mix_gops"], 3)
        if "int8" in per and name != "int8":
            row["vs_int8"] = round(statistics.median(a / b for a, b in zip(times, per["int8"])), 3)
        out.append(row)
    return out


def rows_for(shape: str, n: int, threads: int, isa: str, calls: int, variants: list[str], rounds: int = 5) -> list[dict]:
    kvh, groups, hd = SHAPES[shape]
    rng = np.random.default_rng(n)
    k = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    k[..., 3::17] *= 6
    v = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    q = rng.standard_normal((kvh * groups, hd), dtype=np.float32)
    per = {name: [] for name in variants}
    reads = {name: [] for name in variants}
    saved = _core.decode_query()
    try:
        for _ in range(rounds):
            for name in variants:
                cache, query = VARIANTS[name]
                nbytes = kv_bytes(n, kvh, hd, cache)
                reads[name].append(_core.read_bandwidth(nbytes, threads, 3) * 1e9)  # GB/s -> B/s
                _core.set_decode_query(query)
                per[name].append(float(np.median(_core.time_decode_attention(q, k, v, cache, calls))))
    finally:
        _core.set_decode_query(saved)
    out = []
    for name, times in per.items():
        nbytes = kv_bytes(n, kvh, hd, VARIANTS[name][0])
        med, read = statistics.median(times), statistics.median(reads[name])
        row = {"shape": shape, "n": n, "threads": threads, "isa": isa, "variant": name, "median_s": med,
               "bytes": nbytes, "gbps": round(nbytes / med / 1e9, 2), "read_gbps": round(read / 1e9, 2),
               "read_fraction": round(nbytes / med / read, 3)}
        if "int8" in per and name != "int8":
            row["vs_int8"] = round(statistics.median(a / b for a, b in zip(times, per["int8"])), 3)
        out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--n", default="512,2048,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--isa", default="best,avx2", help="tiers to run: best (the dispatcher's pick) and/or names")
    ap.add_argument("--kv", default="int8-f32,int8,f16", help="variants, of: " + ", ".join(VARIANTS))
    ap.add_argument("--prefill", type=int, default=0, metavar="T",
                    help="time a prefill chunk of T positions after n cached ones instead of decode")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    saved = _core.active_isa()
    variants = args.kv.split(",")
    for name in variants:
        if name not in VARIANTS:
            ap.error(f"--kv: unknown variant {name!r} (of {', '.join(VARIANTS)})")
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
                    if args.prefill:
                        rows += prefill_rows_for(args.shape, n, args.prefill, t, name, args.calls, variants)
                    else:
                        rows += rows_for(args.shape, n, t, name, args.calls, variants)
    finally:
        _core.set_active_isa(saved)
    for r in rows:
        if "chunk" in r:
            print(f"{r['shape']:>11} {r['isa']:>6} t={r['threads']} n={r['n']:>5} +{r['chunk']} {r['variant']:>8}: "
                  f"{r['median_s'] * 1e3:8.2f} ms  {r['gflops']:6.1f} GFLOP/s"
                  + (f"  of FMA probe {r['fma_fraction']:.3f}" if "fma_fraction" in r else "")
                  + (f"  of its products' mix ({r['products_mix_gops']:.0f} GOPS) {r['mix_fraction']:.3f}"
                     if "mix_fraction" in r else "")
                  + (f"  vs int8 x{r['vs_int8']}" if "vs_int8" in r else ""))
            continue
        print(f"{r['shape']:>11} {r['isa']:>6} t={r['threads']} n={r['n']:>5} {r['variant']:>8}: "
              f"{r['median_s'] * 1e6:8.1f} us  {r['gbps']:6.2f} GB/s  read {r['read_gbps']:6.2f} GB/s  "
              f"fraction {r['read_fraction']:.3f}" + (f"  vs int8 x{r['vs_int8']}" if "vs_int8" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
