"""Scorer registry: one file per family, each registering its scorers with ``@register``.

A scorer is ``fn(frame, ctx) -> Scored``: ``frame`` is the prediction table after the spreadsheet round trip
(``bluelm_v.evaluation.roundtrip``; cells are typed as VLMEvalKit's evaluators see them, NaN for empty),
``ctx`` carries the dataset name, the judge, and ``stats`` where the scorer records every judge reply it read and
whether it could parse it. A scorer may also register ``precheck(frame, ctx)``: what it will need from the records
(MMVet's six capabilities, MathVista's skills), checked before the first judge call so no grade is paid for and
then thrown away. Every scorer has a version string that result files record; bump it whenever its output can
change.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from bluelm_v.evaluation.judges import Judge, JudgeStats


@dataclass
class Context:
    dataset: str
    judge: Judge | None = None
    progress: bool = False  # show a progress bar while asking the judge
    stats: JudgeStats = field(default_factory=JudgeStats)


@dataclass
class Scored:
    per_record: list[dict]
    metrics: dict
    tables: dict = field(default_factory=dict)  # further outputs (MMBench per_group, ...)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scorer:
    name: str
    version: str
    fn: Callable[[pd.DataFrame, Context], Scored]
    required: tuple[str, ...]
    judge: str  # "none" (never asks), "optional" (asks only when rules fail), "required" (no rule-based path)
    description: str
    precheck: Callable[[pd.DataFrame, Context], None] | None = None


REGISTRY: dict[str, Scorer] = {}
_FAMILY_MODULES = ("mcq", "circular", "yesno", "vqa", "anls", "ocrbench", "mtvqa", "mathvista", "mmvet")


def register(name: str, *, version: str, required: tuple[str, ...], judge: str = "none", description: str = "",
             precheck: Callable[[pd.DataFrame, Context], None] | None = None):
    def wrap(fn):
        if name in REGISTRY:
            raise RuntimeError(f"scorer {name!r} registered twice")
        REGISTRY[name] = Scorer(name, version, fn, tuple(required), judge, description or (fn.__doc__ or "").strip(),
                                precheck)
        return fn

    return wrap


def get_scorer(name: str) -> Scorer:
    load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def load_all() -> dict[str, Scorer]:
    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return REGISTRY


__all__ = ["Context", "REGISTRY", "Scored", "Scorer", "get_scorer", "load_all", "register"]
