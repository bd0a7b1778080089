"""Model configs (configs/models/*.json): the shapes every part of the project agrees on.

The reference model (PyTorch), the native engine's manifest, the exporter and the latency simulator all read
these dataclasses; nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from bluelm_v.config import load


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP-style ViT (HF SiglipVisionModel numerics); InternViT is the same encoder with flags: a class token
    (its position first, dropped from the features), layer scale on both residual branches, RMSNorm, optional
    QK norm and no Q/K/V biases."""

    image_size: int  # tile side (384)
    patch_size: int  # 14: stride-14 conv without padding -> floor(384/14)^2 = 729 tokens per tile
    hidden: int
    intermediate: int
    layers: int
    heads: int
    arch: Literal["siglip", "intern_vit"] = "siglip"
    layer_norm_eps: float = 1e-6
    act: Literal["gelu_pytorch_tanh", "gelu"] = "gelu_pytorch_tanh"
    channels: int = 3
    select_layer: int = -1  # output of this encoder layer feeds the projector (-1: the last)
    post_layernorm: bool = True  # apply the final LayerNorm (only meaningful with select_layer == -1)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    class_token: bool = False  # InternViT: a learned token before the patches
    layer_scale: bool = False  # InternViT: per-channel scales on the attention and MLP outputs
    norm: Literal["layer_norm", "rms_norm"] = "layer_norm"
    qk_norm: bool = False  # RMSNorm over the whole q and k before the head split (InternViT-6B)
    qkv_bias: bool = True

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"vision hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.patch_size < 1 or self.patch_size > self.image_size:
            raise ValueError(f"vision patch_size {self.patch_size} must be in [1, image_size]")
        if not -self.layers <= self.select_layer < self.layers:
            raise ValueError(f"vision select_layer {self.select_layer} out of range for {self.layers} layers")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_tile(self) -> int:
        return self.grid * self.grid

    @property
    def layers_used(self) -> int:
        return self.select_layer % self.layers + 1


@dataclass(frozen=True)
class ProjectorConfig:
    """2x2 token down-sampler (VILA DownSampleBlock: zero-pad odd sides, concatenate each 2x2 block into 4C)
    followed by the MLP projector: [LayerNorm(4C)] -> Linear(4C, d) -> act -> Linear(d, d)."""

    merge: int = 2
    layer_norm: bool = True
    act: Literal["gelu", "gelu_pytorch_tanh"] = "gelu"
    order: Literal["row_major", "column_major"] = "row_major"  # output grid order (older VILA: column-major)
    layer_norm_eps: float = 1e-5  # torch.nn.LayerNorm's default, as in VILA's mlp_downsample
    kind: Literal["mlp", "linear"] = "mlp"  # "linear": one Linear(4C, d) alone (Idefics3's connector)
    bias: bool = True  # biases on the projector's linears

    def __post_init__(self):
        if self.kind == "linear" and self.layer_norm:
            raise ValueError("a linear projector has no LayerNorm; set layer_norm false")
        if self.merge < 1:
            raise ValueError(f"projector merge {self.merge} must be at least 1")

    def tokens_per_tile(self, vision: VisionConfig) -> int:
        side = math.ceil(vision.grid / self.merge)
        return side * side


ROPE_TYPES = ("default", "linear", "llama3")  # what bluelm_v.models.llm.rope_tables computes


