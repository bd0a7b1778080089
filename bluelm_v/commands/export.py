"""bluelm-v export --model SPEC --out DIR --target onnx [--chunk 128] [--tile-batch 4] [--max-context 2048]
[--quant w4a16|w8a16|fp32]: static-shape graphs for NPU toolchains (docs/export.md)."""
from __future__ import annotations

import argparse

from bluelm_v.export.onnx_export import QUANTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="config name, smollm2-135m-gguf, a .gguf file or an HF folder")
    p.add_argument("--out", required=True)
    p.add_argument("--target", default="onnx", choices=("onnx",))
    p.add_argument("--chunk", type=int, default=128, help="prefill chunk T of the prefill graph")
    p.add_argument("--tile-batch", type=int, default=4, help="tiles B per ViT call")
    p.add_argument("--max-context", type=int, default=2048, help="positions of the graphs (past = max - chunk)")
    p.add_argument("--quant", default="w4a16", choices=tuple(QUANTS))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bluelm_v.commands.generate import resolve_spec
    from bluelm_v.export import export_onnx

    out = export_onnx(resolve_spec(args.model), args.out, chunk=args.chunk, tile_batch=args.tile_batch,
                      max_context=args.max_context, quant=args.quant, progress=not args.no_progress)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB): " + ", ".join(sorted(f.name for f in out.iterdir())))
    return 0
