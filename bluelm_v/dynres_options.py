"""``--scheme/--alpha/--grid``: one of our dynamic-resolution schemes in place of a model's own image tiling,
declared once for the commands that take it (check-reference, generate, eval, ablate alpha --measure); a library
module, so the evaluation options import it without the command line."""
from __future__ import annotations

import argparse
from typing import Optional


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheme", choices=("bluelm", "internvl", "llava_next"),
                   help="replace the model's own image tiling with this scheme")
    p.add_argument("--alpha", type=float, help="relaxed-matching alpha (--scheme bluelm)")
    p.add_argument("--grid", type=int, help="candidate grid side k (k x k; max_num k*k for internvl)")


def from_args(args: argparse.Namespace) -> Optional[dict]:
    """The dynres parameters the flags ask for, or None for the family's own tiling."""
    if not (args.scheme or args.alpha is not None or args.grid is not None):
        return None
    if not args.scheme:
        raise ValueError("--alpha and --grid need --scheme")
    from bluelm_v.dynres import grid_params

    params = {"scheme": args.scheme, **(grid_params(args.scheme, args.grid) if args.grid else {})}
    if args.alpha is not None:
        params["alpha"] = args.alpha
    return params
