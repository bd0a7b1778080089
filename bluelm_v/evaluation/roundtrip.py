"""What VLMEvalKit's spreadsheet round trip does to a column, emulated without writing a spreadsheet.

VLMEvalKit stores predictions as ``<model>_<dataset>.xlsx`` (pandas ``to_excel`` with xlsxwriter) and its
evaluators read the file back with ``pd.read_excel`` (openpyxl). That round trip changes cells, and the scorers
see the changed values. The vectors in tests/data/eval-vectors were made with pandas 1.5.3, openpyxl 3.0.9 and
xlsxwriter 3.0.2; this module reproduces those versions' behaviour, cell by cell and column by column:

Writing (xlsxwriter 3.0.2, ``strings_to_formulas=False``, other options default):
  * ``''`` is a blank cell; ``'{=...}'`` is an array formula whose cached value is 0;
  * a string starting ``http://``, ``https://``, ``ftp://``, ``ftps://``, ``mailto:``, ``internal:`` or
    ``external:`` becomes a hyperlink: the displayed text drops every ``mailto:`` (and ``internal:`` /
    ``external:``, the latter also turning ``/`` into ``\\``); a link longer than 2079 characters after
    escaping, or a text over 32767 characters, is not written at all (blank cell);
  * other strings are cut to 32767 characters;
  * shared strings escape ``_xHHHH_`` as ``_x005F_xHHHH_`` and control characters (other than tab and
    newline) as ``_xHHHH_``.
Reading (openpyxl 3.0.9, then pandas 1.5.3's TextParser):
  * openpyxl deletes every ``x005F_`` from a shared string and leaves the other escapes as text, so ``'\\r'``
    comes back as ``'_x000D_'``;
  * numbers that are whole come back as ``int``;
  * cells equal to one of pandas 1.5.3's NA strings become NaN (pandas >= 2 adds ``'None'``; we follow 1.5.3);
  * column-wide inference: if every non-NaN cell is numeric the column becomes numbers (ints, or floats as soon
    as a NaN is present); else if every non-NaN cell is ``True``/``False`` (any of pandas' spellings) the
    column becomes booleans.
The scorers then call ``str()`` on what they get: NaN becomes the text ``'nan'``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

# pandas 1.5.3 pandas._libs.parsers.STR_NA_VALUES (pandas 2.0 added "None").
NA_STRINGS = frozenset({
    "-1.#IND", "1.#QNAN", "1.#IND", "-1.#QNAN", "#N/A N/A", "#N/A", "N/A", "n/a", "NA", "<NA>", "#NA",
    "NULL", "null", "NaN", "-NaN", "nan", "-nan", "",
})
TRUE_STRINGS = frozenset({"True", "TRUE", "true"})
FALSE_STRINGS = frozenset({"False", "FALSE", "false"})
XLSX_STRMAX = 32767  # Excel's cell text limit (xlsxwriter truncates plain strings to it)
XLSX_MAX_URL = 2079  # xlsxwriter 3.0.2 max_url_length
XLSX_MAX_LINKS = 65530  # hyperlinks per worksheet

_ESCAPED = re.compile(r"(_x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")
_URL_START = re.compile(r"(?:ftp|http)s?://|mailto:|(?:in|ex)ternal:")
_URL_ESCAPED = re.compile(r"%[0-9a-fA-F]{2}")
_SPECIAL = re.compile(r"[\x00-\x08\x0b-\x1f\ufffe\uffff]|_x|x005F_|^\{=|:")
_URL_ESCAPES = (("%", "%25"), ('"', "%22"), (" ", "%20"), ("<", "%3c"), (">", "%3e"), ("[", "%5b"),
                ("]", "%5d"), ("^", "%5e"), ("`", "%60"), ("{", "%7b"), ("}", "%7d"))


def is_missing(value: Any) -> bool:
    """True for None and float NaN (what an empty cell becomes)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _escape_url(url: str) -> str:
    if _URL_ESCAPED.search(url):
        return url
    for a, b in _URL_ESCAPES:
        url = url.replace(a, b)
    return url


def _hyperlink_text(token: str) -> str | None:
    """The text xlsxwriter stores for a string it turns into a hyperlink, or None when it writes nothing."""
    url, text = token, token
    internal = url.startswith("internal:")
    if internal:
        url, text = url.replace("internal:", ""), text.replace("internal:", "")
    external = url.startswith("external:")
    if external:
        url = url.replace("external:", "").replace("/", "\\")
        text = text.replace("external:", "").replace("/", "\\")
    text = text.replace("mailto:", "")
    if len(text) > XLSX_STRMAX:
        return None
    anchor = text
    if not internal:
        url, anchor = url.split("#", 1) if "#" in url else (url, None)
        url = _escape_url(url)
        if anchor is not None and not external:
            anchor = _escape_url(anchor)
        if re.match(r"\w:", url) or url.startswith("\\"):
            url = "file:///" + url
        url = re.sub(r"^\.\\", "", url)
    if len(url) > XLSX_MAX_URL or len(anchor or "") > XLSX_MAX_URL:
        return None
    return text


def _shared_string_roundtrip(text: str) -> str:
    """xlsxwriter's shared-string escaping followed by openpyxl 3.0's reading."""
    text = _ESCAPED.sub(r"_x005F\1", text)
    text = _CONTROL.sub(lambda m: "_x%04X_" % ord(m.group()), text)
    text = text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
    return text.replace("x005F_", "")


