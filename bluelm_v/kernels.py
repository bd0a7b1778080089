"""The quantized kernels (csrc/kernels; docs/kernels.md) from Python: numpy arrays and CPU torch tensors in and out
without copies, the GIL released while they run.

    w = pack(weights_f32, "q4_0")                 # or PackedWeights.from_rows(gguf_rows, "q4_1", n, k)
    y = gemm(x, w, bias=None)                      # x [t, k] or [k] float32 -> [t, n] or [n]
    y = gemm_i16(x, w)                             # the same with x rounded to int16 (one pass, scalar / AVX2)
    z = downsample_2x2(tokens)                     # [h, w, c] -> [ceil(h/2), ceil(w/2), 4c]
    p = downsample_linear(tokens, w, gamma, beta, bias)   # fused down-sample + LayerNorm + linear

The activations are quantized to int8 per group inside (the error bound is in docs/kernels.md). The same kernels
are registered as torch custom ops by ``bluelm_v.kernels_torch`` (``torch.ops.bluelm.gemm_packed``, ...).
``set_num_threads(n)`` sizes the kernels' thread pool (also ``bluelm_v.set_num_threads``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from bluelm_v import _core
from bluelm_v.quant import as_numpy, format_info, quantize, row_bytes, wrap


def set_num_threads(n: int) -> None:
    """Threads of the kernel pool, the caller included (0: all cores)."""
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"threads must be an integer >= 0, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    return _core.get_num_threads()


@dataclass(frozen=True)
class PackedWeights:
    """A weight matrix [n, k] in the kernels' panel layout (``data``: uint8 [packed_bytes], numpy or torch)."""

    format: str
    n: int
    k: int
    data: Any

    @classmethod
    def from_rows(cls, rows, fmt: str, n: int, k: int, arena: "WeightArena | None" = None) -> "PackedWeights":
        """GGUF-layout rows (uint8 [n, row_bytes(fmt, k)]) -> packed (byte shuffling only). With an ``arena`` that
        has room, the packed bytes go there, right after the ones packed before (see ``WeightArena``)."""
        format_info(fmt)
        a, t = as_numpy(rows, "rows", np.uint8)
        return cls(fmt, int(n), int(k), wrap(_core.pack_weights(a, fmt, int(n), int(k), arena), t))

    def rows(self) -> np.ndarray:
        """Back to GGUF-layout rows."""
        a, _ = as_numpy(self.data, "packed", np.uint8)
        return _core.unpack_weights(a, self.format, self.n, self.k)

    @property
    def nbytes(self) -> int:
        return int(self.data.shape[0])


def pack(w, fmt: str, arena: "WeightArena | None" = None) -> PackedWeights:
    """Float weights [n, k] -> quantized (``fmt``) and packed (into ``arena`` when it has room)."""
    rows = quantize(w, fmt)
    return PackedWeights.from_rows(rows, fmt, int(rows.shape[0]), int(w.shape[1]), arena)


def gemm(x, w: PackedWeights, bias=None):
    """y = x W^T (+ bias): x float32 [t, k] (a prefill chunk) or [k] (decode) -> [t, n] or [n]."""
    a, t = as_numpy(x, "x", np.float32)
    p, _ = as_numpy(w.data, "packed", np.uint8)
    b = None if bias is None else as_numpy(bias, "bias", np.float32)[0]
    return wrap(_core.gemm_packed(a, p, w.format, w.n, w.k, b), t)


def gemm_i16(x, w: PackedWeights, bias=None):
    """y = x W^T (+ bias) with x rounded to int16 on each group's own scale (amax / 32767) and one pass over the
    weights' levels widened to int16 (the engine's int16 products of 8 tokens and more on 8-bit weights: q8_0,
    Q5_0, Q5_1; csrc/kernels/kernels.h says why not on 4-bit ones). The active tier must have
    the kernel (``_core.has_gemm_i16(fmt)``: scalar and AVX2; formats with one scale per group, not the K-quants)."""
    a, t = as_numpy(x, "x", np.float32)
    p, _ = as_numpy(w.data, "packed", np.uint8)
    b = None if bias is None else as_numpy(bias, "bias", np.float32)[0]
    return wrap(_core.gemm_i16_packed(a, p, w.format, w.n, w.k, b), t)


def gemv(x, w: PackedWeights, bias=None):
    """y = W x (+ bias) for one token: x float32 [k] -> [n]."""
    if getattr(x, "ndim", None) != 1:
        raise ValueError(f"gemv takes x of shape [k], got {getattr(x, 'shape', None)}")
    return gemm(x, w, bias)


def gemm_reference(rows, fmt: str, n: int, k: int, x) -> np.ndarray:
    """The scalar reference (the same int8 activation quantization, exact sums): for tests."""
    return _core.gemm_reference(as_numpy(rows, "rows", np.uint8)[0], fmt, int(n), int(k),
                                as_numpy(x, "x", np.float32)[0])


def downsample_2x2(x):
    """[h, w, c] -> [ceil(h/2), ceil(w/2), 4c]: cell (r, q) = x(2r,2q), x(2r,2q+1), x(2r+1,2q), x(2r+1,2q+1), zeros
    outside (27x27 -> 14x14)."""
    a, t = as_numpy(x, "x", np.float32)
    if a.ndim != 3:
        raise ValueError(f"x must be [h, w, c], got shape {a.shape}")
    return wrap(_core.downsample_2x2(a), t)


def downsample_linear(x, w: PackedWeights, gamma=None, beta=None, bias=None, *, layer_norm: bool = True,
                      eps: float = 1e-6):
    """LN(downsample_2x2(x)) W^T + bias, fused: x [h, w, c], W [n, 4c] -> [ceil(h/2) * ceil(w/2), n]."""
    a, t = as_numpy(x, "x", np.float32)
    if a.ndim != 3:
        raise ValueError(f"x must be [h, w, c], got shape {a.shape}")
    if w.k != 4 * a.shape[2]:
        raise ValueError(f"weights have K = {w.k}, the down-sampled tokens 4c = {4 * a.shape[2]}")
    vec = [None if v is None else as_numpy(v, n, np.float32)[0] for v, n in ((gamma, "gamma"), (beta, "beta"), (bias, "bias"))]
    p, _ = as_numpy(w.data, "packed", np.uint8)
    return wrap(_core.downsample_linear(a, p, w.format, w.n, layer_norm, *vec, float(eps)), t)


WeightArena = _core.WeightArena
WeightArena.__doc__ = """Room for many packed matrices back to back, as the native engine keeps a model's weights.

``WeightArena(capacity)`` reserves ``capacity`` bytes of address space (2 MiB-aligned, advised as huge pages unless
BLUELM_HUGEPAGES=0; memory is committed only as matrices are packed into it). ``PackedWeights.from_rows(...,
arena=a)`` and ``pack(..., arena=a)`` place each matrix right after the previous one (64-byte aligned) while it has
room, else in an allocation of its own; each packed array keeps the arena alive. ``capacity`` and ``used`` are in
bytes. Streaming a stack of matrices, every byte then lies on huge pages and each matrix follows the last one."""

__all__ = ["PackedWeights", "WeightArena", "downsample_2x2", "downsample_linear", "gemm", "gemm_i16", "gemm_reference",
           "gemv",
           "get_num_threads", "pack", "row_bytes", "set_num_threads"]
