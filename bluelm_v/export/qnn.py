"""Graphs compiled for Qualcomm's HTP (Hexagon NPU) with the QNN toolchain that the PyPI wheel ``onnxruntime-qnn``
ships, run on its x86 emulation and checked against float ONNX Runtime.

The steps for one static graph (``compile_graph``):

1. **QDQ quantization** calibrated on real inputs (onnxruntime's QNN QDQ config): activations uint8 or uint16,
   MatMul weights int8 or int4 per output channel, Conv weights int8 per tensor (``PER_CHANNEL`` says why),
   LayerNorm gamma uint8: the form QNN takes whole. At int4 the LLM's MatMuls carry the model's own 4-bit blocks
   exactly by default (``rounding="blocks"``, ``qnn_blocks``: a batched MatMul over the blocks' integers at scale 1,
   the block scales as a Mul); per channel, the weights are re-rounded by GPTQ or MSE-optimal clipping if asked
   (``rounding``, ``qnn_weights``), in the same layout. The LPBQ pattern with 8-bit block scales
   is refused (``refuse_8bit_lpbq``). With uint16 activations the MatMuls of two activations, and the block
   MatMuls unless ``matmul_inputs="uint16"``, read int16 (``int16_inputs``: the HTP's MatMul of a uint16 input
   errs by a share of its whole range, of an int16 one as float16 does).
2. **Quantized inputs and outputs**: the QuantizeLinear on each graph input and the DequantizeLinear on each output
   are removed, so the graph reads and writes uint8/uint16 and every node runs on the NPU; their scale and zero
   point go to the report (the runtime quantizes inputs and dequantizes outputs with them).
3. **Compilation** for a named SoC (``SOCS``) into an offline context binary (``<name>_ctx.onnx`` + its
   ``.bin``), with CPU fallback disabled unless asked; the report counts the nodes QNN took and names any it left.
4. **Numerics**: the context reloads with only the HTP backend named and runs calibration-like inputs; its
   dequantized outputs are compared with the float graph on ONNX Runtime's CPU provider.

Where this stands (onnxruntime-qnn 2.7.0, sm8650): the ONNX export's ViT tile batch and projector compile wholly
for the HTP (tested): the projector's 2x2 merge is written with 4-D tensors (``models.projector.downsample``) and
LayerNorm's gamma is quantized to uint8 (with an int8 gamma QNN leaves LayerNorm to the CPU). A rejected node is
named in the report with QNN's own reason, from its framework op trace.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

# SoC -> QNN HTP options (soc_model id, HTP architecture), as the QNN SDK numbers them.
SOCS = {"sm8650": {"soc_model": "57", "htp_arch": "75"},  # Snapdragon 8 Gen 3
        "sm8550": {"soc_model": "43", "htp_arch": "73"},  # Snapdragon 8 Gen 2
        "sm8750": {"soc_model": "69", "htp_arch": "79"}}  # Snapdragon 8 Elite
ACTIVATIONS = ("uint8", "uint16")
# What the block MatMuls read with uint16 activations (docs/export.md, "int16 into the HTP's MatMuls"): int16 (zero
# point 0; the HTP computes them in float16 and stores their weights as float16, about 2.1 bytes per weight) or
# uint16 (integer arithmetic, int4 / int8 storage, error a share of the input's whole range). The MatMuls of two
# activations (attention: no weight to store) read int16 either way.
MATMUL_INPUTS = ("int16", "uint16")
_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}  # ONNX elem type -> numpy
_REGISTERED = False
# Per-channel weights would be finer, but QNN leaves a per-channel Conv weight's DequantizeLinear (the ViT's patch
# embedding) to the CPU (measured with onnxruntime-qnn 2.7.0 for sm8650); per-tensor int8 runs wholly on the HTP.
PER_CHANNEL = False


def require_qnn():
    """onnxruntime with the QNN execution provider registered, or a one-line error saying what to install."""
    global _REGISTERED
    try:
        import onnxruntime as ort
        import onnxruntime_qnn
    except ImportError:
        raise ImportError("the QNN export needs onnxruntime-qnn (pip install 'bluelm-v[qnn]')") from None
    if not _REGISTERED:
        ort.register_execution_provider_library("QNNExecutionProvider", onnxruntime_qnn.get_library_path())
        _REGISTERED = True
    return ort


def _qnn_devices(ort):
    devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
    if not devices:
        raise RuntimeError("onnxruntime-qnn is installed but offers no QNN device")
    return devices


class _Reader:
    """onnxruntime's calibration reader over a list of input dicts."""

    def __init__(self, feeds: Sequence[dict]):
        self._it = iter(list(feeds))

    def get_next(self) -> Optional[dict]:
        return next(self._it, None)