@dataclass(frozen=True)
class LLMConfig:
    """LLaMA-family decoder: GQA, RoPE, RMSNorm, SwiGLU. Qwen2 is the same decoder with biases on Q/K/V
    (``qkv_bias``); ``rope_scaling`` holds HF's ``rope_parameters`` for the scaled RoPE types (empty: plain)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_context: int
    arch: Literal["llama", "qwen2"] = "llama"
    head_dim: Optional[int] = None  # default hidden // heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()
    qkv_bias: bool = False  # Qwen2: q/k/v projections carry biases (o_proj does not)
    rope_scaling: dict[str, Union[float, int, str]] = field(default_factory=dict)  # {"rope_type": "linear", ...}

    def __post_init__(self):
        kind = self.rope_scaling.get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise ValueError(f"llm rope_scaling type {kind!r} is not supported (known: {', '.join(ROPE_TYPES)})")
        if kind != "default" and "factor" not in self.rope_scaling:
            raise ValueError(f"llm rope_scaling of type {kind!r} needs a 'factor'")
        if self.heads % self.kv_heads:
            raise ValueError(f"llm heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"llm hidden {self.hidden} is not a multiple of heads {self.heads}; give head_dim")

    @property
    def dim_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim_head

    def param_count(self, include_embeddings: bool = True) -> int:
        d, f, q, kv = self.hidden, self.intermediate, self.heads * self.dim_head, self.kv_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d + ((q + 2 * kv) if self.qkv_bias else 0)
        emb = self.vocab * d * (1 if self.tie_embeddings else 2)
        return self.layers * per_layer + d + (emb if include_embeddings else 0)


@dataclass(frozen=True)
class DeployConfig:
    """How the model is deployed (the paper's §3.3, Table 5): precisions, tile batch, prefill chunk. The defaults
    keep the reference's answers (docs/engine.md, "Deployed precision"): int16 activations (the paper's) and an f16
    KV cache (int8 keys flip ~1% of SmolLM2's greedy tokens)."""

    vit_weights: str = "q8_0"
    llm_weights: str = "q4_0"
    kv_cache: Literal["int8", "f16", "f32"] = "f16"
    activations: Literal["int8", "int16"] = "int16"  # of the engine's quantized products (two int8 passes for int16)
    tile_batch: int = 4
    chunk: int = 128


@dataclass(frozen=True)
class ModelConfig:
    name: str
    description: str
    llm: LLMConfig
    vision: Optional[VisionConfig] = None
    projector: Optional[ProjectorConfig] = None
    dynres: dict[str, Union[int, float, str, list]] = field(default_factory=dict)  # bluelm_v.dynres.plan params
    deploy: DeployConfig = field(default_factory=DeployConfig)
    stand_in: str = ""  # what is not the real model's (unpublished) shape
    processor: dict[str, Union[int, float, str, bool]] = field(default_factory=dict)  # an HF family's own image
    # preprocessing and prompt settings (image_token_id, splitting) from its config and preprocessor_config.json
    image_layout: Literal["tiles", "anyres_unpad"] = "tiles"  # how tile embeddings become the image's: in tile
    # order, or LLaVA-OneVision's stitched, un-padded map with a newline per row (bluelm_v/models/anyres.py)
    anyres_max_tiles: int = 9  # anyres_unpad: the map is shrunk above this many tiles' worth of features
    family: str = "bluelm_v"  # checkpoint name map: ours, or an HF model_type of bluelm_v.models.families
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if (self.vision is None) != (self.projector is None):
            raise ValueError("vision and projector must be given together (or neither, for a text-only model)")

    @property
    def multimodal(self) -> bool:
        return self.vision is not None

    def engine_unsupported(self) -> Optional[str]:
        """Why the native engine cannot run this model yet (None when it can). Its decoder runs every LLMConfig
        (LLaMA and Qwen2, the ROPE_TYPES, tied or untied heads) and every vision side here (SigLIP and InternViT,
        any token merge, MLP or linear projector, the tiles and anyres_unpad layouts) but column-major merging."""
        if self.projector is not None and self.projector.order != "row_major":
            return f"projector order {self.projector.order!r} is not implemented in the native engine (row-major only)"
        return None

    def image_tokens_per_tile(self) -> int:
        if not self.multimodal:
            raise ValueError(f"model {self.name} has no vision tower")
        return self.projector.tokens_per_tile(self.vision)


def load_model_config(name_or_path: Union[str, Path]) -> ModelConfig:
    """A shipped config by name (``bluelm-v-3b``, ``tiny``, ``smollm2-135m``) or a JSON file."""
    return load("models", name_or_path, ModelConfig)
