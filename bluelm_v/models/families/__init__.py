"""Model families: one file per HF architecture, registered here by its ``config.json`` ``model_type``.

A family file holds everything that is particular to one architecture, side by side (docs/models.md):

- ``config_from_hf(raw, where) -> ModelConfig``: the HF ``config.json`` translated into our config, refusing
  what the shared blocks cannot compute (FormatError naming the file and the field);
- ``canonical_state(state, cfg) -> dict``: the checkpoint's tensor names mapped onto the package's canonical
  names (``vision_tower.*``, ``mm_projector.*``, ``language_model.*``), so the modules never see a family name;
- ``random_hf(folder, seed)``: a small random model of the architecture built with the HF class and written
  with ``save_pretrained`` (what ``check-reference --random`` and the tests load back);
- for VLMs: the family's own image preprocessing and where its image tokens sit in the prompt, and for the native
  engine ``engine_image_block(loaded)``, that place as token ids (the package's ``model.image_block``), plus
  ``engine_tiles`` / ``engine_patches`` when its own tiling is not in C++ (Idefics3).

This module does not import torch: ``family_for`` only reads JSON, so a folder of an unsupported architecture is
refused before anything heavy is loaded.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

from bluelm_v import FormatError

if TYPE_CHECKING:
    from bluelm_v.models.config import ModelConfig

# HF model_type -> family module; the keys are also check-reference's --arch names
FAMILIES = {
    "llama": "bluelm_v.models.families.llama",
    "qwen2": "bluelm_v.models.families.qwen2",
    "internvl": "bluelm_v.models.families.internvl",
    "idefics3": "bluelm_v.models.families.idefics3",
    "llava_onevision": "bluelm_v.models.families.llava_onevision",
}


def family(model_type: str) -> ModuleType:
    """The family module registered for an HF ``model_type`` (ValueError listing the known ones)."""
    if model_type not in FAMILIES:
        raise ValueError(f"architecture {model_type!r} is not supported (known: {', '.join(FAMILIES)})")
    return importlib.import_module(FAMILIES[model_type])


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, read through ``bluelm_v.jsonfile`` (a regular file, size and nesting bounded
    before parsing); FormatError naming the file when it is malformed."""
    from bluelm_v.jsonfile import read_json as read_bounded

    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {path.name}")
    raw = read_bounded(path)
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: top level must be a JSON object")
    return raw


# text_config.model_type -> the decoder flags it needs (bluelm_v.models.families.llama.decoder_config)
TEXT_FLAGS = {"qwen2": {"arch": "qwen2", "qkv_bias": True}, "llama": {"arch": "llama", "qkv_bias": False}}


def vision_and_text(raw: Mapping, where: str, default_text: str = "qwen2", note: str = "") -> tuple[dict, dict, str]:
    """(vision_config, text_config, text model_type) of a VLM's config.json; FormatError naming the field."""
    vc, tc = raw.get("vision_config"), raw.get("text_config")
    if not isinstance(vc, dict) or not isinstance(tc, dict):
        raise FormatError(f"{where}: fields vision_config and text_config must both be objects")
    kind = tc.get("model_type", default_text)
    if kind not in TEXT_FLAGS:
        raise FormatError(f"{where}: field text_config.model_type {kind!r} is not supported "
                          f"(supported: {', '.join(TEXT_FLAGS)}{note})")
    return vc, tc, kind


def renamed(state: Mapping, cfg: ModelConfig, name_map: Sequence[tuple[str, str]]) -> Iterator[tuple[str, Any]]:
    """(canonical name, tensor) per checkpoint tensor: the first pattern of ``name_map`` that matches renames it;
    the output head is kept only when the config does not tie it to the embeddings."""
    for name, t in state.items():
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            if not cfg.llm.tie_embeddings:
                yield "language_model.lm_head.weight", t
            continue
        for pattern, repl in name_map:
            name, n = re.subn(pattern, repl, name)
            if n:
                break
        yield name, t


def family_of_config(raw: dict, where: Union[str, Path]) -> ModuleType:
    """The family of an HF ``config.json`` already read; FormatError naming the file and ``model_type``."""
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise FormatError(f"{where}: field model_type is {model_type!r}, which is not a supported architecture "
                          f"(supported: {', '.join(FAMILIES)})")
    return family(model_type)


def family_for(folder: Union[str, Path]) -> ModuleType:
    """The family of an HF checkpoint folder, from its ``config.json`` alone."""
    path = Path(folder) / "config.json"
    return family_of_config(read_json(path), path)


__all__ = ["FAMILIES", "family", "family_for", "family_of_config", "read_json"]
