"""What one request costs, independent of the device: shapes, FLOPs and bytes of each component.

A ``Workload`` is built from a model config (``bluelm_v.models.config.ModelConfig``) or from a ``WorkloadSpec``
(a comparison model the project has no model config for, such as MiniCPM-Llama3-V 2.5 with its resampler).
A ``Deployment`` says how it runs: which processor each part uses, the precisions, the ViT tile batch, the
prefill chunk, the KV-cache capacities of the static graphs. Counting conventions (docs/simulator.md §2): a
multiply-add is 2 ops; biases, norms, activations and softmax are not counted as FLOPs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from bluelm_v.models.config import LLMConfig, ModelConfig, VisionConfig

# Stored bits per weight, including the per-group scales (group 32 with fp16 scales for q4_0 / q8_0: the paper
# gives no group size, so ggml's layouts stand in for "INT4" and "INT8").
BITS_PER_WEIGHT = {"q4_0": 4.5, "q4_k_m": 4.85, "q6_k": 6.5625, "q8_0": 8.5, "f16": 16.0, "f32": 32.0}
WEIGHT_ALIASES = {"int4": "q4_0", "int8": "q8_0", "fp16": "f16", "fp32": "f32"}
KV_BYTES = {"int8": 1, "f16": 2, "fp16": 2, "f32": 4}
COMPUTE = ("int8", "int16", "fp16", "fp32")


def weight_format(name: str) -> str:
    fmt = WEIGHT_ALIASES.get(name, name)
    if fmt not in BITS_PER_WEIGHT:
        known = ", ".join(list(BITS_PER_WEIGHT) + list(WEIGHT_ALIASES))
        raise ValueError(f"unknown weight precision {name!r}; known: {known}")
    return fmt


def weight_bytes(params: float, fmt: str) -> float:
    return params * BITS_PER_WEIGHT[weight_format(fmt)] / 8.0


@dataclass(frozen=True)
class WorkloadSpec:
    """A model described for the simulator only (configs/suites/latency-targets.json "workloads")."""

    name: str
    vision: VisionConfig
    llm: LLMConfig
    image_tokens_per_tile: int  # tokens one tile gives the LLM (96 for MiniCPM-V 2.5's resampler)
    projector_params: int  # parameters between the ViT and the LLM (resampler or MLP)
    slicing: Optional[Literal["minicpm"]] = None  # how an image size becomes tiles (None: give a tile count)
    note: str = ""


@dataclass(frozen=True)
class Workload:
    name: str
    # Vision tower, per tile.
    tile: int  # tile side in pixels
    vit_tokens: int  # ViT tokens per tile (729)
    vit_layers: int
    vit_hidden: int
    vit_intermediate: int
    vit_heads: int
    vit_block_params: int  # matmul parameters of the transformer blocks
    vit_other_params: int  # patch-embedding Conv2D, position embeddings, norms
    conv_flops: float  # patch-embedding Conv2D FLOPs per tile
    image_tokens_per_tile: int  # after the down-sampler / projector (196)
    projector_params: int
    # Language model.
    llm_layers: int
    llm_hidden: int
    llm_intermediate: int
    llm_heads: int
    q_dim: int  # heads * head_dim
    kv_dim: int  # kv_heads * head_dim
    llm_linear_params: int  # attention and MLP projections of all layers (what each token multiplies through)
    vocab: int
    tie_embeddings: bool
    context: int
    multimodal: bool = True

    # --- vision ---
    def vit_linear_flops(self, tiles: int) -> float:
        return 2.0 * self.vit_block_params * self.vit_tokens * tiles

    def vit_attention_flops(self, tiles: int) -> float:
        # QK^T and PV: 2 * 2 * n^2 * d per layer and tile.
        return 4.0 * self.vit_layers * self.vit_tokens ** 2 * self.vit_hidden * tiles

    def projector_flops(self, tiles: int) -> float:
        return 2.0 * self.projector_params * self.image_tokens_per_tile * tiles

    def vit_weight_bytes(self, fmt: str) -> float:
        return weight_bytes(self.vit_block_params + self.vit_other_params + self.projector_params, fmt)

    def vit_activation_bytes(self, batch: int) -> float:
        """Largest live activations of one ViT call: MLP input and output of a layer plus one layer's attention
        scores, 16-bit (what must fit in memory while a batch runs)."""
        wide = 2 * self.vit_tokens * max(3 * self.vit_hidden, self.vit_intermediate) * 2
        scores = self.vit_heads * self.vit_tokens ** 2 * 2
        return batch * (wide + scores)

    # --- language model ---
    @property
    def head_params(self) -> int:
        return self.vocab * self.llm_hidden

    def llm_linear_flops(self, rows: int) -> float:
        return 2.0 * self.llm_linear_params * rows

    def attention_flops(self, rows: int, span: float) -> float:
        # Each of ``rows`` queries against ``span`` keys: QK^T and PV, 2 * 2 * q_dim per pair and layer.
        return 4.0 * self.llm_layers * self.q_dim * rows * span

    def head_flops(self, rows: int = 1) -> float:
        return 2.0 * self.head_params * rows

    def kv_bytes_per_token(self, kv: str) -> float:
        if kv not in KV_BYTES:
            raise ValueError(f"unknown KV-cache precision {kv!r}; known: {', '.join(KV_BYTES)}")
        return 2.0 * self.llm_layers * self.kv_dim * KV_BYTES[kv]

    def llm_weight_bytes(self, fmt: str, head_fmt: Optional[str] = None) -> float:
        """Linear layers plus the output head (the tied embedding table is stored once, at the head's format)."""
        head = weight_bytes(self.head_params, head_fmt or fmt)
        untied = 0.0 if self.tie_embeddings else weight_bytes(self.head_params, head_fmt or fmt)
        return weight_bytes(self.llm_linear_params, fmt) + head + untied

    def llm_activation_bytes(self, rows: int, span: int) -> float:
        """Largest live activations of one LLM call (16-bit): the MLP's gate and up outputs, a few hidden-state
        buffers and one layer's attention scores."""
        return rows * (2 * self.llm_intermediate * 2 + 4 * self.llm_hidden * 2) + self.llm_heads * rows * span * 2


def _vision_counts(v: VisionConfig) -> tuple[int, int, float]:
    d, f = v.hidden, v.intermediate
    blocks = v.layers_used * (4 * d * d + 2 * d * f)
    conv = v.channels * v.patch_size ** 2 * d
    other = conv + v.tokens_per_tile * d
    conv_flops = 2.0 * v.tokens_per_tile * conv
    return blocks, other, conv_flops


def _llm_counts(llm: LLMConfig) -> int:
    d, f, q, kv = llm.hidden, llm.intermediate, llm.heads * llm.dim_head, llm.kv_dim
    return llm.layers * (d * q + 2 * d * kv + q * d + 3 * d * f)


def workload_from_config(cfg) -> Workload:
    """A Workload from a ModelConfig or a WorkloadSpec."""
    if isinstance(cfg, ModelConfig):
        name, v, llm = cfg.name, cfg.vision, cfg.llm
        if v is not None:
            per_tile = cfg.image_tokens_per_tile()
            m = cfg.projector.merge
            proj = (m * m * v.hidden) * llm.hidden + llm.hidden * llm.hidden
        else:
            per_tile, proj = 0, 0
    elif isinstance(cfg, WorkloadSpec):
        name, v, llm, per_tile, proj = cfg.name, cfg.vision, cfg.llm, cfg.image_tokens_per_tile, cfg.projector_params
    else:
        raise TypeError(f"expected a ModelConfig or WorkloadSpec, got {type(cfg).__name__}")
    if v is not None:
        blocks, other, conv_flops = _vision_counts(v)
        vision = dict(tile=v.image_size, vit_tokens=v.tokens_per_tile, vit_layers=v.layers_used, vit_hidden=v.hidden,
                      vit_intermediate=v.intermediate, vit_heads=v.heads, vit_block_params=blocks,
                      vit_other_params=other, conv_flops=conv_flops)
    else:
        vision = dict(tile=0, vit_tokens=0, vit_layers=0, vit_hidden=1, vit_intermediate=1, vit_heads=1,
                      vit_block_params=0, vit_other_params=0, conv_flops=0.0)
    return Workload(
        name=name, **vision, image_tokens_per_tile=per_tile, projector_params=proj,
        llm_layers=llm.layers, llm_hidden=llm.hidden, llm_intermediate=llm.intermediate, llm_heads=llm.heads, q_dim=llm.heads * llm.dim_head, kv_dim=llm.kv_dim,
        llm_linear_params=_llm_counts(llm), vocab=llm.vocab, tie_embeddings=llm.tie_embeddings,
        context=llm.max_context, multimodal=v is not None,
    )


Place = Literal["cpu", "npu"]


@dataclass(frozen=True)
class Deployment:
    """How a workload runs. Defaults are the paper's (§3.3, Table 5)."""

    vit_on: Place = "npu"
    llm_on: Place = "npu"
    vit_weights: str = "q8_0"  # INT8 ViT and projector
    vit_compute: str = "fp16"  # FP16 activations: the MACs run at the NPU's 16-bit rate
    llm_weights: str = "q4_0"  # INT4 LLM
    head_weights: Optional[str] = None  # output head / tied embedding (default: as the LLM)
    llm_compute: str = "int16"  # INT16 activations
    attention_compute: str = "int16"  # Q (INT16) against the INT8 KV cache
    kv_cache: str = "int8"
    conv_compute: str = "fp32"  # the patch-embedding Conv2D on the CPU
    tile_batch: int = 4
    remainder: Literal["auto", "pad", "single"] = "auto"  # last tiles: pad to a full batch, or 1-tile graph calls
    chunk: int = 128
    kv_capacities: tuple[int, ...] = (2048, 4096)  # KV slots of the compiled static graphs
    attention: Literal["static", "dynamic"] = "static"  # static: every call attends the whole cache buffer
    pipeline: bool = True  # Conv2D of the next tile group on the CPU overlaps the ViT of this group on the NPU
    free_vit_after_encode: bool = True  # the paper frees the ViT before the LLM runs
    runtime: str = "npu-static-graphs"

    def __post_init__(self):
        for name in ("vit_weights", "llm_weights") + (("head_weights",) if self.head_weights else ()):
            weight_format(getattr(self, name))
        for name in ("vit_compute", "llm_compute", "attention_compute", "conv_compute"):
            if getattr(self, name) not in COMPUTE:
                raise ValueError(f"{name} must be one of {', '.join(COMPUTE)}, got {getattr(self, name)!r}")
        if self.kv_cache not in KV_BYTES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_BYTES)}, got {self.kv_cache!r}")
        for name in ("tile_batch", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.kv_capacities or any(c < 1 for c in self.kv_capacities):
            raise ValueError(f"kv_capacities must be positive, got {self.kv_capacities}")
        for name in ("vit_on", "llm_on"):
            if getattr(self, name) not in ("cpu", "npu"):
                raise ValueError(f"{name} must be cpu or npu, got {getattr(self, name)!r}")

    def capacity_for(self, tokens: int) -> int:
        """KV slots of the static graph a prompt of ``tokens`` runs in: the smallest compiled capacity that holds
        it (a larger prompt needs the next graph, whose attention spans more slots)."""
        for c in sorted(self.kv_capacities):
            if tokens <= c:
                return c
        raise ValueError(f"prompt of {tokens} tokens exceeds the largest KV capacity {max(self.kv_capacities)}")


def deployment_for(cfg, device_has_npu: bool, **overrides) -> Deployment:
    """The paper's deployment for a model config (precisions, tile batch and chunk from ``cfg.deploy``), moved to
    the CPU when the device has no NPU, with ``overrides`` applied."""
    base: dict = {}
    if isinstance(cfg, ModelConfig):
        dep = cfg.deploy
        base = dict(vit_weights=dep.vit_weights, llm_weights=dep.llm_weights, kv_cache=dep.kv_cache,
                    tile_batch=dep.tile_batch, chunk=dep.chunk)
        caps = sorted({c for c in (2048, 4096, cfg.llm.max_context) if c <= cfg.llm.max_context})
        base["kv_capacities"] = tuple(caps) or (cfg.llm.max_context,)
    if not device_has_npu:
        base.update(vit_on="cpu", llm_on="cpu", vit_compute="fp32", llm_compute="int8", attention_compute="fp32",
                    attention="dynamic", pipeline=False, runtime="cpu")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Deployment(**base)


def minicpm_slices(width: int, height: int, max_slices: int = 9, slice_side: int = 448) -> tuple[int, int]:
    """MiniCPM-V 2.5's slicing ([M1], docs/sources.md): (cols, rows) of the slice grid; (1, 1) means no
    slicing. ViT passes = cols * rows + 1 (the source image) when sliced, else 1."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = width * height / (slice_side * slice_side)
    multiple = min(math.ceil(ratio), max_slices)
    if multiple <= 1:
        return 1, 1
    counts = [c for c in (multiple - 1, multiple, multiple + 1) if 1 < c <= max_slices]
    log_aspect = math.log(width / height)
    best, best_err = (1, 1), math.inf
    for c in counts:
        for cols in range(1, c + 1):
            if c % cols:
                continue
            rows = c // cols
            err = abs(log_aspect - math.log(cols / rows))
            if err < best_err:
                best, best_err = (cols, rows), err
    return best


__all__ = [
    "BITS_PER_WEIGHT", "Deployment", "KV_BYTES", "Workload", "WorkloadSpec", "deployment_for",
    "minicpm_slices", "weight_bytes", "weight_format", "workload_from_config",
]
