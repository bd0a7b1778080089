"""bluelm-v demo [--out DIR]: the main job (see bluelm_v/demo.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for figures and tables (demo-out/)")


def run(args: argparse.Namespace) -> int:
    from bluelm_v import demo

    return 0 if demo.run(args.out) else 1
