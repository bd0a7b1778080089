"""How the QNN export rounds its MatMul weights (docs/export.md, "INT4 weights").

onnxruntime's quantizer rounds each weight to the nearest step of a per-output-channel scale set by the channel's
largest |w| (min-max). At 4 bits that leaves ~12% relative error on Gaussian-like weights. Deployed NPU flows do
better in two ways, both here:

- **MSE-optimal clipping** (``mse_scales``): each channel's scale is the one, over clipping ratios 0.50..1.00 of
  its max |w|, that gives the smallest squared rounding error;
- **GPTQ** (``gptq``, Frantar et al. 2022): the columns are rounded one at a time and each one's rounding error is
  spread over the columns not yet rounded through the inverse Hessian H = X^T X of the layer's calibration inputs,
  which minimises the error of the layer's output X W rather than of W.

``requantize`` writes the result into a QDQ graph in place of the quantizer's values (same per-channel,
symmetric layout, so QNN compiles the graph exactly as before), and ``input_hessians`` collects H for every
constant-weight MatMul of a float graph from calibration inputs. Hessians are keyed by weight initializer name:
the prefill and decode graphs share their weights under content-derived names (``onnx_export._content_names``),
so both graphs get the same rounded weights from the prefill graph's calibration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

PER_CHANNEL = ("minmax", "mse", "gptq")  # per-output-channel roundings of float weights (this module)
ROUNDINGS = ("blocks",) + PER_CHANNEL  # blocks: the weights' own block grid carried exactly (qnn_blocks)
_CLIPS = np.linspace(0.5, 1.0, 26)


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def mse_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """w [N, K] (one output channel a row) -> per-row symmetric scales [N] minimising the squared rounding error
    over clipping ratios of the row's max |w|."""
    qmax = _qmax(bits)
    peak = np.maximum(np.abs(w).max(1), 1e-12)
    best_err = np.full(w.shape[0], np.inf)
    best = peak / qmax
    for clip in _CLIPS:
        s = peak * clip / qmax
        err = ((np.clip(np.round(w / s[:, None]), -qmax - 1, qmax) * s[:, None] - w) ** 2).sum(1)
        better = err < best_err
        best_err, best = np.where(better, err, best_err), np.where(better, s, best)
    return best


def round_to(w: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """w [N, K], scales [N] -> integers [N, K] in [-2^(bits-1), 2^(bits-1) - 1]."""
    qmax = _qmax(bits)
    return np.clip(np.round(w / scales[:, None]), -qmax - 1, qmax)


def gptq(w: np.ndarray, h: np.ndarray, bits: int, damp: float = 0.01, block: int = 128,
         mse: bool = True) -> tuple:
    """GPTQ rounding of w [N, K] (rows = output channels) given H [K, K] = X^T X of its inputs; returns
    (integers [N, K], scales [N]). Scales are ``mse_scales`` or, without ``mse``, min-max (each row's max |w|); inputs
    that never vary (a zero diagonal) get weight 0, as in the paper's implementation."""
    w = np.array(w, dtype=np.float64)
    h = np.array(h, dtype=np.float64)
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"Hessian of shape {h.shape} for a weight of {k} inputs")
    scales = mse_scales(w, bits) if mse else np.maximum(np.abs(w).max(1), 1e-12) / _qmax(bits)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * float(np.mean(np.diag(h))) * np.eye(k)
    # upper Cholesky factor U of H^-1 (H^-1 = U^T U): row i holds how column i's error moves the later columns
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros_like(w)
    qmax = _qmax(bits)
    s = scales[:, None]
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i:i + 1]
            qi = np.clip(np.round(col / s), -qmax - 1, qmax)
            q[:, i1 + i] = qi[:, 0]
            e = (col - qi * s) / u1[i, i]
            w1[:, i:] -= e * u1[i:i + 1, i:]
            err1[:, i] = e[:, 0]
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return q, scales


