"""The LLM's prefill-chunk and decode-step graphs compiled for Qualcomm's HTP, and their numerics against the
PyTorch reference (docs/export.md).

The graphs are the ONNX export's (``export_onnx(..., quant="fp32")``: KV cache, positions and mask as static
inputs, this chunk's keys and values as outputs, attention in 4-D). For QNN:

- the additive mask holds ``MASK_VALUE`` (a large finite negative) where a key is hidden: a quantized Add cannot
  hold -inf, and exp(-255) is zero to float32 next to any visible score;
- activations are uint16 and MatMul weights int4 (or int8) per output channel (the paper's LLM setting: INT4
  weights, INT16 activations), calibrated on real prompts (configs/suites/npu-prompts.json) run through the float
  graphs chunk by chunk, so the KV inputs are seen with real past keys;
- the numerics are teacher-forced: every position of a held-out prompt goes through the compiled graph (prefill:
  chunk by chunk; decode: the prompt's first part prefilled by the float graph, then one token at a time), and
  ``greedy_agreement`` is the fraction of positions whose argmax equals the reference's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from bluelm_v.export.onnx_runner import OnnxModel
from bluelm_v.export.qnn import compile_graph, dequantize, quantize_feeds, require_qnn, _qnn_devices

MASK_VALUE = -255.0
GRAPHS = ("llm_prefill", "llm_decode")
PREFIX_FILE = "llm_prefix.npz"  # the first token's keys and values, computed in float (compile_llm's prefix)
# The decode graph is calibrated on every token of the calibration prompts (after the first): with only their last
# 4 (32 steps) its ranges missed the embeddings of tokens in the held-out prompts, which were then clipped (tiny:
# 7% relative error after the first q_proj, decode agreement 0.78 against the prefill graph's 0.97).
CALIBRATION_DECODE_TOKENS = 1 << 20


@dataclass(frozen=True)
class PromptSet:
    version: int
    name: str
    description: str
    source: str
    calibration: list[str]
    evaluation: list[str]


def npu_prompts() -> PromptSet:
    from bluelm_v.config import load

    return load("suites", "npu-prompts", PromptSet)


class _Recorder:
    """A session whose every run's feeds are kept (the calibration and check inputs of a graph)."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, names, feeds):
        self.feeds.append({k: v.copy() for k, v in feeds.items()})
        return self.session.run(names, feeds)


class QuantizedSession:
    """A compiled context on the HTP emulator behind the float session's interface: quantizes the inputs and
    dequantizes the outputs with the graph's I/O quantization (``io_quantization`` of its report)."""

    def __init__(self, ctx: Union[str, Path], io: dict):
        ort = require_qnn()
        so = ort.SessionOptions()
        so.add_provider_for_devices(_qnn_devices(ort), {"backend_type": "htp"})
        self.session = ort.InferenceSession(str(ctx), sess_options=so)
        self.io = io
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, names, feeds):
        out = self.session.run(None, quantize_feeds(feeds, self.io))
        return [dequantize(n, y, self.io) for n, y in zip(self.names, out)]


def finite_mask_model(folder: Union[str, Path]) -> OnnxModel:
    """The float ONNX runner with the QNN mask convention."""
    model = OnnxModel(folder)
    model.mask_value = MASK_VALUE
    return model


def prompt_ids(tokenizer, prompts: Sequence[str], first: Optional[int] = None) -> list[list[int]]:
    """Token ids of each prompt, starting with ``first`` (prepended where the tokenizer did not put it)."""
    out = [list(tokenizer.encode(p)) for p in prompts]
    return [ids if first is None or (ids and ids[0] == first) else [int(first)] + ids for ids in out]


def first_token(loaded) -> int:
    """The token every chat prompt of the model starts with (its template's first: ``<bos>``, ``<|im_start|>``)."""
    tok = loaded.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "?"}]))
    if not ids:
        raise ValueError("the chat template gives no tokens")
    return int(ids[0])


