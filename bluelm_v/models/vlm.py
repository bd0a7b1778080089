"""The whole BlueLM-V model: tiles -> SigLIP (batches of B tiles) -> 2x2 down-sample -> MLP projector -> image
embeddings spliced into the token sequence -> LLaMA.

Image placeholder convention: a prompt's token ids hold ``IMAGE_TOKEN_ID`` (-200, never a real id) once per
image embedding row, i.e. a run of ``tiles * tokens_per_tile`` placeholders per image, where that image's tiles
come in ``bluelm_v.image.preprocess`` order (local tiles row-major, then the thumbnail) and each tile's tokens
in down-sampler order. Positions are therefore known before the image is encoded. ``embed_inputs`` replaces the
placeholders, in order, by the rows of the images' embeddings.

Parameter names: ``vision_tower.*`` (HF SiglipVisionModel names), ``mm_projector.*`` (norm, linear_1, linear_2),
``language_model.*`` (HF LlamaForCausalLM names).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from bluelm_v.models.config import ModelConfig
from bluelm_v.models.llm import KVCache, LlamaForCausalLM, prefill
from bluelm_v.models.projector import Projector
from bluelm_v.models.vision import SiglipVisionTower

IMAGE_TOKEN_ID = -200


class BlueLMV(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.multimodal:
            raise ValueError(f"model {cfg.name} has no vision tower; use LlamaForCausalLM for text-only models")
        self.cfg = cfg
        self.vision_tower = SiglipVisionTower(cfg.vision)
        self.mm_projector = Projector(cfg.projector, cfg.vision, cfg.llm.hidden)
        self.language_model = LlamaForCausalLM(cfg.llm)
        # LLaVA-OneVision's learned end-of-row embedding, only in that layout
        self.image_newline = nn.Parameter(torch.zeros(cfg.llm.hidden)) if cfg.image_layout == "anyres_unpad" else None

    @property
    def tokens_per_tile(self) -> int:
        return self.cfg.image_tokens_per_tile()

    @torch.no_grad()
    def encode_tiles(self, tiles: torch.Tensor, batch: Optional[int] = None) -> torch.Tensor:
        """tiles: [P, 3, S, S] normalized -> image embeddings [P, tokens_per_tile, d], the ViT run on batches of
        ``batch`` tiles (the config's ``deploy.tile_batch`` by default; the last batch may be smaller)."""
        batch = batch or self.cfg.deploy.tile_batch
        if batch < 1:
            raise ValueError(f"tile batch must be positive, got {batch}")
        out = [self.mm_projector(self.vision_tower(tiles[i:i + batch])) for i in range(0, tiles.shape[0], batch)]
        return torch.cat(out, dim=0)

    @torch.no_grad()
    def image_embeddings(self, tiles: torch.Tensor, grid: Optional[tuple[int, int]] = None,
                         image_hw: Optional[tuple[int, int]] = None, batch: Optional[int] = None) -> torch.Tensor:
        """One image's tiles [P, 3, S, S] -> its embedding rows [M, d] in the config's image layout ("tiles":
        tile after tile; "anyres_unpad" needs the tiling ``grid`` (m, n) and the original ``image_hw``)."""
        features = self.encode_tiles(tiles, batch)
        if self.cfg.image_layout == "tiles":
            return features.flatten(0, 1)
        from bluelm_v.models.anyres import pack_anyres

        if grid is None or image_hw is None:
            raise ValueError("the anyres_unpad image layout needs the tiling grid and the image's size")
        return pack_anyres(features, grid, image_hw, self.image_newline, self.cfg.anyres_max_tiles)

    def embed_inputs(self, ids: Union[Sequence[int], torch.Tensor],
                     image_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids: [T] with IMAGE_TOKEN_ID runs; image_embeds: [M, d], M = number of placeholders -> [1, T, d]."""
        return embed_with_images(self.language_model, ids, image_embeds)

    @torch.no_grad()
    def prefill(self, cache: KVCache, ids: Union[Sequence[int], torch.Tensor],
                tiles: Optional[torch.Tensor] = None, chunk: Optional[int] = None,
                all_logits: bool = False) -> torch.Tensor:
        """ids: [T] (placeholders for the tiles' tokens); tiles: [P, 3, S, S] -> logits [1, V] (or [1, T, V])."""
        image_embeds = None if tiles is None else self.encode_tiles(tiles).flatten(0, 1)
        embeds = self.embed_inputs(ids, image_embeds)
        return prefill(self.language_model, cache, embeds=embeds, chunk=chunk or self.cfg.deploy.chunk,
                       all_logits=all_logits)


def embed_with_images(lm: LlamaForCausalLM, ids: Union[Sequence[int], torch.Tensor],
                      image_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ids: [T] token ids with IMAGE_TOKEN_ID placeholders; image_embeds: [M, d] -> embeddings [1, T, d]."""
    ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
    is_image = ids == IMAGE_TOKEN_ID
    n_image = int(is_image.sum())
    n_rows = 0 if image_embeds is None else image_embeds.shape[0]
    if n_image != n_rows:
        raise ValueError(f"prompt has {n_image} image placeholders but {n_rows} image embedding rows were given")
    text_ids = ids[~is_image]
    if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= lm.cfg.vocab):
        raise ValueError(f"token ids must be in [0, {lm.cfg.vocab}) (or {IMAGE_TOKEN_ID} for image positions)")
    embeds = lm.embed(torch.where(is_image, 0, ids)[None])  # [1, T, d]
    if n_image:
        embeds = embeds.masked_scatter(is_image[None, :, None], image_embeds.to(embeds.dtype))
    return embeds


def image_tiles(cfg: ModelConfig, image, threads: int = 1) -> torch.Tensor:
    """One image (path, bytes, data URL, PIL image or RGB uint8 array) -> normalized tiles [P, 3, S, S] with the
    model's dynamic-resolution parameters (``cfg.dynres``) and SigLIP mean/std."""
    from bluelm_v.image import preprocess

    if not cfg.multimodal:
        raise ValueError(f"model {cfg.name} is text-only and cannot take images")
    params = dict(cfg.dynres)
    params.setdefault("tile", cfg.vision.image_size)
    if params["tile"] != cfg.vision.image_size:
        raise ValueError(f"dynres tile {params['tile']} differs from the ViT's image_size {cfg.vision.image_size}")
    pre = preprocess(image, mean=cfg.vision.mean, std=cfg.vision.std, threads=threads, **params)
    return torch.from_numpy(np.ascontiguousarray(pre.pixels))


__all__ = ["BlueLMV", "IMAGE_TOKEN_ID", "embed_with_images", "image_tiles"]
