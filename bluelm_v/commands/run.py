"""bluelm-v run --model MODEL [--image IMG ...] (--prompt TEXT | --file F): answer with the native engine, then the
timing table.

MODEL is a model package folder (``bluelm-v package``), or a .gguf file, an HF folder, a config name or the
``smollm2-135m-gguf`` alias, packaged once into the cache and reused (``bluelm_v.export.cached``). The answer streams as it is generated; the table gives the
request's timing in the paper's terms (init, preprocessing, ViT, prefill, TTFT, decode tokens/s, peak memory).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model package folder, .gguf file, HF folder, config name or smollm2-135m-gguf (packaged "
                        "once into ~/.cache/bluelm-v, then reused)")
    p.add_argument("--quant", default="q4_0", help="weights of a package made from --model (default q4_0)")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the question")
    prompt.add_argument("--file", help="read the question from this file ('-' for standard input)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    p.add_argument("--chunk", type=int, help="prefill chunk t (default: the package's, 128)")
    p.add_argument("--tile-batch", type=int, help="ViT batch of tiles (default: the package's, 4)")
    p.add_argument("--kv-cache", choices=("int8", "f32"), help="KV cache precision (default: the package's)")
    p.add_argument("--context", type=int, help="KV cache positions (default: min(max_context, 4096))")
    p.add_argument("--json", action="store_true", help="print the answer and timing as one JSON object instead")


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.file == "-":
        return sys.stdin.read()
    from pathlib import Path

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"--file {args.file}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--file {args.file} is not UTF-8 text ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from bluelm_v.engine import Engine
    from bluelm_v.export.cached import cached_package

    prompt = read_prompt(args)
    model = cached_package(args.model, quant=args.quant, progress=not args.json)
    engine = Engine(model, threads=args.threads, chunk=args.chunk, tile_batch=args.tile_batch,
                    kv_cache=args.kv_cache, context=args.context)
    s = engine.session()
    for img in args.image:
        s.submit_image(img)

    def show(piece: str) -> bool:
        sys.stdout.write(piece)
        sys.stdout.flush()
        return True

    r = s.generate(prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, stop=args.stop, on_text=None if args.json else show)
    if args.json:
        from dataclasses import asdict

        from bluelm_v.kernels import get_num_threads

        # What ran: the package (a GGUF or HF folder is packaged into the cache first) and the engine's settings.
        print(json.dumps({"text": r.text, "tokens": r.tokens, "finish_reason": r.finish_reason,
                          "timing": asdict(r.timing), "model": str(model), "threads": get_num_threads(),
                          "kv_cache": engine.kv_cache, "context": engine.context,
                          "kv_bytes_per_token": engine.kv_bytes_per_token}, indent=1))
        return 0
    print()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"timing ({r.finish_reason}, {engine.kv_cache} KV, chunk {engine.chunk})")
    table.add_column("phase")
    table.add_column("value", justify="right")
    for k, v in r.timing.rows():
        table.add_row(k, v)
    Console(stderr=True).print(table)
    return 0
