"""Qwen2 / Qwen2.5 (HF ``Qwen2ForCausalLM``, model_type ``qwen2``): the LLaMA decoder with biases on Q/K/V.

The LLM of LLaVA-OneVision and of InternVL 2/2.5/3's small models. Tensor names are LLaMA's plus
``model.layers.{i}.self_attn.{q,k,v}_proj.bias``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from bluelm_v.models.config import ModelConfig
from bluelm_v.models.families import llama

ARCH = "qwen2"
HF_AUTO = "AutoModelForCausalLM"


def config_from_hf(raw: Mapping, where: str) -> ModelConfig:
    return llama.text_model_config(llama.decoder_config(raw, where, arch="qwen2", qkv_bias=True), where)


canonical_state = llama.canonical_state


def random_hf(folder: Path, seed: int = 0) -> Path:
    """A small random Qwen2ForCausalLM (tied embeddings, as the 0.5B-1.5B models have) via save_pretrained, its
    decoder weights on the q4_0 grid (llama.on_weight_grid)."""
    import transformers

    cfg = transformers.Qwen2Config(**llama.TINY_DECODER, tie_word_embeddings=True, rope_theta=1000000.0)
    llama.on_weight_grid(llama.spread_weights(transformers.Qwen2ForCausalLM(cfg), seed)).save_pretrained(folder)
    return folder