def drop_identity_casts(path: Path, dst: Path) -> None:
    """Remove a Cast that reads a graph input and casts it to the type it already has (torch's export writes one
    on pixel_values): the input's QuantizeLinear must read the input itself to be moved to the runtime."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    types = {i.name: i.type.tensor_type.elem_type for i in g.input}
    for node in list(g.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and node.input[0] in types and types[node.input[0]] == to:
            for n in g.node:
                n.input[:] = [node.input[0] if x == node.output[0] else x for x in n.input]
            g.node.remove(node)
    onnx.save_model(model, str(dst))


WEIGHTS = ("int8", "int4")


def _overrides(path: Path, weights: str, int8_outputs: Sequence[str] = (), block_bits: Optional[dict] = None) -> dict:
    """Tensor overrides for the quantizer: every constant MatMul weight [K, N] per output channel (axis 1,
    symmetric) in ``weights``, except the MatMuls writing a graph output named in ``int8_outputs`` (the LLM's
    output head), which stay int8; the block integers of ``qnn_blocks`` ({initializer: bits} in ``block_bits``)
    per tensor, symmetric, in int4 or int8 (their exact values and scale 1 are written afterwards); LayerNorm's
    gamma as uint8 (with an int8 gamma QNN's HTP leaves LayerNorm to the CPU; onnxruntime-qnn 2.7.0, sm8650)."""
    import onnx
    from onnxruntime.quantization import QuantType

    model = onnx.load(str(path), load_external_data=False)
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    block_bits = block_bits or {}
    out: dict = {}
    for n in model.graph.node:
        if n.op_type == "LayerNormalization" and n.input[1] in dims:
            out[n.input[1]] = [{"quant_type": QuantType.QUInt8}]
        elif n.op_type == "MatMul" and n.input[1] in block_bits:
            out[n.input[1]] = [{"quant_type": QuantType.QInt4 if block_bits[n.input[1]] == 4 else QuantType.QInt8,
                                "symmetric": True}]
        elif n.op_type == "MatMul" and len(dims.get(n.input[1], [])) == 2:
            four = weights == "int4" and n.output[0] not in int8_outputs
            out[n.input[1]] = [{"quant_type": QuantType.QInt4 if four else QuantType.QInt8, "axis": 1,
                                "symmetric": True}]
    return out


def qdq_quantize(src: Path, dst: Path, calibration: Sequence[dict], activations: str = "uint8",
                 weights: str = "int8", int8_outputs: Sequence[str] = (), block_bits: Optional[dict] = None) -> int:
    """Float graph -> QDQ graph for QNN, calibrated on ``calibration`` (input name -> array dicts): activations
    ``activations``, MatMul weights ``weights`` per output channel (int8 for the MatMuls writing
    ``int8_outputs``), block integers (``block_bits``) per tensor, other weights int8 per tensor; min-max rounding
    (``qnn_weights.requantize`` refines it, ``qnn_blocks.write_block_integers`` makes the blocks exact). Spelled-out
    RMSNorms become single nodes first (``fuse_rms_norm``, after onnxruntime's QNN preprocessing, whose GELU
    fusion expects the graph's own opset); returns how many."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if not calibration:
        raise ValueError("QDQ quantization needs at least one calibration input")
    require_qnn()
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    with tempfile.TemporaryDirectory() as tmp:
        plain, pre = Path(tmp) / "plain.onnx", Path(tmp) / "pre.onnx"
        drop_identity_casts(src, plain)
        source = pre if qnn_preprocess_model(str(plain), str(pre)) else plain
        fused = Path(tmp) / "fused.onnx"
        rms_norms = fuse_rms_norm(source, fused)
        source = fused
        config = get_qnn_qdq_config(
            str(source), _Reader(calibration),
            activation_type=QuantType.QUInt16 if activations == "uint16" else QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=PER_CHANNEL,
            init_overrides=_overrides(source, weights, int8_outputs, block_bits))
        quantize(str(source), str(dst), config)
    return rms_norms


def _links(nodes) -> tuple[dict, dict]:
    """({tensor: the node writing it}, {tensor: [nodes reading it]}) over ``nodes`` (one list of a graph's node
    wrappers: keep it alive while the dicts are used)."""
    made_by = {o: n for n in nodes for o in n.output}
    users: dict[str, list] = {}
    for n in nodes:
        for t in n.input:
            users.setdefault(t, []).append(n)
    return made_by, users


def _rms_norm_chains(model) -> list:
    """[(x, eps, gamma initializer, [node indices])] of each RMSNorm spelled out as torch's export writes it
    (``fuse_rms_norm``), the indices into ``model.graph.node``."""
    from onnx import numpy_helper

    g = model.graph
    all_nodes = list(g.node)  # one wrapper per node, kept alive: ids below stay those of these wrappers
    index = {id(n): k for k, n in enumerate(all_nodes)}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    root = {i.name: i.name for i in g.initializer}
    for n in all_nodes:  # Constant nodes, and Identity aliases of a constant (torch's export of a shared weight)
        if n.op_type == "Constant":
            consts.update({n.output[0]: numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"})
        elif n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
            root[n.output[0]] = root.get(n.input[0], n.input[0])
    _, users = _links(all_nodes)
    outputs = {o.name for o in g.output}

    def sole(t: str, op: str):
        u = users.get(t, [])
        return u[0] if len(u) == 1 and u[0].op_type == op and t not in outputs else None

    def scalar(name: str) -> Optional[float]:
        v = consts.get(name)
        return float(v.ravel()[0]) if v is not None and v.size == 1 else None

    def last_axis_only(node) -> bool:
        axes = [list(a.ints) for a in node.attribute if a.name == "axes"]
        if len(node.input) > 1:
            axes = [[int(a) for a in consts.get(node.input[1], np.array([0])).ravel()]]
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        return keep == 1 and axes == [[-1]]

    def chain_of(pw):
        if pw.op_type != "Pow" or scalar(pw.input[1]) != 2.0:
            return None
        mean = sole(pw.output[0], "ReduceMean")
        add = sole(mean.output[0], "Add") if mean is not None and last_axis_only(mean) else None
        if add is None:
            return None
        eps = scalar(add.input[1] if add.input[0] == mean.output[0] else add.input[0])
        sqrt = sole(add.output[0], "Sqrt") if eps is not None else None
        div = sole(sqrt.output[0], "Div") if sqrt is not None else None
        if div is None or div.input[1] != sqrt.output[0] or scalar(div.input[0]) != 1.0:
            return None
        mul = sole(div.output[0], "Mul")
        if mul is None or pw.input[0] not in mul.input:
            return None
        nodes, t = [pw, mean, add, sqrt, div, mul], mul.output[0]
        cast = sole(t, "Cast")
        if cast is not None:
            nodes.append(cast)
            t = cast.output[0]
        scale = sole(t, "Mul")
        gamma = next((i for i in scale.input if i != t), None) if scale is not None else None
        if gamma is None or gamma not in root or consts[gamma].ndim != 1:
            return None
        return pw.input[0], eps, root[gamma], [index[id(n)] for n in nodes + [scale]]

    return [c for c in map(chain_of, all_nodes) if c is not None]


def fuse_rms_norm(src: Path, dst: Path) -> int:
    """Rewrite each RMSNorm that torch's export spells out (Pow 2 -> ReduceMean over the last axis -> Add eps ->
    Sqrt -> Div 1 by it -> Mul, an optional Cast, then Mul by a constant gamma) as one ONNX RMSNormalization
    (opset 23; the graph is converted to it first), and save to ``dst``; returns how many. Spelled out, each
    intermediate tensor gets its own uint16 scale, and x^2 and its mean span the square of the residual stream's
    range: SmolLM2's massive activations (2.5e4 in one channel of the first token) leave a step of ~5 on the mean
    of squares, so every other token's norm was noise (logits cosine -0.17 on ONNX Runtime's CPU). One
    RMSNormalization node is quantized only at its input and output (gamma uint16), and QNN compiles it whole for
    the HTP (onnxruntime-qnn 2.7.0, sm8650)."""
    import onnx
    from onnx import helper, version_converter

    model = onnx.load(str(src))
    if not _rms_norm_chains(model):
        onnx.save_model(model, str(dst))
        return 0
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 23:
        model = version_converter.convert_version(model, 23)  # Reduce* take axes as an input from opset 18
    g = model.graph
    old = list(g.node)
    replace, drop = {}, set()
    for x, eps, gamma, chain in _rms_norm_chains(model):
        pw = old[chain[0]]
        name = (pw.name.rsplit("/", 1)[0] if "/" in pw.name else pw.name) + "/rms_norm"
        drop.update(chain)
        replace[chain[-1]] = helper.make_node("RMSNormalization", [x, gamma], list(old[chain[-1]].output), axis=-1,
                                              epsilon=float(eps), name=name)
    nodes = [replace.get(k, n) for k, n in enumerate(old) if k in replace or k not in drop]
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    nodes = [n for n in nodes if n.op_type not in ("Constant", "Identity") or n.output[0] in used]  # the chains'
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}  # (their constants, gamma's aliases)
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.save_model(model, str(dst))
    return len(replace)


def refuse_8bit_lpbq(path: Path) -> None:
    """Refuse the LPBQ pattern with 8-bit block scales: a DequantizeLinear whose scale is itself the output of a
    DequantizeLinear of 8-bit integers. QNN (onnxruntime-qnn 2.7.0) accepts it and computes wrong outputs (max
    error 1.79 measured) without any error; with 4-bit block scales it is right."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    types = {i.name: i.data_type for i in g.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input)})
    made_by = {o: n for n in g.node for o in n.output}
    eight = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    for n in g.node:
        if n.op_type != "DequantizeLinear" or len(n.input) < 2:
            continue
        src = made_by.get(n.input[1])
        if src is not None and src.op_type == "DequantizeLinear" and types.get(src.input[0]) in eight:
            raise ValueError(f"{path}: node {n.name or n.output[0]!r} is the LPBQ pattern with 8-bit block scales "
                             f"({src.input[0]!r}), which QNN compiles without error into wrong outputs; use 4-bit "
                             "block scales or per-channel weights")


