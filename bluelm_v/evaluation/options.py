"""The options of an evaluation run, shared by ``bluelm-v eval`` and ``python -m bluelm_v.evaluation`` (torchrun):
the argument parser, its translation into a ``RunConfig``, the command line as recorded, and the ending (report
on stdout, problems on stderr, exit code)."""
from __future__ import annotations

import argparse

from bluelm_v import dynres_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="replay:PATH | openai:URL#MODEL | hf:PATH | torch:SPEC | native:PACKAGE")
    p.add_argument("--data", required=True, metavar="NAME[,NAME...]",
                   help="VLMEvalKit dataset names, family names, NAME=PATH items or suites (opencompass, ocr)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N samples of each dataset (MMBench: the first N questions, each with all "
                        "its circular rotations)")
    p.add_argument("--work-dir", default="eval-out", help="output root (default: eval-out)")
    p.add_argument("--run-id", default=None, help="run folder name (default: derived from the model spec)")
    p.add_argument("--model-name", default=None, help="name used in output file names")
    p.add_argument("--judge", default=None, metavar="URL#MODEL",
                   help="OpenAI-compatible judge endpoint; without it scoring is rule-based")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the model endpoint's key (default: OPENAI_API_KEY)")
    p.add_argument("--judge-api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the judge's key (default: OPENAI_API_KEY; when both default "
                        "and the hosts differ, eval stops and asks)")
    p.add_argument("--data-root", default=None, help="LMUData folder (default: $LMUData or ~/LMUData)")
    p.add_argument("--no-md5", action="store_true", help="use dataset files whose MD5 does not match")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-model-errors", type=int, default=5, help="stop after this many model errors in a row")
    p.add_argument("--api-nproc", type=int, default=4, metavar="N",
                   help="requests in flight for adapters that allow it (openai:), as VLMEvalKit's --api-nproc "
                        "(default 4)")
    p.add_argument("--batch-size", type=int, default=1, metavar="B",
                   help="samples per generate call for adapters that batch (hf:; left padding, greedy)")
    p.add_argument("--rate-limit", type=float, default=None, metavar="RPM", help="at most RPM requests per minute")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per request to an HTTP endpoint (default 120)")
    p.add_argument("--extra-body", default=None, metavar="JSON",
                   help='engine-specific request fields, a JSON object, e.g. \'{"top_k": 1, "repetition_penalty": 1.05}\'')
    p.add_argument("--system-prompt", default=None, metavar="TEXT", help="a system message before every prompt")
    p.add_argument("--export-xlsx", action="store_true",
                   help="also write predictions as .xlsx, as VLMEvalKit does (needs xlsxwriter)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    dynres_options.add_arguments(p)


def config_from_args(args: argparse.Namespace, argv: list[str]):
    from pathlib import Path

    from bluelm_v.evaluation.runner import RunConfig

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    for flag, value in (("--api-nproc", args.api_nproc), ("--batch-size", args.batch_size),
                        ("--max-model-errors", args.max_model_errors)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--rate-limit", args.rate_limit), ("--timeout", args.timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} must be a positive number, got {value}")
    extra = None
    if args.extra_body is not None:
        import json

        try:
            extra = json.loads(args.extra_body)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"--extra-body is not JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise ValueError(f"--extra-body must be a JSON object, got {type(extra).__name__}")
    return RunConfig(model=args.model, data=[d for d in args.data.split(",") if d.strip()],
                     work_dir=Path(args.work_dir), limit=args.limit, run_id=args.run_id, model_name=args.model_name,
                     judge=args.judge, data_root=args.data_root, check_md5=not args.no_md5,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     progress=not args.no_progress, export_xlsx=args.export_xlsx,
                     max_model_errors=args.max_model_errors, api_key_env=args.api_key_env,
                     judge_api_key_env=args.judge_api_key_env, api_nproc=args.api_nproc, batch_size=args.batch_size,
                     rate_limit=args.rate_limit, timeout=args.timeout, extra_body=extra,
                     system_prompt=args.system_prompt, dynres=dynres_options.from_args(args), argv=argv)


def argv_of(args: argparse.Namespace, prefix: list[str]) -> list[str]:
    """The command line as parsed (every option spelled out), for status.json."""
    out = list(prefix)
    for key, value in vars(args).items():
        if key in ("command", "version") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


def finish(runner, status: dict, prog: str) -> int:
    """Print the report; a problem of this invocation (a judge that failed, a scorer that could not score, an
    export that failed) goes to stderr and makes the exit code 1, with every file already written."""
    import sys

    from bluelm_v.evaluation.report import render_report

    print(render_report(status))
    print(f"results: {runner.run_dir}")
    for problem in status.get("problems", []):
        print(f"{prog}: error: {problem}", file=sys.stderr)
    return 1 if status.get("problems") else 0


__all__ = ["add_arguments", "argv_of", "config_from_args", "finish"]