def cell_roundtrip(value: Any, links: list[int] | None = None) -> Any:
    """One cell through write + openpyxl read (before pandas' NA and type inference). ``links`` counts the
    hyperlinks already written on the sheet (Excel keeps at most 65530)."""
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isinf(f):  # pandas writes inf as the text 'inf'
            return "inf" if f > 0 else "-inf"
        return int(f) if f.is_integer() else f
    text = value if isinstance(value, str) else str(value)
    if not _SPECIAL.search(text) and len(text) <= XLSX_STRMAX:
        return text if text else None  # fast path: nothing to change
    if text == "":
        return None
    if text.startswith("{=") and text.endswith("}"):
        return 0
    if ":" in text and _URL_START.match(text):
        shown = _hyperlink_text(text)
        if shown is None:
            return None
        if links is not None:
            links[0] += 1
            if links[0] > XLSX_MAX_LINKS:
                return None
        text = shown
    elif len(text) > XLSX_STRMAX:
        text = text[:XLSX_STRMAX]
    return _shared_string_roundtrip(text) if text else None


# Strings pandas' numeric parser could accept; anything else proves a column is not numeric without parsing it.
_NUMERIC_LIKE = re.compile(r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)\s*",
                           re.IGNORECASE)


def _infer_strings(values: list) -> list[Any]:
    """``infer_column`` for a column of strings and Nones (the common case), with set operations in C."""
    distinct = set(values)
    na = set(NA_STRINGS.intersection(distinct))
    na.add(None)
    rest = distinct - na
    if not rest:
        return [math.nan] * len(values)
    probe = next(iter(rest))
    if _NUMERIC_LIKE.fullmatch(probe) and all(_NUMERIC_LIKE.fullmatch(v) for v in rest):
        numeric = _as_numbers([None if v in na else v for v in values])
        if numeric is not None:
            return numeric
    if rest <= TRUE_STRINGS | FALSE_STRINGS:
        return [math.nan if v in na else v in TRUE_STRINGS for v in values]
    if len(na) == 1 and None not in distinct:
        return values
    return [math.nan if v in na else v for v in values]


def infer_column(cells: Sequence[Any]) -> list[Any]:
    """pandas 1.5.3 TextParser on one column read from a spreadsheet: NA strings, then numbers, then booleans."""
    if all(v is None or type(v) is str for v in cells):
        return _infer_strings(list(cells))
    values = [None if c is None or (isinstance(c, str) and c in NA_STRINGS) else c for c in cells]
    present = [v for v in values if v is not None]
    if not present:
        return [math.nan] * len(values)
    strings = [v for v in present if isinstance(v, str)]
    if strings:
        if all(_NUMERIC_LIKE.fullmatch(v) for v in strings):
            numeric = _as_numbers(values)
            if numeric is not None:
                return numeric
        if all(v in TRUE_STRINGS or v in FALSE_STRINGS for v in strings) and \
                all(isinstance(v, (str, bool)) for v in present):
            return [math.nan if v is None else (v if isinstance(v, bool) else v in TRUE_STRINGS) for v in values]
        return [math.nan if v is None else v for v in values]
    # Only numbers/bools came back from the cells: pandas keeps them as they are (floats if a NaN is present).
    if len(present) < len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [math.nan if v is None else float(v) for v in values]
    return [math.nan if v is None else v for v in values]


def _as_numbers(values: list[Any]) -> list[Any] | None:
    """The column as numbers if every present cell parses as one (pandas' maybe_convert_numeric), else None."""
    if any(isinstance(v, bool) for v in values):
        return None
    try:
        converted = pd.to_numeric(pd.Series([np.nan if v is None else v for v in values], dtype=object))
    except (ValueError, TypeError):
        return None
    if converted.dtype.kind in "iu":
        return [int(v) for v in converted.tolist()]
    return [float(v) for v in converted.tolist()]


_SPECIAL_ANY_LINE = re.compile(r"[\x00-\x08\x0b-\x1f\ufffe\uffff]|_x|x005F_|^\{=|:", re.MULTILINE)


def xlsx_roundtrip(column: Iterable[Any]) -> list[Any]:
    """A whole column through VLMEvalKit's xlsx write and read: the typed values its scorers receive."""
    values = list(column)
    if values and all(type(v) is str for v in values):
        # Fast path: one search over the joined column proves that no cell needs more than NA handling.
        if max(map(len, values)) <= XLSX_STRMAX and not _SPECIAL_ANY_LINE.search("\n".join(values)):
            return infer_column([v or None for v in values])
    links = [0]
    return infer_column([cell_roundtrip(v, links) for v in values])


def as_scored_text(value: Any) -> str:
    """``str()`` as VLMEvalKit's scorers apply it (NaN -> 'nan')."""
    if value is None:
        return "nan"
    return value if isinstance(value, str) else str(value)


def prediction_as_scored(predictions: Iterable[Any]) -> list[str]:
    """The prediction strings VLMEvalKit's scorers actually see after its xlsx round trip.

    Input: the model outputs of one prediction file (``None`` = empty cell). Output: one string per prediction,
    e.g. ``''`` and ``'N/A'`` -> ``'nan'``; ``'\\r'`` -> ``'_x000D_'``; an all-numeric column ``['007', '1.50']``
    -> ``['7.0', '1.5']``.
    """
    return [as_scored_text(v) for v in xlsx_roundtrip(predictions)]


def frame_roundtrip(df: pd.DataFrame, keep: Sequence[str] = ("index",)) -> pd.DataFrame:
    """Every column except ``keep`` through the round trip (the evaluators read the whole table back)."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col in keep:
            out[col] = df[col]
        else:
            out[col] = pd.Series(xlsx_roundtrip(df[col].tolist()), index=df.index, dtype=object)
    return out


__all__ = [
    "NA_STRINGS", "XLSX_STRMAX", "as_scored_text", "cell_roundtrip", "frame_roundtrip", "infer_column",
    "is_missing", "prediction_as_scored", "xlsx_roundtrip",
]
