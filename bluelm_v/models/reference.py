"""Entry points of the PyTorch reference: ``load_model(spec)`` for research, ``load_vlm(spec)`` for generation.

A spec is one of
- a shipped config name (``tiny``, ``bluelm-v-3b``, ``smollm2-135m``) or a config JSON path: random weights,
  seeded (``seed=0`` by default), with the byte-level tokenizer;
- a ``.gguf`` file: a text-only LLaMA / Qwen2 LLM with the file's tokenizer and chat template;
- ``LLM.gguf+mmproj.gguf`` (or ``mmproj=``): a GGUF LLM with llama.cpp's vision file of an InternVL, Idefics3
  (SmolVLM) or LLaVA-OneVision model (bluelm_v.models.mmproj);
- a folder with ``config.json`` (ours, or HF's of a family in bluelm_v.models.families), ``*.safetensors`` and optionally
  ``tokenizer.bin`` (ours) or HF ``tokenizer.json``, with ``tokenizer_config.json`` (else the byte-level
  tokenizer); ``save_pretrained`` writes one.

``load_vlm(spec).generate(message)`` takes VLMEvalKit's message format: a list of ``{"type": "image" | "text",
"value": ...}`` (image values: path, encoded bytes, data URL or RGB uint8 array), or a plain string. The items
are joined in order into one user turn (an image becomes ``<image>`` + newline), rendered with the chat
template, and each ``<image>`` is replaced by that image's run of placeholder positions (see vlm.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from bluelm_v import FormatError
from bluelm_v.models.checkpoint import (config_to_json, load_safetensors, random_model, read_dir_config,
                                        save_safetensors)
from bluelm_v.models.config import ModelConfig, load_model_config
from bluelm_v.models.generate import GenerationStream, SamplingConfig, Timing, generate
from bluelm_v.models.llm import LlamaForCausalLM
from bluelm_v.models.tokenizer import IMAGE_MARKER, Tokenizer
from bluelm_v.models.vlm import IMAGE_TOKEN_ID, BlueLMV, embed_with_images, image_tiles

Spec = Union[str, Path]
Message = Union[str, Sequence[dict]]


@dataclass
class LoadedModel:
    """What ``load_model`` returns: the config, the torch module (BlueLMV or LlamaForCausalLM), the tokenizer."""

    config: ModelConfig
    model: nn.Module
    tokenizer: Tokenizer
    source: str

    @property
    def llm(self) -> LlamaForCausalLM:
        return self.model.language_model if isinstance(self.model, BlueLMV) else self.model

    @property
    def vlm(self) -> Optional[BlueLMV]:
        return self.model if isinstance(self.model, BlueLMV) else None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys((*self.config.llm.eos_token_ids, *self.tokenizer.eos_ids)))


def load_model(spec: Spec, *, seed: int = 0, mmproj: Optional[Spec] = None) -> LoadedModel:
    """The reference model for ``spec`` (see the module doc), in eval mode, float32. ``mmproj``: llama.cpp's
    vision GGUF for a GGUF LLM (the same as the spec ``LLM.gguf+mmproj.gguf``)."""
    from bluelm_v.models.mmproj import split_spec

    path, paired = split_spec(spec)
    if mmproj is not None and paired is not None:
        raise ValueError(f"{spec}: give the mmproj once, in the spec or as mmproj=")
    paired = Path(mmproj) if mmproj is not None else paired
    if paired is not None:
        from bluelm_v.models.mmproj import load_pair

        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        cfg, model, tok = load_pair(path, paired)
        loaded = LoadedModel(cfg, model, tok, f"{path}+{paired}")
    elif path.is_file() and (path.suffix.lower() == ".gguf" or _has_gguf_magic(path)):
        loaded = _load_gguf(path)
    elif path.is_dir():
        loaded = _load_dir(path)
    else:
        cfg = load_model_config(spec)
        loaded = LoadedModel(cfg, random_model(cfg, seed), Tokenizer.byte_level(cfg.llm.vocab),
                             f"{cfg.name} (random weights, seed {seed})")
    loaded.model.eval()
    return loaded


def load_vlm(spec: Spec, *, seed: int = 0, chunk: Optional[int] = None, tile_batch: Optional[int] = None,
             dynres: Optional[dict] = None, mmproj: Optional[Spec] = None) -> "ReferenceVLM":
    """A generator over ``load_model(spec)``; ``chunk`` and ``tile_batch`` default to the config's deploy values;
    ``dynres`` (an HF family's folder) replaces the family's own tiling by one of our schemes."""
    return ReferenceVLM(load_model(spec, seed=seed, mmproj=mmproj), chunk=chunk, tile_batch=tile_batch,
                        dynres=dynres)


def save_pretrained(loaded: LoadedModel, folder: Union[str, Path]) -> Path:
    """Write ``config.json`` (our format), ``model.safetensors`` and the tokenizer files; ``load_model`` reads
    the folder back."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_to_json(loaded.config), indent=1), encoding="utf-8")
    save_safetensors(loaded.model, folder / "model.safetensors", metadata={"format": "pt"})
    loaded.tokenizer.save(folder)
    return folder


def _has_gguf_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _load_gguf(path: Path) -> LoadedModel:
    from bluelm_v.models.checkpoint import assign_state, build
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    ckpt = GGUFCheckpoint(path)
    if ckpt.arch == "clip":
        raise FormatError(f"{path}: key general.architecture is 'clip': this is an mmproj (the vision part of a "
                          f"llama.cpp VLM); give the LLM GGUF with it: LLM.gguf+{path.name}")
    cfg = ckpt.model_config()
    names = ckpt.hf_names(cfg.llm)
    lm = assign_state(build(lambda: LlamaForCausalLM(cfg.llm)), ckpt.hf_state_dict(cfg.llm), where=str(path),
                      file_names=names)
    return LoadedModel(cfg, lm, ckpt.tokenizer(), str(path))


def _load_dir(folder: Path) -> LoadedModel:
    from bluelm_v.models.families import read_json

    cfg = read_dir_config(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors files")
    model = load_safetensors(files, cfg)
    has_tok = any((folder / f).is_file() for f in ("tokenizer.bin", "tokenizer.json"))
    tok = Tokenizer.from_dir(folder) if has_tok else Tokenizer.byte_level(cfg.llm.vocab)
    if tok.vocab_size > cfg.llm.vocab:
        raise ValueError(f"{folder}: tokenizer has {tok.vocab_size} tokens, more than the model's {cfg.llm.vocab}")
    # a random model of the tests and check-reference (families.llama.spread_weights) says so in config.json
    marker = read_json(folder / "config.json").get("bluelm_v_random_weights")
    return LoadedModel(cfg, model, tok, f"{folder} (random weights, {marker})" if marker else str(folder))


class ReferenceVLM:
    """``generate(message, ...) -> str`` over a loaded reference model (text-only models refuse images)."""

    def __init__(self, loaded: LoadedModel, chunk: Optional[int] = None, tile_batch: Optional[int] = None,
                 dynres: Optional[dict] = None):
        self.loaded = loaded
        self.dynres = dict(dynres or {})  # one of our schemes in place of an HF family's own tiling
        self.config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.chunk = chunk or self.config.deploy.chunk
        self.tile_batch = tile_batch or self.config.deploy.tile_batch
        self.last_timing: Optional[Timing] = None
        self.last_image_tokens = 0

    # ---- prompt building --------------------------------------------------------------------------------------
    def prepare(self, message: Message) -> tuple[list[int], list[tuple[torch.Tensor, dict]]]:
        """Token ids with IMAGE_TOKEN_ID runs, and each image's (tiles [P, 3, S, S], layout), for one user
        message. An HF family's images take its own preprocessing and prompt block (bluelm_v.models.families)."""
        items = [{"type": "text", "value": message}] if isinstance(message, str) else list(message)
        parts, images = [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") not in ("image", "text") or "value" not in item:
                raise ValueError(f"message item {i} must be {{'type': 'image' or 'text', 'value': ...}}, got {item!r}")
            if item["type"] == "text":
                if not isinstance(item["value"], str):
                    raise TypeError(f"message item {i}: text value must be a string, got {type(item['value']).__name__}")
                if IMAGE_MARKER in item["value"]:
                    raise ValueError(f"message item {i}: text must not contain the image marker {IMAGE_MARKER!r}")
                parts.append(item["value"])
            else:
                images.append(self._image(item["value"]))
                parts.append(IMAGE_MARKER + "\n")
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": "".join(parts)}])
        pieces = prompt.split(IMAGE_MARKER)
        if len(pieces) != len(images) + 1:
            raise ValueError(f"the chat template produced {len(pieces) - 1} image markers for {len(images)} images")
        ids = self.tokenizer.encode(pieces[0])
        for (block, _, _), piece in zip(images, pieces[1:]):
            ids += block + self.tokenizer.encode(piece, add_bos=False)
        return ids, [(tiles, layout) for _, tiles, layout in images]

    def _image(self, value) -> tuple[list[int], torch.Tensor, dict]:
        """One image -> (its prompt block with IMAGE_TOKEN_ID positions, tiles, layout)."""
        if not self.config.multimodal:
            hint = ""
            if str(self.loaded.source).lower().endswith(".gguf"):  # a VLM's LLM GGUF without its vision file
                hint = (f"; a VLM's GGUF LLM needs its mmproj: {self.loaded.source}+mmproj.gguf "
                        f"(or --mmproj)")
            raise ValueError(f"model {self.config.name} is text-only and cannot take images{hint}")
        if self.config.family == "bluelm_v":
            from bluelm_v.models.families._vlm import with_dynres

            tiles = image_tiles(with_dynres(self.config, self.dynres), value)
            return [IMAGE_TOKEN_ID] * (tiles.shape[0] * self.config.image_tokens_per_tile()), tiles, {}
        from bluelm_v.image import load_image
        from bluelm_v.models.families import family

        block = family(self.config.family).prepare_image(self.loaded, load_image(value), self.dynres)
        return block["ids"], block["tiles"], block["layout"]

    def embed(self, ids: Sequence[int], images: Sequence[tuple[torch.Tensor, dict]], timing: Timing) -> torch.Tensor:
        """Prompt embeddings [1, T, d]: images encoded (ViT in batches of tile_batch), laid out and spliced in."""
        image_embeds = None
        if images:
            t0 = time.perf_counter()
            vlm = self.loaded.vlm
            image_embeds = torch.cat([vlm.image_embeddings(t, batch=self.tile_batch, **layout) for t, layout in images])
            timing.extra["vision_s"] = time.perf_counter() - t0
        with torch.no_grad():
            return embed_with_images(self.loaded.llm, ids, image_embeds)

    # ---- generation -------------------------------------------------------------------------------------------
    def stream(self, message: Message, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: Optional[int] = None, stop: Sequence[str] = ()) -> GenerationStream:
        """An iterator of text pieces; after it ends, ``.text``, ``.tokens``, ``.finish_reason``, ``.timing``."""
        timing = Timing()
        t0 = time.perf_counter()
        ids, images = self.prepare(message)
        timing.extra["preprocess_s"] = time.perf_counter() - t0
        embeds = self.embed(ids, images, timing)
        self.last_timing = timing
        self.last_image_tokens = sum(1 for i in ids if i == IMAGE_TOKEN_ID)
        return GenerationStream(
            self.loaded.llm, self.tokenizer, embeds, max_new_tokens=max_new_tokens,
            sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed), stop=stop,
            eos_ids=self.loaded.eos_ids, chunk=self.chunk, vocab_limit=self.tokenizer.vocab_size, timing=timing,
        )

    def generate(self, message: Message, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None, stop: Sequence[str] = (),
                 on_text: Optional[Callable[[str], None]] = None) -> str:
        """The answer to one message (greedy by default); ``on_text`` receives the pieces as they stream."""
        s = self.stream(message, max_new_tokens, temperature, top_k, top_p, seed, stop)
        return generate(s, on_text).text

    def generate_batch(self, messages: Sequence[Message], max_new_tokens: int = 64) -> list[str]:
        """Greedy answers to several messages in one batch (left padding, ``models.generate.generate_batch``);
        each equals ``generate(message)`` for that message alone."""
        from bluelm_v.models.generate import generate_batch

        timing = Timing()
        prompts = []
        for message in messages:
            ids, images = self.prepare(message)
            prompts.append(self.embed(ids, images, timing))
        return generate_batch(self.loaded.llm, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                              eos_ids=self.loaded.eos_ids, chunk=self.chunk, vocab_limit=self.tokenizer.vocab_size)

    def generate_text(self, prompt: str, chat: bool = True, **kwargs: Any) -> str:
        """Text-only generation; ``chat=False`` continues ``prompt`` as raw text without the chat template."""
        if chat:
            return self.generate(prompt, **kwargs)
        ids = self.tokenizer.encode(prompt)
        timing = Timing()
        embeds = self.embed(ids, [], timing)
        on_text = kwargs.pop("on_text", None)
        sampling = SamplingConfig(**{k: kwargs.pop(k) for k in ("temperature", "top_k", "top_p", "seed") if k in kwargs})
        s = GenerationStream(self.loaded.llm, self.tokenizer, embeds, sampling=sampling,
                             eos_ids=self.loaded.eos_ids, chunk=self.chunk, vocab_limit=self.tokenizer.vocab_size,
                             timing=timing, **kwargs)
        self.last_timing = timing
        return generate(s, on_text).text


__all__ = ["LoadedModel", "ReferenceVLM", "load_model", "load_vlm", "save_pretrained"]