def record_llm_feeds(folder: Union[str, Path], prompts: Sequence[Sequence[int]], decode_tokens: int = 4,
                     prefix: Optional[tuple] = None) -> dict:
    """Run each prompt through the float graphs (all of it chunk by chunk through prefill; then its first part
    prefilled and its last ``decode_tokens`` tokens decoded one by one) and return {graph: [feeds, ...]}. With
    ``prefix`` (token, keys, values) every prompt starts from a cache holding it (``OnnxModel.set_prefix``)."""
    model = finite_mask_model(folder)
    if prefix is not None:
        model.set_prefix(*prefix)
    rec = {g: _Recorder(model.sessions[g]) for g in GRAPHS}
    model.sessions.update(rec)
    for ids in prompts:
        rest = model.after_prefix(ids)
        model.reset()
        model.prefill(model.embed(rest))
        split = max(1, len(rest) - decode_tokens)
        model.reset()
        model.prefill(model.embed(rest[:split]))
        for tok in rest[split:]:
            model.decode(tok)
    return {g: r.feeds for g, r in rec.items()}


def reference_argmax(loaded, ids: Sequence[int]) -> np.ndarray:
    """The PyTorch reference's greedy token after every position of ``ids`` (teacher-forced), [len(ids)]."""
    import torch

    from bluelm_v.models.llm import prefill

    lm = loaded.llm
    with torch.no_grad():
        logits = prefill(lm, lm.new_cache(1, len(ids) + 4), tokens=torch.tensor([list(ids)]), all_logits=True)[0]
    return logits.argmax(-1).numpy()


def greedy_agreement(folder: Union[str, Path], graph: str, session, loaded, prompts: Sequence[Sequence[int]],
                     decode_tokens: int = 4, prefix: Optional[tuple] = None) -> dict:
    """Teacher-forced agreement of ``session`` (standing in for ``graph``) with the reference over ``prompts``
    (with ``prefix``, every position after the first token, which the reference computes too)."""
    model = finite_mask_model(folder)
    if prefix is not None:
        model.set_prefix(*prefix)
    model.sessions[graph] = session
    same = total = 0
    for ids in prompts:
        rest = model.after_prefix(ids)
        want = reference_argmax(loaded, ids)[len(ids) - len(rest):]
        model.reset()
        if graph == "llm_prefill":
            got = model.prefill(model.embed(rest)).argmax(-1)
            want_part = want
        else:
            split = max(1, len(rest) - decode_tokens)
            model.prefill(model.embed(rest[:split]))
            got = np.array([model.decode(t).argmax() for t in rest[split:]])
            want_part = want[split:]
        same += int((got == want_part).sum())
        total += len(want_part)
    return {"greedy_agreement": same / max(total, 1), "agreement_positions": total}


