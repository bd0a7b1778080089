"""ExecuTorch programs (.pte) of the same static graphs as the ONNX export (docs/export.md), lowered to the XNNPACK
delegate, which runs on any phone CPU; float32.

``export_executorch(spec_or_loaded, out_dir, chunk=128, tile_batch=4, max_context=2048)`` writes

    llm_prefill.pte   (inputs_embeds [1, T, d], position_ids [1, T] i64, attention_mask [1, 1, T, P+T],
                       past_keys, past_values [L, KVH, P, hd]) -> (logits [1, T, V], new_keys, new_values)
    llm_decode.pte    the same with T = 1
    vit.pte           pixel_values [B, 3, S, S] -> features [B, N, C]             (multimodal models)
    projector.pte     features [B, N, C] -> image_embeds [B, tokens_per_tile, d]  (multimodal models)
    executorch.json   every program's inputs and outputs with shapes, the ExecuTorch version

with the conventions of ``onnx_export`` (P = max_context - chunk; the runtime owns the KV cache). Each module is
captured with ``torch.export``, lowered by ``to_edge_transform_and_lower`` with the XNNPACK partitioner and
serialized with ``to_executorch``. The vendor NPU partitioners (MediaTek's NeuropilotPartitioner, Qualcomm's
QnnPartitioner) take the same exported programs but need their SDKs (``mtk_converter``/``mtk_neuron``, QAIRT) on
the machine that lowers them; docs/export.md gives the step.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union


def require_executorch():
    try:
        import executorch  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ImportError("the ExecuTorch export needs executorch (pip install executorch==1.5.1)") from None
    return XnnpackPartitioner, to_edge_transform_and_lower


def lower_to_pte(module, args: tuple, path: Path) -> dict:
    """torch.export -> XNNPACK-delegated edge program -> .pte at ``path``; returns how much XNNPACK took."""
    import torch

    XnnpackPartitioner, to_edge_transform_and_lower = require_executorch()
    with torch.no_grad():
        exported = torch.export.export(module.eval(), args, strict=False)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph_module.graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    return {"file": path.name, "bytes": path.stat().st_size, "delegate_calls": delegated,
            "ops_outside_delegate": sorted({getattr(n.target, "__name__", str(n.target)) for n in calls
                                            if "executorch_call_delegate" not in str(n.target)
                                            and "getitem" not in str(n.target)})}


def graph_modules(loaded, chunk: int, tile_batch: int, max_context: int) -> dict[str, tuple[Any, tuple]]:
    """{name: (module, example inputs)} for every static graph of ``loaded`` (the ONNX export's wrappers)."""
    import torch

    from bluelm_v.export.onnx_export import _check, _llm_module

    _check(chunk, tile_batch, max_context, "fp32")
    cfg = loaded.config
    if max_context > cfg.llm.max_context:
        raise ValueError(f"max_context {max_context} exceeds the model's context of {cfg.llm.max_context}")
    past = max_context - chunk
    L, kvh, hd, d = cfg.llm.layers, cfg.llm.kv_heads, cfg.llm.dim_head, cfg.llm.hidden
    out = {}
    for name, t in (("llm_prefill", chunk), ("llm_decode", 1)):
        args = (torch.zeros(1, t, d), torch.arange(t)[None], torch.zeros(1, 1, t, past + t),
                torch.zeros(L, kvh, past, hd), torch.zeros(L, kvh, past, hd))
        out[name] = (_llm_module(loaded.llm, t, past), args)
    if cfg.multimodal:
        vc = cfg.vision
        out["vit"] = (loaded.vlm.vision_tower.eval(), (torch.zeros(tile_batch, vc.channels, vc.image_size,
                                                                   vc.image_size),))
        out["projector"] = (loaded.vlm.mm_projector.eval(), (torch.zeros(tile_batch, vc.tokens_per_tile,
                                                                         vc.hidden),))
    return out


def export_executorch(source: Any, out_dir: Union[str, Path], *, chunk: int = 128, tile_batch: int = 4,
                      max_context: int = 2048) -> Path:
    """Write one .pte per static graph of ``source`` (a spec load_model understands, or a LoadedModel)."""
    from importlib.metadata import version

    from bluelm_v.models.reference import LoadedModel, load_model

    require_executorch()
    loaded = source if isinstance(source, LoadedModel) else load_model(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    programs = {}
    for name, (module, args) in graph_modules(loaded, chunk, tile_batch, max_context).items():
        programs[name] = lower_to_pte(module, args, out / f"{name}.pte")
        programs[name]["inputs"] = [list(a.shape) for a in args]
    (out / "executorch.json").write_text(json.dumps({
        "format": "bluelm-v-executorch", "format_version": 1, "executorch": version("executorch"),
        "source": loaded.source, "chunk": chunk, "past": max_context - chunk, "tile_batch": tile_batch,
        "dtype": "float32", "delegate": "XnnpackPartitioner", "programs": programs}, indent=1), encoding="utf-8")
    return out


def run_pte(path: Union[str, Path], inputs: tuple) -> list:
    """Run a .pte's forward with executorch.runtime; returns its outputs as torch tensors."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(Path(path))
    return list(program.load_method("forward").execute(list(inputs)))


__all__ = ["export_executorch", "graph_modules", "lower_to_pte", "run_pte"]
