"""InternVL 2 / 2.5 / 3 in the HF-transformers format (``InternVLForConditionalGeneration``, model_type
``internvl``): InternViT -> drop the class token -> pixel shuffle 0.5 -> LayerNorm + MLP -> Qwen2 / LLaMA.

- Vision: our ViT with the InternViT flags (class token, layer scale, ``norm_type``, ``use_qk_norm``,
  ``attention_bias``); ``use_mean_pooling`` true means no final LayerNorm on the features.
- Pixel shuffle 0.5 is our row-major 2x2 down-sampler: HF's two view/permute steps put
  [x(2r,2c), x(2r,2c+1), x(2r+1,2c), x(2r+1,2c+1)] in output cell (r, c), the down-sampler's order.
- Tiling: GotOcr2's ``crop_to_patches`` is InternVL's ``dynamic_preprocess``, our ``internvl`` scheme with the
  processor's tile side and ``max_patches``, thumbnail last when there is more than one tile.
- Prompt: each image is ``<img>`` + ``<IMG_CONTEXT>`` x (tokens per tile x tiles) + ``</img>``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from bluelm_v import FormatError
from bluelm_v.models.config import ModelConfig, ProjectorConfig, VisionConfig
from bluelm_v.models.families import TEXT_FLAGS, llama, read_json, renamed, vision_and_text

ARCH = "internvl"
HF_AUTO = "AutoModelForImageTextToText"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # GotOcr2 defaults
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # InternVL's released processors


def _square(value, field: str, where: str) -> int:
    v = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(v) != 2 or v[0] != v[1]:
        raise FormatError(f"{where}: field {field} {value!r}: only square tiles are supported")
    return int(v[0])


def select_layer(hf_layer, where: str) -> int:
    """HF's ``vision_feature_layer`` (an index into hidden_states, whose 0 is the embeddings) -> ours."""
    if not isinstance(hf_layer, int) or hf_layer == 0:
        raise FormatError(f"{where}: field vision_feature_layer {hf_layer!r}: one encoder layer (not 0) is needed")
    return hf_layer if hf_layer < 0 else hf_layer - 1


def config_from_hf(raw: Mapping, where: str) -> ModelConfig:
    vc, tc, kind = vision_and_text(raw, where, note="; InternLM2's packed wqkv is not")
    if raw.get("vision_feature_select_strategy", "default") != "default":
        raise FormatError(f"{where}: field vision_feature_select_strategy must be 'default' (class token dropped)")
    if float(raw.get("downsample_ratio", 0.5)) != 0.5:
        raise FormatError(f"{where}: field downsample_ratio {raw.get('downsample_ratio')!r}: only 0.5 is supported")
    if not vc.get("use_absolute_position_embeddings", True):
        raise FormatError(f"{where}: field vision_config.use_absolute_position_embeddings must be true")
    llm = llama.decoder_config(tc, f"{where} (text_config)", **TEXT_FLAGS[kind])
    import dataclasses

    tie = bool(raw.get("tie_word_embeddings", tc.get("tie_word_embeddings", False)))
    llm = dataclasses.replace(llm, tie_embeddings=tie)
    size = _square(vc.get("image_size", 448), "vision_config.image_size", where)
    proc = _processor(Path(where).parent, size)
    image_id = raw.get("image_token_id", 151667)
    if not isinstance(image_id, int) or not 0 <= image_id < llm.vocab:
        raise FormatError(f"{where}: field image_token_id {image_id!r} is outside the text vocabulary of {llm.vocab}")
    try:
        vision = VisionConfig(
            image_size=size, patch_size=_square(vc.get("patch_size", 14), "vision_config.patch_size", where),
            hidden=int(vc["hidden_size"]), intermediate=int(vc["intermediate_size"]),
            layers=int(vc["num_hidden_layers"]), heads=int(vc["num_attention_heads"]), arch="intern_vit",
            layer_norm_eps=float(vc.get("layer_norm_eps", 1e-6)), act=vc.get("hidden_act", "gelu"),
            select_layer=select_layer(raw.get("vision_feature_layer", -1), where),
            post_layernorm=not vc.get("use_mean_pooling", True), mean=proc["mean"], std=proc["std"],
            class_token=True, layer_scale=True, norm=vc.get("norm_type", "layer_norm"),
            qk_norm=bool(vc.get("use_qk_norm", False)), qkv_bias=bool(vc.get("attention_bias", False)))
        projector = ProjectorConfig(merge=2, layer_norm=True, act=raw.get("projector_hidden_act", "gelu"))
    except KeyError as exc:
        raise FormatError(f"{where}: missing field vision_config.{exc.args[0]}") from None
    if vision.grid % 2:
        raise FormatError(f"{where}: vision_config image_size/patch_size give an odd {vision.grid}x{vision.grid} "
                          f"grid, which pixel shuffle cannot halve")
    return ModelConfig(name=Path(where).parent.name, description=f"InternVL ({kind} LLM) from {where}", llm=llm,
                       vision=vision, projector=projector, family=ARCH, sources={"all": str(where)},
                       dynres={"scheme": "internvl", "tile": size, "max_num": proc["max_num"], "min_num": proc["min_num"]},
                       processor={"image_token_id": image_id})


