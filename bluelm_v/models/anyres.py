"""LLaVA-OneVision's image-feature layout ("anyres" with un-padding): the tiles' features stitched back into one
feature map, the padding rows or columns cut off, the map shrunk bilinearly when it holds more than
``max_tiles`` tiles' worth, and a learned newline embedding appended to every row; the base image's features
come first, as they are.

``packed_shape`` gives the map's size without torch, so the prompt's token count is known before encoding.
"""
from __future__ import annotations

import math


def unpadded_size(rows: int, cols: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the stitched map after removing the padding the fit-and-pad layout added; the rounding
    to 7 decimals before truncation is LLaVA-OneVision's own."""
    h, w = image_hw
    if w / h > cols / rows:  # width-limited: padding above and below
        new = int(round(h * (cols / w), 7))
        pad = (rows - new) // 2
        return rows - 2 * pad, cols
    new = int(round(w * (rows / h), 7))
    pad = (cols - new) // 2
    return rows, cols - 2 * pad


def packed_shape(grid: tuple[int, int], side: int, image_hw: tuple[int, int], max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the final map (before newlines) for a grid (m across, n down) of tiles of side x side
    features; the image's tokens are side*side + rows * (cols + 1)."""
    m, n = grid
    rows, cols = unpadded_size(n * side, m * side, image_hw)
    ratio = math.sqrt(rows * cols / (max_tiles * side * side))
    if ratio > 1.1:  # too many tokens: shrink to about max_tiles tiles' worth
        rows, cols = int(rows // ratio), int(cols // ratio)
    return rows, cols


def image_token_count(patches: int, grid: tuple[int, int], side: int, image_hw: tuple[int, int],
                      max_tiles: int) -> int:
    """Embedding rows of one image: a lone tile is its features plus one newline."""
    if patches == 1:
        return side * side + 1
    rows, cols = packed_shape(grid, side, image_hw, max_tiles)
    return side * side + rows * (cols + 1)


def pack_anyres(features, grid: tuple[int, int], image_hw: tuple[int, int], newline, max_tiles: int):
    """features: [P, side*side, d] (base image first, then the m*n tiles row-major); newline: [d] ->
    the image's embeddings [image_token_count, d]."""
    import torch
    import torch.nn.functional as F

    p, t, d = features.shape
    side = math.isqrt(t)
    if p == 1:
        return torch.cat([features[0], newline[None].to(features.dtype)])
    m, n = grid
    if p != m * n + 1:
        raise ValueError(f"anyres packing expects 1 + {m}x{n} tiles, got {p}")
    x = features[1:].view(n, m, side, side, d).permute(4, 0, 2, 1, 3).reshape(d, n * side, m * side)
    rows, cols = unpadded_size(n * side, m * side, image_hw)
    top, left = (n * side - rows) // 2, (m * side - cols) // 2
    x = x[:, top:top + rows, left:left + cols]
    out_rows, out_cols = packed_shape(grid, side, image_hw, max_tiles)
    if (out_rows, out_cols) != (rows, cols):
        x = F.interpolate(x[None], [out_rows, out_cols], mode="bilinear")[0]
    x = torch.cat([x, newline[:, None, None].to(x.dtype).expand(d, out_rows, 1)], dim=-1)  # [d, rows, cols+1]
    return torch.cat([features[0], x.flatten(1).transpose(0, 1)])


__all__ = ["image_token_count", "pack_anyres", "packed_shape", "unpadded_size"]
