"""Group quantization formats (csrc/quant; layouts in docs/kernels.md): the registry, and quantize / dequantize.

``FORMATS`` mirrors the C++ registry: q4_0, q4_1, q5_0, q5_1, q8_0 (GGUF's Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 byte
for byte), the same kinds
with groups of 64 and 128 (``q4_0_g64``, ...), and GGUF's K-quants q4_k, q5_k, q6_k (Q4_K / Q5_K / Q6_K, quantized
as llama.cpp's quantizer does without an importance matrix) and q8_k (Q8_K, llama.cpp's activation format). Arrays go in and out without copies: numpy arrays, or CPU torch
tensors (returned as torch tensors sharing the result's memory).

    rows = quantize(w, "q4_0")          # w float32 [n, k] -> uint8 [n, row_bytes]
    w2 = dequantize(rows, "q4_0", k)    # -> float32 [n, k]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bluelm_v import _core


@dataclass(frozen=True)
class FormatInfo:
    name: str
    kind: str  # int4_sym | int4_asym | int8_sym | int5_sym | int5_asym (Q5_0, Q5_1) | k4 | k5 | k6 | k8 (Q4_K ... Q8_K)
    group: int  # weights per block
    block_bytes: int
    weight_bits: int
    bits_per_weight: float
    gguf_type: int  # GGML type id, or -1 when GGUF has no such type
    super_block: bool  # a GGUF K-quant: super-blocks of 256 with sub-block scales inside


FORMATS: dict[str, FormatInfo] = {d["name"]: FormatInfo(**d) for d in _core.quant_formats()}


def format_info(fmt: str) -> FormatInfo:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown quantization format {fmt!r}; known: {', '.join(FORMATS)}") from None


def row_bytes(fmt: str, k: int) -> int:
    """Bytes of one row of k weights (k a positive multiple of the format's group)."""
    format_info(fmt)
    return _core.quant_row_bytes(fmt, int(k))


def as_numpy(a: Any, name: str, dtype: type) -> tuple[np.ndarray, bool]:
    """(numpy view of a, whether a was a torch tensor). No copies: a wrong dtype, a non-CPU tensor or a
    non-contiguous array is an error naming the argument."""
    is_torch = type(a).__module__.startswith("torch")
    if is_torch:
        if a.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU tensor, got device {a.device}")
        if not a.is_contiguous():
            raise ValueError(f"{name} must be contiguous (call .contiguous())")
        a = a.detach().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    return a, is_torch


def wrap(out: np.ndarray, as_torch: bool):
    if as_torch:
        import torch

        return torch.from_numpy(out)
    return out


def quantize(x, fmt: str, threads: int = 0):
    """x float32 [rows, k] -> uint8 [rows, row_bytes(fmt, k)] (GGUF layout for group 32). Non-finite values are
    refused. ``threads`` 0 uses the kernel thread pool's setting."""
    format_info(fmt)
    a, t = as_numpy(x, "x", np.float32)
    if a.ndim != 2:
        raise ValueError(f"x must be [rows, k], got shape {a.shape}")
    return wrap(_core.quantize(a, fmt, int(threads)), t)


def dequantize(q, fmt: str, k: int, threads: int = 0):
    """uint8 [rows, row_bytes(fmt, k)] -> float32 [rows, k]."""
    format_info(fmt)
    a, t = as_numpy(q, "q", np.uint8)
    if a.ndim != 2:
        raise ValueError(f"q must be [rows, row_bytes], got shape {a.shape}")
    return wrap(_core.dequantize(a, fmt, int(k), int(threads)), t)


__all__ = ["FORMATS", "FormatInfo", "dequantize", "format_info", "quantize", "row_bytes"]
