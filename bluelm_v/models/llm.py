"""LLaMA-family decoder (GQA, RoPE, RMSNorm, SwiGLU, tied embeddings) with a KV cache and chunked prefill.

Qwen2 is this decoder with ``cfg.qkv_bias`` (q/k/v_proj.bias [H*hd] / [KVH*hd]); scaled RoPE is
``cfg.rope_scaling``.

Module names follow HF ``LlamaForCausalLM`` exactly, so its state dict loads by name:

    model.embed_tokens.weight                                  [V, d]
    model.layers.{i}.input_layernorm.weight                    [d]        RMSNorm before attention
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight           q [H*hd, d], k/v [KVH*hd, d], o [d, H*hd]; no bias
    model.layers.{i}.post_attention_layernorm.weight           [d]        RMSNorm before the MLP
    model.layers.{i}.mlp.{gate,up,down}_proj.weight            down(silu(gate(x)) * up(x))
    model.norm.weight                                          [d]
    lm_head.weight                                             [V, d]     only when embeddings are not tied

q/k rows are in HF's RoPE layout: within each head the first hd/2 rows pair with the last hd/2 ("rotate_half").
All arithmetic is float32 in the reference. A forward call processes one chunk of t new positions after the
``cache.length`` positions already in the cache; ``prefill`` splits a prompt into such chunks.
"""
from __future__ import annotations

import math
from typing import Literal, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from bluelm_v.models.config import LLMConfig