def compile_llm(loaded, float_dir: Union[str, Path], out_dir: Union[str, Path], *, soc: str = "sm8650",
                weights: str = "int4", activations: str = "uint16", rounding: Optional[str] = None,
                head_int8: Optional[bool] = None, allow_fallback: bool = False, prompts: Any = None,
                decode_tokens: int = 4, prefix: bool = True, graphs: Sequence[str] = GRAPHS,
                matmul_inputs: str = "int16",
                on_report: Optional[Callable[[str, dict], None]] = None) -> dict:
    """Quantize, compile and check the prefill and decode graphs of a float export in ``float_dir``;
    returns {graph: report} with ``greedy_agreement`` against the reference. ``rounding`` of the MatMul weights:
    ``blocks`` (int4's default: the weights' own 4-bit blocks carried exactly, ``qnn_blocks``; the float export's
    matrices must lie on a block grid, ``qnn_blocks.put_on_block_grid``) or per channel (``qnn_weights``: ``gptq``
    with the Hessians of the prefill graph's calibration, so both graphs carry the same weights; ``mse``;
    ``minmax``, int8's default); ``head_int8``: the output head (the MatMul writing ``logits``) int8 per channel,
    as deployed w4a16 flows keep it (default: yes per channel, no with ``blocks``, which carries it exactly).
    ``prefix``: the model's first chat token (``first_token``) is kept out of the graphs: its keys and values are
    computed in float here and written to ``llm_prefix.npz``, every prompt starts from a cache holding them, and
    calibration and agreement run on prompts that start with it. A first token carries massive activations
    (SmolLM2: 2.5e4 in one residual channel, against at most ~240 for any other token) that would set every
    tensor's uint16 range. ``graphs``: which of ``GRAPHS`` to compile (both by default). ``on_report(graph, report)``
    is called as each graph is done (a long run's progress). ``matmul_inputs``: ``qnn.compile_graph``'s."""
    from bluelm_v.export.qnn_weights import input_hessians

    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown or not graphs:
        raise ValueError(f"graphs must be some of {', '.join(GRAPHS)}, got {list(graphs)!r}")

    rounding = rounding or ("blocks" if weights == "int4" else "minmax")
    head_int8 = rounding != "blocks" if head_int8 is None else head_int8
    prompts = prompts or npu_prompts()
    room = OnnxModel(float_dir).past  # a prompt longer than the cache holds is cut to fit
    first, held = None, None
    if prefix:
        first = first_token(loaded)
        keys, values = finite_mask_model(float_dir).prefix_cache(first)
        held = (first, keys, values)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        np.savez(Path(out_dir) / PREFIX_FILE, token=np.int64(first), keys=keys, values=values)
    calib_ids = [ids[:room] for ids in prompt_ids(loaded.tokenizer, prompts.calibration, first)]
    eval_ids = [ids[:room] for ids in prompt_ids(loaded.tokenizer, prompts.evaluation, first)]
    calibration = record_llm_feeds(float_dir, calib_ids, CALIBRATION_DECODE_TOKENS, held)
    checks = record_llm_feeds(float_dir, eval_ids[:2], decode_tokens, held)
    hessians = input_hessians(Path(float_dir) / "llm_prefill.onnx", calibration["llm_prefill"]) \
        if rounding == "gptq" else None
    reports = {}
    for graph in (g for g in GRAPHS if g in graphs):
        report = compile_graph(Path(float_dir) / f"{graph}.onnx", out_dir, graph, soc=soc,
                               calibration=calibration[graph], checks=checks[graph], activations=activations,
                               weights=weights, rounding=rounding, hessians=hessians,
                               int8_outputs=("logits",) if head_int8 else (), allow_fallback=allow_fallback,
                               matmul_inputs=matmul_inputs)
        session = QuantizedSession(Path(out_dir) / report["context"], report["io_quantization"])
        report.update(greedy_agreement(float_dir, graph, session, loaded, eval_ids, decode_tokens, held))
        report["prefix"] = {"token": first, "file": PREFIX_FILE} if prefix else None
        report["mask_value"] = MASK_VALUE
        report["prompts"] = {"set": prompts.name, "calibration": len(calib_ids), "evaluation": len(eval_ids)}
        reports[graph] = report
        if on_report:
            on_report(graph, report)
    return reports


def _grid_note(grid: Optional[dict]) -> str:
    if grid is None:
        return "float matrices, rounded per output channel by the export"
    kept = {g: grid["kept"].count(g) for g in sorted(set(grid["kept"]))}
    return (f"the checkpoint's own block grids carried exactly ({', '.join(f'{g} x {n}' for g, n in kept.items())})"
            if not grid["put_on_q4_0"] else
            f"{grid['put_on_q4_0']} float matrices put on q4_0's grid first (reference included), "
            f"{len(grid['kept'])} already on a grid; carried exactly")


