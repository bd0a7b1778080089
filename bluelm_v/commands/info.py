"""bluelm-v info: versions, the CPU's instruction sets, and the shipped configs."""
from __future__ import annotations

import argparse
import platform


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from bluelm_v import __version__, _core
    from bluelm_v._paths import configs_dir
    from bluelm_v.config import KINDS, list_configs

    print(f"bluelm-v {__version__}  python {platform.python_version()}  {platform.machine()}")
    print(f"instruction sets: {', '.join(_core.supported_isas())} (active: {_core.active_isa()})")
    print(f"configs: {configs_dir()}")
    for kind in KINDS:
        print(f"  {kind}: {', '.join(list_configs(kind)) or '-'}")
    return 0
