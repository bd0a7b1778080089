"""LLM judges: explicit, recorded in every result, never a silent fallback.

A judge answers ``ask(prompt, temperature=..., key=record_index) -> str | None``. ``None`` stands for what
VLMEvalKit's API wrapper returns on a failed call (its "Failed to obtain answer via API" text); scorers then
follow VLMEvalKit's retry loops. A judge that cannot be reached at all raises ``JudgeError``: scoring stops.

``make_judge`` accepts:
  * ``None`` -> no judge (rule-based scoring, results say ``RULE_BASED``);
  * ``"URL#model"`` or ``"openai:URL#model"`` -> ``OpenAIJudge`` (any OpenAI-compatible chat endpoint;
    the key is read from ``$OPENAI_API_KEY`` unless ``api_key`` is given);
  * a dict ``{index: reply | [reply, ...]}`` -> ``ScriptedJudge`` (tests, vectors: a list is consumed one
    reply per call, ``None`` means the call failed);
  * an object with ``generate(prompt, temperature=...)`` (VLMEvalKit style) or ``ask``;
  * a plain callable ``fn(prompt)`` (it may also take ``temperature`` and ``key`` keywords).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bluelm_v.evaluation.errors import JudgeError

RULE_BASED = "rule-based, not comparable to judged numbers"


class Judge:
    """Base class. ``describe()`` is what result files record."""

    max_tokens: int | None = None

    def ask(self, prompt: str, *, temperature: float = 0.0, key: Any = None) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class ScriptedJudge(Judge):
    """Fixed replies per record index: a string (every call), a list (one per call), ``None`` (the call fails)."""

    script: Mapping[Any, Any]
    calls: dict = field(default_factory=dict)

    def ask(self, prompt: str, *, temperature: float = 0.0, key: Any = None) -> str | None:
        if key not in self.script and str(key) in self.script:
            key = str(key)
        if key not in self.script:
            raise JudgeError(f"scripted judge has no reply for record {key!r}")
        reply = self.script[key]
        if isinstance(reply, (list, tuple)):
            n = self.calls.get(key, 0)
            if n >= len(reply):
                raise JudgeError(f"scripted judge ran out of replies for record {key!r} after {n} calls")
            self.calls[key] = n + 1
            reply = reply[n]
        return None if reply is None else str(reply)

    def describe(self) -> str:
        return "scripted"


class CallableJudge(Judge):
    """Wraps ``fn(prompt[, temperature=][, key=])`` or an object's ``generate``/``ask`` method."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._takes_temperature = var_kw or "temperature" in params
        self._takes_key = var_kw or "key" in params

    def ask(self, prompt: str, *, temperature: float = 0.0, key: Any = None) -> str | None:
        kwargs = {}
        if self._takes_temperature:
            kwargs["temperature"] = temperature
        if self._takes_key:
            kwargs["key"] = key
        reply = self.fn(prompt, **kwargs)
        return None if reply is None else str(reply)

    def describe(self) -> str:
        return f"callable:{self.name}"


class OpenAIJudge(Judge):
    """An OpenAI-compatible ``/chat/completions`` endpoint. Transport errors are retried ``retries`` times, then
    raise ``JudgeError``."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, max_tokens: int | None = None):
        from bluelm_v.evaluation.openai_http import ChatClient

        self.base_url, self.model, self.max_tokens = base_url, model, max_tokens
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.client = ChatClient(base_url, model, api_key=key, timeout=timeout, retries=retries)

    def ask(self, prompt: str, *, temperature: float = 0.0, key: Any = None) -> str | None:
        try:
            return self.client.chat([{"role": "user", "content": prompt}], temperature=temperature,
                                    max_tokens=self.max_tokens)
        except Exception as exc:  # the client already retried; a judge that fails is an error
            raise JudgeError(f"judge {self.describe()} failed: {exc}") from None

    def describe(self) -> str:
        return f"openai:{self.base_url}#{self.model}"


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """``[openai:]URL#model`` -> (URL, model)."""
    text = spec[len("openai:"):] if spec.startswith("openai:") else spec
    url, sep, model = text.partition("#")
    if not sep or not url or not model:
        raise JudgeError(f"judge spec {spec!r} must look like URL#model, e.g. http://localhost:8000/v1#gpt-4o-mini")
    if not url.startswith(("http://", "https://")):
        raise JudgeError(f"judge URL {url!r} must start with http:// or https://")
    return url, model


def make_judge(judge: Any, **kwargs) -> Judge | None:
    """Turn the ``judge`` argument of ``score()`` / ``--judge`` into a ``Judge`` (or None)."""
    if judge is None or isinstance(judge, Judge):
        return judge
    if isinstance(judge, str):
        url, model = parse_judge_spec(judge)
        return OpenAIJudge(url, model, **kwargs)
    if isinstance(judge, Mapping):
        return ScriptedJudge(judge)
    for method in ("ask", "generate"):
        fn = getattr(judge, method, None)
        if callable(fn):
            return CallableJudge(fn, name=type(judge).__name__)
    if callable(judge):
        return CallableJudge(judge)
    raise TypeError(f"cannot use {type(judge).__name__} as a judge: give URL#model, a dict of replies, "
                    "a callable or an object with generate()")


def describe(judge: Judge | None) -> str:
    return RULE_BASED if judge is None else judge.describe()


__all__ = ["CallableJudge", "Judge", "OpenAIJudge", "RULE_BASED", "ScriptedJudge", "describe", "make_judge",
           "parse_judge_spec"]
