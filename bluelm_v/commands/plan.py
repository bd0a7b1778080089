"""bluelm-v plan IMAGE_OR_WxH [--scheme S] [--alpha A] [--grid K] ... : one tiling plan."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bluelm_v import dynres


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="an image file, or a size WxH such as 1080x2400")
    p.add_argument("--scheme", default="bluelm", choices=dynres.SCHEMES)
    p.add_argument("--alpha", type=float, help="Algorithm 1's relaxation (bluelm; default 0.1)")
    p.add_argument("--clause2", choices=("<", "<="), help='clause (2) as printed ("<") or the "<=" variant')
    p.add_argument("--grid", type=int, help="restrict to a KxK grid (3 is the paper's comparisons, 4 the default)")
    p.add_argument("--max-num", type=int, help="InternVL's maximum tile count")
    p.add_argument("--thumbnail", choices=("always", "if_multi", "never"))
    p.add_argument("--layout", choices=("fit_pad", "stretch"))
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def parse_target(target: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", target)
    if m:
        return int(m.group(1)), int(m.group(2))
    path = Path(target)
    if not path.is_file():
        raise FileNotFoundError(f"{target!r} is neither a WxH size nor an image file")
    from bluelm_v.image import probe

    _, w, h = probe(path.read_bytes())
    return w, h


def run(args: argparse.Namespace) -> int:
    w, h = parse_target(args.target)
    params = dynres.grid_params(args.scheme, args.grid) if args.grid else {}
    for name in ("alpha", "clause2", "max_num", "thumbnail", "layout"):
        v = getattr(args, name)
        if v is not None:
            params[name] = v
    plan = dynres.plan(w, h, args.scheme, **params)
    if args.json:
        print(json.dumps(plan.to_dict()))
        return 0
    m, n = plan.grid
    print(
        f"{w}x{h}  scheme={args.scheme}  grid={m}:{n}  canvas={plan.canvas[0]}x{plan.canvas[1]}  "
        f"content={plan.content[0]}x{plan.content[1]}  patches={plan.patches}  "
        f"tokens={plan.tokens_vit}/{plan.tokens_ds}  upscale={plan.upscale:.2f}  wasted={plan.wasted_area:.1%}"
        + ("  (fallback: every candidate keeps 0 pixels)" if plan.fallback else "")
    )
    return 0