def export_qnn(source: Any, out_dir: Union[str, Path], *, soc: str = "sm8650", chunk: int = 128,
               tile_batch: int = 4, max_context: int = 2048, weights: str = "int4", rounding: Optional[str] = None,
               allow_fallback: bool = False, progress: bool = False, matmul_inputs: str = "int16") -> Path:
    """Every static graph of ``source`` compiled for ``soc``'s HTP (docs/export.md): the float export in
    ``out_dir/float``, per graph a QDQ model, its context binary (``<graph>_ctx.onnx`` + ``.bin``), and
    ``export_report.json`` with each graph's report. Any CPU fallback fails the export unless ``allow_fallback``.
    With ``rounding`` ``blocks`` (int4's default) an LLM whose matrices lie on no block grid (a float checkpoint)
    is put on q4_0's grid first, the reference included (``qnn_blocks.put_on_block_grid``; the report's
    ``llm_weights`` says so): the graphs then carry that 4-bit block model exactly. ``matmul_inputs``: what the
    LLM graphs' block MatMuls read, int16 (float16 on the HTP) or uint16 (integer arithmetic, int4 / int8 storage;
    ``qnn.MATMUL_INPUTS``)."""
    import json

    from tqdm import tqdm

    from bluelm_v.export.onnx_export import export_onnx
    from bluelm_v.export.qnn import MATMUL_INPUTS, SOCS, WEIGHTS, vision_inputs
    from bluelm_v.export.qnn_blocks import put_on_block_grid
    from bluelm_v.export.qnn_weights import ROUNDINGS
    from bluelm_v.models.reference import LoadedModel, load_model

    if soc not in SOCS:  # before any work
        raise ValueError(f"unknown SoC {soc!r}; supported: {', '.join(SOCS)}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if matmul_inputs not in MATMUL_INPUTS:
        raise ValueError(f"matmul_inputs must be one of {MATMUL_INPUTS}, got {matmul_inputs!r}")
    rounding = rounding or ("blocks" if weights == "int4" else "minmax")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "blocks" and weights != "int4":
        raise ValueError(f"rounding 'blocks' carries 4-bit block weights: it needs weights 'int4', not {weights!r}")
    require_qnn()
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    grid = put_on_block_grid(loaded.llm) if rounding == "blocks" else None
    out = Path(out_dir)
    float_dir = export_onnx(loaded, out / "float", chunk=chunk, tile_batch=tile_batch, max_context=max_context,
                            quant="fp32", progress=False)
    steps = ["vit", "projector", "llm"] if loaded.config.multimodal else ["llm"]
    bar = tqdm(steps, desc="qnn", disable=not progress, leave=False)
    reports: dict[str, dict] = {}
    if loaded.config.multimodal:
        import onnxruntime as ort

        tiles = [{"pixel_values": t} for t in vision_inputs(loaded.config, tile_batch)]
        half = max(1, len(tiles) // 2)
        bar.set_postfix_str("vit")
        reports["vit"] = compile_graph(float_dir / "vit.onnx", out, "vit", soc=soc, calibration=tiles[:half],
                                       checks=tiles[half:], allow_fallback=allow_fallback)
        bar.update()
        vit = ort.InferenceSession(str(float_dir / "vit.onnx"), providers=["CPUExecutionProvider"])
        feats = [{"features": vit.run(None, t)[0]} for t in tiles]
        bar.set_postfix_str("projector")
        reports["projector"] = compile_graph(float_dir / "projector.onnx", out, "projector", soc=soc,
                                             calibration=feats[:half], checks=feats[half:],
                                             allow_fallback=allow_fallback)
        bar.update()
    bar.set_postfix_str("llm")
    reports.update(compile_llm(loaded, float_dir, out, soc=soc, weights=weights, rounding=rounding,
                               allow_fallback=allow_fallback, matmul_inputs=matmul_inputs))
    bar.update()
    bar.close()
    spec = None if isinstance(source, LoadedModel) else str(source)  # what load_model reloads (the runner's tokenizer)
    summary = {"soc": soc, "htp_arch": f"v{SOCS[soc]['htp_arch']}", "source": loaded.source, "spec": spec,
               "weights": weights, "rounding": rounding, "matmul_inputs": matmul_inputs, "llm_weights": _grid_note(grid),
               "float_export": "float/manifest.json", "graphs": reports}
    (out / "export_report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return out


__all__ = ["GRAPHS", "MASK_VALUE", "PREFIX_FILE", "PromptSet", "QuantizedSession", "compile_llm", "export_qnn",
           "first_token", "greedy_agreement", "npu_prompts", "record_llm_feeds", "reference_argmax"]
