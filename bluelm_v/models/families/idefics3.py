"""Idefics3 / SmolVLM's architecture (HF ``Idefics3ForConditionalGeneration``, model_type ``idefics3``):
SigLIP -> pixel shuffle by ``scale_factor`` -> one Linear without bias -> LLaMA-family LLM.

- Vision: our SigLIP tower unchanged. HF's variable-resolution position ids (bucketised fractional
  coordinates) reduce to 0..N-1 for the full tiles its processor makes (checked for 4..64 patches a side).
- Connector: pixel shuffle with factor s is our row-major down-sampler with merge s ([dy][dx] channel order),
  then ``kind="linear"``.
- Image splitting (its processor, reproduced here with Pillow's LANCZOS as HF's Pillow backend does): the
  longest edge is resized to ``size.longest_edge`` (the other side even), then both sides up to multiples of the
  tile, cut row-major into tiles, plus the whole resized image squashed to one tile, last. An image that ends up
  a single tile is not split.
- Prompt per image: ``<fake_token_around_image><row_r_col_c><image> x seq`` for each tile, "\\n" after each
  row, then "\\n<fake_token_around_image><global-img><image> x seq<fake_token_around_image>".
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from bluelm_v import FormatError
from bluelm_v.models.config import ModelConfig, ProjectorConfig, VisionConfig
from bluelm_v.models.families import llama, read_json, renamed

ARCH = "idefics3"
HF_AUTO = "AutoModelForImageTextToText"
MAX_IMAGE_SIZE = 4096  # the processor's cap on the resized longest edge
RESERVED = {"image": 399, "fake": 398, "global": 397, "row_col": 361}  # the random models' specials (vocab 400)


def config_from_hf(raw: Mapping, where: str) -> ModelConfig:
    vc, tc = raw.get("vision_config"), raw.get("text_config")
    if not isinstance(vc, dict) or not isinstance(tc, dict):
        raise FormatError(f"{where}: fields vision_config and text_config must both be objects")
    if tc.get("model_type", "llama") != "llama":
        raise FormatError(f"{where}: field text_config.model_type {tc.get('model_type')!r} is not supported "
                          f"(supported: llama)")
    llm = llama.decoder_config(tc, f"{where} (text_config)")
    llm = dataclasses.replace(llm, tie_embeddings=bool(raw.get("tie_word_embeddings",
                                                               tc.get("tie_word_embeddings", False))))
    scale = raw.get("scale_factor", 2)
    if not isinstance(scale, int) or scale < 1:
        raise FormatError(f"{where}: field scale_factor {scale!r} must be a positive integer")
    proc = processor(Path(where).parent, int(vc.get("image_size", 224)))
    image_id = raw.get("image_token_id", 128257)
    if not isinstance(image_id, int) or not 0 <= image_id < llm.vocab:
        raise FormatError(f"{where}: field image_token_id {image_id!r} is outside the text vocabulary of {llm.vocab}")
    try:
        vision = VisionConfig(
            image_size=int(vc.get("image_size", 224)), patch_size=int(vc.get("patch_size", 32)),
            hidden=int(vc["hidden_size"]), intermediate=int(vc["intermediate_size"]),
            layers=int(vc["num_hidden_layers"]), heads=int(vc["num_attention_heads"]),
            layer_norm_eps=float(vc.get("layer_norm_eps", 1e-6)), act=vc.get("hidden_act", "gelu_pytorch_tanh"),
            mean=tuple(proc.pop("mean")), std=tuple(proc.pop("std")))
    except KeyError as exc:
        raise FormatError(f"{where}: missing field vision_config.{exc.args[0]}") from None
    if vision.grid % scale:
        raise FormatError(f"{where}: field scale_factor {scale} does not divide the {vision.grid}-patch grid")
    return ModelConfig(name=Path(where).parent.name, description=f"Idefics3 from {where}", llm=llm, vision=vision,
                       projector=ProjectorConfig(merge=scale, layer_norm=False, kind="linear", bias=False),
                       processor={**proc, "image_token_id": image_id}, family=ARCH, sources={"all": str(where)})


def processor(folder: Path, tile: int) -> dict:
    """The image processor's settings (its defaults when preprocessor_config.json is absent)."""
    path = folder / "preprocessor_config.json"
    raw = read_json(path) if path.is_file() else {}
    max_size = (raw.get("max_image_size") or {}).get("longest_edge", tile)
    if max_size != tile:
        raise FormatError(f"{path}: field max_image_size.longest_edge {max_size} does not match config.json's "
                          f"vision_config.image_size {tile}")
    if raw.get("resample", 1) != 1:  # PIL's LANCZOS
        raise FormatError(f"{path}: field resample {raw.get('resample')!r}: only LANCZOS (1) is reproduced")
    return {"longest_edge": int((raw.get("size") or {}).get("longest_edge", 4 * tile)),
            "splitting": bool(raw.get("do_image_splitting", True)),
            "mean": list(raw.get("image_mean", (0.5, 0.5, 0.5))), "std": list(raw.get("image_std", (0.5, 0.5, 0.5)))}