def _initializer(model, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise ValueError(f"quantization parameter {name!r} is not an initializer")


_MOVES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice")  # Q(move(x)) == move(Q(x))


def _hoist_input_quantize(model, name: str) -> None:
    """An input read only by data-movement nodes (or chains of them) whose outputs each go only to a per-tensor
    QuantizeLinear (the quantizer leaves a Reshape's or Slice's input float): give the input one QDQ pair
    covering the union of their ranges, so the input can be quantized by the runtime and the moves run on the NPU
    as QDQ units (each re-quantizing to its own output's scale, as before)."""
    from onnx import helper, numpy_helper

    g = model.graph
    users = [n for n in g.node if name in n.input]
    if not users or any(n.op_type not in _MOVES or list(n.input).count(name) != 1 or n.input[0] != name
                        for n in users):
        return
    qs = []
    for move in users:
        while True:  # a chain of moves (an HF projector's pixel shuffle: Reshape, Transpose, Reshape) ends in the Q
            after = [n for n in g.node if move.output[0] in n.input]
            if len(after) == 1 and after[0].op_type in _MOVES and after[0].input[0] == move.output[0]:
                move = after[0]
                continue
            break
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or after[0].input[0] != move.output[0]:
            return
        qs.append(after[0])
    params = [(_initializer(model, q.input[1]), _initializer(model, q.input[2])) for q in qs]
    if any(s.size != 1 for s, _ in params) or len({zp.dtype for _, zp in params}) != 1:
        return
    zdtype = params[0][1].dtype
    if len(qs) == 1:
        scale_name, zp_name = qs[0].input[1], qs[0].input[2]
    else:
        info = np.iinfo(zdtype)
        lo = min(float(s) * (info.min - int(zp)) for s, zp in params)
        hi = max(float(s) * (info.max - int(zp)) for s, zp in params)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32(max(hi - lo, 1e-12) / (info.max - info.min))
        zp = np.array(np.clip(round(info.min - lo / scale), info.min, info.max), dtype=zdtype)
        scale_name, zp_name = f"{name}_union_scale", f"{name}_union_zero_point"
        g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                              numpy_helper.from_array(zp, zp_name)])
    q = helper.make_node("QuantizeLinear", [name, scale_name, zp_name], [f"{name}_q"], name=f"{name}_QuantizeLinear")
    dq = helper.make_node("DequantizeLinear", [f"{name}_q", scale_name, zp_name], [f"{name}_dq"],
                          name=f"{name}_DequantizeLinear")
    for move in users:
        move.input[0] = dq.output[0]
    nodes = list(g.node)  # topological order: Q and DQ before the first move
    at = min(nodes.index(m) for m in users)
    nodes[at:at] = [q, dq]
    del g.node[:]
    g.node.extend(nodes)


