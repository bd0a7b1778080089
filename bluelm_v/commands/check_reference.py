"""bluelm-v check-reference: the torch reference against HF transformers on the same inputs, as JSON.

``--model HF_DIR`` compares a checkpoint folder; ``--arch A --random`` first writes a small random model of
architecture A with the HF class's ``save_pretrained`` and compares that. ``--scheme/--alpha/--grid`` replace
the family's own tiling with one of our dynamic-resolution schemes on our side (the pixel diff then measures
the change). Fields: docs/models.md.
"""
from __future__ import annotations

import argparse
import json

from bluelm_v import dynres_options as dynres_args

ARCHES = ("llava_onevision", "internvl", "idefics3", "llama", "qwen2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an HF checkpoint folder (config.json, safetensors, tokenizer files)")
    src.add_argument("--arch", choices=ARCHES, help="with --random: a small random model of this architecture")
    p.add_argument("--random", action="store_true", help="build the --arch model with random weights")
    p.add_argument("--image", help="image file (VLMs; default: a seeded synthetic image)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--prompt", help="prompt text")
    text.add_argument("--prompt-file", help="file holding the prompt text")
    p.add_argument("--tokens", type=int, default=16, help="greedy steps compared (default 16)")
    p.add_argument("--precision", default="f32",
                   help="f32: the torch reference; default (q4_0) / q4_0 / q4_1 / q8_0: the native engine")
    p.add_argument("--activations", default="int8", choices=("int8", "int16"), help="engine activations")
    p.add_argument("--kv-cache", choices=("int8", "f16", "f32"), help="engine KV cache (default: the package's)")
    dynres_args.add_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the JSON here (it is printed too)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.random != (args.arch is not None):
        raise ValueError("--arch needs --random (and --random needs --arch)")
    prompt = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else args.prompt
    dynres = dynres_args.from_args(args)
    from bluelm_v.models.check_reference import DEFAULT_PROMPT, check_reference

    result = check_reference(model=args.model, arch=args.arch, random=args.random, prompt=prompt or DEFAULT_PROMPT,
                             tokens=args.tokens, precision=args.precision, image=args.image, seed=args.seed,
                             dynres=dynres, activations=args.activations, kv_cache=args.kv_cache)
    text = json.dumps(result, indent=1)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
