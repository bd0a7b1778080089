"""Token down-sampler and MLP projector (VILA ``mlp_downsample``; paper §3).

``downsample`` folds every merge x merge block of the ViT's patch grid into one token of merge*merge*C channels.
Odd sides are zero-padded at the bottom and right first, so SigLIP's 27x27 grid becomes 14x14 (729 -> 196) and
the tiny model's 5x5 becomes 3x3. For merge 2 the output cell (r, c) is

    concat[x(2r, 2c), x(2r, 2c+1), x(2r+1, 2c), x(2r+1, 2c+1)]     (C channels each, in this order)

and cells are emitted row-major (``order="column_major"`` emits them column by column, as older VILA did).
``Projector`` then maps each folded token to the LLM's width: [LayerNorm(m*m*C)] -> Linear(m*m*C, d) -> act ->
Linear(d, d). Parameter names: ``norm.{weight,bias}``, ``linear_1.{weight,bias}``, ``linear_2.{weight,bias}``.
``kind="linear"`` keeps ``linear_1`` alone (Idefics3 / SmolVLM: pixel shuffle by ``merge``, then one Linear
without bias); its merge is any factor, in the same row-major [dy][dx] channel order.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bluelm_v.models.config import ProjectorConfig, VisionConfig
from bluelm_v.models.vision import activation


def downsample(x: torch.Tensor, grid: int, merge: int = 2, order: str = "row_major") -> torch.Tensor:
    """x: [B, grid*grid, C] patch features (row-major) -> [B, ceil(grid/merge)^2, merge*merge*C].

    Written with tensors of at most 4 dimensions (NPU compilers such as QNN's HTP take no 5-D or 6-D
    Reshape/Transpose), which is the same data movement as the 6-D view [B, row block, dy, col block, dx, C]."""
    b, n, c = x.shape
    if n != grid * grid:
        raise ValueError(f"downsample expects {grid}x{grid} = {grid * grid} tokens per tile, got {n}")
    if order not in ("row_major", "column_major"):
        raise ValueError(f"unknown downsample order {order!r}: expected 'row_major' or 'column_major'")
    side = math.ceil(grid / merge)
    pad = side * merge - grid
    x = x.reshape(b, grid, grid, c)
    if pad:
        x = F.pad(x, (0, 0, 0, pad, 0, pad))  # zeros after the last column and the last row
    if order == "column_major":
        x = x.transpose(1, 2)  # [B, col, row, C]: cells come out column by column, blocks hold [dx][dy]
    x = x.reshape(b * side, merge, side, merge * c)  # [B * row block, dy, col block, dx * C + c]
    x = x.transpose(1, 2)  # [B * row block, col block, dy, dx * C + c]
    if order == "column_major":  # back to the [dy][dx] channel order inside each block
        x = x.reshape(b * side * side, merge, merge, c).transpose(1, 2)
    return x.reshape(b, side * side, merge * merge * c)


class Projector(nn.Module):
    """``forward(features [B, grid*grid, C]) -> [B, tokens_per_tile, d]``: down-sample, then the MLP."""

    def __init__(self, cfg: ProjectorConfig, vision: VisionConfig, llm_hidden: int):
        super().__init__()
        self.cfg = cfg
        self.grid = vision.grid
        width = cfg.merge * cfg.merge * vision.hidden
        self.norm = nn.LayerNorm(width, eps=cfg.layer_norm_eps) if cfg.layer_norm else nn.Identity()
        self.linear_1 = nn.Linear(width, llm_hidden, bias=cfg.bias)
        mlp = cfg.kind == "mlp"
        self.act = activation(cfg.act) if mlp else nn.Identity()
        self.linear_2 = nn.Linear(llm_hidden, llm_hidden, bias=cfg.bias) if mlp else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [B, grid*grid, C] -> [B, ceil(grid/merge)^2, d]
        x = downsample(features, self.grid, self.cfg.merge, self.cfg.order)
        return self.linear_2(self.act(self.linear_1(self.norm(x))))


__all__ = ["Projector", "downsample"]
