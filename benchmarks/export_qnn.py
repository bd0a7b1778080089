"""The LLM graphs of a real checkpoint compiled for a Snapdragon's HTP and measured on onnxruntime-qnn's emulator:
too slow for the test suite (tens of minutes on 2 shared cores), so its figures live in docs/export.md.

    python benchmarks/export_qnn.py [--model smollm2-135m-gguf] [--soc sm8650] [--weights int4,int8]
                                    [--rounding blocks] [--chunk 32] [--max-context 128] [--json reports.json]
                                    [--matmul-inputs int16|uint16] [--graphs llm_prefill,llm_decode] [--out DIR]

For each weight setting: the float export (chunk T, max_context), then bluelm_v.export.qnn_llm.compile_llm:
uint16 activations calibrated on configs/suites/npu-prompts.json, int4 MatMul weights carried exactly in the model's own
blocks (``--rounding blocks``, int4's default: the GGUF's Q4_1 / Q8_0 blocks) or rounded per channel (``gptq`` on the
same prompts, ``mse``, ``minmax``; the output head int8), compilation with CPU fallback allowed (so the
report shows what QNN left, if anything), cosine against float ONNX Runtime and teacher-forced greedy agreement
against the PyTorch reference over the held-out prompts. Prints one row per graph.

    python benchmarks/export_qnn.py --study --model tiny --spread-weights [--chunk 16 --max-context 64]

Where INT4 agreement is lost, without the emulator (seconds on tiny): the reference's teacher-forced argmax margins,
its agreement with itself at fp16 weights and with relative Gaussian noise on every weight (the noise floor), then
per rounding (min-max, MSE-optimal clipping, GPTQ; the latter two with the output head int8) the prefill graph's
agreement and the residual stream's relative error after every attention and MLP block, (a) with only the rounded
weights put back into the float graph and (b) as the QDQ graph (weights + uint16 activations) on ONNX Runtime's
CPU provider; before those, the torch reference's agreement with its weights rounded per channel or in blocks of 32
(``--torch-only`` stops there: minutes on SmolLM2). The emulator's own figures come from the compile runs above
(tests/test_export_qnn.py on tiny).
``--spread-weights`` gives tiny the wide random weights of the tests (tests/test_export_onnx.spread).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from bluelm_v._paths import resolve_model_spec
    from bluelm_v.export import export_onnx
    from bluelm_v.export.qnn_llm import compile_llm
    from bluelm_v.models.reference import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-gguf")
    ap.add_argument("--soc", default="sm8650")
    ap.add_argument("--weights", default="int4,int8")
    ap.add_argument("--rounding", default=None,
                    help="blocks (int4's default), gptq, mse or minmax (int8's default); bluelm_v.export.qnn_weights")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--max-context", type=int, default=128)
    ap.add_argument("--json", help="write every report here")
    ap.add_argument("--matmul-inputs", default="int16", choices=("int16", "uint16"),
                    help="what the block MatMuls read (docs/export.md, int16 into the HTP's MatMuls)")
    ap.add_argument("--graphs", default="llm_prefill,llm_decode", help="which LLM graphs to compile")
    ap.add_argument("--out", help="keep the float export and the compiled graphs here (default: a temporary "
                                  "directory, removed at the end)")
    ap.add_argument("--study", action="store_true", help="where INT4 agreement is lost (see the module doc)")
    ap.add_argument("--torch-only", action="store_true", help="--study: only the torch reference's rows")
    ap.add_argument("--spread-weights", action="store_true", help="the tests' wide random weights (random models)")
    args = ap.parse_args(argv)
    loaded = load_model(resolve_model_spec(args.model))
    if args.spread_weights:
        spread(loaded)
    if args.study:
        with tempfile.TemporaryDirectory() as tmp:
            float_dir = export_onnx(loaded, Path(tmp) / "float", chunk=args.chunk, tile_batch=1,
                                    max_context=args.max_context, quant="fp32")
            rows = study(loaded, float_dir, Path(tmp), torch_only=args.torch_only)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
        return 0
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.out or scratch
        float_dir = export_onnx(loaded, Path(tmp) / "float", chunk=args.chunk, tile_batch=1,
                                max_context=args.max_context, quant="fp32")
        for weights in args.weights.split(","):
            t0 = time.perf_counter()

            def show(graph, r):
                r = dict(r)
                r.pop("io_quantization", None)
                r["wall_s"] = round(time.perf_counter() - t0, 1)
                rows[f"{weights}/{graph}"] = r
                print(f"{args.model} {weights:5s} {r['rounding']:6s} {graph:12s} "
                      f"nodes {r['nodes_on_qnn']}/{r['nodes']} "
                      f"context {r['context_bytes'] / 1e6:.1f} MB compile {r['compile_s']:.1f} s "
                      f"cosine {r['cosine']:.4f} max|err| {r['max_abs_err']:.3g} "
                      f"greedy agreement {r['greedy_agreement']:.3f} ({r['agreement_positions']} positions), "
                      f"{r['wall_s']:.0f} s since the start of this setting", flush=True)
                if args.json:  # after every graph: a long run stopped early keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")

            compile_llm(loaded, float_dir, Path(tmp) / weights, soc=args.soc, weights=weights,
                        rounding=args.rounding, allow_fallback=True, graphs=args.graphs.split(","),
                        matmul_inputs=args.matmul_inputs, on_report=show)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def spread(loaded, seed: int = 0):
    """The tests' wide random weights (tests/test_export_onnx.spread): norms 1 + 0.1 N(0, 1), the rest 0.1 N(0, 1)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            p.copy_((1 + 0.1 * torch.randn(p.shape, generator=gen)) if (p.dim() == 1 and "norm" in name)
                    else 0.1 * torch.randn(p.shape, generator=gen))
    return loaded


