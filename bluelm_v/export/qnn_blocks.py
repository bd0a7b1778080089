"""A model's own block-quantized weights carried exactly through QNN (docs/export.md, "INT4 weights").

A GGUF-style block weight is w[k, n] = d[b, n] * c[b, j, n] (+ o[b, n]) for k = 32 b + j: centred integers c
(q - 8 for q4_0 / q4_1, q for q8_0), one scale d per block of 32 inputs and output, and for q4_1 an offset
o = m + 8 d. Rounding it again onto QNN's per-channel int4 grid (one scale per output row) loses most of what a
4-bit block model keeps, and QNN compiles the block-quantized DequantizeLinear to the CPU or, as 8-bit LPBQ, wrong.
So ``carry_blocks`` rewrites every such MatMul of a float graph into operations QNN takes whole, with the integers
as an int4 (int8) weight of scale 1, which is exact:

    x [*lead, K] -> Reshape [R, K/32, 32] -> Transpose [K/32, R, 32] --MatMul c [K/32, 32, N]--> P [K/32, R, N]
    P * d [K/32, 1, N] (+ ReduceSum_j(x) [K/32, R, 1] * o [K/32, 1, N]) -> ReduceSum over K/32 -> [*lead, N]

Only activation quantization is left (uint16: P, the scaled partial sums and the constants d and o each get their
own calibrated scale). ``write_block_integers`` puts the exact integers and scale 1 into the quantized graph in place
of the quantizer's per-tensor rounding of them; ``put_on_block_grid`` puts a float reference's LLM onto q4_0's grid
first (the random and ``tiny`` models), so the model the graphs carry is a 4-bit block model, as a GGUF's is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

BLOCK = 32
GRIDS = ("q4_0", "q4_1", "q8_0")  # tried in this order: a weight takes the first grid it lies on exactly
# An input block whose calibration peak |x| is above HOT_FACTOR x the median block's gets its own partial sums
# (``carry_blocks``' ``hot``): on SmolLM2 this splits 17 of 211 MatMuls, those meeting its massive activations.
HOT_FACTOR = 8.0
_TOLERANCE = 1e-6  # |requantized - w| / max |w|: float32 rounding of d * q + m, nothing more


@dataclass(frozen=True)
class BlockWeight:
    grid: str
    integers: np.ndarray  # [K/32, 32, N] int8, centred: q - 8 (4-bit grids) or q (q8_0)
    scales: np.ndarray  # [K/32, 1, N] float32, d
    offsets: Optional[np.ndarray]  # [K/32, 1, N] float32, m + 8 d (q4_1), else None

    @property
    def bits(self) -> int:
        return 8 if self.grid == "q8_0" else 4

    def dequantize(self) -> np.ndarray:
        """[K, N] float64: the weight the blocks stand for."""
        w = self.integers.astype(np.float64) * self.scales
        if self.offsets is not None:
            w = w + self.offsets
        return w.reshape(-1, w.shape[-1])


def _decode(rows: np.ndarray, grid: str, n: int, k: int) -> BlockWeight:
    """GGUF block bytes [N, K/32 * block_bytes] (bluelm_v.quant's layouts, GGUF's byte for byte) -> BlockWeight."""
    blocks = rows.reshape(n, k // BLOCK, -1)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, K/32]
    offsets = None
    if grid == "q8_0":
        c = blocks[..., 2:].copy().view(np.int8)
    else:
        payload = blocks[..., 4:] if grid == "q4_1" else blocks[..., 2:]
        # byte i holds element i (low nibble) and element i + 16 (high nibble)
        c = (np.concatenate([payload & 0x0F, payload >> 4], axis=-1).astype(np.int16) - 8).astype(np.int8)
        if grid == "q4_1":
            m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
            offsets = (m + 8 * d).T[:, None, :].astype(np.float32)
    return BlockWeight(grid, np.ascontiguousarray(c.transpose(1, 2, 0)), np.ascontiguousarray(d.T[:, None, :]),
                       offsets)


def find_grid(w: np.ndarray) -> Optional[BlockWeight]:
    """w [K, N] (a MatMul's weight) -> its blocks on the first of ``GRIDS`` it lies on exactly, or None."""
    from bluelm_v import quant

    k, n = w.shape
    if k % BLOCK:
        return None
    rows_in = np.ascontiguousarray(w.T, dtype=np.float32)  # [N, K]: blocks run along K
    peak = max(float(np.abs(rows_in).max()), 1e-30)
    for grid in GRIDS:
        rows = quant.quantize(rows_in, grid)
        if float(np.abs(quant.dequantize(rows, grid, k) - rows_in).max()) <= _TOLERANCE * peak:
            return _decode(rows, grid, n, k)
    return None


def put_on_block_grid(llm) -> dict:
    """Put every weight matrix of a torch LLM (its projections, head and embedding table) that lies on none of
    ``GRIDS`` onto q4_0's grid, in place (families.llama.on_weight_grid's rounding); returns {"kept": [grids of
    the matrices already on one], "put_on_q4_0": count}. A GGUF-derived model keeps its own blocks untouched."""
    import torch

    from bluelm_v import quant

    kept, moved = [], 0
    with torch.no_grad():
        for p in llm.parameters():
            if p.dim() != 2 or p.shape[1] % BLOCK:
                continue
            w = p.detach().float().numpy()
            found = find_grid(np.ascontiguousarray(w.T))
            if found is not None:
                kept.append(found.grid)
                continue
            grid = quant.dequantize(quant.quantize(np.ascontiguousarray(w, dtype=np.float32), "q4_0"), "q4_0",
                                    w.shape[1])
            p.copy_(torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)))
            moved += 1
    return {"kept": kept, "put_on_q4_0": moved}


