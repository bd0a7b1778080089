"""Building the reference modules: seeded random weights, HF safetensors in and out, HF config translation.

Modules are built on the ``meta`` device and then materialised, so a 3B model is not first filled with torch's
default initialisation only to be overwritten. Every parameter must then be set, by ``init_random`` or by a
checkpoint whose names and shapes are checked one by one (``assign_state``): missing tensors, wrong shapes,
non-float dtypes and truncated files all raise ``bluelm_v.FormatError`` naming the file and the tensor.

Names accepted in safetensors files (see docs/models.md):

- text-only LLM: HF ``LlamaForCausalLM`` names (``model.*``, ``lm_head.weight``), optionally under
  ``language_model.``; ``lm_head.weight`` is ignored when the embeddings are tied.
- SigLIP: HF ``SiglipVisionModel`` names, optionally under ``vision_model.`` (the hub's ``SiglipModel`` files;
  their ``text_model.*``, ``logit_*`` and pooling ``head.*`` tensors are skipped).
- BlueLM-V: ``vision_tower.`` + SigLIP names (``vision_tower.vision_model.`` accepted), ``mm_projector.*``,
  ``language_model.`` + LLaMA names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, TypeVar, Union

import torch
import torch.nn as nn

from bluelm_v import FormatError
from bluelm_v.models.config import LLMConfig, ModelConfig, VisionConfig

M = TypeVar("M", bound=nn.Module)
DEFAULT_INIT_STD = 0.02  # HF's initializer_range


def build(factory: Callable[[], M]) -> M:
    """Construct a module without initialising its parameters (call ``init_random`` or load weights next)."""
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu")
    reset_buffers(module)
    return module


def reset_buffers(module: nn.Module) -> None:
    """Recompute the non-persistent buffers (RoPE tables, position ids) after ``to_empty``."""
    from bluelm_v.models.llm import LlamaForCausalLM, rope_tables
    from bluelm_v.models.vision import SiglipEmbeddings

    for m in module.modules():
        if isinstance(m, LlamaForCausalLM):
            cos, sin = rope_tables(m.cfg.dim_head, m.cfg.rope_theta, m.cfg.max_context, m.cfg.rope_scaling)
            m.rope_cos.copy_(cos)
            m.rope_sin.copy_(sin)
        elif isinstance(m, SiglipEmbeddings):
            m.position_ids.copy_(torch.arange(m.position_ids.numel()))


@torch.no_grad()
def init_random(module: nn.Module, seed: int = 0, std: float = DEFAULT_INIT_STD) -> nn.Module:
    """Seeded weights: norms 1 (biases 0), linear/conv/embedding weights N(0, std), linear biases 0."""
    from bluelm_v.models.llm import RMSNorm

    gen = torch.Generator().manual_seed(int(seed))
    for m in module.modules():
        if isinstance(m, (nn.LayerNorm, RMSNorm)):
            m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            m.weight.normal_(0.0, std, generator=gen)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return module


def random_model(cfg: ModelConfig, seed: int = 0, std: float = DEFAULT_INIT_STD) -> nn.Module:
    """BlueLMV for a multimodal config, LlamaForCausalLM for a text-only one, with seeded random weights."""
    return init_random(build(lambda: model_for(cfg)), seed, std)


def model_for(cfg: ModelConfig) -> nn.Module:
    from bluelm_v.models.llm import LlamaForCausalLM
    from bluelm_v.models.vlm import BlueLMV

    return BlueLMV(cfg) if cfg.multimodal else LlamaForCausalLM(cfg.llm)


# ---- state dicts ------------------------------------------------------------------------------------------------
@torch.no_grad()
def assign_state(module: nn.Module, state: Mapping[str, torch.Tensor], where: str,
                 file_names: Optional[Mapping[str, str]] = None) -> nn.Module:
    """Copy ``state`` (module names -> tensors) into every parameter of ``module``, checking names and shapes.

    ``file_names`` maps a module name to the name in the file, for error messages (GGUF names differ)."""
    params = dict(module.named_parameters())
    missing = [n for n in params if n not in state]
    if missing:
        shown = [file_names.get(n, n) if file_names else n for n in missing[:5]]
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FormatError(f"{where}: missing tensors {', '.join(shown)}{more}")
    unexpected = [n for n in state if n not in params]
    if unexpected:
        raise FormatError(f"{where}: unexpected tensors {', '.join(unexpected[:5])}"
                          + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
                          + " (not part of this model config)")
    for name, p in params.items():
        t = state[name]
        shown = file_names.get(name, name) if file_names else name
        if tuple(t.shape) != tuple(p.shape):
            raise FormatError(f"{where}: tensor {shown} has shape {list(t.shape)}, the config needs {list(p.shape)}")
        if not t.is_floating_point():
            raise FormatError(f"{where}: tensor {shown} has dtype {t.dtype}, expected a float type")
        p.copy_(t)
    return module


def canonical_llm_names(state: Mapping[str, torch.Tensor], cfg: LLMConfig) -> dict[str, torch.Tensor]:
    """HF LlamaForCausalLM names (optionally under ``language_model.``) -> our names; tied lm_head dropped."""
    out = {}
    for name, t in state.items():
        name = name.removeprefix("language_model.")
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        out[name] = t
    return out


def canonical_siglip_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF SiglipVisionModel / SiglipModel names -> our SigLIP tower names (text tower and pooling head skipped)."""
    out = {}
    for name, t in state.items():
        if name.startswith(("text_model.", "logit_scale", "logit_bias")):
            continue
        name = name.removeprefix("vision_model.")
        if name.startswith("head."):
            continue
        out[name] = t
    return out