def _torch_agreement(loaded, ids, ref, change) -> float:
    """Teacher-forced agreement with ``ref`` of a copy of the reference LLM whose every weight matrix (and the
    tied head) went through ``change`` ([N, K] float64 -> same)."""
    import copy

    import numpy as np
    import torch

    from bluelm_v.export.qnn_llm import reference_argmax

    lm = copy.deepcopy(loaded.llm)
    with torch.no_grad():
        if lm.lm_head is None:
            w = lm.model.embed_tokens.weight
            lm.lm_head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            lm.lm_head.weight.copy_(w)
        for mod in lm.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.from_numpy(change(mod.weight.double().numpy())))
    shim = type("Shim", (), {"llm": lm})()
    same = sum(int((reference_argmax(shim, x) == r).sum()) for x, r in zip(ids, ref))
    return same / sum(len(x) for x in ids)


def _with_outputs(model, names):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto.FromString(model.SerializeToString())
    m.graph.output.extend([onnx.ValueInfoProto(name=a) for a in names])
    so = ort.SessionOptions()
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # float activations (onnx_runner)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _weights_only(float_model, qdq_model):
    """The float graph with each weight matrix replaced by the QDQ graph's rounded one (integers x scales)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from bluelm_v.export.qnn_weights import _weight_matmuls

    inits = {i.name: i for i in qdq_model.graph.initializer}
    made = {o: n for n in qdq_model.graph.node for o in n.output}
    m = onnx.ModelProto.FromString(float_model.SerializeToString())
    finits = {i.name: i for i in m.graph.initializer}
    names = _weight_matmuls(m)
    for node in qdq_model.graph.node:
        if node.op_type == "MatMul" and node.name in names:
            dq = made[node.input[1]]
            w = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32) * \
                numpy_helper.to_array(inits[dq.input[1]])[None, :]
            wname = names[node.name][1]
            finits[wname].CopyFrom(numpy_helper.from_array(w, wname))
    return m


def study(loaded, float_dir: Path, tmp: Path, torch_only: bool = False) -> dict:
    import numpy as np
    import onnx

    from bluelm_v.export.qnn import qdq_quantize
    from bluelm_v.export.qnn_llm import (greedy_agreement, npu_prompts, prompt_ids, record_llm_feeds,
                                         reference_argmax)
    from bluelm_v.export.qnn_weights import input_hessians, mse_scales, requantize, round_to

    prompts = npu_prompts()
    room = onnx.load(str(float_dir / "llm_prefill.onnx"), load_external_data=False)
    room = [d.dim_value for d in room.graph.input[3].type.tensor_type.shape.dim][2]  # past positions
    cal = [x[:room] for x in prompt_ids(loaded.tokenizer, prompts.calibration)]
    ev = [x[:room] for x in prompt_ids(loaded.tokenizer, prompts.evaluation)]
    ref = [reference_argmax(loaded, x) for x in ev]
    rows: dict = {}
    import torch

    from bluelm_v.models.llm import prefill

    with torch.no_grad():
        logits = [prefill(loaded.llm, loaded.llm.new_cache(1, len(x) + 4), tokens=torch.tensor([x]),
                          all_logits=True)[0].numpy() for x in ev]
    top = np.concatenate([np.sort(v, -1)[:, -2:] for v in logits])
    rows["margin_median"] = float(np.median(top[:, 1] - top[:, 0]))
    rows["logit_std"] = float(np.mean([v.std(-1).mean() for v in logits]))
    rows["fp16_weights"] = _torch_agreement(loaded, ev, ref, lambda w: w.astype(np.float16).astype(np.float64))
    rng = np.random.default_rng(0)
    for eps in (0.005, 0.01, 0.02, 0.05, 0.1):
        rows[f"noise_{eps}"] = _torch_agreement(loaded, ev, ref,
                                                lambda w: w + eps * w.std() * rng.standard_normal(w.shape))
    print(f"positions {sum(map(len, ev))}: top-1 minus top-2 logit, median {rows['margin_median']:.3f} "
          f"(logit std {rows['logit_std']:.3f}); agreement at fp16 weights {rows['fp16_weights']:.3f}; with "
          "relative weight noise " + ", ".join(f"{e:g}: {rows[f'noise_{e}']:.3f}"
                                               for e in (0.005, 0.01, 0.02, 0.05, 0.1)), flush=True)
    vocab = loaded.config.llm.vocab
    for name, bits, block, mse in (("int8 per channel", 8, 0, False), ("int4 per channel, min-max", 4, 0, False),
                                   ("int4 per channel, MSE scales", 4, 0, True),
                                   ("int4 blocks of 32, min-max", 4, 32, False),
                                   ("int4 blocks of 32, MSE scales", 4, 32, True)):
        def rounded(w, bits=bits, block=block, mse=mse):  # the output head (V rows) int8 per channel
            b, g = (8, 0) if w.shape[0] == vocab else (bits, block)
            rows_ = w.reshape(-1, g) if g and w.shape[1] % g == 0 else w
            s = mse_scales(rows_, b) if mse else np.maximum(np.abs(rows_).max(1), 1e-12) / (2 ** (b - 1) - 1)
            return (round_to(rows_, s, b) * s[:, None]).reshape(w.shape)

        rows[f"torch {name}"] = _torch_agreement(loaded, ev, ref, rounded)
        print(f"torch reference, weights only: {name} (head int8): agreement {rows[f'torch {name}']:.3f}", flush=True)
    if torch_only:
        return rows
    feeds = record_llm_feeds(float_dir, cal)["llm_prefill"]
    checks = record_llm_feeds(float_dir, ev)["llm_prefill"]
    hessians = input_hessians(float_dir / "llm_prefill.onnx", feeds)
    fm = onnx.load(str(float_dir / "llm_prefill.onnx"))
    made = {o: n for n in fm.graph.node for o in n.output}
    # the residual stream after each block: an Add one of whose inputs a weight MatMul writes (o_proj, down_proj)
    blocks = [n.output[0] for n in fm.graph.node if n.op_type == "Add" and any(
        i in made and made[i].op_type == "MatMul" and made[i].input[1] in {x.name for x in fm.graph.initializer}
        for i in n.input)]
    want = _with_outputs(fm, blocks)
    for rounding, head in (("minmax", False), ("mse", True), ("gptq", True)):
        qdq = tmp / f"{rounding}.onnx"
        qdq_quantize(float_dir / "llm_prefill.onnx", qdq, feeds, "uint16", "int4", ("logits",) if head else ())
        requantize(qdq, float_dir / "llm_prefill.onnx", rounding, hessians)
        qm = onnx.load(str(qdq))
        for kind, model in (("weights only", _weights_only(fm, qm)), ("weights + uint16", qm)):
            got = _with_outputs(model, blocks)
            err = np.zeros(len(blocks) + 1)
            for f in checks:
                a, b = want.run(None, f), got.run(None, f)
                for j, (x, y) in enumerate(zip(a[3:] + [a[0]], b[3:] + [b[0]])):
                    err[j] += np.linalg.norm(x - y) / np.linalg.norm(x) / len(checks)
            agree = greedy_agreement(float_dir, "llm_prefill", _with_outputs(model, []), loaded, ev)
            agree = agree["greedy_agreement"]
            key = f"{rounding}{' (head int8)' if head else ''}, {kind}"
            rows[key] = {"greedy_agreement": agree, "relative_error_per_block": [round(float(e), 4) for e in err]}
            print(f"int4 {key:32s} agreement {agree:.3f}, residual stream error after each block (last: logits) "
                  + " ".join(f"{e:.3f}" for e in err), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
