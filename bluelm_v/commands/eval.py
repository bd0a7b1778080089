"""bluelm-v eval: run a model over VLMEvalKit benchmarks and score them exactly as VLMEvalKit does.

Resumable: the same command continues an interrupted run. Scale out with
``torchrun --nproc-per-node N -m bluelm_v.evaluation ARGS`` (same arguments). See docs/evaluation.md. The options
live in the library (``bluelm_v.evaluation.options``), shared with ``python -m bluelm_v.evaluation``.
"""
from __future__ import annotations

import argparse

from bluelm_v.evaluation.options import add_arguments  # noqa: F401 - the CLI builds its parser from it


def run(args: argparse.Namespace) -> int:
    from bluelm_v.evaluation.options import argv_of, config_from_args, finish
    from bluelm_v.evaluation.runner import Runner

    runner = Runner(config_from_args(args, argv_of(args, ["bluelm-v", "eval"])))
    return finish(runner, runner.run(), "bluelm-v eval")