def strip_io_qdq(path: Path) -> dict:
    """Remove the QuantizeLinear reading each graph input and the DequantizeLinear writing each graph output, so
    the graph's I/O is quantized; returns {tensor: {"dtype", "scale", "zero_point"}} for the runtime."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    io: dict[str, dict] = {}
    for inp in g.input:
        _hoist_input_quantize(model, inp.name)
        users = [n for n in g.node if inp.name in n.input]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or users[0].input[0] != inp.name:
            continue
        q = users[0]
        zp = _initializer(model, q.input[2])
        io[inp.name] = {"dtype": str(zp.dtype), "scale": float(_initializer(model, q.input[1])),
                        "zero_point": int(zp)}
        for n in g.node:  # the quantized tensor is now the input itself
            n.input[:] = [inp.name if x == q.output[0] else x for x in n.input]
        g.node.remove(q)
        inp.type.tensor_type.elem_type = onnx.helper.np_dtype_to_tensor_dtype(zp.dtype)
    for out in g.output:
        producers = [n for n in g.node if out.name in n.output]
        if len(producers) != 1 or producers[0].op_type != "DequantizeLinear":
            continue
        dq = producers[0]
        zp = _initializer(model, dq.input[2])
        io[out.name] = {"dtype": str(zp.dtype), "scale": float(_initializer(model, dq.input[1])),
                        "zero_point": int(zp)}
        quantized = dq.input[0]
        for n in g.node:  # whatever wrote the quantized tensor now writes the output
            n.output[:] = [out.name if x == quantized else x for x in n.output]
            n.input[:] = [out.name if x == quantized else x for x in n.input]
        g.node.remove(dq)
        out.type.tensor_type.elem_type = onnx.helper.np_dtype_to_tensor_dtype(zp.dtype)
    onnx.save_model(model, str(path))
    return io


def quantize_feeds(feeds: dict, io: dict) -> dict:
    out = {}
    for name, x in feeds.items():
        p = io.get(name)
        if p is None:
            out[name] = x
            continue
        info = np.iinfo(np.dtype(p["dtype"]))
        q = np.round(x.astype(np.float64) / p["scale"]) + p["zero_point"]
        out[name] = np.clip(q, info.min, info.max).astype(p["dtype"])
    return out


def dequantize(name: str, y: np.ndarray, io: dict) -> np.ndarray:
    p = io.get(name)
    return y.astype(np.float32) if p is None else ((y.astype(np.float32) - p["zero_point"]) * p["scale"])


# The HTP computes a MatMul of int16 inputs like float16: outputs beyond its 65504 overflow (relative error 0.28-0.74
# in benchmarks/htp_matmul.py's full-range int16 rows), so a MatMul whose calibrated output reaches this stays uint16.
INT16_MAX_OUTPUT = 16384.0


def int16_inputs(qdq_path: Path, inputs: dict, max_output: float = INT16_MAX_OUTPUT) -> tuple[int, list]:
    """Put a QuantizeLinear / DequantizeLinear pair to int16 with zero point 0 after the uint16 DequantizeLinear
    feeding each of ``inputs`` ({node name: [input indices]}) in the quantized graph at ``qdq_path`` (QNN
    compiles the pair to one Convert); returns (how many inputs were converted, [names of the nodes left uint16
    because their calibrated output range reaches ``max_output``]). The int16 scale covers the uint16 range's larger
    end, max(|lo|, |hi|) / 32767, at most one bit coarser than the uint16 step. Why (docs/export.md, "int16 into
    the HTP's MatMuls"): the HTP's MatMul of a uint16 input errs by a fixed fraction of that input's whole range,
    of an int16 one (zero point 0) by a fraction of each value, as float16 does (and so overflows as float16
    does). An input not read through a uint16 DequantizeLinear is an error naming the node."""
    import onnx

    model = onnx.load(str(qdq_path))
    out = _int16_inputs(model, inputs, max_output, str(qdq_path))
    onnx.save_model(model, str(qdq_path))
    return out


def _int16_inputs(model, inputs: dict, max_output: float, where: str) -> tuple[int, list]:
    """``int16_inputs`` on a loaded model, in place (``where`` names it in errors)."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes_in = list(g.node)
    made_by, users = _links(nodes_in)

    def output_peak(node) -> float:
        q = [u for u in users.get(node.output[0], []) if u.op_type == "QuantizeLinear"]
        if not q or q[0].input[1] not in inits or len(q[0].input) < 3 or q[0].input[2] not in inits:
            return float("inf")  # an output not quantized: its range is unknown
        scale, zero = float(numpy_helper.to_array(inits[q[0].input[1]])), numpy_helper.to_array(inits[q[0].input[2]])
        top = float(np.iinfo(zero.dtype).max)
        return max(abs(float(zero)) * scale, abs(top - float(zero)) * scale)

    inserted: dict[int, list] = {}
    done, kept = 0, []
    for at, node in enumerate(nodes_in):
        if node.name in inputs and output_peak(node) >= max_output:
            kept.append(node.name)
            continue
        for index in inputs.get(node.name, ()):
            dq = made_by.get(node.input[index]) if index < len(node.input) else None
            if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or \
                    dq.input[1] not in inits or dq.input[2] not in inits:
                raise ValueError(f"{where}: input {index} of {node.name!r} is not a quantized activation")
            zero = numpy_helper.to_array(inits[dq.input[2]])
            if zero.dtype != np.uint16:
                raise ValueError(f"{where}: input {index} of {node.name!r} is {zero.dtype}, not uint16")
            scale, z = float(numpy_helper.to_array(inits[dq.input[1]])), float(zero)
            s16 = max(abs(z * scale), abs((65535.0 - z) * scale), 1e-30) / 32767.0
            stem = f"{node.name}/int16_{index}"
            g.initializer.extend([numpy_helper.from_array(np.array(s16, np.float32), f"{stem}/scale"),
                                  numpy_helper.from_array(np.array(0, np.int16), f"{stem}/zero_point")])
            inserted.setdefault(at, []).extend([
                helper.make_node("QuantizeLinear", [node.input[index], f"{stem}/scale", f"{stem}/zero_point"],
                                 [f"{stem}/q"], name=f"{stem}/quantize"),
                helper.make_node("DequantizeLinear", [f"{stem}/q", f"{stem}/scale", f"{stem}/zero_point"],
                                 [f"{stem}/x"], name=f"{stem}/dequantize")])
            node.input[index] = f"{stem}/x"
            done += 1
    nodes = []
    for at, node in enumerate(nodes_in):
        nodes += inserted.get(at, [])
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return done, kept


def activation_matmuls(qdq_path: Path) -> dict:
    """{MatMul name: [0, 1]} of the quantized graph's MatMuls whose two inputs are both activations read through
    a uint16 DequantizeLinear (attention's scores and weighted values), for ``int16_inputs``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    made_by, _ = _links(nodes)

    def uint16_activation(t: str) -> bool:
        dq = made_by.get(t)
        return (dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] not in inits
                and len(dq.input) > 2 and dq.input[2] in inits
                and numpy_helper.to_array(inits[dq.input[2]]).dtype == np.uint16)

    return {n.name: [0, 1] for n in nodes
            if n.op_type == "MatMul" and len(n.input) == 2 and all(uint16_activation(t) for t in n.input)}


def compile_graph(float_path: Union[str, Path], out_dir: Union[str, Path], name: str, *, soc: str = "sm8650",
                  calibration: Sequence[dict], checks: Sequence[dict] = (), activations: str = "uint8",
                  weights: str = "int8", rounding: Optional[str] = None, hessians: Optional[dict] = None,
                  int8_outputs: Sequence[str] = (), allow_fallback: bool = False,
                  matmul_inputs: str = "int16") -> dict:
    """Quantize, compile and check one static graph (see the module doc); returns its report.
    ``matmul_inputs`` (``MATMUL_INPUTS``): with uint16 activations, what the block MatMuls read (``int16_inputs``;
    the MatMuls of two activations read int16 either way). ``rounding`` of
    the MatMul weights: ``blocks`` (int4's default: every weight's own block grid carried exactly,
    ``qnn_blocks``; the MatMuls writing ``int8_outputs`` int8 per channel), or per output channel ``minmax``
    (int8's default: the quantizer's), ``mse`` or ``gptq`` (``qnn_weights``; GPTQ's Hessians from ``hessians``
    or, if None, from ``calibration`` on this graph)."""
    from bluelm_v.export.qnn_blocks import (block_input_peaks, block_weight_names, carry_blocks, hot_blocks,
                                            int16_block_inputs, write_block_integers)
    from bluelm_v.export.qnn_weights import ROUNDINGS, input_hessians, requantize

    rounding = rounding or ("blocks" if weights == "int4" else "minmax")
    if soc not in SOCS:
        raise ValueError(f"unknown SoC {soc!r}; supported: {', '.join(SOCS)}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "blocks" and weights != "int4":
        raise ValueError(f"rounding 'blocks' carries 4-bit block weights: it needs weights 'int4', not {weights!r}")
    if matmul_inputs not in MATMUL_INPUTS:
        raise ValueError(f"matmul_inputs must be one of {MATMUL_INPUTS}, got {matmul_inputs!r}")
    ort = require_qnn()
    int16 = activations == "uint16" and matmul_inputs == "int16"  # the block MatMuls
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qdq = out / f"{name}.qdq.onnx"
    carried: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(float_path)
        if rounding == "blocks":
            source = Path(tmp) / "blocks.onnx"
            carried = carry_blocks(Path(float_path), source, skip_outputs=int8_outputs,
                                   hot=hot_blocks(block_input_peaks(Path(float_path), calibration)))
        rms_norms = qdq_quantize(source, qdq, calibration, activations, weights, int8_outputs,
                                 block_weight_names(source, carried) if carried else None)
    if rounding == "blocks":
        rerounded = {}
        write_block_integers(qdq, carried)
        block_int16, kept_blocks = int16_block_inputs(qdq, carried) if int16 else (0, [])
    else:
        block_int16, kept_blocks = 0, []
        if rounding == "gptq" and hessians is None:
            hessians = input_hessians(Path(float_path), calibration)
        rerounded = requantize(qdq, Path(float_path), rounding, hessians)
    attention_int16, kept_uint16 = int16_inputs(qdq, activation_matmuls(qdq)) if activations == "uint16" else (0, [])
    io = strip_io_qdq(qdq)
    refuse_8bit_lpbq(qdq)
    ctx = out / f"{name}_ctx.onnx"
    for old in [ctx, *out.glob(f"{name}_ctx*.bin")]:  # QNN refuses to overwrite a context it wrote before
        old.unlink(missing_ok=True)
    trace_dir = out / f"{name}_trace"
    trace_dir.mkdir(exist_ok=True)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "0" if allow_fallback else "1")
    so.add_session_config_entry("ep.context_enable", "1")
    so.add_session_config_entry("ep.context_file_path", str(ctx))
    so.add_session_config_entry("ep.context_embed_mode", "0")
    so.add_provider_for_devices(_qnn_devices(ort), {"backend_type": "htp", **SOCS[soc],
                                                    "enable_framework_op_trace": "1",
                                                    "framework_op_trace_dir": str(trace_dir)})
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(qdq), sess_options=so)
    except Exception as exc:  # noqa: BLE001 - QNN's refusal is the report's answer, with its message
        rejected = "; ".join(f"{n['op']} {n['name']}: {n['reason']}" for n in _rejections(trace_dir).values())
        raise RuntimeError(f"{name}: QNN did not take the whole graph for {soc} ({rejected or exc}); "
                           "pass allow_fallback to let ONNX Runtime's CPU run the rest") from None
    compile_s = time.perf_counter() - t0
    reasons = _rejections(trace_dir)
    on_qnn, fallback = 0, []
    for sub in session.get_provider_graph_assignment_info():
        if sub.ep_name == "QNNExecutionProvider":
            on_qnn += len(sub.get_nodes())
        else:
            fallback += [{"op": n.op_type, "name": n.name, "ep": sub.ep_name,
                          "reason": reasons.get(n.name, {}).get("reason", "not claimed by QNN")}
                         for n in sub.get_nodes()]
    nodes = on_qnn + len(fallback)  # the graph as ONNX Runtime runs it (constants folded)
    binaries = sorted(out.glob(f"{name}_ctx*.bin"))
    report: dict[str, Any] = {
        "graph": name, "soc": soc, "htp_arch": f"v{SOCS[soc]['htp_arch']}", "activations": activations,
        "weights": _weights_label(weights, rounding, carried, int8_outputs), "rounding": rounding,
        "rerounded_weights": len(rerounded),
        "block_weights": {g: sum(b.grid == g for k, b in carried.items() if not k.endswith("/hot/matmul"))
                          for g in sorted({b.grid for b in carried.values()})},
        "hot_block_splits": sum(k.endswith("/hot/matmul") for k in carried),
        "matmul_inputs": matmul_inputs if activations == "uint16" else activations,
        "int16_block_inputs": block_int16,
        "int16_activation_matmul_inputs": attention_int16, "uint16_matmuls_for_range": kept_blocks + kept_uint16,
        "rms_norms_fused": rms_norms,
        "nodes": nodes, "nodes_on_qnn": on_qnn,
        "fallback_nodes": fallback,
        "context": ctx.name, "context_bytes": sum(b.stat().st_size for b in binaries),
        "compile_s": round(compile_s, 3), "io_quantization": io}
    if checks:
        report.update(check_context(ctx, Path(float_path), checks, io))
    return report


def _weights_label(weights: str, rounding: str, carried: dict, int8_outputs: Sequence[str]) -> str:
    head = f" ({', '.join(int8_outputs)} int8 per channel)" if int8_outputs else ""
    if rounding == "blocks":
        grids = ", ".join(sorted({b.grid for b in carried.values()})) or "none"
        return f"MatMul int4: the weights' own blocks of 32 carried exactly ({grids}){head}, others int8 per tensor"
    return f"MatMul {weights} per channel{head}, others int8 per tensor"


def _rejections(trace_dir: Path) -> dict:
    """QNN's own reasons for the nodes it rejected, from its framework op trace ({node name: {op, name, reason}})."""
    import json

    out = {}
    for path in sorted(trace_dir.glob("*.json")):
        try:
            trace = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for n in trace.get("unsupported_nodes", []) if isinstance(trace, dict) else []:
            if isinstance(n, dict) and "node_name" in n:
                out[n["node_name"]] = {"op": n.get("op_type", "?"), "name": n["node_name"],
                                       "reason": str(n.get("reason", "?"))}
    return out


def check_context(ctx: Path, float_path: Path, checks: Sequence[dict], io: dict) -> dict:
    """Reload the context with only the HTP backend named (as a phone would) and compare its dequantized outputs
    with the float graph on ONNX Runtime's CPU provider: max |error| and cosine over every check input."""
    ort = require_qnn()
    so = ort.SessionOptions()
    so.add_provider_for_devices(_qnn_devices(ort), {"backend_type": "htp"})
    npu = ort.InferenceSession(str(ctx), sess_options=so)
    ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in ref.get_outputs()]
    err, dot, na, nb = 0.0, 0.0, 0.0, 0.0
    for feeds in checks:
        want = ref.run(None, feeds)
        got = npu.run(None, quantize_feeds(feeds, io))
        for name, a, b in zip(names, want, got):
            b = dequantize(name, b, io).astype(np.float64)
            a = a.astype(np.float64)
            err = max(err, float(np.abs(a - b).max()))
            dot, na, nb = dot + float((a * b).sum()), na + float((a * a).sum()), nb + float((b * b).sum())
    return {"max_abs_err": err, "cosine": dot / max(np.sqrt(na * nb), 1e-30), "checked_inputs": len(checks)}


def vision_inputs(cfg, tile_batch: int, images: Sequence[Any] = (), count: int = 2) -> list[np.ndarray]:
    """Tile batches [B, 3, S, S] from real pictures (the shipped synthetic samples unless ``images``), normalized
    as the model's ViT expects: what calibration and checks run on."""
    from bluelm_v.image import preprocess
    from bluelm_v.samples import make_sample

    sources = list(images) or [make_sample(n) for n in ("document", "photo", "chart", "screenshot")]
    tiles = np.concatenate([preprocess(s, tile=cfg.vision.image_size, mean=cfg.vision.mean,
                                       std=cfg.vision.std).pixels for s in sources])
    batches = [tiles[i:i + tile_batch] for i in range(0, len(tiles) - tile_batch + 1, tile_batch)]
    return [b.astype(np.float32) for b in batches[:count * 2]]


__all__ = ["ACTIVATIONS", "SOCS", "WEIGHTS", "check_context", "compile_graph", "drop_identity_casts", "fuse_rms_norm",
           "qdq_quantize", "refuse_8bit_lpbq", "require_qnn", "strip_io_qdq", "vision_inputs"]
