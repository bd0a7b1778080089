"""bluelm-v bench --model MODEL [-p 512] [-n 128] [-r 5] [-t 1,2] [--json]: llama-bench's table for the native engine.

MODEL is a package, a .gguf file, an HF folder, a config name or ``smollm2-135m-gguf`` (packaged once into the
cache). ``ppN`` prefills N prompt tokens from an empty cache in the package's chunks; ``tgN`` generates N tokens
one decode step at a time after a one-token prompt; each is repeated ``-r`` times after one warm-up and reported as
mean +- standard deviation of tokens/s, as llama-bench does. Prompt tokens are drawn with a fixed seed from the
vocabulary's ordinary tokens; the answer is not the point, the speed is.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="model package, .gguf file, HF folder, config name or smollm2-135m-gguf")
    p.add_argument("--quant", default="q4_0", help="weights of a package made from --model (default q4_0)")
    p.add_argument("--n-prompt", "-p", type=int, default=512, help="prompt tokens of the pp test (0: none)")
    p.add_argument("--n-gen", "-n", type=int, default=128, help="generated tokens of the tg test (0: none)")
    p.add_argument("--repetitions", "-r", type=int, default=5)
    p.add_argument("--threads", "-t", default=None, help="comma-separated thread counts (default: all cores)")
    p.add_argument("--chunk", type=int, help="prefill chunk t (default: the package's)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--no-progress", action="store_true")


def _threads(text: str | None) -> list[int | None]:
    if text is None:
        return [None]
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--threads takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--threads must be positive integers, got {text!r}")
    return values


def _rate(samples: list[float], tokens: int) -> dict:
    rates = [tokens / s for s in samples]
    return {"tokens_per_s": statistics.fmean(rates), "stddev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            "samples_s": samples}


def bench_engine(engine, n_prompt: int, n_gen: int, repetitions: int, seed: int = 0) -> list[dict]:
    """pp and tg rows for one engine (see the module doc)."""
    import numpy as np

    vocab = engine_vocab(engine)
    rng = np.random.default_rng(seed)
    # ordinary tokens only: the first ids of a vocabulary are its specials, the image placeholder among them
    low = min(256, vocab // 2)
    s = engine.session()
    rows = []
    if n_prompt:
        ids = [int(x) for x in rng.integers(low, vocab, n_prompt)]
        times = []
        for r in range(repetitions + 1):
            s.reset()
            t0 = time.perf_counter()
            s.prefill(ids)
            if r:  # the first run warms caches and pages in the weights
                times.append(time.perf_counter() - t0)
        rows.append({"test": f"pp{n_prompt}", **_rate(times, n_prompt)})
    if n_gen:
        times = []
        for r in range(repetitions + 1):
            s.reset()
            logits = s.prefill([low])
            token = int(np.argmax(logits))
            t0 = time.perf_counter()
            for _ in range(n_gen):
                token = int(np.argmax(s.decode(token)))
            if r:
                times.append(time.perf_counter() - t0)
        rows.append({"test": f"tg{n_gen}", **_rate(times, n_gen)})
    return rows


def weights_format(manifest: dict) -> str:
    """The format holding most of the weights' bytes (a GGUF's own Q4_1 stays Q4_1 in its package)."""
    by_format: dict[str, int] = {}
    for t in manifest.get("tensors", {}).values():
        by_format[t["format"]] = by_format.get(t["format"], 0) + int(t["bytes"])
    return max(by_format, key=by_format.get) if by_format else manifest["quantization"]["llm"]


def engine_vocab(engine) -> int:
    manifest = json.loads((engine.path / "manifest.json").read_text(encoding="utf-8"))
    return int(manifest["model"]["llm"]["vocab"])


def run(args: argparse.Namespace) -> int:
    from bluelm_v import _core
    from bluelm_v.engine import Engine
    from bluelm_v.export.cached import cached_package
    from bluelm_v.kernels import get_num_threads

    for flag, value in (("--n-prompt", args.n_prompt), ("--n-gen", args.n_gen)):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0, got {value}")
    if args.repetitions < 1:
        raise ValueError(f"--repetitions must be at least 1, got {args.repetitions}")
    if not args.n_prompt and not args.n_gen:
        raise ValueError("nothing to measure: --n-prompt and --n-gen are both 0")
    threads = _threads(args.threads)
    pkg = cached_package(args.model, quant=args.quant, progress=not args.no_progress)
    manifest = json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))
    size = (pkg / "weights.bin").stat().st_size
    name = f"{manifest['model'].get('name', pkg.name)} {weights_format(manifest)}"
    out = []
    for t in threads:
        engine = Engine(pkg, threads=t, chunk=args.chunk, context=max(args.n_prompt, 1) + args.n_gen + 1)
        used = get_num_threads()  # what ran, also when --threads was left to the default (all cores)
        for row in bench_engine(engine, args.n_prompt, args.n_gen, args.repetitions):
            out.append({"model": name, "package": str(pkg), "size_bytes": size,
                        "backend": f"CPU ({_core.active_isa()})", "threads": used, "chunk": engine.chunk, **row})
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print("| model | size | backend | threads | test | t/s |")
    print("|---|---:|---|---:|---:|---:|")
    for r in out:
        print(f"| {r['model']} | {r['size_bytes'] / 2**20:.2f} MiB | {r['backend']} | {r['threads']} | {r['test']} | "
              f"{r['tokens_per_s']:.2f} ± {r['stddev']:.2f} |")
    print(f"\n{args.repetitions} repetitions after one warm-up; {pkg}", file=sys.stderr)
    return 0
