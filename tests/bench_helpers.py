"""Test helper: a script of benchmarks/ loaded as a module, without leaving benchmarks/ on sys.path."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module. The scripts import their `common` from benchmarks/: it goes on sys.path for
    the import and comes off after (with `common` itself), or a later `import kernels` (transformers' hub_kernels
    does one) would find benchmarks/kernels.py."""
    saved_path, had_common = list(sys.path), "common" in sys.modules
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved_path
        if not had_common:
            sys.modules.pop("common", None)
    return mod
