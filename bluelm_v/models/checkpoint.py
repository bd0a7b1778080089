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
            cos, sin = rope_tables(m.cfg.dim_head, m.cfg.rope_theta, m.cfg.max_context)
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
    """An HF ``config.json`` of model_type llama -> LLMConfig (unsupported features are refused)."""
    if hf.get("model_type") != "llama":
        raise FormatError(f"{where}: model_type {hf.get('model_type')!r} is not supported (expected 'llama')")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
        raise FormatError(f"{where}: only SiLU MLPs without biases are supported")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default" or scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise FormatError(f"{where}: RoPE scaling is not supported by the reference model")
    eos = hf.get("eos_token_id")
    try:
        return LLMConfig(
            hidden=int(hf["hidden_size"]), intermediate=int(hf["intermediate_size"]),
            layers=int(hf["num_hidden_layers"]), heads=int(hf["num_attention_heads"]),
            kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]), vocab=int(hf["vocab_size"]),
            max_context=int(hf.get("max_position_embeddings", 2048)), head_dim=hf.get("head_dim"),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=tuple(eos if isinstance(eos, list) else ([] if eos is None else [eos])),
        )
    except KeyError as exc:
        raise FormatError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: {exc}") from None


def read_dir_config(folder: Path) -> ModelConfig:
    """``config.json`` of a checkpoint folder: ours (a models config with "llm") or HF's (model_type llama)."""
    from bluelm_v.config import from_dict

    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    from bluelm_v.jsonfile import read_json

    raw = read_json(path)
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: top level must be a JSON object")
    if "llm" in raw:
        return from_dict(ModelConfig, raw, where=str(path))
    llm = llm_config_from_hf(raw, str(path))
    return ModelConfig(name=folder.name, description=f"text-only LLM from {folder}", llm=llm,
                       sources={"llm": str(path)})


__all__ = ["assign_state", "build", "config_to_json", "init_random", "llm_config_from_hf", "load_llm_safetensors",
           "load_siglip_safetensors", "load_vlm_safetensors", "model_for", "random_model", "read_dir_config",
           "read_safetensors", "save_safetensors"]