# ---- image splitting --------------------------------------------------------------------------------------------
def longest_edge_size(w: int, h: int, longest: int) -> tuple[int, int]:
    """(w, h) after resizing the longest edge to ``longest``: the other side truncated, then made even."""
    aspect = w / h
    if w >= h:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        h, w = longest, int(longest * aspect)
        w += w % 2
    w, h = max(w, 1), max(h, 1)
    if max(w, h) > MAX_IMAGE_SIZE:  # then down below the processor's cap, keeping the aspect
        aspect = w / h
        w, h = (MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)) if w >= h else (int(MAX_IMAGE_SIZE * aspect),
                                                                               MAX_IMAGE_SIZE)
    return max(w, 1), max(h, 1)


def tile_multiple_size(w: int, h: int, tile: int) -> tuple[int, int]:
    """(w, h) rounded up to multiples of the tile, the shorter side derived from the aspect first."""
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    return w, h


def split_image(rgb: np.ndarray, cfg: ModelConfig) -> tuple[list[np.ndarray], int, int]:
    """RGB uint8 [H, W, 3] -> (frames [tile, tile, 3] uint8: tiles row-major, then the global image; rows; cols).
    rows = cols = 0 when the image is not split (one frame)."""
    return split_frames(rgb, cfg.vision.image_size, cfg.processor["longest_edge"], cfg.processor["splitting"])


