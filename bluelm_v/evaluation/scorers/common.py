"""Helpers shared by the scorer families: column checks, NaN-safe conversions, answer-list parsing."""
from __future__ import annotations

import ast
import math
import re
from functools import lru_cache
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.roundtrip import as_scored_text, is_missing


def require_columns(frame: pd.DataFrame, columns: Iterable[str], dataset: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ScoringError(f"{dataset}: records lack column(s) {', '.join(missing)} "
                           f"(have: {', '.join(map(str, frame.columns))})")


def texts(column: Iterable[Any]) -> list[str]:
    """``[str(x) for x in column]`` as VLMEvalKit does it (NaN -> 'nan')."""
    return [as_scored_text(v) for v in column]


def json_value(value: Any) -> Any:
    """A cell as a plain JSON value: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return None if math.isnan(f) else f
    return value


def mean(values: list[float]) -> float:
    """np.mean semantics: NaN for an empty list (VLMEvalKit's tables show null there)."""
    return float(np.mean(values)) if len(values) else math.nan


def literal(text: Any, what: str, dataset: str, index: Any) -> Any:
    """``eval`` of a Python literal cell (answer lists, choices, skills) without running code."""
    if not isinstance(text, str):
        raise ScoringError(f"{dataset}: record {index!r}: {what} must be a Python literal string, got {text!r}")
    try:
        parsed = parse_literal(text.lstrip(" \t"))
        return list(parsed) if isinstance(parsed, ListLiteral) else parsed
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ScoringError(f"{dataset}: record {index!r}: {what} {text[:80]!r} is not a Python literal "
                           f"({type(exc).__name__})") from None


# A list of plain quoted strings without escapes, the usual answer cell: parsed without the ast module.
_ITEM = r"""(?:'[^'\\\n]*'|"[^"\\\n]*")"""
_PLAIN_LIST = re.compile(rf"\[\s*(?:{_ITEM}(?:\s*,\s*{_ITEM})*\s*,?\s*)?\]")
_ITEMS = re.compile(_ITEM)


class ListLiteral(tuple):
    """A parsed list literal, frozen so the parse cache can hand it out safely."""


@lru_cache(maxsize=1 << 16)
def parse_literal(text: str) -> Any:
    """``ast.literal_eval`` with a fast path for lists of plain strings; raises like literal_eval. Lists come back
    as ``ListLiteral`` (a tuple); callers must not mutate other results (they are cached)."""
    if _PLAIN_LIST.fullmatch(text):
        return ListLiteral(m[1:-1] for m in _ITEMS.findall(text))
    parsed = ast.literal_eval(text)
    return ListLiteral(parsed) if isinstance(parsed, list) else parsed


def answer_list(value: Any, dataset: str, index: Any) -> list[Any]:
    """``eval(answer)`` if it is a list literal, else ``[answer]`` (VLMEvalKit's ``istype(answer, list)``)."""
    text = as_scored_text(value)
    if text.lstrip(" \t").startswith("["):
        try:
            parsed = parse_literal(text.lstrip(" \t"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, ListLiteral):
            return list(parsed)
    return [text]


def rows_of(frame: pd.DataFrame) -> list[dict]:
    """``frame.to_dict("records")`` without pandas' per-cell boxing (object columns hold Python values)."""
    names = list(frame.columns)
    columns = [frame[c].tolist() for c in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def string_items(items: list[Any], what: str, dataset: str, index: Any) -> list[str]:
    """VLMEvalKit calls string methods on every listed answer: anything else would crash it."""
    for item in items:
        if not isinstance(item, str):
            raise ScoringError(f"{dataset}: record {index!r}: {what} holds {item!r} "
                               f"({type(item).__name__}); every listed answer must be a string")
    return items


def sorted_values(values: Iterable[Any], column: str, dataset: str) -> list[Any]:
    """``sorted(set(values))``; VLMEvalKit crashes on mixed types (e.g. an empty cell among names)."""
    unique = set(values)
    try:
        return sorted(unique)
    except TypeError:
        raise ScoringError(f"{dataset}: column {column!r} mixes types or has empty cells "
                           f"({sorted(map(repr, unique))[:5]}); VLMEvalKit cannot sort it") from None


__all__ = ["answer_list", "is_missing", "json_value", "literal", "mean", "parse_literal", "require_columns",
           "rows_of", "sorted_values", "string_items", "texts"]
