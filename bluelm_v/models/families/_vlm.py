"""What the VLM families share around the model: the test image, the HF processor's pixels, our tiles, and the
prompt's token ids on both sides (HF's image token id there, our IMAGE_TOKEN_ID placeholder here).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bluelm_v.models.config import ModelConfig
from bluelm_v.models.tokenizer import IMAGE_MARKER
from bluelm_v.models.vlm import IMAGE_TOKEN_ID

SYNTHETIC_SIZE = (200, 120)  # w x h: wider than tall, so every family's tiling cuts more than one tile


def on_deployed_grid(model):
    """A random HF VLM's weights rounded, in place, onto the grids of the package's default formats: the LLM's
    (``language_model`` / ``text_model`` and the head) onto q4_0's, the ViT's and projector's onto q8_0's, as a
    GGUF-derived checkpoint's are. check-reference at the default precision then measures the engine, not the
    rounding of float weights (families.llama.on_weight_grid)."""
    from bluelm_v.models.families.llama import on_weight_grid

    for name, child in model.model.named_children():
        on_weight_grid(child, "q4_0" if name in ("language_model", "text_model") else "q8_0")
    on_weight_grid(model.lm_head)
    return model


def test_image(image: Any, seed: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the user's image, or a seeded synthetic one (smooth gradients plus noise, so resizing
    and normalization are exercised on both smooth and sharp content)."""
    from bluelm_v.image import load_image

    if image is not None:
        return load_image(image)
    w, h = SYNTHETIC_SIZE
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 9.0 + y / 13.0)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def hf_pixels(folder: Path, rgb: np.ndarray) -> torch.Tensor:
    """The HF image processor of ``folder`` (preprocessor_config.json) on one image -> its pixel_values."""
    import transformers
    from PIL import Image

    proc = transformers.AutoImageProcessor.from_pretrained(str(folder))
    return proc(images=[Image.fromarray(rgb)], return_tensors="pt")["pixel_values"].float()


def with_dynres(cfg: ModelConfig, dynres: dict) -> ModelConfig:
    """``cfg`` with its own tiling replaced by one of our schemes (``--scheme/--alpha/--grid``), same tile side."""
    if not dynres:
        return cfg
    base = {"tile": cfg.dynres.get("tile", cfg.vision.image_size)}
    return dataclasses.replace(cfg, dynres={**base, **dynres})


def our_tiles(cfg: ModelConfig, rgb: np.ndarray) -> torch.Tensor:
    from bluelm_v.models.vlm import image_tiles

    return image_tiles(cfg, rgb)


def pixel_diff(ours: torch.Tensor, theirs: torch.Tensor) -> Optional[float]:
    """max |ours - HF| over the tiles, or None when the tilings differ (another scheme replaced the family's)."""
    if ours.shape != theirs.shape:
        return None
    return float((ours - theirs).abs().max())


def prompt_text(loaded, prompt: str) -> tuple[str, str]:
    """The chat-rendered user turn ``<image>\\n{prompt}``, split at the image."""
    rendered = loaded.tokenizer.apply_chat_template([{"role": "user", "content": IMAGE_MARKER + "\n" + prompt}])
    before, sep, after = rendered.partition(IMAGE_MARKER)
    if not sep:
        raise ValueError("the chat template dropped the image marker")
    return before, after


def both_sides(loaded, prompt: str, block: dict) -> dict:
    """The chat-rendered prompt around one image block: our ids (IMAGE_TOKEN_ID placeholders) and HF's (the
    family's image token there), with the block's tiles and layout."""
    before, after = prompt_text(loaded, prompt)
    tok = loaded.tokenizer
    ours = tok.encode(before) + block["ids"] + tok.encode(after, add_bos=False)
    image_id = int(loaded.config.processor["image_token_id"])
    hf = [image_id if i == IMAGE_TOKEN_ID else i for i in ours]
    return {"ids": hf, "our_ids": ours, "image_tokens": ours.count(IMAGE_TOKEN_ID), "our_tiles": block["tiles"],
            "layout": block["layout"]}


def special_id(loaded, token: str, fallback: int) -> int:
    """The id of a special token in the folder's tokenizer; ``fallback`` when the folder has none (the random
    models: byte-level text, specials on reserved ids at the top of the vocabulary)."""
    if loaded.tokenizer.source == "byte tokenizer":
        return fallback
    found = loaded.tokenizer.token_to_id(token)
    if found is None:
        raise ValueError(f"the tokenizer of {loaded.source} has no {token!r} token")
    return int(found)
