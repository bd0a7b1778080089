"""The LLM graphs of a real checkpoint compiled for a Snapdragon's HTP and measured on onnxruntime-qnn's emulator:
too slow for the test suite (tens of minutes on 2 shared cores), so its figures live in docs/export.md.

    python benchmarks/export_qnn.py [--model smollm2-135m-gguf] [--soc sm8650] [--weights int4,int8]
                                    [--rounding gptq] [--chunk 32] [--max-context 128] [--json reports.json]

For each weight setting: the float export (chunk T, max_context), then bluelm_v.export.qnn_llm.compile_llm:
uint16 activations calibrated on configs/suites/npu-prompts.json, MatMul weights rounded by --rounding (GPTQ on the
same prompts by default) with the output head int8, compilation with CPU fallback allowed (so the
report shows what QNN left, if anything), cosine against float ONNX Runtime and teacher-forced greedy agreement
against the PyTorch reference over the held-out prompts. Prints one row per graph.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from bluelm_v._paths import resolve_model_spec
    from bluelm_v.export import export_onnx
    from bluelm_v.export.qnn_llm import compile_llm
    from bluelm_v.models.reference import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-gguf")
    ap.add_argument("--soc", default="sm8650")
    ap.add_argument("--weights", default="int4,int8")
    ap.add_argument("--rounding", default="gptq", help="gptq, mse or minmax (bluelm_v.export.qnn_weights)")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--max-context", type=int, default=128)
    ap.add_argument("--json", help="write every report here")
    args = ap.parse_args(argv)
    loaded = load_model(resolve_model_spec(args.model))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        float_dir = export_onnx(loaded, Path(tmp) / "float", chunk=args.chunk, tile_batch=1,
                                max_context=args.max_context, quant="fp32")
        for weights in args.weights.split(","):
            t0 = time.perf_counter()
            reports = compile_llm(loaded, float_dir, Path(tmp) / weights, soc=args.soc, weights=weights,
                                  rounding=args.rounding, allow_fallback=True)
            for graph, r in reports.items():
                r.pop("io_quantization", None)
                r["wall_s"] = round(time.perf_counter() - t0, 1)
                rows[f"{weights}/{graph}"] = r
                print(f"{args.model} {weights:5s} {args.rounding:6s} {graph:12s} nodes {r['nodes_on_qnn']}/{r['nodes']} "
                      f"context {r['context_bytes'] / 1e6:.1f} MB compile {r['compile_s']:.1f} s "
                      f"cosine {r['cosine']:.4f} max|err| {r['max_abs_err']:.3g} "
                      f"greedy agreement {r['greedy_agreement']:.3f} ({r['agreement_positions']} positions)",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
