"""bluelm-v run --model MODEL [--image IMG ...] [--system TEXT] (--prompt TEXT | --file F | --interactive): answer
with the native engine, then the timing table.

``--interactive`` (``-i``) chats: each line of standard input is a user turn, answered with the conversation so far
(formatted by the model's chat template; the KV entries of the earlier turns are kept, so only the new turn is
prefilled); ``/reset`` forgets the conversation, ``/exit`` or the end of input ends. An initial ``--prompt`` or
``--file`` is the first turn; images go with it.

``--scheme/--alpha/--grid`` tile images with one of our schemes in place of the model's own; each image's block in
the prompt (a family's markers, docs/models.md) follows the tiles it actually got.

MODEL (``--model`` or ``--package``) is a model package folder (``bluelm-v package``), or a .gguf file, an HF folder, a config name or the
``smollm2-135m-gguf`` alias, packaged once into the cache and reused (``bluelm_v.export.cached``). The answer streams as it is generated; the table gives the
request's timing in the paper's terms (init, preprocessing, ViT, prefill, TTFT, decode tokens/s, peak memory).
"""
from __future__ import annotations

import argparse
import json
import sys

from bluelm_v import dynres_options as dynres_args
from bluelm_v.export.package import ACTIVATIONS, KV_CACHES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--package", dest="model", required=True,
                   help="model package folder, .gguf file, HF folder, config name or smollm2-135m-gguf (packaged "
                        "once into ~/.cache/bluelm-v, then reused)")
    p.add_argument("--quant", default="q4_0", help="weights of a package made from --model (default q4_0)")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="the question")
    prompt.add_argument("--file", help="read the question from this file ('-' for standard input)")
    p.add_argument("--system", help="a system turn before the question (the model's chat template places it)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="chat: read user turns from standard input (/reset clears the conversation, /exit ends)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    p.add_argument("--chunk", type=int, help="prefill chunk t (default: the package's, 128)")
    p.add_argument("--tile-batch", type=int, help="ViT batch of tiles (default: the package's, 4)")
    p.add_argument("--kv-cache", choices=KV_CACHES, help="KV cache precision (default: the package's, f16)")
    p.add_argument("--activations", choices=ACTIVATIONS,
                   help="activations of the quantized products (default: the package's, int16)")
    p.add_argument("--context", type=int, help="KV cache positions (default: min(max_context, 4096))")
    dynres_args.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the answer and timing as one JSON object instead")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while a GGUF or folder is packaged")


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

    if args.interactive and (args.json or args.file == "-"):
        raise ValueError("--interactive reads the turns from standard input: it takes neither --json nor --file -")
    if not args.interactive and args.prompt is None and args.file is None:
        raise ValueError("give the question with --prompt or --file, or chat with --interactive")
    prompt = None if args.prompt is None and args.file is None else read_prompt(args)
    model = cached_package(args.model, quant=args.quant, progress=not (args.json or args.no_progress))
    engine = Engine(model, threads=args.threads, chunk=args.chunk, tile_batch=args.tile_batch,
                    kv_cache=args.kv_cache, context=args.context, activations=args.activations,
                    dynres=dynres_args.from_args(args))
    s = engine.session()
    for img in args.image:
        s.submit_image(img)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed, stop=args.stop, system=args.system or "")
    if args.interactive:
        return chat(s, prompt, sampling)

    r = s.generate(prompt, on_text=None if args.json else show, **sampling)
    if args.json:
        from dataclasses import asdict

        from bluelm_v.kernels import get_num_threads

        # What ran: the package (a GGUF or HF folder is packaged into the cache first) and the engine's settings.
        print(json.dumps({"text": r.text, "tokens": r.tokens, "finish_reason": r.finish_reason, "system": args.system,
                          "timing": asdict(r.timing), "model": str(model), "threads": get_num_threads(),
                          "kv_cache": engine.kv_cache, "activations": engine.activations, "context": engine.context,
                          "kv_bytes_per_token": engine.kv_bytes_per_token, "dynres": engine.dynres}, indent=1))
        return 0
    print()
    timing_table(r, engine)
    return 0


def show(piece: str) -> bool:
    sys.stdout.write(piece)
    sys.stdout.flush()
    return True


def chat(s, first: "str | None", sampling: dict) -> int:
    """The interactive loop: user turns from stdin, answers streamed to stdout, the conversation as history."""
    history: list[dict] = []
    tty = sys.stdin.isatty()
    turns = iter([first]) if first is not None else iter(())
    while True:
        line = next(turns, None)
        if line is None:
            if tty:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:  # end of input
                break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history.clear()
            s.reset()
            print("(conversation cleared)", file=sys.stderr, flush=True)
            continue
        try:
            r = s.generate(text, history=history, on_text=show, **sampling)
        except ValueError as exc:  # e.g. the conversation outgrew the context: say so, keep the session
            print(f"\nerror: {exc} (/reset starts over)", file=sys.stderr, flush=True)
            continue
        print(flush=True)
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": r.text}]
        t = r.timing
        print(f"({t.new_tokens} tokens, {t.decode_tokens_per_s:.1f} tok/s; prefilled {t.prompt_tokens}, kept "
              f"{t.reused_tokens} from the conversation)", file=sys.stderr, flush=True)
    return 0


def timing_table(r, engine) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"timing ({r.finish_reason}, {engine.activations} activations, {engine.kv_cache} KV, "
                        f"chunk {engine.chunk})")
    table.add_column("phase")
    table.add_column("value", justify="right")
    for k, v in r.timing.rows():
        table.add_row(k, v)
    Console(stderr=True).print(table)
