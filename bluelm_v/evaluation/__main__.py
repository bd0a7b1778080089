"""``torchrun --nproc-per-node N -m bluelm_v.evaluation --model SPEC --data NAMES ...``: the ``bluelm-v eval``
command sharded over ranks (gloo on CPU, nccl when every rank has a GPU); rank 0 merges and scores.
Also runs as a single process when started without torchrun."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta


def main(argv: list[str] | None = None) -> int:
    from bluelm_v.evaluation.options import add_arguments, argv_of, config_from_args, finish

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bluelm_v.evaluation", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto")
    parser.add_argument("--dist-timeout", type=float, default=24 * 3600.0,
                        help="seconds a rank waits for the others at a barrier")
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    barrier, dist = None, None
    if world > 1:
        import torch
        import torch.distributed as dist

        backend = args.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= 1 else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=args.dist_timeout))
        barrier = dist.barrier
    from bluelm_v.evaluation.errors import EvaluationError
    from bluelm_v.evaluation.runner import Runner

    try:
        runner = Runner(config_from_args(args, argv_of(args, ["python", "-m", "bluelm_v.evaluation"])), rank=rank,
                        world=world, barrier=barrier)
        status = runner.run()
        return finish(runner, status, f"bluelm_v.evaluation (rank {rank})") if rank == 0 else 0
    except (EvaluationError, ValueError, FileNotFoundError) as exc:
        print(f"bluelm_v.evaluation (rank {rank}): error: {exc}", file=sys.stderr)
        return 1
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
