"""The kernels as torch custom ops (namespace ``bluelm``), with fake (meta) kernels so torch.compile and
torch.export can trace models that call them; ``torch.library.opcheck`` passes on each (tests/test_kernels_py.py).

    import bluelm_v.kernels_torch  # registers the ops once
    y = torch.ops.bluelm.gemm_packed(x, packed, "q4_0", n, k)         # x [..., k] float32 -> [..., n]
    z = torch.ops.bluelm.downsample_2x2(tokens)                         # [h, w, c] -> [ceil(h/2), ceil(w/2), 4c]
    q = torch.ops.bluelm.quantize(w, "q8_0")                            # [rows, k] -> uint8 [rows, row_bytes]
    w2 = torch.ops.bluelm.dequantize(q, "q8_0", k)                      # -> float32 [rows, k]

CPU tensors only; inputs are passed to the C++ kernels without copies when contiguous (a non-contiguous input is
made contiguous first, as torch ops are expected to accept any layout).
"""
from __future__ import annotations

import torch

from bluelm_v import _core
from bluelm_v.quant import format_info, row_bytes


def _np(t: torch.Tensor):
    if t.device.type != "cpu":
        raise ValueError(f"bluelm ops run on the CPU; got a tensor on {t.device}")
    return t.detach().contiguous().numpy()


@torch.library.custom_op("bluelm::gemm_packed", mutates_args=())
def gemm_packed(x: torch.Tensor, packed: torch.Tensor, fmt: str, n: int, k: int) -> torch.Tensor:
    if x.dtype != torch.float32 or packed.dtype != torch.uint8:
        raise TypeError(f"gemm_packed takes float32 x and uint8 packed weights, got {x.dtype} and {packed.dtype}")
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} columns, the weights K = {k}")
    lead = x.shape[:-1]
    flat = _np(x).reshape(-1, k)
    y = _core.gemm_packed(flat, _np(packed), fmt, n, k, None)
    return torch.from_numpy(y.reshape(*lead, n))


@gemm_packed.register_fake
def _(x, packed, fmt, n, k):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.custom_op("bluelm::downsample_2x2", mutates_args=())
def downsample_2x2(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.dim() != 3:
        raise ValueError(f"downsample_2x2 takes float32 [h, w, c], got {x.dtype} {tuple(x.shape)}")
    return torch.from_numpy(_core.downsample_2x2(_np(x)))


@downsample_2x2.register_fake
def _(x):
    h, w, c = x.shape
    return x.new_empty(((h + 1) // 2, (w + 1) // 2, 4 * c))


@torch.library.custom_op("bluelm::quantize", mutates_args=())
def quantize(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if x.dtype != torch.float32 or x.dim() != 2:
        raise ValueError(f"quantize takes float32 [rows, k], got {x.dtype} {tuple(x.shape)}")
    return torch.from_numpy(_core.quantize(_np(x), fmt, 0))


@quantize.register_fake
def _(x, fmt):
    return x.new_empty((x.shape[0], row_bytes(fmt, x.shape[1])), dtype=torch.uint8)


@torch.library.custom_op("bluelm::dequantize", mutates_args=())
def dequantize(q: torch.Tensor, fmt: str, k: int) -> torch.Tensor:
    if q.dtype != torch.uint8 or q.dim() != 2:
        raise ValueError(f"dequantize takes uint8 [rows, row_bytes], got {q.dtype} {tuple(q.shape)}")
    return torch.from_numpy(_core.dequantize(_np(q), fmt, k, 0))


@dequantize.register_fake
def _(q, fmt, k):
    format_info(fmt)
    return q.new_empty((q.shape[0], k), dtype=torch.float32)


__all__ = ["dequantize", "downsample_2x2", "gemm_packed", "quantize"]