def split_frames(rgb: np.ndarray, tile: int, longest_edge: int, splitting: bool) -> tuple[list[np.ndarray], int, int]:
    from PIL import Image

    img = Image.fromarray(rgb)
    img = img.resize(longest_edge_size(img.width, img.height, longest_edge), Image.LANCZOS)
    if not splitting:
        return [np.asarray(img.resize((tile, tile), Image.LANCZOS))], 0, 0
    img = img.resize(tile_multiple_size(img.width, img.height, tile), Image.LANCZOS)
    if img.width <= tile and img.height <= tile:
        return [np.asarray(img)], 0, 0
    rows, cols = img.height // tile, img.width // tile
    a = np.asarray(img)
    frames = [a[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    frames.append(np.asarray(img.resize((tile, tile), Image.LANCZOS)))
    return frames, rows, cols


def family_tiles(cfg: ModelConfig, rgb: np.ndarray):
    """The family's own preprocessing: normalized tiles [P, 3, tile, tile] float32, rows, cols."""
    import torch

    frames, rows, cols = split_image(rgb, cfg)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(cfg.vision.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.vision.std).view(1, 3, 1, 1)
    return (x - mean) / std, rows, cols


# ---- names and prompt -------------------------------------------------------------------------------------------
NAME_MAP = [
    (r"^(model\.)?vision_model\.", "vision_tower."),
    (r"^(model\.)?connector\.modality_projection\.proj\.", "mm_projector.linear_1."),
    (r"^(model\.)?text_model\.", "language_model.model."),
]


def canonical_state(state: Mapping, cfg: ModelConfig) -> dict:
    return dict(renamed(state, cfg, NAME_MAP))


def image_block(loaded, rows: int, cols: int, global_image: bool) -> list[int]:
    """Token ids of one image's block (module doc), IMAGE_TOKEN_ID at every image position."""
    from bluelm_v.models.families._vlm import special_id
    from bluelm_v.models.vlm import IMAGE_TOKEN_ID

    tok, seq = loaded.tokenizer, loaded.config.image_tokens_per_tile()
    fake = special_id(loaded, "<fake_token_around_image>", RESERVED["fake"])
    glob = special_id(loaded, "<global-img>", RESERVED["global"])
    ids: list[int] = []
    for r in range(rows):
        for c in range(cols):
            if r >= 6 or c >= 6:
                raise ValueError(f"Idefics3 has row/column tokens up to 6x6, the tiling gives {rows}x{cols}")
            ids += [fake, special_id(loaded, f"<row_{r + 1}_col_{c + 1}>", RESERVED["row_col"] + 6 * r + c)]
            ids += [IMAGE_TOKEN_ID] * seq
        # the row's newline and the global image's leading one are one piece of text after the last row
        ids += tok.encode("\n\n" if r == rows - 1 and global_image else "\n", add_bos=False)
    if global_image or not rows:
        ids += [fake, glob] + [IMAGE_TOKEN_ID] * seq + [fake]
    return ids


def engine_image_block(loaded) -> dict:
    """The package's ``model.image_block`` (csrc/model/config.h ImageBlock), the data image_block above expands:
    ``<fake_token_around_image><row_r_col_c>`` before each local tile (6 x 6 of them), "\\n" after each row ("\\n\\n"
    after the last one, one piece of text with the global image's leading newline), the global image last between
    ``<fake_token_around_image><global-img>`` and ``<fake_token_around_image>``, which also wrap an unsplit image."""
    from bluelm_v.models.families._vlm import special_id

    tok = loaded.tokenizer
    fake = special_id(loaded, "<fake_token_around_image>", RESERVED["fake"])
    glob = special_id(loaded, "<global-img>", RESERVED["global"])
    markers = [[fake, special_id(loaded, f"<row_{r + 1}_col_{c + 1}>", RESERVED["row_col"] + 6 * r + c)]
               for r in range(6) for c in range(6)]
    return {"tile_markers": {"rows": 6, "cols": 6, "ids": markers},
            "row_end": tok.encode("\n", add_bos=False), "last_row_end": tok.encode("\n\n", add_bos=False),
            "global_open": [fake, glob], "global_close": [fake], "global_last": True}


def engine_patches(width: int, height: int, model: Mapping) -> int:
    """How many tiles engine_tiles makes of an image of width x height (the sizes alone, no resize)."""
    tile, proc = int(model["vision"]["image_size"]), model.get("processor") or {}
    if not proc.get("splitting", True):
        return 1
    w, h = longest_edge_size(width, height, int(proc.get("longest_edge", 4 * tile)))
    w, h = tile_multiple_size(w, h, tile)
    return 1 if w <= tile and h <= tile else (w // tile) * (h // tile) + 1


def engine_tiles(rgb: np.ndarray, model: Mapping) -> tuple[np.ndarray, tuple[int, int], int]:
    """The family's own splitting for the native engine (Pillow's LANCZOS, which csrc/image does not have), from a
    package manifest's ``model`` object: (normalized tiles float32 [P, 3, tile, tile], grid (cols, rows), 1 when
    the global image is last). Without torch, so ``bluelm-v run`` stays light."""
    tile, proc = int(model["vision"]["image_size"]), model.get("processor") or {}
    frames, rows, cols = split_frames(rgb, tile, int(proc.get("longest_edge", 4 * tile)),
                                      bool(proc.get("splitting", True)))
    x = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(model["vision"]["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(model["vision"]["std"], np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - mean) / std), (max(cols, 1), max(rows, 1)), int(rows > 0)


def prepare_image(loaded, rgb, dynres: dict, tiles=None) -> dict:
    """One image -> its prompt block, tiles and layout: the family's splitting, or ``dynres``'s tiling (local
    tiles row-major, the thumbnail as the global image). ``tiles`` given (HF's, same splitting): those."""
    import torch

    from bluelm_v.dynres import plan
    from bluelm_v.models.families import _vlm

    cfg = loaded.config
    if dynres:
        used = _vlm.with_dynres(cfg, dynres)
        p = plan(rgb.shape[1], rgb.shape[0], **used.dynres)
        ours = _vlm.our_tiles(used, rgb)
        if p.thumbnail_first:  # Idefics3 puts the global image last
            ours = torch.cat([ours[1:], ours[:1]])
        global_image = p.patches > p.local_patches
        cols, rows = p.grid if p.local_patches > 1 else (0, 0)
    else:
        ours, rows, cols = family_tiles(cfg, rgb)
        global_image = rows > 0
    tiles = ours if tiles is None else tiles
    return {"ids": image_block(loaded, rows, cols, global_image), "tiles": tiles, "layout": {}}


def reference_inputs(folder: Path, loaded, prompt: str, image, seed: int, dynres: dict) -> dict:
    """Token ids and pixels for both sides (see check_reference): HF's processor's tiles, or ours when
    ``dynres`` replaces the family's splitting."""
    from bluelm_v.models.families import _vlm

    rgb = _vlm.test_image(image, seed)
    theirs = _vlm.hf_pixels(folder, rgb)[0]  # [P, 3, tile, tile]: one image, no padding
    own = family_tiles(loaded.config, rgb)[0]
    block = prepare_image(loaded, rgb, dynres, None if dynres else theirs)
    tiles = block["tiles"]
    replaced = _vlm.with_dynres(loaded.config, dynres).dynres if dynres else {"idefics3": dict(loaded.config.processor)}
    return {**_vlm.both_sides(loaded, prompt, block), "hf_kwargs": {"pixel_values": tiles[None]},
            "max_abs_pixel_diff": None if dynres else _vlm.pixel_diff(own, theirs),
            "preprocessing": {"ours": replaced, "tiles_ours": int(tiles.shape[0]) if dynres else int(own.shape[0]),
                              "tiles_hf": int(theirs.shape[0])}}


def random_hf(folder: Path, seed: int = 0, scale_factor: int = 4) -> Path:
    """A small random Idefics3 (LLaMA LLM; 112-px tiles of 8x8 patches, shuffled by 4 -> 4 tokens) with its
    image processor (longest edge 4 tiles)."""
    import transformers

    from bluelm_v.models.families import _vlm

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=112,
                  patch_size=14)
    text = transformers.LlamaConfig(**{**llama.TINY_DECODER, "vocab_size": 400}).to_dict()
    cfg = transformers.Idefics3Config(vision_config=vision, text_config=text, image_token_id=RESERVED["image"],
                                      scale_factor=scale_factor, tie_word_embeddings=False)
    _vlm.on_deployed_grid(llama.spread_weights(transformers.Idefics3ForConditionalGeneration(cfg), seed)).save_pretrained(folder)
    transformers.Idefics3ImageProcessorPil(size={"longest_edge": 4 * 112},
                                           max_image_size={"longest_edge": 112}).save_pretrained(folder)
    return folder