def _weight_matmuls(model) -> dict:
    """{MatMul node name: (activation input name, weight initializer name)} for every MatMul with a constant
    2-D weight [K, N] (the quantizer keeps node names; it renames the output of a MatMul that writes a graph
    output)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            if not n.name or n.name in out:
                raise ValueError(f"the MatMul writing {n.output[0]!r} has no unique node name")
            out[n.name] = (n.input[0], n.input[1])
    return out


def weight_matmul_inputs(float_path: Path, feeds: Sequence[dict]) -> tuple[dict, Iterator[dict]]:
    """(``_weight_matmuls`` of the float graph at ``float_path``, an iterator giving per feed {activation input
    name: its value}): the graph run on ONNX Runtime's CPU provider with those inputs as extra outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(float_path))
    matmuls = _weight_matmuls(model)
    acts = sorted({a for a, _ in matmuls.values()})
    have = {o.name for o in model.graph.output}
    model.graph.output.extend([onnx.ValueInfoProto(name=a) for a in acts if a not in have])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return matmuls, (dict(zip(acts, session.run(acts, f))) for f in feeds)


def input_hessians(float_path: Path, feeds: Sequence[dict]) -> dict:
    """{weight initializer name: H [K, K] = sum of x^T x over every row of its MatMuls' inputs in ``feeds``},
    from the float graph on ONNX Runtime's CPU provider."""
    matmuls, values = weight_matmul_inputs(float_path, feeds)
    sums: dict = {}
    for feed in values:
        for a, x in feed.items():
            x = x.reshape(-1, x.shape[-1]).astype(np.float64)
            sums[a] = x.T @ x if a not in sums else sums[a] + x.T @ x
    out: dict = {}
    for a, wname in matmuls.values():  # a weight read by several MatMuls: the sum of their inputs' Hessians
        if a in sums:
            out[wname] = sums[a] if wname not in out else out[wname] + sums[a]
    return out


def _integer_tensor(name: str, q: np.ndarray, bits: int):
    """Integers [K, N] as an INT4 (two to a byte, the low nibble first, as ONNX packs them) or INT8 initializer,
    stored as raw bytes (a list of int32 values would take 4-8 times the room)."""
    from onnx import TensorProto, helper, numpy_helper

    flat = q.astype(np.int8).ravel()
    if bits == 8:
        return numpy_helper.from_array(flat.reshape(q.shape), name)
    nibbles = (flat & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    return helper.make_tensor(name, TensorProto.INT4, list(q.shape), packed.tobytes(), raw=True)


def requantize(qdq_path: Path, float_path: Path, rounding: str, hessians: Optional[dict] = None) -> dict:
    """Re-round, in the QDQ graph at ``qdq_path``, every per-channel symmetric MatMul weight that the quantizer
    wrote (its DequantizeLinear's integers, scale and zero point 0), from the float graph's weight, with
    ``rounding``; returns {weight name: bits} of what was re-rounded."""
    import onnx
    from onnx import numpy_helper

    if rounding not in PER_CHANNEL:
        raise ValueError(f"rounding must be one of {PER_CHANNEL}, got {rounding!r}")
    if rounding == "minmax":
        return {}
    if rounding == "gptq" and hessians is None:
        raise ValueError("GPTQ rounding needs the Hessians of the calibration inputs")
    floats = onnx.load(str(float_path))
    float_inits = {i.name: i for i in floats.graph.initializer}
    by_name = _weight_matmuls(floats)
    model = onnx.load(str(qdq_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    done = {}
    for node in g.node:
        if node.op_type != "MatMul" or node.name not in by_name:
            continue
        dq = made_by.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        qi, si = inits[dq.input[0]], inits[dq.input[1]]
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.INT8: 8}.get(qi.data_type)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else None
        if bits is None or axis != 1 or len(si.dims) != 1 or (zp is not None and np.any(zp != 0)):
            continue  # not the per-channel symmetric layout this re-rounds
        wname = by_name[node.name][1]
        wt = numpy_helper.to_array(float_inits[wname]).astype(np.float64).T  # [N, K]
        if rounding == "gptq":
            if wname not in hessians:
                raise ValueError(f"{float_path}: no calibration Hessian for the weight {wname!r}")
            q, scales = gptq(wt, hessians[wname], bits)
        else:
            scales = mse_scales(wt, bits)
            q = round_to(wt, scales, bits)
        qi.CopyFrom(_integer_tensor(qi.name, q.T, bits))
        si.CopyFrom(numpy_helper.from_array(scales.astype(np.float32), si.name))
        done[wname] = bits
    onnx.save_model(model, str(qdq_path))
    return done


__all__ = ["PER_CHANNEL", "ROUNDINGS", "gptq", "input_hessians", "mse_scales", "requantize", "round_to",
           "weight_matmul_inputs"]
