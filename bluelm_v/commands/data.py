"""bluelm-v data: benchmark data in the LMUData layout.

``bluelm-v data fetch NAME [NAME...]`` downloads VLMEvalKit's TSVs (official URLs, progress bar, MD5 check);
``bluelm-v data list`` shows the known datasets and whether each is present and intact.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download datasets into the LMUData folder")
    f.add_argument("names", nargs="+", metavar="NAME", help="VLMEvalKit dataset or family names")
    f.add_argument("--data-root", default=None, help="LMUData folder (default: $LMUData or ~/LMUData)")
    f.add_argument("--url", default=None, help="download from this URL instead (one NAME only)")
    f.add_argument("--md5", default=None, help="expected MD5 (default: VLMEvalKit's sum for NAME)")
    f.add_argument("--force", action="store_true", help="download even if the file is present")
    f.add_argument("--no-progress", action="store_true")
    ls = sub.add_parser("list", help="known datasets and their state in the LMUData folder")
    ls.add_argument("--data-root", default=None)


def run(args: argparse.Namespace) -> int:
    from bluelm_v.evaluation.benchmarks import BENCHMARKS
    from bluelm_v.evaluation.data import lmu_root, md5_of
    from bluelm_v.evaluation.fetch import fetch

    if args.action == "list":
        root = lmu_root(args.data_root)
        print(f"LMUData root: {root}")
        for name, b in BENCHMARKS.items():
            path = root / f"{name}.tsv"
            state = "absent"
            if path.exists():
                state = "ok" if b.md5 is None or md5_of(path) == b.md5 else "MD5 mismatch"
            print(f"  {name:22s} {b.family:15s} {state}")
        return 0
    if args.url and len(args.names) != 1:
        raise ValueError("--url needs exactly one NAME")
    for name in args.names:
        path = fetch(name, root=args.data_root, url=args.url, md5=args.md5, force=args.force,
                     progress=not args.no_progress)
        print(f"{name}: {path}")
    return 0