LogitsMode = Literal["all", "last", "none"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., dim] -> [..., dim]; statistics in float32 as HF does
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(head_dim: int, theta: float, positions: int,
                scaling: Optional[Mapping] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [positions, head_dim] for HF's rotate_half RoPE (frequencies repeated in both halves).

    ``scaling`` (HF ``rope_parameters``): "linear" divides every frequency by ``factor``; "llama3" divides only
    the long wavelengths, blending smoothly between ``high_freq_factor`` and ``low_freq_factor`` bands."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # [hd/2]
    inv_freq = scale_frequencies(inv_freq, scaling or {})
    freqs = torch.arange(positions, dtype=torch.int64).float()[:, None] * inv_freq[None, :]  # [P, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def scale_frequencies(inv_freq: torch.Tensor, scaling: Mapping) -> torch.Tensor:
    """inv_freq [hd/2] -> the scaled RoPE frequencies of ``scaling["rope_type"]`` (see rope_tables)."""
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind != "llama3":
        raise ValueError(f"RoPE scaling {kind!r} is not supported")
    old_context = float(scaling["original_max_position_embeddings"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths (beyond old_context / low) are stretched by factor, short ones (below old_context / high)
    # kept; in between, interpolate on old_context / wavelen
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, blended, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, t, hd]; cos, sin: [t, hd] (or [B, 1, t, hd], per sequence) -> rotated x (pairs i and
    i + hd/2 of each head)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def causal_mask(start: int, t: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [t, start + t]: query i (position start + i) sees keys 0 .. start + i."""
    q_pos = torch.arange(start, start + t)[:, None]
    k_pos = torch.arange(start + t)[None, :]
    zero = torch.zeros((), dtype=dtype)
    return torch.where(k_pos <= q_pos, zero, torch.full((), float("-inf"), dtype=dtype))


def padded_mask(start: int, t: int, pad: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [B, 1, t, start + t] for left-padded sequences: the causal mask, with the first ``pad[b]``
    slots of sequence b (no token there) hidden from every query. A padding query sees only itself, so its row
    is never all -inf (its output is unused)."""
    keys = torch.arange(start + t)
    hidden = keys[None, :] < pad[:, None]  # [B, start+t]
    mask = causal_mask(start, t, dtype)[None].masked_fill(hidden[:, None, :], float("-inf"))  # [B, t, start+t]
    own = torch.arange(t)
    is_pad_query = (start + own)[None, :] < pad[:, None]  # [B, t]
    diag = mask[:, own, start + own]
    mask[:, own, start + own] = torch.where(is_pad_query, torch.zeros((), dtype=dtype), diag)
    return mask[:, None]


class KVCache:
    """Keys and values for positions [0, length) of every layer, preallocated up to ``capacity`` positions.

    ``k`` and ``v`` are [layers, B, kv_heads, capacity, hd], keys stored after RoPE (what attention reads).
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        if capacity < 1:
            raise ValueError(f"KV cache capacity must be positive, got {capacity}")
        self.k = torch.zeros(layers, batch, kv_heads, capacity, head_dim, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kv_heads, t, hd] at positions start .. start+t-1; return the layer's keys and values for
        positions 0 .. start+t-1, each [B, kv_heads, start+t, hd]."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (keep a shared prefix, or reset with 0)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a KV cache of length {self.length} to {length}")
        self.length = length


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.dim_head
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * cfg.dim_head, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.heads * cfg.dim_head, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: Optional[KVCache], layer: int, start: int) -> torch.Tensor:
        # x: [B, t, d]; cos, sin: [t, hd]; mask: [t, start+t] -> [B, t, d]
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, t, hd]
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, KVH, t, hd]
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.store(layer, start, k, v)  # [B, KVH, start+t, hd]
        groups = self.heads // self.kv_heads  # query head h reads KV head h // groups
        k = k.repeat_interleave(groups, dim=1)  # [B, H, start+t, hd]
        v = v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + mask  # [B, H, t, start+t]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, t, d] -> [B, t, d]  (SwiGLU)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: Optional[KVCache], layer: int, start: int) -> torch.Tensor:
        # x: [B, t, d] -> [B, t, d]
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """``forward(embeds [B, t, d], cache) -> logits``: one chunk of t positions after ``cache.length``."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        cos, sin = rope_tables(cfg.dim_head, cfg.rope_theta, cfg.max_context, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)  # [max_context, hd]
        self.register_buffer("rope_sin", sin, persistent=False)

    def new_cache(self, batch: int = 1, capacity: Optional[int] = None) -> KVCache:
        c = self.cfg
        capacity = c.max_context if capacity is None else min(capacity, c.max_context)
        return KVCache(c.layers, batch, c.kv_heads, capacity, c.dim_head, self.model.norm.weight.dtype)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: [B, t] int64 -> [B, t, d]
        return self.model.embed_tokens(tokens)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [B, t, d] (after the final norm) -> [B, t, V]
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight)

    def forward(self, embeds: torch.Tensor, cache: Optional[KVCache] = None,
                logits: LogitsMode = "all", pad: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        # embeds: [B, t, d] -> logits [B, t, V] ("all"), [B, V] ("last") or None ("none": only fills the cache)
        # pad: [B] int64, left padding of each sequence (batched generation): slot p of sequence b holds its
        # position p - pad[b]; the padding slots are hidden from every query
        b, t, _ = embeds.shape
        start = 0 if cache is None else cache.length
        if start + t > self.cfg.max_context:
            raise ValueError(f"positions {start}..{start + t - 1} exceed the model's context of {self.cfg.max_context}")
        if cache is not None and start + t > cache.capacity:
            raise ValueError(f"KV cache of capacity {cache.capacity} cannot take positions up to {start + t}")
        if pad is None:
            cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]
            mask = causal_mask(start, t, embeds.dtype)
        else:
            positions = (torch.arange(start, start + t)[None, :] - pad[:, None]).clamp(min=0)  # [B, t]
            cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # [B, 1, t, hd]
            mask = padded_mask(start, t, pad, embeds.dtype)
        h = embeds
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, mask, cache, i, start)
        if cache is not None:
            cache.length = start + t
        if logits == "none":
            return None
        if logits == "last":
            return self.output_logits(self.model.norm(h[:, -1:]))[:, 0]
        return self.output_logits(self.model.norm(h))


@torch.no_grad()
def prefill(lm: LlamaForCausalLM, cache: KVCache, tokens: Optional[torch.Tensor] = None,
            embeds: Optional[torch.Tensor] = None, chunk: Optional[int] = None,
            all_logits: bool = False) -> torch.Tensor:
    """Run a prompt through the model in chunks of ``chunk`` positions (all at once when None).

    tokens: [B, T] int64, or embeds: [B, T, d] (text and image embeddings already merged).
    Returns logits [B, V] of the last position, or [B, T, V] with ``all_logits``. Equals one-shot prefill up to
    float32 rounding (tests/test_llm.py states the tolerance).
    """
    if (tokens is None) == (embeds is None):
        raise ValueError("prefill takes exactly one of tokens or embeds")
    x = lm.embed(tokens) if tokens is not None else embeds
    total = x.shape[1]
    if total < 1:
        raise ValueError("prefill needs at least one position")
    chunk = total if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"prefill chunk must be positive, got {chunk}")
    pieces = []
    for s in range(0, total, chunk):
        final = s + chunk >= total
        mode: LogitsMode = "all" if all_logits else ("last" if final else "none")
        out = lm(x[:, s:s + chunk], cache, logits=mode)
        if all_logits:
            pieces.append(out)
    return torch.cat(pieces, dim=1) if all_logits else out


@torch.no_grad()
def decode_step(lm: LlamaForCausalLM, cache: KVCache, tokens: torch.Tensor) -> torch.Tensor:
    """tokens: [B] int64, the newest token of each sequence -> next-token logits [B, V]."""
    return lm(lm.embed(tokens[:, None]), cache, logits="last")


__all__ = ["KVCache", "LlamaForCausalLM", "RMSNorm", "apply_rope", "causal_mask", "decode_step", "padded_mask",
           "prefill", "rope_tables"]
