"""``simulate``: one request (an image and a prompt) on one device, broken down by component."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

from bluelm_v.dynres import Plan
from bluelm_v.sim.devices import Device, load_device
from bluelm_v.sim.model import Call, CostModel
from bluelm_v.sim.workload import Deployment, Workload, WorkloadSpec, deployment_for, minicpm_slices, workload_from_config

DEFAULT_TEXT_TOKENS = 16  # a short question after the image when no prompt length is given (an assumption)


@dataclass(frozen=True)
class Component:
    name: str
    processor: str
    calls: int
    seconds: float  # summed over calls (busy time of the processor, not wall time)
    flops: float
    bytes: float
    overhead_s: float
    compute_s: float
    memory_s: float
    bound: str  # the larger of compute and memory, summed over the operations


@dataclass(frozen=True)
class Breakdown:
    """Where the time of one request goes. Times in seconds, memory in bytes.

    encode_s is the wall time of the CPU/NPU pipeline (preprocessing, Conv2D and ViT), vit_s the NPU's busy time
    on the ViT calls (the paper's "ViT" column), image_processing_s = init_s + encode_s (Table 5's definition),
    ttft_s = encode_s + prefill_s with the models already loaded, ttft_cold_s = init_s + ttft_s.
    """

    model: str
    device: str
    deployment: dict
    image: Optional[tuple[int, int]]
    grid: Optional[tuple[int, int]]
    tiles: int
    tile_calls: list[tuple[int, int]]  # (real tiles, compiled batch) per ViT call
    image_tokens: int
    prompt_tokens: int
    chunk: int
    chunks: int
    padded_tokens: int
    kv_capacity: int
    init_s: float
    preprocess_s: float
    conv_s: float
    vit_s: float
    encode_s: float
    pipeline_hidden_s: float
    image_processing_s: float
    prefill_s: float
    ttft_s: float
    ttft_cold_s: float
    decode_step_s: float
    decode_tokens_per_s: float
    peak_memory_bytes: float
    memory: dict[str, float]
    components: list[Component] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    @property
    def peak_memory_gb(self) -> float:
        return self.peak_memory_bytes / 1e9

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_memory_gb"] = self.peak_memory_gb
        return d

    def to_frame(self):
        """Where the time goes: one row per component (processor, calls, seconds, FLOPs, bytes, bound) as a pandas
        DataFrame, indexed by component."""
        import pandas as pd

        return pd.DataFrame.from_records([asdict(c) for c in self.components]).set_index("name")


def _component(name: str, calls: list[Call]) -> Component:
    ops = [op for c in calls for op in c.ops]
    compute = sum(op.compute_s for op in ops)
    memory = sum(op.memory_s for op in ops)
    return Component(
        name=name, processor=calls[0].processor if calls else "-", calls=len(calls),
        seconds=sum(c.seconds for c in calls), flops=sum(c.flops for c in calls), bytes=sum(c.bytes for c in calls),
        overhead_s=sum(c.overhead_s for c in calls), compute_s=compute, memory_s=memory,
        bound="compute" if sum(op.seconds for op in ops if op.bound == "compute") >= sum(
            op.seconds for op in ops if op.bound == "memory") else "memory",
    )


def resolve_model(model) -> tuple[object, Workload]:
    """(config object, workload) from a model-config name or path, a ModelConfig or a WorkloadSpec."""
    from bluelm_v.models.config import ModelConfig, load_model_config

    if isinstance(model, (str, Path)):
        model = load_model_config(model)
    if isinstance(model, (ModelConfig, WorkloadSpec)):
        return model, workload_from_config(model)
    raise TypeError(f"model must be a model-config name, a ModelConfig or a WorkloadSpec, got {type(model).__name__}")


def plan_image(cfg, image) -> tuple[Optional[Plan], int, float, float, Optional[tuple[int, int]]]:
    """(plan, tiles, source pixels, canvas pixels, grid) for an image given as (W, H), a Plan, a tile count or None."""
    from bluelm_v import dynres
    from bluelm_v.models.config import ModelConfig

    work = workload_from_config(cfg)
    if image is None:
        return None, 0, 0.0, 0.0, None
    if not work.multimodal:
        raise ValueError(f"model {work.name} has no vision tower; pass image=None")
    tile_px = float(work.tile * work.tile)
    if isinstance(image, Plan):
        p = image
        return p, p.patches, float(p.width * p.height), float(p.canvas[0] * p.canvas[1]), p.grid
    if isinstance(image, bool) or not isinstance(image, (int, tuple, list)):
        raise TypeError(f"image must be (width, height), a dynres.Plan, a tile count or None, got {image!r}")
    if isinstance(image, int):
        if image < 1:
            raise ValueError(f"tile count must be >= 1, got {image}")
        return None, image, image * tile_px, image * tile_px, None
    if len(image) != 2:
        raise ValueError(f"image size must be (width, height), got {image!r}")
    w, h = image
    if isinstance(cfg, ModelConfig):
        params = dict(cfg.dynres)
        scheme = params.pop("scheme", "bluelm")
        p = dynres.plan(w, h, scheme, **params)
        return p, p.patches, float(p.width * p.height), float(p.canvas[0] * p.canvas[1]), p.grid
    if getattr(cfg, "slicing", None) == "minicpm":
        cols, rows = minicpm_slices(int(w), int(h), slice_side=work.tile)
        tiles = 1 if cols * rows == 1 else cols * rows + 1
        return None, tiles, float(w * h), tiles * tile_px, (cols, rows)
    raise ValueError(f"workload {work.name} has no resolution scheme; give the tile count instead of a size")


def simulate(
    model: Union[str, Path, object] = "bluelm-v-3b",
    device: Union[str, Path, Device] = "dimensity-9300",
    image: Union[None, tuple[int, int], Plan, int] = (768, 1536),
    prompt_tokens: Optional[int] = None,
    chunk: Optional[int] = None,
    batch: Optional[int] = None,
    *,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    deployment: Optional[Deployment] = None,
    new_tokens: int = 0,
    **overrides,
) -> Breakdown:
    """Simulate one request: ``image`` (size, dynres plan, tile count, or None for text only) and a prompt of
    ``prompt_tokens`` LLM input tokens in total, image tokens included (default: image tokens + ``text_tokens``).

    ``chunk`` (prefill tokens per call) and ``batch`` (ViT tiles per call) default to the model config's deployment;
    other ``overrides`` are Deployment fields (vit_weights="fp16", llm_weights="int8", kv_cache="f16",
    remainder="pad", attention="dynamic", kv_capacities=(2048,), pipeline=False, ...).
    """
    cfg, work = resolve_model(model)
    dev = load_device(device)
    if deployment is None:
        deployment = deployment_for(cfg, dev.has_npu, chunk=chunk, tile_batch=batch, **overrides)
    else:
        changes = {k: v for k, v in dict(overrides, chunk=chunk, tile_batch=batch).items() if v is not None}
        deployment = dataclasses.replace(deployment, **changes)
    plan, tiles, src_px, canvas_px, grid = plan_image(cfg, image)
    image_tokens = tiles * work.image_tokens_per_tile
    if isinstance(text_tokens, bool) or not isinstance(text_tokens, int) or text_tokens < 0:
        raise ValueError(f"text_tokens must be a non-negative integer, got {text_tokens!r}")
    if prompt_tokens is None:
        prompt_tokens = image_tokens + text_tokens
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int):
        raise TypeError(f"prompt_tokens must be an integer, got {prompt_tokens!r}")
    if prompt_tokens < max(image_tokens, 1):
        raise ValueError(f"prompt of {prompt_tokens} tokens cannot hold the image's {image_tokens} tokens")

    cm = CostModel(work, dev, deployment)
    enc = cm.encode(tiles, src_px, canvas_px) if tiles else None
    pre = cm.prefill(prompt_tokens)
    step = cm.decode_step(pre.capacity, prompt_tokens)
    init = cm.init_seconds()
    mem = cm.memory(tiles, pre, new_tokens)
    encode_s = enc.makespan_s if enc else 0.0
    comps = []
    if enc:
        comps += [_component("preprocess", [enc.preprocess]), _component("conv2d", [c for c, _ in enc.calls]),
                  _component("vit+projector", [v for _, v in enc.calls])]
    comps += [_component("prefill", pre.calls), _component("decode_step", [step])]
    w, h = (plan.width, plan.height) if plan else (image if isinstance(image, (tuple, list)) else (None, None))
    return Breakdown(
        model=work.name, device=dev.name, deployment=asdict(deployment),
        image=(int(w), int(h)) if w is not None else None, grid=tuple(grid) if grid else None,
        tiles=tiles, tile_calls=[(v.real_rows, v.rows) for _, v in enc.calls] if enc else [],
        image_tokens=image_tokens, prompt_tokens=prompt_tokens, chunk=deployment.chunk, chunks=len(pre.calls),
        padded_tokens=pre.padded_tokens, kv_capacity=pre.capacity,
        init_s=init, preprocess_s=enc.preprocess.seconds if enc else 0.0, conv_s=enc.conv_s if enc else 0.0,
        vit_s=enc.vit_s if enc else 0.0, encode_s=encode_s, pipeline_hidden_s=enc.hidden_s if enc else 0.0,
        image_processing_s=init + encode_s, prefill_s=pre.seconds, ttft_s=encode_s + pre.seconds,
        ttft_cold_s=init + encode_s + pre.seconds, decode_step_s=step.seconds,
        decode_tokens_per_s=1.0 / step.seconds, peak_memory_bytes=max(mem.values()), memory=mem, components=comps,
        events=[asdict(e) for e in enc.events] if enc else [],
    )


__all__ = ["Breakdown", "Component", "DEFAULT_TEXT_TOKENS", "plan_image", "resolve_model", "simulate"]
