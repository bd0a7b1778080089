"""Shared helpers for the benchmarks: medians of repeated timings, a rich table, JSON rows."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable


def time_call(fn: Callable[[], object], repeat: int = 7, warmup: int = 1, min_time: float = 0.0) -> dict:
    """Median and spread of `repeat` timed calls (after `warmup` untimed ones)."""
    for _ in range(warmup):
        fn()
    samples = []
    t_end = time.perf_counter() + min_time
    while len(samples) < repeat or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(samples),
        "mean_s": statistics.fmean(samples),
        "stdev_s": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "n": len(samples),
    }


def write_json(rows: list[dict], path: str | Path | None) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))
        print(f"wrote {len(rows)} rows to {path}")


def median_ci(samples, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The median of `samples` and a bootstrap 95% percentile interval of it (`draws` resamples with replacement)."""
    import numpy as np

    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("median_ci needs at least one sample")
    rng = np.random.default_rng(seed)
    meds = np.sort(np.median(x[rng.integers(0, x.size, (draws, x.size))], axis=1))
    return float(np.median(x)), float(meds[int(0.025 * draws)]), float(meds[int(0.975 * draws) - 1])
