"""LLaVA-OneVision (HF ``LlavaOnevisionForConditionalGeneration``, model_type ``llava_onevision``): SigLIP ->
MLP projector (no token merge) -> anyres layout with un-padding and row newlines -> Qwen2.

- Vision: our SigLIP tower; ``vision_feature_layer`` -1 is the last encoder layer's output *without* the final
  LayerNorm (HF reads hidden_states, not last_hidden_state), and strategy "full" keeps every patch.
- Tiling: LLaVA-NeXT's fit-and-pad over the config's ``image_grid_pinpoints`` ((height, width) pairs), the base
  image first: our ``llava_next`` scheme with those canvases as its candidates, in the same order.
- Layout: ``image_layout="anyres_unpad"`` (bluelm_v/models/anyres.py) with ``image_newline``; the prompt holds
  one ``<image>`` token per embedding row.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Mapping

from bluelm_v import FormatError
from bluelm_v.models.config import ModelConfig, ProjectorConfig, VisionConfig
from bluelm_v.models.families import TEXT_FLAGS, llama, read_json, vision_and_text

ARCH = "llava_onevision"
HF_AUTO = "AutoModelForImageTextToText"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # HF defaults


def config_from_hf(raw: Mapping, where: str) -> ModelConfig:
    from bluelm_v.models.families.internvl import select_layer

    vc, tc, kind = vision_and_text(raw, where)
    if vc.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise FormatError(f"{where}: field vision_config.model_type {vc.get('model_type')!r}: only SigLIP is supported")
    if raw.get("vision_feature_select_strategy", "full") != "full":
        raise FormatError(f"{where}: field vision_feature_select_strategy must be 'full' (SigLIP has no class token)")
    ratio = str(raw.get("vision_aspect_ratio", "anyres_max_9"))
    if not re.fullmatch(r"anyres_max_\d+", ratio):
        raise FormatError(f"{where}: field vision_aspect_ratio {ratio!r}: only anyres_max_N is supported")
    llm = llama.decoder_config(tc, f"{where} (text_config)", **TEXT_FLAGS[kind])
    llm = dataclasses.replace(llm, tie_embeddings=bool(raw.get("tie_word_embeddings",
                                                               tc.get("tie_word_embeddings", False))))
    image_id = raw.get("image_token_index", raw.get("image_token_id", 151646))
    if not isinstance(image_id, int) or not 0 <= image_id < llm.vocab:
        raise FormatError(f"{where}: field image_token_index {image_id!r} is outside the text vocabulary of "
                          f"{llm.vocab}")
    tile = int(vc.get("image_size", 384))
    proc = _processor(Path(where).parent, tile)
    try:
        vision = VisionConfig(
            image_size=tile, patch_size=int(vc.get("patch_size", 14)), hidden=int(vc["hidden_size"]),
            intermediate=int(vc["intermediate_size"]), layers=int(vc["num_hidden_layers"]),
            heads=int(vc["num_attention_heads"]), layer_norm_eps=float(vc.get("layer_norm_eps", 1e-6)),
            act=vc.get("hidden_act", "gelu_pytorch_tanh"),
            select_layer=select_layer(raw.get("vision_feature_layer", -1), where),
            post_layernorm=False, mean=proc["mean"], std=proc["std"])
    except KeyError as exc:
        raise FormatError(f"{where}: missing field vision_config.{exc.args[0]}") from None
    projector = ProjectorConfig(merge=1, layer_norm=False, act=raw.get("projector_hidden_act", "gelu"),
                                bias=bool(raw.get("multimodal_projector_bias", True)))
    return ModelConfig(name=Path(where).parent.name, description=f"LLaVA-OneVision ({kind} LLM) from {where}",
                       llm=llm, vision=vision, projector=projector, family=ARCH, sources={"all": str(where)},
                       dynres={"scheme": "llava_next", "tile": tile,
                               "candidates": candidates(raw.get("image_grid_pinpoints"), tile, where)},
                       image_layout="anyres_unpad", anyres_max_tiles=int(ratio.rsplit("_", 1)[1]),
                       processor={"image_token_id": image_id})


def candidates(pinpoints, tile: int, where: str) -> list[list[int]]:
    """HF's (height, width) canvases -> our (m across, n down) grids, in the same order (ties keep the first)."""
    if not isinstance(pinpoints, list) or not pinpoints:
        raise FormatError(f"{where}: field image_grid_pinpoints must be a non-empty list of [height, width]")
    out = []
    for p in pinpoints:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and v > 0 and v % tile == 0
                                                            for v in p)):
            raise FormatError(f"{where}: field image_grid_pinpoints entry {p!r} is not [height, width] in multiples "
                              f"of the {tile}-px tile")
        out.append([p[1] // tile, p[0] // tile])
    return out


def _processor(folder: Path, tile: int) -> dict:
    path = folder / "preprocessor_config.json"
    raw = read_json(path) if path.is_file() else {}
    size = raw.get("size") or {}
    if size and (size.get("height", tile), size.get("width", tile)) != (tile, tile):
        raise FormatError(f"{path}: field size {size} does not match config.json's vision_config.image_size {tile}")
    if raw.get("resample", 3) != 3:  # PIL's BICUBIC, which our resize reproduces exactly
        raise FormatError(f"{path}: field resample {raw.get('resample')!r}: only BICUBIC (3) is reproduced")
    return {"mean": tuple(raw.get("image_mean", CLIP_MEAN)), "std": tuple(raw.get("image_std", CLIP_STD))}


def canonical_state(state: Mapping, cfg: ModelConfig) -> dict:
    from bluelm_v.models.checkpoint import canonical_siglip_names

    vision, out = {}, {}
    for name, t in state.items():
        name = name.removeprefix("model.")
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            if not cfg.llm.tie_embeddings:
                out["language_model.lm_head.weight"] = t
        elif name.startswith("vision_tower."):
            vision[name[len("vision_tower."):]] = t
        elif name.startswith("multi_modal_projector."):
            out["mm_projector." + name[len("multi_modal_projector."):]] = t
        elif name.startswith("language_model."):
            rest = name[len("language_model."):]
            out["language_model." + (rest if rest.startswith("model.") else "model." + rest)] = t
        else:
            out[name] = t  # image_newline, or reported as unexpected
    # SigLIP's pooling head and (unused) final LayerNorm are skipped: the features precede both
    vision = canonical_siglip_names(vision)
    out.update({"vision_tower." + k: v for k, v in vision.items()})
    return out


def prepare_image(loaded, rgb, dynres: dict, tiles=None) -> dict:
    """One image -> its prompt block (one position per embedding row of the packed layout), tiles (base image
    first; the family's tiling, or ``dynres``'s; ``tiles`` given: those) and layout (grid, image size)."""
    import torch

    from bluelm_v.dynres import plan
    from bluelm_v.models.anyres import image_token_count
    from bluelm_v.models.families import _vlm
    from bluelm_v.models.vlm import IMAGE_TOKEN_ID

    cfg = loaded.config
    h, w = rgb.shape[:2]
    used = _vlm.with_dynres(cfg, dynres)
    p = plan(w, h, **used.dynres)
    if tiles is None:
        tiles = _vlm.our_tiles(used, rgb)
        if p.patches > 1 and not p.thumbnail_first:  # the layout needs the whole-image tile first
            tiles = torch.cat([tiles[-1:], tiles[:-1]])
    count = image_token_count(tiles.shape[0], p.grid, cfg.vision.grid, (h, w), cfg.anyres_max_tiles)
    return {"ids": [IMAGE_TOKEN_ID] * count, "tiles": tiles, "layout": {"grid": tuple(p.grid), "image_hw": (h, w)}}


def engine_image_block(loaded) -> dict:
    """The package's ``model.image_block``: no markers; the anyres layout's rows (with their newlines) are the
    image's positions, one ``<image>`` each."""
    return {}


def reference_inputs(folder: Path, loaded, prompt: str, image, seed: int, dynres: dict) -> dict:
    """Token ids and pixels for both sides (see check_reference). With ``dynres`` our tiles replace the family's;
    HF's model then gets our chosen canvas as its only pinpoint, so it stitches the same grid."""
    import torch

    from bluelm_v.models.families import _vlm

    cfg = loaded.config
    rgb = _vlm.test_image(image, seed)
    h, w = rgb.shape[:2]
    theirs = _vlm.hf_pixels(folder, rgb)[0]  # [P, 3, tile, tile], base image first
    own = prepare_image(loaded, rgb, {})["tiles"]
    block = prepare_image(loaded, rgb, dynres, None if dynres else theirs)
    tiles, (m, n) = block["tiles"], block["layout"]["grid"]
    tile = cfg.vision.image_size
    return {**_vlm.both_sides(loaded, prompt, block),
            "hf_kwargs": {"pixel_values": tiles[None], "image_sizes": torch.tensor([[h, w]])},
            "hf_config": {"image_grid_pinpoints": [[n * tile, m * tile]]} if dynres else {},
            "max_abs_pixel_diff": None if dynres else _vlm.pixel_diff(own, theirs),
            "preprocessing": {"ours": _vlm.with_dynres(cfg, dynres).dynres, "tiles_ours": int(tiles.shape[0]),
                              "tiles_hf": int(theirs.shape[0])}}


def random_hf(folder: Path, seed: int = 0) -> Path:
    """A small random LLaVA-OneVision (Qwen2 LLM; 56-px tiles of 4x4 patches; pinpoints up to 3x3 tiles) with its
    image processor."""
    import transformers

    from bluelm_v.models.families import _vlm

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
                  patch_size=14, model_type="siglip_vision_model")
    text = transformers.Qwen2Config(**llama.TINY_DECODER).to_dict()
    pinpoints = [[56 * i, 56 * j] for i in range(1, 4) for j in range(1, 4)]
    cfg = transformers.LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=299,
                                            image_grid_pinpoints=pinpoints, tie_word_embeddings=False,
                                            vision_aspect_ratio="anyres_max_4")
    _vlm.on_deployed_grid(llama.spread_weights(transformers.LlavaOnevisionForConditionalGeneration(cfg), seed)).save_pretrained(
        folder)
    transformers.LlavaOnevisionImageProcessorPil(size={"height": 56, "width": 56}, image_grid_pinpoints=pinpoints,
                                                 crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    return folder