def _processor(folder: Path, tile: int) -> dict:
    """Normalization and tiling of the folder's GotOcr2 image processor (its defaults when the file is absent)."""
    path = folder / "preprocessor_config.json"
    raw = read_json(path) if path.is_file() else {}
    size = raw.get("size") or {}
    if size and (size.get("height") != tile or size.get("width") != tile):
        raise FormatError(f"{path}: field size {size} does not match config.json's vision_config.image_size {tile}")
    crop = raw.get("crop_to_patches", False)
    max_num = int(raw.get("max_patches", 12)) if crop else 1  # without cropping: one stretched tile
    return {"mean": tuple(raw.get("image_mean", CLIP_MEAN)), "std": tuple(raw.get("image_std", CLIP_STD)),
            "max_num": max(max_num, 1), "min_num": int(raw.get("min_patches", 1)) if crop else 1}


# checkpoint name -> canonical name, first match wins; the hub's "-hf" files and save_pretrained's differ in
# the outer prefixes only
NAME_MAP = [
    (r"^(model\.)?language_model\.(model\.)?", "language_model.model."),
    (r"^(model\.)?vision_tower\.", "vision_tower."),
    (r"^(model\.)?multi_modal_projector\.layer_norm\.", "mm_projector.norm."),
    (r"^(model\.)?multi_modal_projector\.", "mm_projector."),
]
VISION_MAP = [
    (r"embeddings\.cls_token$", "embeddings.class_embedding"),
    (r"embeddings\.patch_embeddings\.projection\.", "embeddings.patch_embedding."),
    (r"embeddings\.position_embeddings$", "embeddings.position_embedding.weight"),
    (r"encoder\.layer\.(\d+)\.attention\.projection_layer\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"encoder\.layer\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.layers.\1.layer_norm1."),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.layers.\1.layer_norm2."),
    (r"encoder\.layer\.(\d+)\.lambda_1$", r"encoder.layers.\1.layer_scale1"),
    (r"encoder\.layer\.(\d+)\.lambda_2$", r"encoder.layers.\1.layer_scale2"),
    (r"encoder\.layer\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^layernorm\.", "post_layernorm."),
]


def canonical_state(state: Mapping, cfg: ModelConfig) -> dict:
    out = {}
    for name, t in renamed(state, cfg, NAME_MAP):
        if name.startswith("vision_tower."):
            rest = name[len("vision_tower."):]
            if rest == "embeddings.mask_token":
                continue  # masked-image-modelling token, unused at inference
            for pattern, repl in VISION_MAP:
                rest, n = re.subn(pattern, repl, rest)
                if n:
                    break
            name = "vision_tower." + rest
            t = t.reshape(t.shape[-2:]) if rest == "embeddings.position_embedding.weight" else t
            t = t.reshape(-1) if rest == "embeddings.class_embedding" else t
        out[name] = t
    return out


