"""Measurements of this machine for its device profile (configs/devices/this-cpu.json), and measured CPU prefill
per chunk size through the native engine.

``measure_host`` times DRAM read and copy bandwidth (numpy, one slice of a large buffer per thread) and an fp32
GEMM (numpy's BLAS); ``write_host_profile`` stores them in the profile with the date and the host. These are
small, honest measurements, not peaks: the kernels benchmark (benchmarks/kernels.py) measures the int8 and bf16
kernels and may overwrite the profile's numbers.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np


def measure_cpu_prefill(chunks: list[int], model: str = "bluelm-v-3b", prompt_tokens: int = 2048,
                        threads: Optional[int] = None, package_dir: Optional[os.PathLike] = None,
                        repeats: int = 1, progress: bool = False, record: Optional[dict] = None,
                        attention: Optional[dict] = None) -> dict[int, float]:
    """Measured CPU prefill seconds on this machine per chunk size, through the native engine.

    ``model`` is a model package folder, a checkpoint ``bluelm-v run`` takes (a .gguf file, an HF folder, the
    ``smollm2-135m-gguf`` alias; packaged once into the cache), or a config name (``bluelm-v-3b``, ``smollm2-135m``,
    ``tiny``) whose package with seeded random q4_0 weights is written once to ``package_dir`` (default
    ``$BLUELM_CACHE/packages/<model>-q4_0-<key>``, as ``cached_package`` keys them). The prompt is ``prompt_tokens`` random text tokens;
    each chunk size runs the whole prefill ``repeats`` times on a fresh KV cache and the best time is kept.
    ``record``, when given, is filled with what was measured: model, package folder, prompt tokens, the engine's
    thread count, repeats and this CPU's name (what a result file should say beside the times).

    ``attention`` (a dict) is filled per chunk size with the measured attention over earlier chunks: the prefill
    time minus that of the same chunks each run alone on an empty cache (so a chunk attends only its own causal
    triangle; everything else a chunk computes is the same). That is the term the simulator's ``attention`` gives
    minus its own-chunk part (``ChunkRow.attention_cross_s``).
    """
    from bluelm_v import kernels
    from bluelm_v.engine import Engine
    from bluelm_v._paths import resolve_model_spec
    from bluelm_v.export.cached import cached_package
    from bluelm_v.export.package import package

    if not chunks or any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunk sizes must be positive integers, got {chunks}")
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be positive, got {prompt_tokens}")
    path, random_weights = Path(model), False
    spec = resolve_model_spec(str(model))
    if not (path / "manifest.json").is_file() and Path(spec).exists():  # a GGUF, an HF folder, the SmolLM2 alias
        path = cached_package(spec)
    elif not (path / "manifest.json").is_file():
        random_weights = True
        if package_dir:
            path = Path(package_dir)
            if not (path / "manifest.json").is_file():
                package(model, path, quant="q4_0", vit_quant="q8_0", random=True)
        else:  # seeded random q4_0 weights, cached under a key that covers the package writer's code
            path = cached_package(model, quant="q4_0", vit_quant="q8_0")
    engine = Engine(path, threads=threads, context=prompt_tokens)
    if record is not None:
        record.update(model=str(model), package=str(path),
                      weights="seeded random q4_0" if random_weights else "package",
                      prompt_tokens=int(prompt_tokens), threads=kernels.get_num_threads(), repeats=int(repeats),
                      cpu=_cpu_name(), how="native engine, best of repeats per chunk size on a fresh KV cache")
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.integers(16, min(engine._e.vocab, 30000), prompt_tokens)]
    out: dict[int, float] = {}
    it = chunks
    if progress:
        from tqdm import tqdm

        it = tqdm(chunks, desc="measured CPU prefill", unit="chunk size", leave=False)
    for c in it:
        session = engine.session()

        def run(c=c, session=session):
            session.reset()
            session.prefill(ids, chunk=int(c))

        out[int(c)] = _best(run, repeats)
        if attention is not None:
            def alone(c=c, session=session):
                for i in range(0, len(ids), int(c)):
                    session.reset()
                    session.prefill(ids[i:i + int(c)], chunk=int(c))

            attention[int(c)] = max(0.0, out[int(c)] - _best(alone, repeats))
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure_bandwidth(nbytes: int = 1 << 30, threads: Optional[int] = None, repeats: int = 5) -> dict[str, float]:
    """DRAM read bandwidth (a max-reduction over a float64 buffer, which numpy vectorizes fully) and copy
    bandwidth (bytes read + written), bytes/s, on 1 thread and on ``threads`` threads working on disjoint slices
    (numpy releases the GIL in these loops). The best of ``repeats`` runs of the better thread count."""
    threads = threads or os.cpu_count() or 1
    n = max(nbytes // 8, threads * 1024)
    a = np.ones(n, dtype=np.float64)
    b = np.empty_like(a)
    best = {"read": 0.0, "copy": 0.0, "threads": 1.0}
    for k in sorted({1, threads}):
        bounds = np.linspace(0, n, k + 1).astype(int)
        parts = [(a[lo:hi], b[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
        with ThreadPoolExecutor(k) as pool:
            read = a.nbytes / _best(lambda: list(pool.map(lambda p: p[0].max(), parts)), repeats)
            copy = 2 * a.nbytes / _best(lambda: list(pool.map(lambda p: np.copyto(p[1], p[0]), parts)), repeats)
        if read > best["read"]:
            best = {"read": read, "copy": max(copy, best["copy"]), "threads": float(k)}
        else:
            best["copy"] = max(copy, best["copy"])
    return best


def measure_gemm(n: int = 1536, repeats: int = 5) -> float:
    """fp32 GEMM throughput (FLOP/s) of numpy's BLAS on n x n matrices, best of ``repeats``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    y = rng.standard_normal((n, n), dtype=np.float32)
    x @ y  # warm-up (threads, pages)
    return 2.0 * n ** 3 / _best(lambda: x @ y, repeats)