def _const(g, name: str, value: np.ndarray) -> str:
    """An initializer ``name`` holding ``value``, added once: MatMuls sharing a weight share its block constants
    (a second copy under the same name is a duplicate initializer to ONNX Runtime)."""
    from onnx import numpy_helper

    if not any(i.name == name for i in g.initializer):
        g.initializer.append(numpy_helper.from_array(value, name))
    return name


def carry_blocks(src: Path, dst: Path, skip_outputs: Sequence[str] = (), hot: Optional[dict] = None) -> dict:
    """Rewrite every MatMul of the float graph ``src`` whose constant weight [K, N] lies on a block grid into the
    exact block form (module doc) and save it to ``dst``; MatMuls writing a graph output named in
    ``skip_outputs`` stay as they are (the per-channel path quantizes them). ``hot`` ({MatMul node name: input
    block indices}, ``hot_blocks``) gives those blocks their own chain (a Gather of the blocks, their partial sums
    and their sum, added to the rest's at the end), so their calibrated range does not coarsen every other block's.
    Returns {block MatMul node name: BlockWeight} (a split MatMul has two). A weight on no grid is an error naming
    it (put the model on a grid, or round per channel)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name: i for i in g.initializer}
    carried, off_grid, nodes = {}, [], []
    for node in g.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or node.output[0] in skip_outputs:
            nodes.append(node)
            continue
        blocks = find_grid(numpy_helper.to_array(w))
        x_shape = shapes.get(node.input[0], [])
        if blocks is None or not x_shape or any(v <= 0 for v in x_shape):
            off_grid.append(node.name or node.output[0])
            nodes.append(node)
            continue
        k, n = w.dims
        nb, lead = k // BLOCK, x_shape[:-1]
        rows = int(np.prod(lead)) if lead else 1
        base = node.name or node.output[0]
        p = f"{base}/blocks"
        c = _const(g, f"{w.name}_block_integers", blocks.integers.astype(np.float32))
        d = _const(g, f"{w.name}_block_scales", blocks.scales)
        new = [helper.make_node("Reshape", [node.input[0], _const(g, f"{p}/rows", np.array([rows, nb, BLOCK],
                                                                                             np.int64))],
                                [f"{p}/x3"], name=f"{p}/reshape_in"),
               helper.make_node("Transpose", [f"{p}/x3"], [f"{p}/xt"], perm=[1, 0, 2], name=f"{p}/transpose")]
        hot_blocks = sorted({int(b) for b in (hot or {}).get(node.name or node.output[0], ()) if 0 <= int(b) < nb})
        groups = [("", None)] if not hot_blocks or len(hot_blocks) == nb else \
            [("", np.array([b for b in range(nb) if b not in hot_blocks], np.int64)),
             ("/hot", np.array(hot_blocks, np.int64))]
        sums = []
        for tag, idx in groups:
            q = f"{p}{tag}"
            xt, ints, scales, offs = f"{p}/xt", blocks.integers, blocks.scales, blocks.offsets
            if idx is not None:  # this group's blocks of the input, its weights' blocks
                xt = f"{q}/xg"
                new.append(helper.make_node("Gather", [f"{p}/xt", _const(g, f"{q}/index", idx)], [xt], axis=0,
                                            name=f"{q}/gather"))
                ints, scales = ints[idx], scales[idx]
                offs = None if offs is None else offs[idx]
            stem = w.name if idx is None else q  # a weight shared by two MatMuls may be split in one only
            c = _const(g, f"{stem}_block_integers", ints.astype(np.float32))
            d = _const(g, f"{stem}_block_scales", scales)
            new += [helper.make_node("MatMul", [xt, c], [f"{q}/partial"], name=f"{q}/matmul"),
                    helper.make_node("Mul", [f"{q}/partial", d], [f"{q}/scaled"], name=f"{q}/scale")]
            total = f"{q}/scaled"
            if offs is not None:  # q4_1: each block's input sum times its offsets
                o = _const(g, f"{stem}_block_offsets", offs)
                new += [helper.make_node("ReduceSum", [xt, _const(g, f"{q}/axis2", np.array([2], np.int64))],
                                         [f"{q}/xsum"], keepdims=1, name=f"{q}/xsum"),
                        helper.make_node("Mul", [f"{q}/xsum", o], [f"{q}/offset"], name=f"{q}/offset"),
                        helper.make_node("Add", [f"{q}/scaled", f"{q}/offset"], [f"{q}/total"], name=f"{q}/total")]
                total = f"{q}/total"
            if rows == 1:  # QNN fails to allocate a ReduceSum over axis 0 of [18, 1, 49152] (SmolLM2's decode head),
                # and takes [18, 49152]: one row's partial sums summed as 2-D
                new.append(helper.make_node("Reshape", [total, _const(g, f"{q}/flat_shape", np.array([len(ints), n],
                                                                                                np.int64))],
                                            [f"{q}/flat"], name=f"{q}/flatten"))
                total = f"{q}/flat"
            new.append(helper.make_node("ReduceSum", [total, _const(g, f"{q}/axis0", np.array([0], np.int64))],
                                        [f"{q}/sum"], keepdims=0, name=f"{q}/sum"))
            sums.append(f"{q}/sum")
            carried[f"{q}/matmul"] = BlockWeight(blocks.grid, ints, scales, offs)
        if len(sums) == 2:
            new.append(helper.make_node("Add", sums, [f"{p}/both"], name=f"{p}/both"))
        new.append(helper.make_node("Reshape", [f"{p}/both" if len(sums) == 2 else sums[0],
                                                _const(g, f"{p}/out", np.array([*lead, n], np.int64))],
                                    list(node.output), name=f"{p}/reshape_out"))
        nodes += new
    if off_grid:
        raise ValueError(f"{src}: {len(off_grid)} MatMul weights lie on no block grid ({', '.join(GRIDS)}), e.g. "
                         f"{off_grid[0]!r}; put the model on a grid first (qnn_blocks.put_on_block_grid) or round "
                         "per channel (rounding gptq, mse or minmax)")
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.save_model(model, str(dst))
    return carried


def block_input_peaks(path: Path, feeds: Sequence[dict]) -> dict:
    """{MatMul node name: [K/32] max |x| of each block of its input over ``feeds``} for every MatMul of the float
    graph at ``path`` with a constant 2-D weight whose K is whole blocks (what ``hot_blocks`` reads)."""
    from bluelm_v.export.qnn_weights import weight_matmul_inputs

    matmuls, values = weight_matmul_inputs(path, feeds)
    peak: dict[str, np.ndarray] = {}
    for feed in values:
        for t, v in feed.items():
            m = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            peak[t] = m if t not in peak else np.maximum(peak[t], m)
    return {node: peak[a].reshape(-1, BLOCK).max(axis=1) for node, (a, _) in matmuls.items()
            if a in peak and peak[a].size % BLOCK == 0}


def hot_blocks(peaks: dict, factor: float = HOT_FACTOR) -> dict:
    """{MatMul node name: indices of its input blocks whose calibration peak exceeds ``factor`` x the median
    block's}, for the MatMuls that have any: the blocks meeting a model's massive activations."""
    out = {}
    for node, p in peaks.items():
        idx = np.flatnonzero(p > factor * max(float(np.median(p)), 1e-30))
        if 0 < len(idx) < len(p):
            out[node] = idx
    return out


def block_weight_names(path: Path, carried: dict) -> dict:
    """{integer initializer name: bits} of the block MatMuls in the graph at ``path`` (for the quantizer's
    per-tensor overrides)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.input[1]: carried[n.name].bits for n in model.graph.node if n.name in carried}


