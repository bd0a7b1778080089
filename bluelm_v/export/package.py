"""Write a model package for the native engine (docs/engine.md).

``package(source, out_dir, quant="q4_0", vit_quant="q8_0")`` writes

    manifest.json   format "bluelm-v-package", format_version 1, the model config (configs/models schema; a
                    family's VLM adds ``image_block``, its prompt's image markers as token ids), the
                    tokenizer (eos ids, add_bos, the chat format the engine applies) and one entry per tensor:
                    {"format": "f32" | quant name, "shape": [...], "stored_k": k padded to the group,
                     "offset": 64-byte aligned, "bytes": n}
    weights.bin     the tensors' bytes (quantized ones in GGUF's block layout, rows of stored_k columns)
    tokenizer.bin   the tokenizer in csrc/tokenizer's binary format

``source`` is a loaded reference model (``bluelm_v.models.reference.LoadedModel``), a spec ``load_model``
understands (config name, HF folder, ``.gguf`` file), or a config name with ``random=True`` for a model too large
to build in torch first (seeded numpy weights, streamed tensor by tensor). From a GGUF file, Q4_0 / Q4_1 / Q5_0 /
Q5_1 / Q8_0 and Q4_K / Q5_K / Q6_K tensors (so every matrix of a Q4_K_M, Q5_K_M or Q6_K file, K-quants and the
Q5_0 / Q5_1 / Q8_0 fallbacks llama.cpp uses where a row is not a multiple of 256) are carried over byte for byte
(rows of attn_q / attn_k reordered to HF's RoPE layout, which moves whole rows); other types (F16, BF16, ...) are
dequantized and re-quantized to ``quant``, and the manifest says so per tensor;
``quant="f32"`` dequantizes everything (for checking the engine's float path against the reference).

Which tensors get which format: 2-D weights of the LLM (including the embedding table, which is also the output
head when tied) ``quant``; the ViT's and projector's linear layers ``vit_quant``; the patch embedding, position
table, norms and biases f32. ``quant`` / ``vit_quant`` may be ``f32`` (for checking against the reference).

``activations`` and ``kv_cache`` (None: the model config's ``deploy`` values, int16 and f16 unless the config says
otherwise) set the precision the engine runs the package at by default; they land in the manifest's
``model.deploy`` (which the engine reads) and ``quantization`` (for people).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from bluelm_v import FormatError, __version__

FORMAT_NAME = "bluelm-v-package"
FORMAT_VERSION = 1
ALIGNMENT = 64
RANDOM_INIT_STD = 0.02


def _weight_formats() -> dict:
    """The registry's weight formats (bluelm_v.quant.FORMATS without q8_k, an activation format)."""
    from bluelm_v import quant as q

    return {name: info for name, info in q.FORMATS.items() if info.kind != "k8"}


# Package formats: f32 and every weight format of the registry; those that are GGUF types (q4_0, q4_1, q5_0, q5_1,
# q8_0, q4_k, q5_k, q6_k) are carried from a GGUF file byte for byte.
QUANT_NAMES = ("f32", *_weight_formats())
GGUF_NATIVE = {name: info.gguf_type for name, info in _weight_formats().items() if info.gguf_type >= 0}


def group_of(fmt: str) -> int:
    return 1 if fmt == "f32" else _weight_formats()[fmt].group