def canonical_vlm_names(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """BlueLM-V checkpoint names -> our names (the three parts' prefixes)."""
    parts: dict[str, dict[str, torch.Tensor]] = {"vision_tower.": {}, "mm_projector.": {}, "language_model.": {}}
    out = {}
    for name, t in state.items():
        prefix = next((p for p in parts if name.startswith(p)), None)
        if prefix is None:
            out[name] = t  # reported as unexpected by assign_state
        else:
            parts[prefix][name[len(prefix):]] = t
    for name, t in canonical_siglip_names(parts["vision_tower."]).items():
        out["vision_tower." + name] = t
    for name, t in parts["mm_projector."].items():
        out["mm_projector." + name] = t
    for name, t in canonical_llm_names(parts["language_model."], cfg.llm).items():
        out["language_model." + name] = t
    return out


# ---- safetensors ------------------------------------------------------------------------------------------------
def read_safetensors(paths: Iterable[Union[str, Path]]) -> dict[str, torch.Tensor]:
    """All tensors of one or more (sharded) safetensors files; corrupt files raise FormatError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"safetensors file not found: {path}")
        try:
            part = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
        clash = set(part) & set(state)
        if clash:
            raise FormatError(f"{path}: tensor {sorted(clash)[0]} also appears in another shard")
        state.update(part)
    return state


def save_safetensors(module: nn.Module, path: Union[str, Path], metadata: Optional[dict[str, str]] = None) -> None:
    from safetensors.torch import save_file

    state = {n: p.detach().contiguous() for n, p in module.named_parameters()}
    save_file(state, str(path), metadata=metadata)


def load_llm_safetensors(paths: Iterable[Union[str, Path]], cfg: LLMConfig) -> nn.Module:
    from bluelm_v.models.llm import LlamaForCausalLM

    paths = list(paths)
    state = canonical_llm_names(read_safetensors(paths), cfg)
    return assign_state(build(lambda: LlamaForCausalLM(cfg)), state, where=_where(paths))


def load_siglip_safetensors(paths: Iterable[Union[str, Path]], cfg: VisionConfig) -> nn.Module:
    from bluelm_v.models.vision import SiglipVisionTower

    paths = list(paths)
    state = canonical_siglip_names(read_safetensors(paths))
    return assign_state(build(lambda: SiglipVisionTower(cfg)), state, where=_where(paths))


def load_vlm_safetensors(paths: Iterable[Union[str, Path]], cfg: ModelConfig) -> nn.Module:
    from bluelm_v.models.vlm import BlueLMV

    paths = list(paths)
    state = canonical_vlm_names(read_safetensors(paths), cfg)
    return assign_state(build(lambda: BlueLMV(cfg)), state, where=_where(paths))


def _where(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} shards)"


# ---- configs ----------------------------------------------------------------------------------------------------
def config_to_json(cfg: ModelConfig) -> dict:
    """A ModelConfig as the JSON object of configs/models/*.json (loadable with load_model_config)."""
    import dataclasses

    return {"version": 1, **json.loads(json.dumps(dataclasses.asdict(cfg)))}


def llm_config_from_hf(hf: Mapping, where: str) -> LLMConfig:
    """An HF decoder ``config.json`` (a registered text family: llama, qwen2) -> LLMConfig."""
    from bluelm_v.models.families import family_of_config

    fam = family_of_config(dict(hf), where)
    cfg = fam.config_from_hf(hf, where)
    if cfg.multimodal:
        raise FormatError(f"{where}: field model_type {hf.get('model_type')!r} is a VLM, not a text-only LLM")
    return cfg.llm


def read_dir_config(folder: Path) -> ModelConfig:
    """``config.json`` of a checkpoint folder: ours (a models config with "llm") or HF's, translated by the
    family registered for its model_type (bluelm_v.models.families)."""
    from bluelm_v.config import from_dict
    from bluelm_v.models.families import family_of_config, read_json

    path = folder / "config.json"
    raw = read_json(path)
    if "llm" in raw:
        return from_dict(ModelConfig, raw, where=str(path))
    return family_of_config(raw, path).config_from_hf(raw, str(path))


def canonical_state(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Checkpoint names -> the module's canonical names, by the config's family."""
    if cfg.family == "bluelm_v":
        return canonical_vlm_names(state, cfg) if cfg.multimodal else canonical_llm_names(state, cfg.llm)
    from bluelm_v.models.families import family

    return family(cfg.family).canonical_state(state, cfg)


def load_safetensors(paths: Iterable[Union[str, Path]], cfg: ModelConfig) -> nn.Module:
    """The reference module of ``cfg`` with the weights of these safetensors files (any registered family)."""
    paths = list(paths)
    check_shapes(paths, cfg)
    state = canonical_state(read_safetensors(paths), cfg)
    return assign_state(build(lambda: model_for(cfg)), state, where=_where(paths))


def check_shapes(paths: list[Path], cfg: ModelConfig) -> None:
    """Tensor names and shapes from the files' headers against the config's modules, before any tensor data is
    read: a vision tower or LLM file that does not belong with config.json is refused up front, by tensor."""
    from safetensors import SafetensorError, safe_open

    header: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    header[name] = torch.empty(f.get_slice(name).get_shape(), device="meta")
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return  # unreadable header: read_safetensors names the file and the fault
    with torch.device("meta"):
        module = model_for(cfg)
    state = canonical_state(header, cfg)
    source = cfg.sources.get("all") or cfg.sources.get("llm") or "config.json"
    for name, p in module.named_parameters():
        if name in state and tuple(state[name].shape) != tuple(p.shape):
            raise FormatError(f"{_where(paths)}: tensor {name} has shape {list(state[name].shape)}, but {source} "
                              f"gives {list(p.shape)}: the weights do not belong with this config")


__all__ = ["assign_state", "build", "config_to_json", "init_random", "llm_config_from_hf", "load_llm_safetensors",
           "load_safetensors", "load_siglip_safetensors", "load_vlm_safetensors", "model_for", "random_model", "read_dir_config",
           "read_safetensors", "save_safetensors"]
