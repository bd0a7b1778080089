"""bluelm-v export --model SPEC --out DIR --target onnx|qnn|executorch [--chunk 128] [--tile-batch 4]
[--max-context 2048] [--quant w4a16|w8a16|fp32] [--soc sm8650|sm8550|sm8750] [--weights int4|int8]
[--rounding blocks|gptq|mse|minmax] [--matmul-inputs int16|uint16] [--allow-fallback]: static-shape graphs for NPU toolchains (docs/export.md)."""
from __future__ import annotations

import argparse
import sys

from bluelm_v.export.onnx_export import QUANTS

SOCS = ("sm8650", "sm8550", "sm8750")  # bluelm_v.export.qnn.SOCS, without importing onnxruntime here
QNN_WEIGHTS = ("int4", "int8")
QNN_ROUNDINGS = ("blocks", "gptq", "mse", "minmax")  # bluelm_v.export.qnn_weights.ROUNDINGS
MATMUL_INPUTS = ("int16", "uint16")  # bluelm_v.export.qnn.MATMUL_INPUTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="config name, smollm2-135m-gguf, a .gguf file or an HF folder")
    p.add_argument("--out", required=True)
    p.add_argument("--target", default="onnx", choices=("onnx", "qnn", "executorch"),
                   help="onnx: static ONNX graphs; qnn: context binaries for a Snapdragon's HTP (onnxruntime-qnn); "
                        "executorch: .pte programs with the XNNPACK delegate")
    p.add_argument("--chunk", type=int, default=128, help="prefill chunk T of the prefill graph")
    p.add_argument("--tile-batch", type=int, default=4, help="tiles B per ViT call")
    p.add_argument("--max-context", type=int, default=2048, help="positions of the graphs (past = max - chunk)")
    p.add_argument("--quant", default="w4a16", choices=tuple(QUANTS), help="--target onnx: weight format")
    p.add_argument("--soc", default="sm8650", choices=SOCS, help="--target qnn: the Snapdragon to compile for")
    p.add_argument("--weights", default="int4", choices=QNN_WEIGHTS,
                   help="--target qnn: LLM MatMul weight precision (activations uint16)")
    p.add_argument("--rounding", default=None, choices=QNN_ROUNDINGS,
                   help="--target qnn: blocks (int4's default: the weights' own 4-bit blocks of 32 carried exactly; "
                        "a float model is put on q4_0's grid first) or per output channel: GPTQ on calibration "
                        "prompts, MSE-optimal clipping, or plain min-max (int8's default)")
    p.add_argument("--matmul-inputs", default="int16", choices=MATMUL_INPUTS,
                   help="--target qnn: what the LLM's block MatMuls read: int16 (the HTP computes them in "
                        "float16, weights stored as float16; accurate) or uint16 (integer arithmetic, int4 / int8 "
                        "weight storage; loses precision under outliers: docs/export.md). Attention's MatMuls "
                        "read int16 either way")
    p.add_argument("--allow-fallback", action="store_true",
                   help="--target qnn: let nodes QNN rejects run on the CPU instead of failing the export")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# Below these the compiled graph changes the model's answers (docs/export.md: SmolLM2 with --rounding blocks
# measured cosine 0.178, greedy agreement 0.022, and 0.335 with --matmul-inputs uint16, while every exported graph
# that works sits above 0.95).
WARN_AGREEMENT = 0.9
WARN_COSINE = 0.95


def numerics_warnings(report: dict) -> list[str]:
    """One loud line per graph of an export_report.json whose numerics on the emulator say it does not compute the
    reference's model: the export succeeded (every node compiled), but its answers are not the model's."""
    out = []
    for name, r in report.get("graphs", {}).items():
        agree, cos = r.get("greedy_agreement"), r.get("cosine")
        bad = []
        if agree is not None and agree < WARN_AGREEMENT:
            bad.append(f"greedy agreement {agree:.3f} < {WARN_AGREEMENT}")
        if cos is not None and cos < WARN_COSINE:
            bad.append(f"cosine {cos:.4f} < {WARN_COSINE}")
        if bad:
            rounding = r.get("rounding") or report.get("rounding")
            hint = "; try another --rounding (blocks, gptq) or --weights int8" + (
                f" (this export: {rounding})" if rounding else "")
            if (r.get("matmul_inputs") or report.get("matmul_inputs")) == "uint16":
                hint += ", or --matmul-inputs int16 (this export: uint16)"
            out.append(f"WARNING: {name}: {', '.join(bad)} against the reference on the emulator: the compiled "
                       f"graph does not keep the model's answers{hint}; docs/export.md has the measured settings")
    return out


def run(args: argparse.Namespace) -> int:
    from bluelm_v.commands.generate import resolve_spec

    spec = resolve_spec(args.model)
    if args.target == "qnn":
        import json

        from bluelm_v.export import export_qnn

        out = export_qnn(spec, args.out, soc=args.soc, chunk=args.chunk, tile_batch=args.tile_batch,
                         max_context=args.max_context, weights=args.weights, rounding=args.rounding,
                         allow_fallback=args.allow_fallback, matmul_inputs=args.matmul_inputs,
                         progress=not args.no_progress)
        report = json.loads((out / "export_report.json").read_text(encoding="utf-8"))
        for name, r in report["graphs"].items():
            agree = f", greedy agreement {r['greedy_agreement']:.3f}" if "greedy_agreement" in r else ""
            print(f"{name}: {r['nodes_on_qnn']}/{r['nodes']} nodes on the HTP ({report['soc']}), "
                  f"{r['context_bytes'] / 1e6:.2f} MB context, cosine {r['cosine']:.4f}{agree}")
        print(f"wrote {out / 'export_report.json'}")
        for line in numerics_warnings(report):
            print(line, file=sys.stderr)
        return 0
    if args.target == "executorch":
        from bluelm_v.export import export_executorch

        out = export_executorch(spec, args.out, chunk=args.chunk, tile_batch=args.tile_batch,
                                max_context=args.max_context)
    else:
        from bluelm_v.export import export_onnx

        out = export_onnx(spec, args.out, chunk=args.chunk, tile_batch=args.tile_batch,
                          max_context=args.max_context, quant=args.quant, progress=not args.no_progress)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    print(f"wrote {out} ({size:.1f} MB): " + ", ".join(sorted(f.name for f in out.iterdir())))
    return 0
