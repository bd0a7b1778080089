"""LLaMA (HF ``LlamaForCausalLM``, model_type ``llama``): the decoder every family's LLM is a variant of.

Tensor names are HF's own (``model.*``, ``lm_head.weight``; see bluelm_v/models/llm.py), so the name map only
drops a tied head. ``decoder_config`` is the shared translation of a decoder's HF config; Qwen2 and the VLMs'
text configs reuse it with their flags.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

from bluelm_v import FormatError
from bluelm_v.models.config import ROPE_TYPES, LLMConfig, ModelConfig

ARCH = "llama"
HF_AUTO = "AutoModelForCausalLM"  # the transformers class that loads the folder


def decoder_config(hf: Mapping, where: str, arch: str = "llama", qkv_bias: bool = False) -> LLMConfig:
    """An HF decoder config (llama / qwen2 layout) -> LLMConfig; what the reference cannot compute is refused."""
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias"):
        raise FormatError(f"{where}: field hidden_act/mlp_bias: only SiLU MLPs without biases are supported")
    if bool(hf.get("attention_bias", qkv_bias)) != qkv_bias:
        raise FormatError(f"{where}: field attention_bias={hf.get('attention_bias')!r} is not supported for {arch}")
    if hf.get("use_sliding_window"):
        raise FormatError(f"{where}: field use_sliding_window: sliding-window attention is not supported")
    rope = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})  # transformers < 5 kept the scaling apart from rope_theta
    if "type" in legacy:
        legacy.setdefault("rope_type", legacy.pop("type"))
    rope = {**rope, **legacy}  # an explicit legacy rope_scaling wins over a default rope_parameters
    kind = rope.get("rope_type", "default")
    if kind not in ROPE_TYPES:
        raise FormatError(f"{where}: field rope_parameters.rope_type {kind!r}: RoPE scaling of this type is not "
                          f"supported by the reference model (supported: {', '.join(ROPE_TYPES)})")
    scaling = {k: v for k, v in rope.items() if k in ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
                                                      "original_max_position_embeddings")}
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
            arch=arch, qkv_bias=qkv_bias, rope_scaling={} if kind == "default" else scaling,
        )
    except KeyError as exc:
        raise FormatError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: {exc}") from None


def text_model_config(llm: LLMConfig, where: str) -> ModelConfig:
    return ModelConfig(name=Path(where).parent.name or "hf", description=f"{llm.arch} LLM from {where}", llm=llm,
                       family=llm.arch, sources={"llm": str(where)})


def config_from_hf(raw: Mapping, where: str) -> ModelConfig:
    return text_model_config(decoder_config(raw, where), where)


def decoder_names(state: Mapping, cfg: LLMConfig, prefix: str = "") -> dict:
    """HF decoder names (``model.*``, ``lm_head.weight``) under ``prefix`` -> ours; a tied head is dropped."""
    out = {}
    for name, t in state.items():
        if not name.startswith(prefix):
            continue
        name = name[len(prefix):]
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        out[name] = t
    return out


def canonical_state(state: Mapping, cfg: ModelConfig) -> dict:
    return decoder_names({k.removeprefix("language_model."): v for k, v in state.items()}, cfg.llm)


def spread_weights(model, seed: int):
    """HF's initial weights (N(0, 0.02), norms 1) give near-uniform logits whose argmax ties flip on rounding;
    re-draw them wider, and the norms away from 1, so a comparison exercises every term."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "lambda" in name):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    # said in config.json, so whatever is made from the folder (a package, an eval report) can say so too
    model.config.bluelm_v_random_weights = f"drawn by bluelm-v, seed {seed}"
    return model


def on_weight_grid(model, fmt: str = "q4_0"):
    """Round every 2-D weight of the decoder (the embedding, the projections, the head) onto the grid of the
    package's weight format ``fmt`` (a GGUF block format), in place: the float checkpoint then holds the values
    the engine runs at that format, as a GGUF-derived checkpoint does (SmolLM2's Q4_1 file on both sides). A
    comparison at that precision then measures the engine (activations, KV cache, kernels), not the rounding of
    weights the user chose to quantize; docs/models.md gives both figures."""
    import gguf
    import numpy as np
    import torch

    qtype = gguf.GGMLQuantizationType[fmt.upper()]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2 or p.shape[1] % block:
                continue
            values = p.detach().float().numpy()
            grid = gguf.quants.dequantize(gguf.quants.quantize(values, qtype), qtype).reshape(values.shape)
            p.copy_(torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)))
    return model


TINY_DECODER = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=300, max_position_embeddings=512, rms_norm_eps=1e-6,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0)


def random_hf(folder: Path, seed: int = 0, weight_grid: Optional[str] = "q4_0") -> Path:
    """A small random LlamaForCausalLM saved with save_pretrained: untied head and Llama 3.x's llama3 RoPE scaling
    with an original context of 64, so a prompt and its greedy tokens reach all three frequency bands (linear
    scaling is compared in tests/test_families.py and tests/test_engine_families.py); decoder weights on the
    ``weight_grid`` format's grid (on_weight_grid; None: as drawn)."""
    import transformers

    cfg = transformers.LlamaConfig(**TINY_DECODER, tie_word_embeddings=False, rope_parameters={
        "rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    model = spread_weights(transformers.LlamaForCausalLM(cfg), seed)
    (on_weight_grid(model, weight_grid) if weight_grid else model).save_pretrained(folder)
    return folder
