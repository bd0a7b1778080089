"""bluelm-v ablate {alpha,chunk}: the resolution scheme's alpha and the prefill chunk size, on the simulator
(and alpha measured on a model with --measure).

    bluelm-v ablate alpha --alphas 0,0.05,0.1,0.2,0.5 [--images DIR | --sizes FILE | --tsv FILE] [--device D]
    bluelm-v ablate alpha --measure --model native:PKG --data MMStar [--limit N] [--alphas ...]
    bluelm-v ablate chunk --chunks 1,16,32,64,128,256,512,2048 [--device D] [--measure]

Each writes a table to the console, JSON (for notebooks) and PNG figures into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ablation", metavar="ABLATION", required=True)
    a = sub.add_parser("alpha", help="relaxation alpha: tokens, upscaling, padding and simulated TTFT per scheme")
    src = a.add_mutually_exclusive_group()
    src.add_argument("--images", type=Path, help="a folder of JPEG/PNG/WebP images (only headers are read)")
    src.add_argument("--sizes", type=Path, help="a CSV/TSV (width,height[,kind]) or JSON list of sizes")
    src.add_argument("--tsv", type=Path, help="a VLMEvalKit benchmark TSV with base64 images")
    a.add_argument("--alphas", type=_floats, default=[0.0, 0.05, 0.1, 0.2, 0.5])
    a.add_argument("--grid", type=int, default=4, help="KxK candidate grid (4: the released model, 3: the paper's "
                                                        "comparisons)")
    a.add_argument("--clause2", choices=("<", "<="), default="<", help='clause (2) as printed ("<") or "<="')
    a.add_argument("-n", type=int, default=5000, help="sizes drawn from the built-in mixture")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--text-tokens", type=int, default=16, help="text tokens after the image in each prompt")
    a.add_argument("--measure", action="store_true",
                   help="measure on a model instead of simulating: accuracy (bootstrap 95%% CI, paired difference "
                        "against the model's own tiling), image tokens and TTFT per alpha, from eval runs of --data "
                        "with --model as an eval spec (torch:SPEC or native:PACKAGE; a bare name means torch:)")
    a.add_argument("--data", metavar="NAME[=PATH]", help="the benchmark for --measure (a VLMEvalKit dataset name)")
    a.add_argument("--limit", type=int, help="--measure: only the first N questions")
    a.add_argument("--max-new-tokens", type=int, default=32, help="--measure: answer length (default 32)")
    a.add_argument("--resamples", type=int, default=2000, help="--measure: bootstrap resamples (default 2000)")
    a.add_argument("--data-root", help="--measure: LMUData folder (default: $LMUData or ~/LMUData)")
    a.add_argument("--no-md5", action="store_true", help="--measure: use dataset files whose MD5 does not match")
    _common(a)
    c = sub.add_parser("chunk", help="prefill chunk size: simulated NPU prefill and decode (paper: t128)")
    c.add_argument("--chunks", type=_ints, default=[1, 16, 32, 64, 128, 256, 512, 2048])
    c.add_argument("--prompt-tokens", type=int, default=2048, help="input tokens (the paper's setting: 2048)")
    c.add_argument("--kv-capacity", type=int, default=2048, help="KV-cache slots of the static graphs (paper: 2048)")
    c.add_argument("--overhead-sensitivity", type=_floats, metavar="MS,...",
                   help="re-fit the Dimensity 9300 factors with these LLM call overheads (ms) and report each optimum")
    c.add_argument("--measure", action="store_true",
                   help="add measured CPU prefill on this machine per chunk size through the native engine")
    c.add_argument("--measure-model",
                   help="for --measure: a model package, .gguf file, HF folder, smollm2-135m-gguf or a config name "
                        "(seeded random weights) (default: --model; a 3B prefill of 2048 tokens takes minutes per "
                        "chunk size on 2 cores)")
    c.add_argument("--measure-tokens", type=int, help="prompt tokens for --measure (default: --prompt-tokens)")
    _common(c)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="dimensity-9300", help="device profile (bluelm-v info lists them)")
    p.add_argument("--model", default="bluelm-v-3b", help="model config")
    p.add_argument("--out", type=Path, default=Path("ablate-out"), help="folder for the JSON and the figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def run_alpha_measured(args) -> int:
    from rich.table import Table

    from bluelm_v.ablation.measured import measure_alpha, measured_figure

    if not args.data:
        raise ValueError("ablate alpha --measure needs --data BENCHMARK[=PATH]")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    model = args.model if ":" in args.model.split("/", 1)[0] else f"torch:{args.model}"
    res = measure_alpha(model, args.data, args.alphas, grid=args.grid, limit=args.limit,
                        work_dir=args.out / "runs", max_new_tokens=args.max_new_tokens, resamples=args.resamples,
                        seed=args.seed, progress=not args.no_progress, data_root=args.data_root,
                        check_md5=not args.no_md5)
    console = _console()
    own = res.settings[0]
    t = Table(title=f"alpha ablation measured: {model} on {res.dataset}, {own.questions} questions "
                    f"({res.resamples} bootstrap resamples)")
    for col in ("setting", "accuracy", "95% CI", "vs own (paired)", "95% CI of diff", "image tokens", "TTFT median",
                "failed"):
        t.add_column(col, justify="left" if col == "setting" else "right")
    for s in res.settings:
        t.add_row(s.label, f"{s.accuracy:.1f}", f"{s.ci_low:.1f} .. {s.ci_high:.1f}",
                  "" if s.diff is None else f"{s.diff:+.1f}",
                  "" if s.diff is None else f"{s.diff_ci_low:+.1f} .. {s.diff_ci_high:+.1f}",
                  f"{s.mean_image_tokens:.0f}", f"{s.ttft_median_s:.3f} s", f"{s.failed} / {s.samples}")
    console.print(t)
    for note in res.notes:
        console.print(f"note: {note}", highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alpha_measured.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
    fig = measured_figure(res, args.out / "alpha_measured.png")
    console.print(f"wrote {args.out / 'alpha_measured.json'}, {fig}; runs in {args.out / 'runs'}", highlight=False)
    return 0


def run_alpha(args) -> int:
    from rich.table import Table

    if args.measure:
        return run_alpha_measured(args)

    from bluelm_v.ablation import sizes as S
    from bluelm_v.ablation.alpha import alpha_sweep
    from bluelm_v.ablation.plots import alpha_figure, patches_figure

    progress = not args.no_progress
    if args.images:
        sizes = S.sizes_from_images(args.images, progress)
    elif args.sizes:
        sizes = S.sizes_from_file(args.sizes)
    elif args.tsv:
        sizes = S.sizes_from_tsv(args.tsv, progress)
    else:
        sizes = S.mixture_sizes(args.n, args.seed)
    res = alpha_sweep(sizes, args.alphas, args.grid, args.device, args.model, args.text_tokens, args.clause2, progress)
    console = _console()
    t = Table(title=f"alpha ablation: {res.n} images ({res.source}), {res.grid}x{res.grid} grid, TTFT on {res.device}")
    cols = ("scheme", "tiles", "LLM tokens", "upscale (geo)", "upscaled", "wasted", "TTFT mean", "TTFT p90",
            "fewer / more tiles than LLaVA-NeXT")
    for col in cols:
        t.add_column(col, justify="left" if col == "scheme" else "right")
    for s in res.schemes:
        t.add_row(s.label, f"{s.mean_patches:.2f}", f"{s.mean_tokens:.0f}", f"{s.upscale_geomean:.2f}",
                  f"{s.upscaled_fraction:.1%}", f"{s.wasted_area:.1%}", f"{s.ttft_mean_s:.2f} s",
                  f"{s.ttft_p90_s:.2f} s", f"{s.fewer_than_llava_next} / {s.more_than_llava_next}")
    console.print(t)
    console.print(f"note: {res.note}; TTFT = encode + prefill with the models loaded, prompt = image tokens + "
                  f"{res.text_tokens} text tokens", highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alpha_ablation.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
    figs = [alpha_figure(res, args.out / "alpha_ablation.png"), patches_figure(res, args.out / "alpha_tiles.png")]
    console.print(f"wrote {args.out / 'alpha_ablation.json'}, " + ", ".join(map(str, figs)), highlight=False)
    return 0


def run_chunk(args) -> int:
    from rich.table import Table

    from bluelm_v.ablation.chunk import PAPER_CHUNKS, chunk_sweep, overhead_sensitivity
    from bluelm_v.ablation.plots import chunk_figure

    progress = not args.no_progress
    measured, record = None, {}
    attention: dict = {}
    if args.measure:
        from bluelm_v.sim.measure import measure_cpu_prefill

        measured = measure_cpu_prefill(args.chunks, args.measure_model or args.model,
                                       args.measure_tokens or args.prompt_tokens, progress=progress, record=record,
                                       attention=attention)
    res = chunk_sweep(args.chunks, args.model, args.device, args.prompt_tokens, args.kv_capacity, measured, progress,
                      attention)
    if measured:
        res.measured = record  # what the measured column ran, which need not be the simulated sweep's model
    if args.overhead_sensitivity:
        if res.device != "dimensity-9300":
            raise ValueError("--overhead-sensitivity re-fits the Dimensity 9300 profile; use --device dimensity-9300")
        res.overhead_sensitivity = overhead_sensitivity(args.overhead_sensitivity, args.chunks, progress)
    console = _console()
    t = Table(title=f"chunked prefill of {res.prompt_tokens} tokens, KV cache {res.kv_capacity}, on {res.device}")
    for col in ("chunk", "calls", "prefill", "per call", "call overheads", "linear", "attention", "decode",
                *(("measured CPU", "attention over earlier chunks: simulated", "measured") if measured else ())):
        t.add_column(col, justify="right")
    for r in res.rows:
        mark = " *" if r.chunk == res.best_chunk else ""
        t.add_row(f"t{r.chunk}{mark}", str(r.calls), f"{r.prefill_s:.2f} s", f"{r.per_call_ms:.1f} ms",
                  f"{r.overhead_s:.2f} s", f"{r.linear_s:.2f} s" + (" (mem)" if r.linear_memory_bound else ""),
                  f"{r.attention_s:.2f} s", f"{r.decode_tokens_per_s:.1f} tok/s",
                  *((f"{r.measured_cpu_prefill_s:.2f} s" if r.measured_cpu_prefill_s else "-",
                     f"{r.attention_cross_s:.3f} s" if r.attention_cross_s is not None else "-",
                     f"{r.measured_cpu_attention_s:.3f} s" if r.measured_cpu_attention_s is not None else "-")
                    if measured else ()))
    console.print(t)
    if measured and (res.device != "this-cpu" or res.measured["model"] != res.model
                     or res.measured["prompt_tokens"] != res.prompt_tokens):
        console.print(f"note: the simulated columns are {res.model} on {res.device} with {res.prompt_tokens} tokens, "
                      f"the measured ones {res.measured['model']} on this CPU with {res.measured['prompt_tokens']}: "
                      "compare them with --device this-cpu and the same model and tokens", highlight=False)
    if res.agrees_with_paper is None:
        verdict = f"the paper's t128 was not among the chunks simulated (paper compared {PAPER_CHUNKS})"
    else:
        verdict = (f"among the paper's t32/t128/t512/t2048 the simulated best is t{res.best_among_paper}: "
                   + ("agrees with the paper's t128" if res.agrees_with_paper else "DISAGREES with the paper's t128"))
    if res.runtime == "cpu":
        verdict += " (the paper's t128 is for NPU static graphs; this device runs the LLM on its CPU)"
    console.print(f"simulated optimum t{res.best_chunk}; {verdict}", highlight=False)
    console.print(f"why: {res.explanation}", highlight=False, markup=False)
    console.print("decode always runs t1, so the chunk size does not change it (the paper attributes its small "
                  "differences to noise)", highlight=False)
    for s in res.overhead_sensitivity:
        console.print(f"LLM call overhead {s['npu_llm_call_ms']:g} ms -> re-fit (cost {s['fit_cost']:.2g}) -> "
                      f"optimum t{s['best_chunk']}", highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chunk_ablation.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
    fig = chunk_figure(res, args.out / "chunk_ablation.png")
    console.print(f"wrote {args.out / 'chunk_ablation.json'}, {fig}", highlight=False)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_alpha(args) if args.ablation == "alpha" else run_chunk(args)
