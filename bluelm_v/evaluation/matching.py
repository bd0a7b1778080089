"""Multiple-choice answer extraction as VLMEvalKit does it (``can_infer`` in ``vlmeval/utils/matching_util.py``).

``infer_choice(text, options)`` returns an option letter, ``'Z'`` (refusal, or a lone token ``Z``) or ``None``
(nothing found). Step A looks for a letter token near the end or a verbose "answer is X" phrase (A-D only, no word
boundary, so "The answer is apple" gives A); step B, only when A finds nothing, looks for exactly one option text
inside the lower-cased prediction, unless the prediction is longer than twice the summed option lengths.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Mapping, MutableMapping

API_FAILURE = "Failed to obtain answer via API"
FAIL_MSG = API_FAILURE + "."  # what VLMEvalKit writes as the prediction of a sample whose call failed
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_TOKEN_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
# "answer is <letter>", optionally "correct answer is", optional asterisks; case-insensitive, no word boundary.
_VERBOSE_ANSWER = re.compile(r"(?:correct\s+)?answer\s+is\s+\**([a-d])", re.IGNORECASE)
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def infer_letter(text: str, letters) -> str | None:
    """Step A (``can_infer_option``): a letter from the option labels ``letters``, ``'Z'``, or None."""
    return _infer_letter(text, tuple(letters))


@lru_cache(maxsize=1 << 16)  # model answers repeat a lot ("A", "(B)", "The answer is C.")
def _infer_letter(text: str, letters: tuple[str, ...]) -> str | None:
    if API_FAILURE in text:
        return None
    for refusal in REFUSALS:
        if refusal in text:
            return "Z"
    tokens = text.translate(_TOKEN_SEPARATORS).split()
    token_set = set(tokens)
    found = [c for c in letters if c in token_set]
    if len(found) == 1:
        # Accepted only if its first occurrence is among the last four tokens.
        if tokens.index(found[0]) > len(tokens) - 5:
            return found[0]
    elif not found and "Z" in token_set:
        return "Z"
    match = _VERBOSE_ANSWER.search(text)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def infer_text(text: str, options: MutableMapping[str, object]) -> str | None:
    """Step B (``can_infer_text``): the single option whose lower-cased text occurs in the prediction.

    Like VLMEvalKit it lower-cases the option texts *in place* (a second call sees the lowered texts)."""
    lowered = text.lower()
    if len(lowered) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    for k in options:
        options[k] = str(options[k]).lower()
    found = [k for k, v in options.items() if v in lowered]
    return found[0] if len(found) == 1 else None


def infer_choice(prediction: object, options: MutableMapping[str, object]) -> str | None:
    """``can_infer``: step A, then step B. ``options`` maps letters to option texts (non-empty ones only)."""
    text = prediction if isinstance(prediction, str) else str(prediction)
    return infer_letter(text, options) or infer_text(text, options)


def options_of(row: Mapping[str, object], is_missing, letters=LETTERS) -> dict[str, object]:
    """The non-empty option columns A-Z of a row, in letter order (VLMEvalKit's ``build_choices``). ``letters``:
    the option columns the table has, when known (saves looking up all 26)."""
    return {c: row[c] for c in letters if c in row and not is_missing(row[c])}


__all__ = ["API_FAILURE", "FAIL_MSG", "LETTERS", "REFUSALS", "infer_choice", "infer_letter", "infer_text", "options_of"]