def measure_host(quick: bool = False) -> dict:
    """Bandwidth and fp32 GEMM of this machine, with when and where they were measured."""
    bw = measure_bandwidth(1 << 28 if quick else 1 << 30, repeats=3 if quick else 5)
    gemm = measure_gemm(768 if quick else 1536, repeats=3 if quick else 5)
    return {
        "read_bandwidth": bw["read"], "copy_bandwidth": bw["copy"], "threads": int(bw["threads"]), "fp32_gemm": gemm,
        "cpu": _cpu_name(), "date": _dt.date.today().isoformat(), "quick": quick,
    }


def write_host_profile(result: dict, path: Optional[Path] = None) -> Path:
    """Store a ``measure_host`` result in configs/devices/this-cpu.json (the measured fields only)."""
    from bluelm_v.config import config_path

    path = Path(path) if path else config_path("devices", "this-cpu")
    raw = json.loads(path.read_text(encoding="utf-8"))
    when = f"{result['date']} on {result['cpu']} ({result['threads']} threads)"
    by = "bluelm_v.sim.measure (benchmarks/device_profile.py --write)"
    # The copy moves read + written bytes; numpy's read-only reduction can be compute-limited, so the larger of
    # the two is the traffic the memory system was seen to sustain.
    traffic = max(result["read_bandwidth"], result["copy_bandwidth"])
    raw["dram_bandwidth"] = {
        "value": round(traffic / 1e9, 2), "unit": "GB/s", "source": "measured",
        "note": f"larger of numpy read (max-reduction, {result['read_bandwidth'] / 1e9:.1f} GB/s) and copy "
                f"(read + write, {result['copy_bandwidth'] / 1e9:.1f} GB/s) over a 1 GiB buffer, best of 1 thread and "
                f"all threads, best of 5 runs; {when}; by {by}",
    }
    peak = raw["cpu"]["peak"]
    fp32 = result["fp32_gemm"] / 1e9
    peak["fp32"] = {"value": round(fp32, 1), "unit": "GFLOPS", "source": "measured",
                    "note": f"numpy/BLAS sgemm 1536^3, best of 5 (an achieved rate, used as the peak); {when}"}
    peak["fp16"] = {"value": round(fp32, 1), "unit": "GFLOPS", "source": "assumed",
                    "note": "no native fp16 arithmetic on x86 without AVX512-FP16: the fp32 rate"}
    peak["int8"] = {"value": round(4 * fp32, 1), "unit": "GOPS", "source": "assumed",
                    "note": "4x the measured fp32 rate (an int8 dot product packs 4x the lanes of an fp32 FMA); "
                            "to be replaced by benchmarks/kernels.py"}
    raw["measured"] = {"date": result["date"], "host": result["cpu"], "threads": str(result["threads"]), "by": by,
                       "copy_bandwidth_GBps": f"{result['copy_bandwidth'] / 1e9:.2f}"}
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["measure_bandwidth", "measure_cpu_prefill", "measure_gemm", "measure_host",
           "write_host_profile"]
