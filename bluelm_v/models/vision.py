"""SigLIP vision tower: the module names and numerics of HF ``SiglipVisionModel`` (transformers >= 5 layout).

Parameter names relative to the tower, exactly as HF's state dict has them:

    embeddings.patch_embedding.{weight,bias}        Conv2d(channels, C, kernel=patch, stride=patch), no padding
    embeddings.position_embedding.weight            [grid*grid, C], learned, added in row-major patch order
    encoder.layers.{i}.layer_norm1.{weight,bias}    pre-LN before attention
    encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}
    encoder.layers.{i}.layer_norm2.{weight,bias}    pre-LN before the MLP
    encoder.layers.{i}.mlp.fc1.{weight,bias}, mlp.fc2.{weight,bias}   fc1 -> gelu(tanh) -> fc2
    post_layernorm.{weight,bias}

The attention-pooling head (``head.*``) is not used by VLMs and is not built; the checkpoint loaders skip it.

InternViT flags (VisionConfig) add ``embeddings.class_embedding`` [C] (its position is row 0 of the position
table, which then has grid*grid + 1 rows), ``encoder.layers.{i}.layer_scale{1,2}`` [C],
``self_attn.{q,k}_norm.weight`` [C] with ``qk_norm``, and RMSNorms (weight only) for ``norm="rms_norm"``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bluelm_v.models.config import VisionConfig
from bluelm_v.models.llm import RMSNorm


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation named in a config: ``gelu`` (erf) or ``gelu_pytorch_tanh`` (tanh approximation)."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name!r}: expected 'gelu' or 'gelu_pytorch_tanh'")


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(cfg.channels, cfg.hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        positions = cfg.tokens_per_tile + int(cfg.class_token)
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden)) if cfg.class_token else None
        self.position_embedding = nn.Embedding(positions, cfg.hidden)
        self.register_buffer("position_ids", torch.arange(positions), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: [B, channels, S, S] normalized tiles -> [B, N = grid*grid (+1 with a class token), C]
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))  # [B, C, grid, grid]
        x = patches.flatten(2).transpose(1, 2)  # row-major over the patch grid
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
        return x + self.position_embedding(self.position_ids)[None]


class SiglipAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.q_norm = RMSNorm(cfg.hidden, 1e-6) if cfg.qk_norm else nn.Identity()  # InternViT's fixed eps
        self.k_norm = RMSNorm(cfg.hidden, 1e-6) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, C] -> [B, N, C]; full (bidirectional) attention over the tile's patches
        b, n, c = x.shape
        q = self.q_norm(self.q_proj(x)).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, N, hd]
        k = self.k_norm(self.k_proj(x)).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale  # [B, H, N, N]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


class SiglipMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.act = activation(cfg.act)
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, C] -> [B, N, C]
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = norm_layer(cfg)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = norm_layer(cfg)
        self.mlp = SiglipMLP(cfg)
        self.layer_scale1 = nn.Parameter(torch.ones(cfg.hidden)) if cfg.layer_scale else None
        self.layer_scale2 = nn.Parameter(torch.ones(cfg.hidden)) if cfg.layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, C] -> [B, N, C]
        a = self.self_attn(self.layer_norm1(x))
        x = x + (a if self.layer_scale1 is None else self.layer_scale1 * a)
        m = self.mlp(self.layer_norm2(x))
        return x + (m if self.layer_scale2 is None else self.layer_scale2 * m)


def norm_layer(cfg: VisionConfig) -> nn.Module:
    if cfg.norm == "rms_norm":
        return RMSNorm(cfg.hidden, cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.layers))


class SiglipVisionTower(nn.Module):
    """Tiles in, patch features out: ``forward(pixels [B, 3, S, S]) -> [B, grid*grid, C]``.

    The features are the output of encoder layer ``select_layer`` (Python indexing over the layers, so a
    negative value equals HF's ``hidden_states[select_layer]``); ``post_layernorm`` follows only when the last
    layer is selected and the config asks for it, which is HF's ``last_hidden_state``.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        # SigLIP checkpoints carry the final LayerNorm even when a VLM does not apply it; InternViT's exists
        # only when the checkpoint applies it (use_mean_pooling false)
        built = cfg.post_layernorm or cfg.arch == "siglip"
        self.post_layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps) if built else None
        self.apply_post_layernorm = cfg.post_layernorm and cfg.layers_used == cfg.layers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: [B, channels, S, S] -> features [B, grid*grid, C]
        c = self.cfg
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(
                f"vision tower expects tiles [B, {c.channels}, {c.image_size}, {c.image_size}], got {tuple(pixels.shape)}"
            )
        x = self.embeddings(pixels)
        for layer in self.encoder.layers[: c.layers_used]:
            x = layer(x)
        x = self.post_layernorm(x) if self.apply_post_layernorm else x
        return x[:, 1:] if c.class_token else x


__all__ = ["SiglipVisionTower", "activation"]
