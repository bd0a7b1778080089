"""bluelm-v: a research harness reproducing BlueLM-V-3B (arXiv 2411.10640) and going past it.

Light imports only: ``import bluelm_v`` loads the native core but not torch. Heavier parts are imported on use
(``bluelm_v.models`` needs torch, ``bluelm_v.evaluation`` pandas).
"""
from __future__ import annotations

__version__ = "0.1.0"

from bluelm_v._core import FormatError, LimitError  # noqa: F401  (ValueError subclasses for bad input)


def __getattr__(name: str):
    if name == "Engine":  # the native engine (bluelm_v.engine), loaded on first use
        from bluelm_v.engine import Engine

        return Engine
    if name in ("set_num_threads", "get_num_threads"):  # the kernels' thread pool
        from bluelm_v import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'bluelm_v' has no attribute {name!r}")


__all__ = ["Engine", "FormatError", "LimitError", "__version__", "get_num_threads", "set_num_threads"]
