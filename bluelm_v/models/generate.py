"""Generation: chunked prefill, then one decode step per token with greedy or sampled selection.

``GenerationStream`` is an iterator of text pieces (streamed as tokens are decoded); after it is exhausted it
holds the token ids, the text, why it stopped (``eos``, ``stop`` or ``length``) and the timing. ``generate``
drains one with an optional ``on_text`` callback. Sampling is seedable: the same seed gives the same tokens.

Selection of the next token from logits z (float32):
  temperature 0      -> argmax (ties go to the lowest id)
  otherwise          -> z / temperature; keep the top_k largest (0: all); keep the smallest set of most
                        probable tokens whose probability reaches top_p (1.0: all); sample from softmax.
Stop strings end generation at their first occurrence and are not part of the text; text that might be the
start of a stop string is held back from the stream until it is decided.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

from bluelm_v.models.llm import LlamaForCausalLM, decode_step, prefill
from bluelm_v.models.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def select_token(logits: torch.Tensor, cfg: SamplingConfig, generator: Optional[torch.Generator] = None) -> int:
    """logits: [V] -> the next token id."""
    z = logits.float()
    if cfg.temperature == 0.0:
        return int(torch.argmax(z))
    z = z / cfg.temperature
    if 0 < cfg.top_k < z.numel():
        kth = torch.topk(z, cfg.top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    if cfg.top_p < 1.0:
        order = torch.argsort(z, descending=True)
        probs = torch.softmax(z[order], dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more probable tokens
        drop = order[before >= cfg.top_p]
        z = z.index_fill(0, drop, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Timing:
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    first_token_s: float = 0.0  # from the start of prefill to the first selected token
    decode_tokens: int = 0  # tokens produced by decode steps (all but the first)
    decode_s: float = 0.0
    extra: dict = field(default_factory=dict)  # e.g. {"vision_s": ...} from the VLM

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else float("nan")

    def summary(self) -> str:
        parts = [f"{k} {v * 1e3:.0f} ms" for k, v in self.extra.items()]
        parts += [f"prefill {self.prompt_tokens} tokens {self.prefill_s * 1e3:.0f} ms "
                  f"({self.prompt_tokens / max(self.prefill_s, 1e-9):.1f} tok/s)",
                  f"first token {self.first_token_s * 1e3:.0f} ms",
                  f"decode {self.decode_tokens} tokens {self.decode_s * 1e3:.0f} ms ({self.decode_tokens_per_s:.1f} tok/s)"]
        return ", ".join(parts)


class GenerationStream:
    """Iterate for text pieces. embeds: [1, T, d] prompt embeddings (text and image rows already merged)."""

    def __init__(self, lm: LlamaForCausalLM, tokenizer: Tokenizer, embeds: torch.Tensor, *,
                 max_new_tokens: int = 64, sampling: SamplingConfig = SamplingConfig(),
                 stop: Sequence[str] = (), eos_ids: Sequence[int] = (), chunk: Optional[int] = None,
                 vocab_limit: Optional[int] = None, timing: Optional[Timing] = None):
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            raise ValueError(f"prompt embeddings must be [1, T, d], got {tuple(embeds.shape)}")
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        self.lm, self.tokenizer, self.embeds = lm, tokenizer, embeds
        self.max_new_tokens, self.sampling, self.stop = max_new_tokens, sampling, tuple(stop)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.chunk = chunk
        self.vocab_limit = vocab_limit if vocab_limit is not None and vocab_limit < lm.cfg.vocab else None
        self.timing = timing or Timing()
        self.tokens: list[int] = []
        self.text = ""
        self.finish_reason: Optional[str] = None
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def _select(self, logits: torch.Tensor, gen: Optional[torch.Generator]) -> int:
        # logits: [V]; a model vocabulary padded past the tokenizer's is never sampled
        if self.vocab_limit is not None:
            logits = logits[: self.vocab_limit]
        return select_token(logits, self.sampling, gen)

    def _run(self) -> Iterator[str]:
        if self.max_new_tokens == 0:
            self.finish_reason = "length"
            return
        gen = None if self.sampling.seed is None else torch.Generator().manual_seed(int(self.sampling.seed))
        total = self.embeds.shape[1]
        cache = self.lm.new_cache(1, total + self.max_new_tokens)
        t0 = time.perf_counter()
        logits = prefill(self.lm, cache, embeds=self.embeds, chunk=self.chunk)[0]
        self.timing.prompt_tokens = total
        self.timing.prefill_s = time.perf_counter() - t0
        decoder = self.tokenizer.decode_stream(skip_special=True)
        pending = ""  # decoded text not yet emitted (may be the start of a stop string)
        t_decode = None
        for step in range(self.max_new_tokens):
            token = self._select(logits, gen)
            self.tokens.append(token)
            if step == 0:
                self.timing.first_token_s = time.perf_counter() - t0
                t_decode = time.perf_counter()
            if token in self.eos_ids:
                self.finish_reason = "eos"
                break
            pending += decoder.step(token)
            emit, pending, stopped = self._split_stop(pending)
            if emit:
                self.text += emit
                yield emit
            if stopped:
                self.finish_reason = "stop"
                break
            if step + 1 < self.max_new_tokens:
                logits = decode_step(self.lm, cache, torch.tensor([token]))[0]
                self.timing.decode_tokens += 1
        else:
            self.finish_reason = "length"
        if t_decode is not None:
            self.timing.decode_s = time.perf_counter() - t_decode
        if self.finish_reason != "stop":
            pending += decoder.flush()  # an unfinished UTF-8 character becomes U+FFFD, as decode() gives it
            if pending:
                self.text += pending
                yield pending

    def _split_stop(self, pending: str) -> tuple[str, str, bool]:
        """(text safe to emit, text held back, stopped) for the undecided text ``pending``."""
        if not self.stop:
            return pending, "", False
        # Emitted text never ends with the start of a stop string (it was held back), so a stop string can only
        # begin inside ``pending``.
        cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            return pending[:cut], "", True
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(pending)), 0, -1):
                if pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return pending[: len(pending) - hold], pending[len(pending) - hold:], False


@torch.no_grad()
def generate_batch(lm: LlamaForCausalLM, tokenizer: Tokenizer, prompts: Sequence[torch.Tensor], *,
                   max_new_tokens: int = 64, eos_ids: Sequence[int] = (), chunk: Optional[int] = None,
                   vocab_limit: Optional[int] = None) -> list[str]:
    """Greedy answers to several prompts at once. prompts: embeddings [1, T_i, d] each; they are left-padded to
    the longest (``LlamaForCausalLM.forward``'s ``pad``), prefilled in chunks together and decoded together until
    every sequence has met an EOS or ``max_new_tokens``. Each answer equals ``GenerationStream``'s greedy text for
    its prompt alone, up to float32 rounding in the batched products."""
    if not prompts:
        return []
    if any(p.dim() != 3 or p.shape[0] != 1 for p in prompts):
        raise ValueError("each prompt must be embeddings [1, T, d]")
    lengths = [p.shape[1] for p in prompts]
    longest = max(lengths)
    pad = torch.tensor([longest - n for n in lengths], dtype=torch.int64)  # [B]
    x = torch.cat([torch.nn.functional.pad(p, (0, 0, longest - p.shape[1], 0)) for p in prompts])  # [B, T, d]
    limit = vocab_limit if vocab_limit is not None and vocab_limit < lm.cfg.vocab else lm.cfg.vocab
    eos = frozenset(int(i) for i in eos_ids)
    if max_new_tokens <= 0:
        return [""] * len(prompts)
    cache = lm.new_cache(len(prompts), longest + max_new_tokens)
    chunk = chunk or longest
    for s in range(0, longest, chunk):
        logits = lm(x[:, s:s + chunk], cache, logits="last" if s + chunk >= longest else "none", pad=pad)
    tokens: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for step in range(max_new_tokens):
        picked = torch.argmax(logits[:, :limit].float(), dim=-1)  # [B]
        for b, token in enumerate(picked.tolist()):
            if done[b]:
                continue
            if token in eos:
                done[b] = True
            else:
                tokens[b].append(token)
        if all(done) or step + 1 == max_new_tokens:
            break
        logits = lm(lm.embed(picked[:, None]), cache, logits="last", pad=pad)
    return [tokenizer.decode(t, skip_special=True) for t in tokens]


def generate(stream: GenerationStream, on_text: Optional[Callable[[str], None]] = None) -> GenerationStream:
    """Run ``stream`` to the end, passing each text piece to ``on_text``; returns the finished stream."""
    for piece in stream:
        if on_text is not None:
            on_text(piece)
    return stream


__all__ = ["GenerationStream", "SamplingConfig", "Timing", "generate", "generate_batch", "select_token"]