def quantize(values: np.ndarray, fmt: str) -> tuple[np.ndarray, int]:
    """values [n, k] float32 -> (rows [n, row_bytes] uint8 in ``fmt``, stored_k). Columns are zero-padded up to a
    multiple of the format's group."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, k = values.shape
    g = group_of(fmt)
    stored_k = -(-k // g) * g
    if stored_k != k:
        values = np.concatenate([values, np.zeros((n, stored_k - k), np.float32)], axis=1)
    from bluelm_v import quant as q  # GGUF's bytes for q4_0 / q4_1 / q8_0 (the gguf package's) and the K-quants
                                     # (llama.cpp's), tests/test_quant_py.py; in C++ on the kernel thread pool

    return np.asarray(q.quantize(values, fmt)), stored_k


def _check_quant(name: str, value: str) -> str:
    if value not in QUANT_NAMES:
        raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(QUANT_NAMES)}")
    return value


def _role(name: str) -> str:
    """'llm', 'vit' or 'f32' for a tensor name of the reference model."""
    parts = name.split(".")
    if len(parts) < 2 or name.endswith(".bias") or "norm" in parts[-2] or name.endswith("norm.weight"):
        return "f32"
    if "patch_embedding" in name or "position_embedding" in name:
        return "f32"
    if name.startswith(("vision_tower.", "mm_projector.")):
        return "vit"
    return "llm"


class _Writer:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.f = open(out_dir / "weights.bin", "wb")
        self.offset = 0
        self.tensors: dict[str, dict] = {}

    def add(self, name: str, data: np.ndarray, fmt: str, shape: tuple[int, ...], stored_k: Optional[int] = None,
            note: Optional[str] = None) -> None:
        pad = -self.offset % ALIGNMENT
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        raw = np.ascontiguousarray(data).tobytes()
        entry: dict[str, Any] = {"format": fmt, "shape": [int(s) for s in shape], "offset": self.offset,
                                 "bytes": len(raw)}
        if stored_k is not None and len(shape) == 2 and stored_k != shape[1]:
            entry["stored_k"] = int(stored_k)
        if note:
            entry["note"] = note
        self.f.write(raw)
        self.offset += len(raw)
        self.tensors[name] = entry

    def add_float(self, name: str, values: np.ndarray, fmt: str) -> None:
        values = np.asarray(values, dtype=np.float32)
        if not np.isfinite(values).all():
            raise FormatError(f"tensor {name} holds non-finite values")
        if fmt == "f32" or values.ndim != 2:
            self.add(name, values, "f32", values.shape)
        else:
            rows, stored_k = quantize(values, fmt)
            self.add(name, rows, fmt, values.shape, stored_k)

    def close(self) -> int:
        self.f.close()
        return self.offset


def _tokenizer_entry(tokenizer, eos_ids) -> dict:
    from bluelm_v.tokenizer import chat_format_from_template, chat_format_to_dict

    def token(i):
        return "" if i is None else tokenizer.core.token_text(i)

    def fail(message):
        raise ValueError(f"chat template: {message}")

    try:
        fmt = chat_format_from_template(tokenizer.chat_template, bos_token=token(tokenizer.bos_id),
                                        eos_token=token(eos_ids[0] if eos_ids else None), raise_exception=fail)
    except ValueError as exc:
        raise ValueError(f"the model's chat template cannot be run by the native engine: {exc}") from None
    return {"file": "tokenizer.bin", "eos_ids": [int(i) for i in eos_ids], "add_bos": bool(tokenizer.add_bos),
            "chat": chat_format_to_dict(fmt)}


def _state_tensors(loaded) -> Iterator[tuple[str, np.ndarray]]:
    for name, t in loaded.model.state_dict().items():
        yield name, t.detach().float().contiguous().numpy()


def _random_tensors(cfg, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Names and shapes of the reference module (built on the meta device), values drawn with numpy: norms 1,
    biases 0, other weights N(0, 0.02), like bluelm_v.models.checkpoint.init_random (not the same draws)."""
    import torch

    from bluelm_v.models.checkpoint import model_for

    with torch.device("meta"):
        module = model_for(cfg)
    rng = np.random.default_rng(seed)
    for name, p in module.state_dict().items():
        shape = tuple(p.shape)
        if name.endswith(".bias"):
            yield name, np.zeros(shape, np.float32)
        elif _role(name) == "f32" and len(shape) == 1:
            yield name, np.ones(shape, np.float32)
        else:
            yield name, (rng.standard_normal(shape, dtype=np.float32) * RANDOM_INIT_STD)


def _gguf_tensors(path: Path, quant: str, writer: _Writer, cfg, progress: bool = False) -> None:
    from tqdm import tqdm

    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    ckpt = GGUFCheckpoint(path)
    names = ckpt.hf_names(cfg.llm)
    import gguf

    native = {gguf.GGMLQuantizationType(v).name: k for k, v in GGUF_NATIVE.items()}
    for hf, g in tqdm(names.items(), desc=f"packaging {path.name}", unit="tensor", leave=False, disable=not progress):
        raw = ckpt.raw(g)
        if raw.qtype in native and len(raw.shape) == 2 and quant != "f32":
            writer.add(hf, raw.data, native[raw.qtype], raw.shape)
        elif len(raw.shape) == 1 or quant == "f32":
            writer.add_float(hf, ckpt.dequantize(g), "f32")
        else:
            values = ckpt.dequantize(g)
            rows, stored_k = quantize(values, quant)
            writer.add(hf, rows, quant, values.shape, stored_k, note=f"re-quantized from GGUF {raw.qtype}")


def _check_pair(llm: Path, mmproj: Path) -> None:
    """A GGUF LLM + llama.cpp mmproj pair (``LLM.gguf+mmproj.gguf``): checked together from the headers, and
    refused naming the part the engine lacks, before any tensor is read. A pair that passes is loaded by the
    reference (``load_model``) and packaged from its tensors: the LLM's quantized tensors are dequantized and
    quantized again to ``quant`` (not carried over byte for byte as from an LLM GGUF alone)."""
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint
    from bluelm_v.models.mmproj import MmprojCheckpoint

    if not mmproj.is_file():
        raise FileNotFoundError(f"mmproj file not found: {mmproj}")
    ck = GGUFCheckpoint(llm)
    reason = MmprojCheckpoint(mmproj).model_config(ck, ck.tokenizer()).engine_unsupported()
    if reason:
        raise ValueError(f"{llm}+{mmproj.name}: cannot package for the engine: {reason}")