def prepare_image(loaded, rgb, dynres: dict, tiles=None) -> dict:
    """One image -> its prompt block (IMAGE_TOKEN_ID positions), tiles (the family's tiling, or ``dynres``'s;
    ``tiles`` given: those) and layout."""
    from bluelm_v.models.families import _vlm
    from bluelm_v.models.vlm import IMAGE_TOKEN_ID

    cfg = loaded.config
    tiles = _vlm.our_tiles(_vlm.with_dynres(cfg, dynres), rgb) if tiles is None else tiles
    image_id = int(cfg.processor["image_token_id"])
    start = _vlm.special_id(loaded, "<img>", image_id - 2)
    end = _vlm.special_id(loaded, "</img>", image_id - 1)
    run = [IMAGE_TOKEN_ID] * (tiles.shape[0] * cfg.image_tokens_per_tile())
    return {"ids": [start] + run + [end], "tiles": tiles, "layout": {}}


def engine_image_block(loaded) -> dict:
    """The package's ``model.image_block`` (csrc/model/config.h ImageBlock): ``<img>`` + every tile's positions +
    ``</img>``, what prepare_image builds, as data the engine expands from each image's tiles."""
    from bluelm_v.models.families import _vlm

    image_id = int(loaded.config.processor["image_token_id"])
    return {"open": [_vlm.special_id(loaded, "<img>", image_id - 2)],
            "close": [_vlm.special_id(loaded, "</img>", image_id - 1)]}


def reference_inputs(folder: Path, loaded, prompt: str, image, seed: int, dynres: dict) -> dict:
    """Token ids and pixels for both sides (see check_reference): HF's processor's tiles, or ours when
    ``dynres`` replaces the family's tiling."""
    from bluelm_v.models.families import _vlm

    cfg = loaded.config
    rgb = _vlm.test_image(image, seed)
    theirs = _vlm.hf_pixels(folder, rgb)
    ours = _vlm.our_tiles(_vlm.with_dynres(cfg, dynres), rgb)
    tiles = ours if dynres else theirs  # the same pixels go to both models
    inputs = _vlm.both_sides(loaded, prompt, prepare_image(loaded, rgb, dynres, tiles))
    return {**inputs, "hf_kwargs": {"pixel_values": tiles},
            "max_abs_pixel_diff": None if dynres else _vlm.pixel_diff(ours, theirs),
            "preprocessing": {"ours": _vlm.with_dynres(cfg, dynres).dynres, "tiles_ours": int(ours.shape[0]),
                              "tiles_hf": int(theirs.shape[0])}}


def random_hf(folder: Path, seed: int = 0, **vision_overrides) -> Path:
    """A small random InternVL (Qwen2 LLM, 56-px tiles of 4x4 patches -> 4 tokens) with its GotOcr2 processor."""
    import transformers

    from bluelm_v.models.families import _vlm

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=56, patch_size=14, attention_bias=True, use_qk_norm=True, norm_type="rms_norm",
                  use_mean_pooling=False)
    vision.update(vision_overrides)
    text = transformers.Qwen2Config(**llama.TINY_DECODER).to_dict()
    cfg = transformers.InternVLConfig(vision_config=vision, text_config=text, image_token_id=299,
                                      image_seq_length=4, tie_word_embeddings=False)
    model = _vlm.on_deployed_grid(llama.spread_weights(transformers.InternVLForConditionalGeneration(cfg), seed))
    model.save_pretrained(folder)
    transformers.GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1,
                                          max_patches=6, image_mean=list(IMAGENET_MEAN),
                                          image_std=list(IMAGENET_STD)).save_pretrained(folder)
    return folder
