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

import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
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

    def check(self) -> None:
        """Raise ``JudgeError`` if the judge cannot be reached (called before any sample runs)."""


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

    def check(self) -> None:
        try:
            self.client.probe()
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same answer: not usable
            raise JudgeError(f"judge {self.describe()} is not usable: {exc}") from None

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


@dataclass
class JudgeStats:
    """What the scorers made of the judge's replies: every reply a scorer tried to read, and those it could not
    (a failed call counts as unreadable). ``examples`` keeps the first few unreadable replies for the report."""

    replies: int = 0
    unparsed: int = 0
    examples: list = field(default_factory=list)
    max_examples: int = 3

    def record(self, reply: str | None, parsed: bool) -> None:
        self.replies += 1
        if not parsed:
            self.unparsed += 1
            if len(self.examples) < self.max_examples:
                self.examples.append("<failed call>" if reply is None else reply[:200])

    @property
    def unparsed_fraction(self) -> float:
        return self.unparsed / self.replies if self.replies else 0.0

    def to_dict(self) -> dict:
        return {"replies": self.replies, "unparsed": self.unparsed, "examples": list(self.examples)}


class CachedJudge(Judge):
    """A judge whose replies are kept in an append-only JSONL file (``judge_cache.jsonl`` in the run folder), so
    a rerun or a rescore asks the judge only for prompts it has not answered.

    The key is (judge description, prompt, temperature, occurrence): the n-th time one scoring pass asks the
    same prompt at the same temperature (a scorer's retry loop) gets the n-th cached reply, so a rescore replays
    the retries exactly. ``new_pass()`` starts the count again. Failed calls (``None``) are not cached."""

    def __init__(self, inner: Judge, path: Path):
        self.inner, self.path = inner, Path(path)
        self.max_tokens = inner.max_tokens
        self.replies: dict[str, str] = {}
        self.hits = self.calls = 0
        self._seen: dict[str, int] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a torn last line: cut it so the next entry starts clean
            data = data[:data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(data))
        for line in data.split(b"\n"):
            try:
                entry = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # a torn last line after a crash, or a damaged one: that reply is asked again
            if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("reply"), str):
                self.replies[entry["key"]] = entry["reply"]

    def new_pass(self) -> None:
        self._seen = {}

    def _key(self, prompt: str, temperature: float) -> str:
        base = hashlib.sha256(json.dumps([self.inner.describe(), prompt, float(temperature)],
                                         ensure_ascii=False).encode("utf-8")).hexdigest()
        n = self._seen.get(base, 0)
        self._seen[base] = n + 1
        return f"{base}:{n}"

    def ask(self, prompt: str, *, temperature: float = 0.0, key: Any = None) -> str | None:
        cache_key = self._key(prompt, temperature)
        if cache_key in self.replies:
            self.hits += 1
            return self.replies[cache_key]
        self.calls += 1
        reply = self.inner.ask(prompt, temperature=temperature, key=key)
        if reply is not None:
            self.replies[cache_key] = reply
            line = json.dumps({"key": cache_key, "judge": self.inner.describe(), "temperature": float(temperature),
                               "reply": reply}, ensure_ascii=False) + "\n"
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        return reply

    def check(self) -> None:
        self.inner.check()

    def describe(self) -> str:
        return self.inner.describe()


__all__ = ["CachedJudge", "CallableJudge", "Judge", "JudgeStats", "OpenAIJudge", "RULE_BASED", "ScriptedJudge",
           "describe", "make_judge", "parse_judge_spec"]
