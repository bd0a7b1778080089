"""Exceptions of the evaluation package. All are ValueError subclasses, so the CLI prints one line for them.

Where VLMEvalKit itself crashes on an input (a row whose OCRBench category is unknown, an MMVet capability with no
sample, ...), we raise a ``ScoringError`` that is *also* the built-in type VLMEvalKit would raise, so a caller can
catch either.
"""
from __future__ import annotations


class EvaluationError(ValueError):
    """Base class: bad input to the evaluation harness."""


class ScoringError(EvaluationError):
    """The records cannot be scored the way VLMEvalKit scores them (missing column, malformed cell, ...)."""


class UnknownCategoryError(ScoringError, KeyError):
    """A category the scorer has no slot for (VLMEvalKit: KeyError)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class UndefinedNameError(ScoringError, NameError):
    """A cell VLMEvalKit ``eval``s that names an undefined variable (a bare word: NameError there)."""


class EmptyGroupError(ScoringError, ZeroDivisionError):
    """An aggregate over zero samples that VLMEvalKit divides by (ZeroDivisionError)."""


class JudgeRequired(EvaluationError):
    """The benchmark has no rule-based scoring in VLMEvalKit (MMVet) and no judge was given."""


class JudgeError(EvaluationError):
    """The judge endpoint failed (after its own retries). Never turned into a silent rule-based fallback."""


class DataError(EvaluationError):
    """A dataset file or row that cannot be used (missing column, bad base64, unreadable TSV, MD5 mismatch)."""


class AdapterError(EvaluationError):
    """A model adapter spec or model that cannot be used."""


class SampleError(EvaluationError):
    """The model cannot answer this sample, for good (e.g. a replay file without it): recorded as failed."""


class EndpointError(EvaluationError):
    """An HTTP endpoint (model or judge) that failed after its retries, or answered nonsense."""


__all__ = [
    "AdapterError", "DataError", "EndpointError", "SampleError", "EmptyGroupError", "EvaluationError", "JudgeError", "JudgeRequired",
    "ScoringError", "UndefinedNameError", "UnknownCategoryError",
]