def _image_block(loaded, cfg) -> dict:
    """``model.image_block``: where a family's images sit in its prompt, as token ids the engine expands from each
    image's tiles (the family file's ``engine_image_block``); BlueLM-V's own models need none (one run per image)."""
    if not cfg.multimodal or cfg.family == "bluelm_v":
        return {}
    from bluelm_v.models.families import family

    fam = family(cfg.family)
    # A family that tiles its images in Python (engine_tiles: Idefics3's LANCZOS splitting) says so, so the C++ core
    # alone refuses to tile them with model.dynres, which is not the family's tiling.
    own = {"image_splitting": "family"} if hasattr(fam, "engine_tiles") else {}
    return {"image_block": fam.engine_image_block(loaded), **own}


ACTIVATIONS = ("int8", "int16")
KV_CACHES = ("int8", "f16", "f32")


def package(source: Any, out_dir: Union[str, Path], quant: str = "q4_0", vit_quant: str = "q8_0", *,
            random: bool = False, seed: int = 0, activations: Optional[str] = None,
            kv_cache: Optional[str] = None, progress: bool = False) -> Path:
    """Write the engine's model package for ``source`` into ``out_dir`` (see the module doc); returns out_dir.
    ``progress`` draws a progress bar per tensor (the command line turns it on)."""
    from tqdm import tqdm

    from bluelm_v.models.checkpoint import config_to_json
    from bluelm_v.models.reference import LoadedModel, load_model

    _check_quant("quant", quant)
    _check_quant("vit_quant", vit_quant)
    if activations is not None and activations not in ACTIVATIONS:
        raise ValueError(f"activations {activations!r} is not one of {', '.join(ACTIVATIONS)}")
    if kv_cache is not None and kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache {kv_cache!r} is not one of {', '.join(KV_CACHES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = None
    if isinstance(source, LoadedModel):
        loaded = source
    elif random:
        from bluelm_v.models.config import load_model_config
        from bluelm_v.models.tokenizer import Tokenizer

        cfg = load_model_config(source)
        loaded = LoadedModel(cfg, None, Tokenizer.byte_level(cfg.llm.vocab), f"{cfg.name} (random weights, numpy seed {seed})")
    else:
        from bluelm_v.models.mmproj import split_spec

        p, mmproj = split_spec(source)
        if mmproj is not None:
            _check_pair(p, mmproj)
        if mmproj is None and p.is_file() and (p.suffix.lower() == ".gguf" or p.read_bytes()[:4] == b"GGUF"):
            gguf_path = p
        if p.is_dir():
            from bluelm_v.models.checkpoint import read_dir_config

            reason = read_dir_config(p).engine_unsupported()  # before any weights are read
            if reason:
                raise ValueError(f"{p}: cannot package for the engine: {reason}")
        loaded = load_model(source, seed=seed) if gguf_path is None else None
        if gguf_path is not None:
            from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

            ck = GGUFCheckpoint(gguf_path)
            loaded = LoadedModel(ck.model_config(), None, ck.tokenizer(), str(gguf_path))
            reason = loaded.config.engine_unsupported()  # a Qwen2 GGUF, say: refused before any tensor is read
            if reason:
                raise ValueError(f"{gguf_path}: cannot package for the engine: {reason}")
    cfg = loaded.config
    if activations is not None or kv_cache is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, deploy=dataclasses.replace(
            cfg.deploy, activations=activations or cfg.deploy.activations, kv_cache=kv_cache or cfg.deploy.kv_cache))
    eos = list(loaded.eos_ids)
    tok_entry = _tokenizer_entry(loaded.tokenizer, eos)
    writer = _Writer(out)
    try:
        if gguf_path is not None:
            _gguf_tensors(gguf_path, quant, writer, cfg, progress)
        else:
            tensors = _random_tensors(cfg, seed) if loaded.model is None else _state_tensors(loaded)
            for name, values in tqdm(tensors, desc=f"packaging {cfg.name}", unit="tensor", leave=False, disable=not progress):
                if name.startswith("lm_head.") and cfg.llm.tie_embeddings:
                    continue
                role = _role(name)
                fmt = {"llm": quant, "vit": vit_quant, "f32": "f32"}[role]
                if values.ndim == 2 and fmt != "f32" and math.prod(values.shape) < 1:
                    raise FormatError(f"tensor {name} is empty")
                writer.add_float(name, values, fmt)
    finally:
        total = writer.close()
    loaded.tokenizer.core.save(str(out / "tokenizer.bin"))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"bluelm-v {__version__}",
        "source": loaded.source,
        "quantization": {"llm": quant, "vit": vit_quant, "kv_cache": cfg.deploy.kv_cache,
                         "activations": cfg.deploy.activations},
        "model": {**config_to_json(cfg), **_image_block(loaded, cfg)},
        "tokenizer": tok_entry,
        "weights": {"file": "weights.bin", "alignment": ALIGNMENT, "bytes": total},
        "tensors": writer.tensors,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


__all__ = ["ACTIVATIONS", "KV_CACHES", "FORMAT_NAME", "FORMAT_VERSION", "package", "quantize"]