def write_block_integers(qdq_path: Path, carried: dict) -> int:
    """Put each block MatMul's exact integers, with scale 1 and zero point 0, into the quantized graph in place of
    the quantizer's rounding of them (its DequantizeLinear's integer initializer and per-tensor scale); returns how
    many were written. A block MatMul whose weight is not that DequantizeLinear is an error."""
    import onnx
    from onnx import numpy_helper

    from bluelm_v.export.qnn_weights import _integer_tensor

    model = onnx.load(str(qdq_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    done = 0
    for node in g.node:
        if node.name not in carried:
            continue
        blocks = carried[node.name]
        dq = made_by.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            raise ValueError(f"{qdq_path}: the block MatMul {node.name!r} does not read a quantized constant")
        qi, si = inits[dq.input[0]], inits[dq.input[1]]
        zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else None
        if len(si.dims) != 0 or (zp is not None and np.any(zp != 0)):
            raise ValueError(f"{qdq_path}: the block MatMul {node.name!r} has no per-tensor symmetric weight")
        qi.CopyFrom(_integer_tensor(qi.name, blocks.integers, blocks.bits))
        si.CopyFrom(numpy_helper.from_array(np.array(1.0, np.float32), si.name))
        done += 1
    onnx.save_model(model, str(qdq_path))
    return done


def int16_block_inputs(qdq_path: Path, carried: dict) -> tuple[int, list]:
    """Give each block MatMul of the quantized graph its activation input as int16 with zero point 0
    (``qnn.int16_inputs``); returns (how many were converted, [names of those left uint16]).

    Measured on the HTP emulator (docs/export.md, "int16 into the HTP's MatMuls"; benchmarks/htp_matmul.py): a
    batched MatMul of a uint16 input and int4 weights errs by a fixed fraction of the input's whole uint16 range
    (output relative error 3.3e-4 when the values span the range, 3.3e-2 when they span 1% of it, whatever the
    zero point), so values far below a massive activation's peak lose most of their digits; with an int16 input of
    zero point 0 the error is relative to each value (2.7-3.0e-4 at any spread), as in float16, which also
    overflows past 65504. So where a block MatMul's calibrated partial sums reach ``qnn.INT16_MAX_OUTPUT``, its
    integers' scale becomes 2^-m (exact) and its partial sums' scale and its block scales' are divided and
    multiplied by 2^m, exactly: the products stay where float16 holds them, and the graph computes the same
    numbers. A MatMul that would need it but whose weight, partial-sum or block scales share their scale tensor
    with anything else stays uint16."""
    import math

    import onnx
    from onnx import numpy_helper

    from bluelm_v.export.qnn import INT16_MAX_OUTPUT, _int16_inputs, _links

    model = onnx.load(str(qdq_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = list(g.node)
    made_by, users = _links(nodes)
    readers = {name: len(users.get(name, [])) for name in inits}

    def sole(tensor: str, op: str):
        found = [u for u in users.get(tensor, []) if u.op_type == op]
        return found[0] if len(found) == 1 else None

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def put(name: str, v: float) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(np.array(v, value(name).dtype), name))

    convert, kept = {}, []
    for node in g.node:
        if node.name not in carried:
            continue
        wdq, q = made_by.get(node.input[1]), sole(node.output[0], "QuantizeLinear")
        pdq = sole(q.output[0], "DequantizeLinear") if q is not None else None
        mul = sole(pdq.output[0], "Mul") if pdq is not None else None
        ddq = made_by.get(mul.input[1] if mul.input[0] == pdq.output[0] else mul.input[0]) if mul is not None else None
        if wdq is None or ddq is None or ddq.op_type != "DequantizeLinear" or \
                any(t not in inits for t in (wdq.input[1], q.input[1], q.input[2], ddq.input[1])):
            kept.append(node.name)
            continue
        scale, zero = float(value(q.input[1])), value(q.input[2])
        peak = max(abs(float(zero)), abs(float(np.iinfo(zero.dtype).max) - float(zero))) * scale
        m = max(0, math.ceil(math.log2(peak / INT16_MAX_OUTPUT))) if peak >= INT16_MAX_OUTPUT else 0
        if m:
            if readers[wdq.input[1]] != 1 or readers[ddq.input[1]] != 1 or float(value(wdq.input[1])) != 1.0 \
                    or pdq.input[1] != q.input[1] or readers[q.input[1]] != 2:
                kept.append(node.name)
                continue
            put(wdq.input[1], 2.0 ** -m)
            put(q.input[1], scale * 2.0 ** -m)  # P's QuantizeLinear and DequantizeLinear, its only readers
            put(ddq.input[1], float(value(ddq.input[1])) * 2.0 ** m)
        convert[node.name] = [0]
    done, _ = _int16_inputs(model, convert, math.inf, str(qdq_path))
    onnx.save_model(model, str(qdq_path))
    return done, kept


__all__ = ["BLOCK", "GRIDS", "HOT_FACTOR", "BlockWeight", "block_input_peaks", "block_weight_names", "carry_blocks",
           "find_grid", "hot_blocks", "int16_block_inputs", "put_on_block_grid", "write_block_integers"]
