"""How the HTP emulator's quantized MatMul errs, by the type of its activation input (docs/export.md, "int16 into
the HTP's MatMuls"): the measurement behind ``qnn.int16_inputs``.

    python benchmarks/htp_matmul.py [--soc sm8650] [--json rows.json]

One QDQ MatMul per row, compiled by onnxruntime-qnn for the SoC's HTP and run on its x86 emulator against the
exact result of the same integers (float64, then the output's own uint16 rounding):
  - operand `int4 blocks`: [18, T, 32] x int4 [18, 32, 1536] of scale 1, the batched form of ``qnn_blocks``
    (a SmolLM2 up_proj, K = 576, in blocks of 32);
  - operand `int8 blocks`: the same with int8 integers (q8_0's form);
  - operand `int8 2-D`: [T, 576] x int8 [576, 1536] (a per-tensor int8 weight, as the per-channel path's MatMuls);
  - operand `int4 2-D`: the same with int4 integers;
  - operand `activation`: [3, T, 64] x [3, 64, 64], both inputs activations (attention's scores and values).
The activation input is uint16 (zero point 32768) or int16 (zero point 0), with the same step, and its integers
span `spread` of the type's range: 1.0 is a tensor whose calibrated range its own values fill, 0.01 one whose
range a single outlier set a hundred times wider than the rest (a massive activation's channel). Each row: the
mean and max |HTP - exact| in output steps, the mean error relative to the mean |output|, and the compiled
context's size per weight (how QNN keeps the weight: ~0.6 bytes is int4, ~1.2 int8, ~2.2 float16).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

T, N, N_WEIGHT = 32, 64, 1536  # weight rows: N = 1536 (SmolLM2's FFN), so the context's fixed part is small


def _graph(path: Path, kind: str, xtype: str, zx: int, sx: float, sy: float, shapes: tuple, weight=None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bluelm_v.export.qnn_weights import _integer_tensor

    xt, npx = (TensorProto.UINT16, np.uint16) if xtype == "uint16" else (TensorProto.INT16, np.int16)
    a_shape, b_shape, y_shape = shapes
    inits = [numpy_helper.from_array(np.array(sx, np.float32), "sx"), numpy_helper.from_array(np.array(zx, npx), "zx"),
             numpy_helper.from_array(np.array(sy, np.float32), "sy"),
             numpy_helper.from_array(np.array(32768, np.uint16), "zy")]
    nodes = [helper.make_node("DequantizeLinear", ["a", "sx", "zx"], ["af"])]
    inputs = [helper.make_tensor_value_info("a", xt, a_shape)]
    if kind == "activation":
        nodes.append(helper.make_node("DequantizeLinear", ["b", "sx", "zx"], ["bf"]))
        inputs.append(helper.make_tensor_value_info("b", xt, b_shape))
    else:
        bits = 4 if kind.startswith("int4") else 8
        inits += [_integer_tensor("bq", weight, bits), numpy_helper.from_array(np.array(1.0, np.float32), "sw"),
                  _integer_tensor("zw", np.zeros((), np.int8), 8) if bits == 8
                  else helper.make_tensor("zw", TensorProto.INT4, [], [0])]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "sw", "zw"], ["bf"]))
    nodes += [helper.make_node("MatMul", ["af", "bf"], ["y"]),
              helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"])]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("yq", TensorProto.UINT16, y_shape)],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 11
    onnx.save(model, str(path))


def row(kind: str, xtype: str, spread: float, soc: str, seed: int = 0) -> dict:
    from bluelm_v.export.qnn import SOCS, _qnn_devices, require_qnn

    rng = np.random.default_rng(seed)
    zx = 32768 if xtype == "uint16" else 0
    lo, hi = (0, 65535) if xtype == "uint16" else (-32768, 32767)
    half = max(int(32767 * spread), 1)
    sx = 0.01

    def draw(shape):
        q = np.clip(zx + rng.integers(-half, half + 1, shape), lo, hi)
        return q, (q.astype(np.float64) - zx) * sx

    if kind == "activation":
        (aq, a), (bq, b) = draw((3, T, 64)), draw((3, 64, N))
        weight, feeds_b = None, {"b": bq}
        shapes = ([3, T, 64], [3, 64, N], [3, T, N])
    elif kind in ("int8 2-D", "int4 2-D"):
        aq, a = draw((T, 576))
        weight = rng.integers(-127, 128, (576, N_WEIGHT)) if kind == "int8 2-D" else rng.integers(-8, 8, (576, N_WEIGHT))
        b, feeds_b = weight.astype(np.float64), {}
        shapes = ([T, 576], None, [T, N_WEIGHT])
    else:
        aq, a = draw((18, T, 32))
        shape = (18, 32, N_WEIGHT)
        weight = rng.integers(-8, 8, shape) if kind == "int4 blocks" else rng.integers(-127, 128, shape)
        b, feeds_b = weight.astype(np.float64), {}
        shapes = ([18, T, 32], None, [18, T, N_WEIGHT])
    y = a @ b
    sy = float(np.abs(y).max()) / 32767
    exact = np.clip(np.round(y / sy) + 32768, 0, 65535)
    ort = require_qnn()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        _graph(path, kind, xtype, zx, sx, sy, shapes, weight)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.add_session_config_entry("ep.context_enable", "1")  # the compiled context's size: how the weight is kept
        so.add_session_config_entry("ep.context_file_path", str(Path(tmp) / "ctx.onnx"))
        so.add_session_config_entry("ep.context_embed_mode", "0")
        so.add_provider_for_devices(_qnn_devices(ort), {"backend_type": "htp", **SOCS[soc]})
        session = ort.InferenceSession(str(path), sess_options=so)
        npx = np.uint16 if xtype == "uint16" else np.int16
        got = session.run(None, {"a": aq.astype(npx), **{k: v.astype(npx) for k, v in feeds_b.items()}})[0]
        context = sum(f.stat().st_size for f in Path(tmp).glob("ctx*.bin"))
    d = np.abs(got.astype(np.float64) - exact)
    return {"operand": kind, "input": xtype, "spread": spread, "soc": soc, "mean_steps": round(float(d.mean()), 2),
            "max_steps": int(d.max()), "relative_error": float(d.mean() * sy / np.abs(y).mean()),
            "context_bytes": context,
            "context_bytes_per_weight": None if weight is None else round(context / weight.size, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--soc", default="sm8650")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    try:
        from bluelm_v.export.qnn import require_qnn

        require_qnn()
    except ImportError as exc:
        print(f"skipped: {exc}")
        return 0
    from tqdm import tqdm

    cases = [(k, x, s) for k in ("int4 blocks", "int8 blocks", "int4 2-D", "int8 2-D", "activation") for x in ("uint16", "int16")
             for s in (1.0, 0.1, 0.01)]
    rows = [row(k, x, s, args.soc) for k, x, s in tqdm(cases, desc="HTP MatMuls")]
    print("| operand | input | spread | mean / max error (output steps) | relative error | context bytes per weight |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['operand']} | {r['input']} | {r['spread']} | {r['mean_steps']} / {r['max_steps']} | "
              f"{r['relative_error']:.2e} | {r['context_bytes_per_weight'] or '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
