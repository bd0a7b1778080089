"""bluelm-v: a research harness reproducing BlueLM-V-3B (arXiv 2411.10640) and going past it.

Light imports only: ``import bluelm_v`` loads the native core but not torch. The main entry points are attributes
loaded on first use, so ``dir(bluelm_v)`` lists them without importing their dependencies:

  * ``plan(width, height, scheme=...)``: dynamic resolution (``bluelm_v.dynres``);
  * ``preprocess(image)``: decoding and tiling for the ViT (``bluelm_v.image``);
  * ``Engine(package)``: the native engine (``bluelm_v.engine``);
  * ``simulate(model, device, ...)``: the device-latency simulator (``bluelm_v.sim``);
  * ``score(benchmark, records)``: VLMEvalKit-exact scoring (``bluelm_v.evaluation``, needs pandas);
  * ``set_num_threads`` / ``get_num_threads``: the kernels' thread pool.

``bluelm_v.models`` (the PyTorch reference) needs torch: ``pip install "bluelm-v[torch]"``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from bluelm_v._core import FormatError, LimitError  # noqa: F401  (ValueError subclasses for bad input)

# name -> (module, attribute): loaded on first use
_LAZY = {
    "Engine": ("bluelm_v.engine", "Engine"),
    "plan": ("bluelm_v.dynres", "plan"),
    "preprocess": ("bluelm_v.image", "preprocess"),
    "simulate": ("bluelm_v.sim", "simulate"),
    "score": ("bluelm_v.evaluation", "score"),
    "set_num_threads": ("bluelm_v.kernels", "set_num_threads"),
    "get_num_threads": ("bluelm_v.kernels", "get_num_threads"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bluelm_v' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if n != "annotations"), *_LAZY})


__all__ = ["Engine", "FormatError", "LimitError", "__version__", "get_num_threads", "plan", "preprocess", "score",
           "set_num_threads", "simulate"]
