"""bluelm-v eval: run a model over VLMEvalKit benchmarks and score them exactly as VLMEvalKit does.

Resumable: the same command continues an interrupted run. Scale out with
``torchrun --nproc-per-node N -m bluelm_v.evaluation ARGS`` (same arguments). See docs/evaluation.md.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="replay:PATH | openai:URL#MODEL | hf:PATH | torch:SPEC")
    p.add_argument("--data", required=True, metavar="NAME[,NAME...]",
                   help="VLMEvalKit dataset names, family names, NAME=PATH items or suites (opencompass, ocr)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples of each dataset")
    p.add_argument("--work-dir", default="eval-out", help="output root (default: eval-out)")
    p.add_argument("--run-id", default=None, help="run folder name (default: derived from the model spec)")
    p.add_argument("--model-name", default=None, help="name used in output file names")
    p.add_argument("--judge", default=None, metavar="URL#MODEL",
                   help="OpenAI-compatible judge endpoint; without it scoring is rule-based")
    p.add_argument("--data-root", default=None, help="LMUData folder (default: $LMUData or ~/LMUData)")
    p.add_argument("--no-md5", action="store_true", help="use dataset files whose MD5 does not match")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-model-errors", type=int, default=5, help="stop after this many model errors in a row")
    p.add_argument("--export-xlsx", action="store_true", help="also write predictions as .xlsx (needs openpyxl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, argv: list[str]):
    from pathlib import Path

    from bluelm_v.evaluation.runner import RunConfig

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    return RunConfig(model=args.model, data=[d for d in args.data.split(",") if d.strip()],
                     work_dir=Path(args.work_dir), limit=args.limit, run_id=args.run_id, model_name=args.model_name,
                     judge=args.judge, data_root=args.data_root, check_md5=not args.no_md5,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     progress=not args.no_progress, export_xlsx=args.export_xlsx,
                     max_model_errors=args.max_model_errors, argv=argv)


def argv_of(args: argparse.Namespace, prefix: list[str]) -> list[str]:
    """The command line as parsed (every option spelled out), for status.json."""
    out = list(prefix)
    for key, value in vars(args).items():
        if key in ("command", "version") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    from bluelm_v.evaluation.report import render_report
    from bluelm_v.evaluation.runner import Runner

    runner = Runner(config_from_args(args, argv_of(args, ["bluelm-v", "eval"])))
    status = runner.run()
    print(render_report(status))
    print(f"results: {runner.run_dir}")
    return 0
