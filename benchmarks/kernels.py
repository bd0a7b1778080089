"""Kernel benchmark: llama-bench-like rows for the LLM shapes of configs/models, against this machine's roofline
and torch, measured in the same run.

    python benchmarks/kernels.py [--threads 1,2] [--quick] [--json rows.json]
    python benchmarks/kernels.py --int16 --threads 1     # only one int16 pass against two int8 passes

For each model of configs/suites/kernels.json (the BlueLM-V-3B stand-in: hidden 2304, FFN 5760, vocab 122753;
SmolLM2-135M: 576, 1536, 49152) and each weight matrix shape [N, K] of a layer (q/o, k/v, gate/up, down, head):
  - gemv (T = 1) in `hot` mode (one matrix, cache-warm) and `stream` mode (a stack of copies larger than the
    last-level cache, back to back in one weight arena as the engine keeps a model, cycled, so every call reads
    DRAM; timed call by call in C++, as the engine calls it and as the read probe runs, where the hot rows and
    torch's are timed from Python);
  - gemm for a prefill chunk (T = 128), and for the formats with a one-pass int16 kernel in this tier a
    `gemm_i16` row: the chunk with int16 activations in one pass against the two int8 passes (int16_row);
for q4_0, q4_1, q8_0, q5_0 and q5_1 weights (the Q5 ones stream their own 5-bit panels in decode; their prefill
chunks widen each panel to q8_0 and so carry q8_0's mix ceiling) and GGUF's K-quants q4_k, q5_k, q6_k (on the shapes whose K is a multiple of 256;
`--formats` picks some), plus the 2x2 down-sampler fused with LayerNorm + linear for a 27x27x1152 tile.
Baselines timed in the same process: torch float32 matmul on the dequantized weights (`torch-f32`) and torch's
dequantize-then-matmul from the packed blocks (`torch-deq`). The roofline (read bandwidth at each thread count,
the tier's int8 dot-product peak, FP32 FMA peak) is measured first, by csrc/kernels/roofline.cpp, and printed;
each row runs in 5 rounds of (the same quantity measured again, then the kernel), and its fraction is the median
of the per-round ratios, because this shared host drifts by tens of percent within a run.

JSON rows: kernel, format, K, N, T, threads, mode, isa, median_s, gbps, gflops, roofline_fraction,
roofline_local (the median of the per-round figures the fraction divides by: GB/s for stream rows, GOPS
otherwise), roofline_run (the start-of-run figure), timed_in (`c++` or `python`), rounds, baseline,
speedup_vs_baseline (one row per baseline), and how far the kernel is from its limits, each the median of
per-round ratios over ROUNDS (>= 15) interleaved rounds with a bootstrap 95% interval of that median:
  - probe: the tier's int8 probe (`int8_maddubs_paddw_avx2`: vpmaddubsw + vpaddw; `int8_vpdpbusd_avx512` on
    AVX-512 VNNI; the best of PROBE_REPS short passes per round, see PROBE_SECONDS), or for stream rows the plain
    read of a 256 MB buffer (best of 3 passes);
  - fraction_of_probe (ci_low, ci_high): the kernel's GOPS (stream: GB/s) over the probe's, same round
    (= roofline_fraction);
  - mix_ceiling (mix_ceiling_ci): the register-only loop of the format's exact instruction mix on this tier
    (csrc/kernels/roofline_mix.cpp) over the probe: the most the format can reach here;
  - fraction_of_ceiling (fraction_of_ceiling_ci): the kernel over that loop;
  - target, target_met, missed_by: where configs/suites/kernels.json sets a target for the row: chunk-128 GEMM at
    one thread, per tier and format, met when ci_low >= target, else missed_by = target - ci_low; streaming GEMV at
    one thread on matrices of >= 2 MB (bytes), met when the median fraction_of_probe >= 0.88, else missed_by =
    0.88 - fraction_of_probe.
Stream rows also say which one-token kernel ran (avx512_decode_tile, decode_scales_last), and where one of the
one-token A/B switches (DECODE_SWITCHES) changes the kernel, a companion row times it set the other way in the
same rounds: format <fmt>_pair_decode / _one_panel_decode / _scales_per_block / _scales_last / _avx2_decode (the
AVX-512 tier's Q6_K loop against the AVX2 tier's), switch, switch_on,
speedup_vs_baseline (that kernel over the shipped one) with speedup_ci.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from bluelm_v import _core, kernels, quant  # noqa: E402
from common import median_ci  # noqa: E402

FORMATS = ("q4_0", "q4_1", "q8_0", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k")
MIX_OF = {"q5_0": "q8_0", "q5_1": "q8_0"}  # formats whose kernels run another format's tiles
ROUNDS = 15  # interleaved (probe, mix loop, kernel) rounds per row (in_rounds)
# A probe or mix loop is the best of PROBE_REPS passes of PROBE_SECONDS each (the read probe: the best of 3 passes
# over 256 MB). The kernel's time is the median of many calls of a few ms or less, which a busy host's preemption
# mostly misses; a single longer probe pass does not miss it (with the host at load 16 on 2 cores, single 20 ms
# passes put 0.2 ms SmolLM2 GEMMs at 1.2-1.6x "the peak"). Best-of passes keep the probes comparable: under load
# the fractions then err low, not high.
PROBE_SECONDS = 0.004
PROBE_REPS = 5
LLC_BYTES = 32 << 20  # the last-level cache to exceed in stream mode (docs/sources.md: <= 32 MiB of L3)


def median_time(fn, repeat: int, min_time: float = 0.05) -> float:
    fn()
    samples = []
    t_end = time.perf_counter() + min_time
    while len(samples) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) > 200:
            break
    return statistics.median(samples)


def load_shapes(quick: bool) -> list[dict]:
    suite = json.loads((ROOT / "configs" / "suites" / "kernels.json").read_text())
    shapes = []
    for m in suite["models"]:
        cfg = json.loads((ROOT / "configs" / "models" / f"{m}.json").read_text())["llm"]
        d, f, v = cfg["hidden"], cfg["intermediate"], cfg["vocab"]
        hd = d // cfg["heads"]
        kv = cfg["kv_heads"] * hd
        mats = {"q/o": (d, d), "k/v": (kv, d), "gate/up": (f, d), "down": (d, f), "head": (v, d)}
        for name, (n, k) in mats.items():
            if quick and name in ("k/v", "head"):
                continue
            shapes.append({"model": m, "matrix": name, "N": n, "K": k})
    return shapes


def torch_dequant_fn(fmt: str, rows: np.ndarray, n: int, k: int):
    """A torch function dequantizing GGUF-layout rows with tensor ops (the 'dequantize then matmul' baseline)."""
    import torch

    info = quant.FORMATS[fmt]
    if info.super_block or info.kind.startswith("int5"):
        return None  # no torch-ops dequantizer for the K-quants and Q5: their rows get the torch-f32 baseline only
    g = info.group
    raw = torch.from_numpy(rows.copy()).reshape(n, k // g, info.block_bytes)
    d = raw[..., :2].contiguous().view(torch.float16).float()  # [n, blocks, 1]
    if info.kind == "int8_sym":
        q = raw[..., 2:].contiguous().view(torch.int8).float()
        return lambda: (q * d).reshape(n, k)
    off = 4 if info.kind == "int4_asym" else 2
    m = raw[..., 2:4].contiguous().view(torch.float16).float() if info.kind == "int4_asym" else None
    nib = raw[..., off:]

    def deq():
        lo = (nib & 0x0F).float()
        hi = (nib >> 4).float()
        q = torch.cat([lo, hi], dim=-1)
        w = q * d + m if m is not None else (q - 8) * d
        return w.reshape(n, k)

    return deq


def tier_loops(isa: str) -> tuple[str, dict[str, str]]:
    """The int8 probe of tier `isa` and its mix loops by format (csrc/kernels/roofline_mix.cpp)."""
    # attn_* loops are attention's products (benchmarks/attention.py), not quant formats
    peaks = [p for p in _core.roofline_peaks() if not p["format"].startswith("attn_")]
    mixes = {p["format"]: p["name"] for p in peaks if p["probe"] and p["isa"] == isa}
    probes = {p["probe"] for p in peaks if p["probe"] and p["isa"] == isa}
    if len(probes) == 1:
        return probes.pop(), mixes
    # a tier without mix loops: its best int8 probe
    int8 = [p["name"] for p in peaks if not p["probe"] and p["unit"] == "GOPS" and p["isa"] == isa]
    return (int8[0] if int8 else ""), mixes


def in_rounds(probe, mix, kernel_s, work: float, rounds: int = ROUNDS) -> dict:
    """`rounds` interleaved rounds of (probe, mix loop, kernel's median time): this host's bandwidth and peak drift
    by tens of percent within minutes, so every ratio is taken within a round and the median of the per-round
    ratios is reported, with a bootstrap 95% interval. `mix` may be None (no mix loop: stream rows)."""
    times, probes, fp, mc, fc = [], [], [], [], []
    for _ in range(rounds):
        p = probe()
        m = mix() if mix else None
        t = kernel_s()
        times.append(t)
        probes.append(p)
        fp.append(work / t / p)
        if m:
            mc.append(m / p)
            fc.append(work / t / m)
    out = {"median_s": statistics.median(times), "roofline_local": statistics.median(probes)}
    out["fraction_of_probe"], out["ci_low"], out["ci_high"] = median_ci(fp)
    if mc:
        med, lo, hi = median_ci(mc)
        out["mix_ceiling"], out["mix_ceiling_ci"] = med, [lo, hi]
        med, lo, hi = median_ci(fc)
        out["fraction_of_ceiling"], out["fraction_of_ceiling_ci"] = med, [lo, hi]
    return out


def load_targets() -> dict:
    suite = json.loads((ROOT / "configs" / "suites" / "kernels.json").read_text())
    return suite.get("targets", {})


def apply_target(row: dict, targets: dict) -> None:
    """target / target_met / missed_by on the rows configs/suites/kernels.json sets a target for: chunk-128 GEMM
    rows at one thread (judged on ci_low), and streaming GEMV rows at one thread of matrices of at least
    stream_1thread's min_bytes (judged on the median fraction of the read, as the target is stated)."""
    if row["mode"] == "stream":
        st = targets.get("stream_1thread")
        if st and row["threads"] == 1 and row["bytes"] >= st["min_bytes"]:
            t = st["fraction_of_read"]
            row["target"] = t
            row["target_met"] = row["fraction_of_probe"] >= t
            if not row["target_met"]:
                row["missed_by"] = round(t - row["fraction_of_probe"], 3)
        return
    t = targets.get("gemm_t128_1thread", {}).get(row["isa"], {}).get(row["format"])
    if t is None or row["kernel"] != "gemm" or row["T"] != 128 or row["threads"] != 1:
        return
    row["target"] = t
    row["target_met"] = row["ci_low"] >= t
    if not row["target_met"]:
        row["missed_by"] = round(t - row["ci_low"], 3)


def roofline(threads: list[int], quick: bool) -> dict:
    out = {}
    for t in threads:
        out[t] = {"read_gbps": _core.read_bandwidth(256 << 20 if quick else 1 << 30, t, 3)}
        for p in _core.roofline_peaks():
            out[t][p["name"]] = _core.measure_peak(p["name"], t, 3)
    return out


def bench_matrix(shape: dict, fmt: str, threads: int, roof: dict, quick: bool, repeat: int) -> list[dict]:
    import torch

    n, k = shape["N"], shape["K"]
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    rows = quant.quantize(w, fmt)
    packed = kernels.PackedWeights.from_rows(rows, fmt, n, k)
    wbytes = packed.nbytes
    isa = _core.active_isa()
    probe_name, mixes = tier_loops(isa)
    int8_peak = roof.get(probe_name, 0.0)
    targets = load_targets()
    rows_out = []
    wd = torch.from_numpy(quant.dequantize(rows, fmt, k))
    deq = torch_dequant_fn(fmt, rows, n, k)
    for t in (1, 128):
        x = rng.standard_normal((t, k)).astype(np.float32)
        xt = torch.from_numpy(x)
        modes = ["hot", "stream"] if t == 1 else ["hot"]
        for mode in modes:
            if mode == "stream":
                copies = max(2, int(2 * LLC_BYTES // wbytes) + 1)  # the stack is at least twice the LLC
                # Laid out as the engine lays out a model's weights: back to back in one arena of huge pages
                # (csrc/common/memory.h), which the read-bandwidth probe uses too.
                arena = kernels.WeightArena(copies * (wbytes + 64))
                stack = [kernels.PackedWeights.from_rows(rows, fmt, n, k, arena) for _ in range(copies)]
                # Timed call by call in C++, as the engine calls it and as the read probe runs: from Python each
                # call would also carry the interpreter's ~3 us, a quarter of a sub-megabyte GEMV.
                views = [p.data for p in stack]
                calls = max(repeat, copies)

                def kernel_s():
                    return float(np.median(_core.time_gemv_calls(views, fmt, n, k, x[0], calls)))
            else:
                def kernel_s():
                    return median_time(lambda: kernels.gemm(x, packed), repeat)
            # Streaming GEMV is bound by DRAM reads; cache-hot GEMV and GEMM by the int8 dot-product peak.
            flops = 2.0 * n * k * t
            work = wbytes / 1e9 if mode == "stream" else flops / 1e9
            if mode == "stream":
                probe = lambda: _core.read_bandwidth(256 << 20, threads, 3)  # noqa: E731  (8x the LLC)
                mix = None
            else:
                probe = lambda: _core.measure_peak(probe_name, threads, PROBE_REPS, PROBE_SECONDS)  # noqa: E731
                mix = None
                loop = mixes.get(MIX_OF.get(fmt, fmt))
                if loop:
                    mix = lambda: _core.measure_peak(loop, threads, PROBE_REPS, PROBE_SECONDS)  # noqa: E731
            r = in_rounds(probe, mix, kernel_s, work)
            s, local, frac = r["median_s"], r["roofline_local"], r["fraction_of_probe"]
            gbps = wbytes / s / 1e9
            base = {"kernel": "gemv" if t == 1 else "gemm", "format": fmt, "K": k, "N": n, "T": t,
                    "threads": threads, "mode": mode, "isa": isa, "bytes": wbytes, "median_s": s, "gbps": gbps,
                    "gflops": flops / s / 1e9, "roofline_fraction": frac, "roofline_local": local,
                    "roofline_run": roof["read_gbps"] if mode == "stream" else int8_peak,
                    "model": shape["model"], "matrix": shape["matrix"], "hugepages": _core.hugepage_advice(),
                    "decode_prefetch": "l2" if _core.decode_prefetch_l2() else "l1",
                    "avx512_decode_tile": _avx512_decode_tile(fmt) if isa == "avx512" else None,
                    "decode_scales_last": _core.decode_scales_last(),
                    "timed_in": "c++" if mode == "stream" else "python", "rounds": ROUNDS,
                    "probe": "read_256MB" if mode == "stream" else probe_name,
                    **{k: v for k, v in r.items() if k not in ("median_s", "roofline_local")}}
            apply_target(base, targets)
            if mode == "hot" and t == 128 and _core.has_gemm_i16(fmt):
                rows_out.append(int16_row(base, fmt, x, packed, xt, wd, repeat))
            if mode == "stream":
                for switch, (get, _, applies, names) in DECODE_SWITCHES.items():
                    if applies(fmt, isa):
                        rows_out.append(switch_row(base, fmt, kernel_s, switch, names[not get()]))
            for variant in VARIANTS:
                if mode == "hot" and t == 128 and f"{fmt}_{variant}" in mixes:
                    rows_out.append(variant_row(base, fmt, variant, x, packed, probe, mixes, threads, work, repeat))
            if mode == "hot":
                s_f32 = median_time(lambda: torch.nn.functional.linear(xt, wd), repeat)
                rows_out.append({**base, "baseline": "torch-f32", "speedup_vs_baseline": s_f32 / s})
                if deq is not None:
                    s_deq = median_time(lambda: torch.nn.functional.linear(xt, deq()), repeat)
                    rows_out.append({**base, "baseline": "torch-deq", "speedup_vs_baseline": s_deq / s})
            else:
                rows_out.append({**base, "baseline": "roofline", "speedup_vs_baseline": frac})
    return rows_out


# A/B variants of the AVX-512 tier's kernels, each with its own mix loop (<format>_<variant>): the switch's getter,
# its setter, and the value that runs the variant instead of the shipped kernel.
VARIANTS = {
    "signtrick": (_core.int8_sign_trick, _core.set_int8_sign_trick, True),  # int8 tiles: the former sign trick
    "pairs": (_core.avx512_quads, _core.set_avx512_quads, False),  # prefill on the decode's panel-pair tile
}


def variant_row(base: dict, fmt: str, variant: str, x, packed, probe, mixes: dict, threads: int, work: float,
                repeat: int) -> dict:
    """The same GEMM with one of the AVX-512 tier's A/B switches turned to `variant` (VARIANTS), with its own mix
    loop: the A/B of the shipped kernel in this run. speedup_vs_baseline is this variant's speed over the shipped
    kernel's (below 1 when the shipped one is faster): the median of per-round ratios, each round timing both
    kernels back to back in alternating order, with a bootstrap 95% interval (speedup_ci)."""
    get, set_, on = VARIANTS[variant]

    def timed(use_variant: bool) -> float:
        saved = get()
        set_(on if use_variant else not on)
        try:
            return median_time(lambda: kernels.gemm(x, packed), repeat)
        finally:
            set_(saved)

    mix = lambda: _core.measure_peak(mixes[f"{fmt}_{variant}"], threads, PROBE_REPS, PROBE_SECONDS)  # noqa: E731
    r = in_rounds(probe, mix, lambda: timed(True), work)
    ratios = []
    for i in range(ROUNDS):
        order = (False, True) if i % 2 == 0 else (True, False)
        t = {v: timed(v) for v in order}
        ratios.append(t[False] / t[True])
    speedup, lo, hi = median_ci(ratios)
    row = {**{k: v for k, v in base.items() if k not in ("target", "target_met", "missed_by")}, **r,
           "format": f"{fmt}_{variant}", "roofline_fraction": r["fraction_of_probe"],
           "roofline_local": r["roofline_local"], "gflops": work / r["median_s"],
           "gbps": base["gbps"] * base["median_s"] / r["median_s"], "baseline": fmt,
           "speedup_vs_baseline": speedup, "speedup_ci": [lo, hi]}
    return row


def _avx512_decode_tile(fmt: str) -> str | None:
    """The AVX-512 tier's tile for a one-token product of fmt ("pairs" or the AVX2 "one-panel" tile), where the
    avx512_pair_decode switch can move it (kernels.h)."""
    if fmt in ("q4_0", "q4_0_g64", "q4_0_g128"):
        return "pairs" if _core.avx512_pair_decode() else "one-panel"
    if fmt in ("q8_0", "q8_0_g64", "q8_0_g128"):
        one_panel = not _core.avx512_pair_decode() and _core.decode_scales_last()
        return "one-panel" if one_panel else "pairs"
    return None


# One-token A/B switches, each timed against the shipped setting on the streaming rows where it changes the kernel:
# name -> (getter, setter, applies(fmt, isa), the row's format suffix for the setting off / on).
DECODE_SWITCHES = {
    # the AVX-512 tier's Q4_0 / Q8_0 tile: its panel pairs or the AVX2 one-panel tile (kernels.h)
    "avx512_pair_decode": (_core.avx512_pair_decode, _core.set_avx512_pair_decode,
                           lambda fmt, isa: isa == "avx512" and (fmt in ("q4_0", "q4_0_g64", "q4_0_g128") or (
                               fmt in ("q8_0", "q8_0_g64", "q8_0_g128") and _core.decode_scales_last())),
                           ("one_panel_decode", "pair_decode")),
    # the AVX2 tier's one-panel Q8_0 tile reading its panels front to back with the scales last where K fits, and
    # past that prefetching the next panel's scales (the companion "_scales_per_block" row: neither); on the AVX-512
    # tier the switch off sends Q8_0 back to the pair tile (the row above)
    "decode_scales_last": (_core.decode_scales_last, _core.set_decode_scales_last,
                           lambda fmt, isa: isa == "avx2" and fmt in ("q8_0", "q8_0_g64", "q8_0_g128"),
                           ("scales_per_block", "scales_last")),
    # the AVX-512 tier's own one-token Q6_K kernel (vpternlogd levels, vpdpwssd scales) or the AVX2 tier's, which it
    # replaced: the companion row runs the whole product on the AVX2 tier
    "avx512_q6_k_decode": (lambda: _core.active_isa() == "avx512",
                           lambda on: _core.set_active_isa("avx512" if on else "avx2"),
                           lambda fmt, isa: isa == "avx512" and fmt == "q6_k",
                           ("avx2_decode", "avx512_decode")),
}


def _switched_fields(switch: str, base: dict, on: bool) -> dict:
    """What a companion row of DECODE_SWITCHES ran, in the row's own fields."""
    if switch == "avx512_pair_decode":
        return {"avx512_decode_tile": "one-panel" if base.get("avx512_decode_tile") == "pairs" else "pairs"}
    if switch == "avx512_q6_k_decode":
        return {"isa": "avx512" if on else "avx2"}
    return {"decode_scales_last": on}


def switch_row(base: dict, fmt: str, kernel_s, switch: str, name: str) -> dict:
    """The streaming one-token product with one of DECODE_SWITCHES set the other way from its default: format
    <fmt>_<name>; speedup_vs_baseline is that kernel's speed over the shipped one's (below 1 when the shipped one is
    faster): the median of per-round ratios, each round timing both back to back in alternating order, with a
    bootstrap 95% interval (speedup_ci)."""
    get, set_, _, _ = DECODE_SWITCHES[switch]
    shipped = get()

    def timed(other: bool) -> float:
        set_(shipped != other)
        try:
            return kernel_s()
        finally:
            set_(shipped)

    ratios, times = [], []
    for i in range(ROUNDS):
        order = (False, True) if i % 2 == 0 else (True, False)
        t = {v: timed(v) for v in order}
        ratios.append(t[False] / t[True])
        times.append(t[True])
    speedup, lo, hi = median_ci(ratios)
    s = float(np.median(times))
    # the shipped kernel's in-round fractions do not describe this one: dropped
    own = ("target", "target_met", "missed_by", "fraction_of_probe", "ci_low", "ci_high", "roofline_fraction",
           "roofline_local", "mix_ceiling", "mix_ceiling_ci", "fraction_of_ceiling", "fraction_of_ceiling_ci")
    return {**{k: v for k, v in base.items() if k not in own},
            "format": f"{fmt}_{name}", "median_s": s, "gbps": base["gbps"] * base["median_s"] / s,
            "switch": switch, "switch_on": not shipped,
            **_switched_fields(switch, base, not shipped),
            "baseline": fmt, "speedup_vs_baseline": speedup, "speedup_ci": [lo, hi]}


def int16_row(base: dict, fmt: str, x, packed, xt, wd, repeat: int) -> dict:
    """int16 activations, the chunk's product in one pass (kernels.gemm_i16: x rounded to int16 per group, the
    weights' levels widened to int16, vpmaddwd) against the two int8 passes the engine runs otherwise: one int8
    GEMM over 2T rows, x and its quantization residual (the residual's computation is not timed, which favours the
    two passes). speedup_vs_baseline: the median of per-round ratios (two passes' time over one pass's), each round
    timing both back to back in alternating order, with a bootstrap 95% interval (speedup_ci); speedup_vs_torch
    the same against torch float32 on the dequantized weights."""
    import torch

    x2 = np.concatenate([x, x * np.float32(1 / 254)])  # the residual's rows: same shape, smaller values
    variants = {"one": lambda: kernels.gemm_i16(x, packed), "two": lambda: kernels.gemm(x2, packed),
                "torch": lambda: torch.nn.functional.linear(xt, wd)}
    ratios, vs_torch, ones = [], [], []
    for i in range(ROUNDS):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        t = {v: median_time(variants[v], repeat) for v in order}
        ratios.append(t["two"] / t["one"])
        vs_torch.append(t["torch"] / t["one"])
        ones.append(t["one"])
    s = statistics.median(ones)
    speedup, lo, hi = median_ci(ratios)
    st, slo, shi = median_ci(vs_torch)
    keep = ("kernel", "K", "N", "T", "threads", "mode", "isa", "model", "matrix", "hugepages", "timed_in")
    return {**{k: base[k] for k in keep}, "kernel": "gemm_i16", "format": fmt, "median_s": s,
            "gbps": base["gbps"] * base["median_s"] / s, "gflops": 2.0 * base["N"] * base["K"] * base["T"] / s / 1e9,
            "roofline_fraction": 0.0, "rounds": ROUNDS, "baseline": "two-int8-passes", "speedup_vs_baseline": speedup,
            "speedup_ci": [lo, hi], "speedup_vs_torch": st, "speedup_vs_torch_ci": [slo, shi]}


# --int16: where one int16 pass pays against two int8 passes (kernels::gemm_i16_pays): the ViT's q8_0 shapes
# (SigLIP so400m: 1152 -> 1152, 1152 -> 4304, 4304 -> 1152, that K stored padded to 4320 as packages store it) from
# 4 to 729 tokens (a tile), and SmolLM2's q4_0 ones.
INT16_SWEEP = [("q8_0", 1152, 1152, (4, 8, 16, 32, 128, 729)), ("q8_0", 4304, 1152, (729,)), ("q8_0", 1152, 4320, (729,)),
               ("q8_0", 576, 576, (128,)), ("q4_0", 576, 576, (128,)), ("q4_0", 1536, 576, (128,)),
               ("q4_0", 576, 1536, (128,))]


def bench_int16_sweep(threads: int, repeat: int) -> list[dict]:
    import torch

    rows = []
    rng = np.random.default_rng(3)
    for fmt, n, k, ts in INT16_SWEEP:
        if not _core.has_gemm_i16(fmt):
            continue
        w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
        qrows = quant.quantize(w, fmt)
        packed = kernels.PackedWeights.from_rows(qrows, fmt, n, k)
        wd = torch.from_numpy(quant.dequantize(qrows, fmt, k))
        for t in ts:
            x = rng.standard_normal((t, k)).astype(np.float32)
            base = {"kernel": "gemm", "K": k, "N": n, "T": t, "threads": threads, "mode": "hot",
                    "isa": _core.active_isa(), "model": "int16-sweep", "matrix": f"{n}x{k}",
                    "hugepages": _core.hugepage_advice(), "timed_in": "python", "gbps": 0.0, "median_s": 1.0}
            rows.append(int16_row(base, fmt, x, packed, torch.from_numpy(x), wd, repeat))
    return rows


def bench_downsample(threads: int, repeat: int) -> list[dict]:
    """27x27x1152 tile -> 14x14 tokens of 4608 -> LayerNorm -> linear to 2304 (q8_0), fused, vs torch."""
    import torch

    rng = np.random.default_rng(1)
    x = rng.standard_normal((27, 27, 1152)).astype(np.float32)
    w = (rng.standard_normal((2304, 4608)) * 0.02).astype(np.float32)
    gamma, beta = np.ones(4608, np.float32), np.zeros(4608, np.float32)
    bias = np.zeros(2304, np.float32)
    p = kernels.pack(w, "q8_0")
    s = median_time(lambda: kernels.downsample_linear(x, p, gamma, beta, bias), repeat)
    xt, wt = torch.from_numpy(x), torch.from_numpy(quant.dequantize(quant.quantize(w, "q8_0"), "q8_0", 4608))
    ln = torch.nn.LayerNorm(4608)

    def torch_path():
        y = torch.nn.functional.pad(xt, (0, 0, 0, 1, 0, 1)).reshape(14, 2, 14, 2, 1152).permute(0, 2, 1, 3, 4)
        return torch.nn.functional.linear(ln(y.reshape(196, 4608)), wt)

    with torch.no_grad():
        s_t = median_time(torch_path, repeat)
    s_ds = median_time(lambda: kernels.downsample_2x2(x), repeat)
    moved = 2 * 14 * 14 * 4608 * 4
    flops = 2.0 * 196 * 4608 * 2304
    base = {"kernel": "downsample", "format": "q8_0", "K": 4608, "N": 2304, "T": 196, "threads": threads,
            "mode": "hot", "isa": _core.active_isa(), "model": "bluelm-v-3b", "matrix": "projector"}
    return [{**base, "median_s": s, "gbps": 0.0, "gflops": flops / s / 1e9, "roofline_fraction": 0.0,
             "baseline": "torch-f32", "speedup_vs_baseline": s_t / s},
            {**base, "kernel": "downsample_2x2", "format": "f32", "N": 4608, "median_s": s_ds,
             "gbps": moved / s_ds / 1e9, "gflops": 0.0, "roofline_fraction": 0.0, "baseline": "none",
             "speedup_vs_baseline": 1.0}]


def main(argv=None) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and copies (a minute)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--formats", default=",".join(FORMATS), help="weight formats to run (default: all)")
    ap.add_argument("--int16", action="store_true",
                    help="only the one-pass int16 GEMM against two int8 passes, on the ViT's and SmolLM2's shapes")
    args = ap.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    for f in formats:
        quant.format_info(f)  # an unknown name is an error naming the known ones
    threads = [int(t) for t in args.threads.split(",")]
    console = Console(width=170)
    if args.int16:
        return int16_main(threads, args.repeat, args.json, console)
    roof = roofline(threads, args.quick)
    for t, r in roof.items():
        console.print(f"roofline, {t} thread(s): " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))
    console.print(f"huge-page advice for weights and the bandwidth probe: {'on' if _core.hugepage_advice() else 'off'}"
                  " (BLUELM_HUGEPAGES=0 turns it off)")
    console.print(f"decode prefetch into {'L2' if _core.decode_prefetch_l2() else 'L1'}"
                  " (BLUELM_DECODE_PREFETCH=l1|l2 overrides the CPU's default)")
    if _core.active_isa() == "avx512":
        console.print("AVX-512 one-token Q4_0 / Q8_0 products on the "
                      f"{'pair' if _core.avx512_pair_decode() else 'one-panel (AVX2)'} tile")
    console.print(f"one-panel Q8_0 decode tile: scales {'last' if _core.decode_scales_last() else 'per block'}"
                  " where K fits")
    rows = []
    shapes = load_shapes(args.quick)
    from tqdm import tqdm

    jobs = [(s, f, t) for t in threads for s in shapes for f in formats if s["K"] % quant.FORMATS[f].group == 0]
    for shape, fmt, t in tqdm(jobs, desc="kernels", unit="case"):
        kernels.set_num_threads(t)
        torch.set_num_threads(t)
        rows += bench_matrix(shape, fmt, t, roof[t], args.quick, args.repeat)
    for t in threads:
        kernels.set_num_threads(t)
        torch.set_num_threads(t)
        rows += bench_downsample(t, args.repeat)
    table = Table(title=f"kernels on {_core.active_isa()} (medians; stream = weights from DRAM)")
    for c in ("model", "matrix", "kernel", "fmt", "N x K", "T", "thr", "mode", "time", "GB/s", "GFLOP/s",
              "of probe [ci]", "mix ceiling", "of ceiling", "target", "baseline", "speedup"):
        table.add_column(c, justify="right")
    for r in rows:
        probe = f"{r['fraction_of_probe']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if "ci_low" in r else ""
        target = ""
        if "target" in r:
            target = f"{r['target']:.2f} met" if r["target_met"] else f"{r['target']:.2f} short {r['missed_by']:.2f}"
        table.add_row(r["model"], r["matrix"], r["kernel"], r["format"], f"{r['N']}x{r['K']}", str(r["T"]),
                      str(r["threads"]), r["mode"], f"{r['median_s'] * 1e3:.3f} ms", f"{r['gbps']:.1f}",
                      f"{r['gflops']:.1f}", probe, f"{r['mix_ceiling']:.2f}" if "mix_ceiling" in r else "",
                      f"{r['fraction_of_ceiling']:.2f}" if "fraction_of_ceiling" in r else "", target,
                      r["baseline"], f"{r['speedup_vs_baseline']:.2f}x")
    console.print(table)
    console.print("llama.cpp on the reference machine (Zen 5, AVX-512; not this run): q4_0 GEMV 12.5 GB/s "
                  "(1 thread) / 24.9 GB/s (2), q4_0 GEMM 128 columns ~105 / ~208 GFLOP/s (docs/sources.md)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        console.print(f"wrote {len(rows)} rows to {args.json}")
    return 0


def int16_main(threads: list[int], repeat: int, json_path, console) -> int:
    import torch
    from rich.table import Table

    rows = []
    for t in threads:
        kernels.set_num_threads(t)
        torch.set_num_threads(t)
        rows += bench_int16_sweep(t, repeat)
    table = Table(title=f"int16 activations on {_core.active_isa()}: one pass (gemm_i16) against two int8 passes "
                        f"(medians of {ROUNDS} interleaved rounds; 95% bootstrap intervals)")
    for c in ("fmt", "N x K", "T", "thr", "one pass", "GOPS", "vs two passes", "vs torch f32"):
        table.add_column(c, justify="right")
    for r in rows:
        ci, cit = r["speedup_ci"], r["speedup_vs_torch_ci"]
        table.add_row(r["format"], f"{r['N']}x{r['K']}", str(r["T"]), str(r["threads"]),
                      f"{r['median_s'] * 1e3:.3f} ms", f"{r['gflops']:.1f}",
                      f"{r['speedup_vs_baseline']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]",
                      f"{r['speedup_vs_torch']:.2f}x [{cit[0]:.2f}, {cit[1]:.2f}]")
    console.print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
        console.print(f"wrote {len(rows)} rows to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
