"""Evaluation harness: VLMEvalKit's OpenCompass and OCR benchmarks, scored exactly as VLMEvalKit scores them.

Public API:
  * ``score(benchmark, records, judge=None) -> ScoreResult`` (``per_record``, ``metrics``);
  * ``prediction_as_scored(predictions)``: what VLMEvalKit's xlsx round trip turns predictions into;
  * ``get_benchmark(name)``, ``BENCHMARKS``; the scorer registry in ``bluelm_v.evaluation.scorers``.
Running models (``bluelm-v eval``) lives in ``bluelm_v.evaluation.runner``. This package needs pandas and numpy;
it never imports torch at import time. See docs/evaluation.md.
"""
from __future__ import annotations

from bluelm_v.evaluation.benchmarks import BENCHMARKS, FAMILY_DEFAULT, Benchmark, get_benchmark
from bluelm_v.evaluation.errors import (DataError, EvaluationError, JudgeError, JudgeRequired, ScoringError,
                                        UnknownCategoryError)
from bluelm_v.evaluation.judges import RULE_BASED, make_judge
from bluelm_v.evaluation.roundtrip import prediction_as_scored, xlsx_roundtrip
from bluelm_v.evaluation.scoring import ScoreResult, score

__all__ = [
    "BENCHMARKS", "Benchmark", "DataError", "EvaluationError", "FAMILY_DEFAULT", "JudgeError", "JudgeRequired",
    "RULE_BASED", "ScoreResult", "ScoringError", "UnknownCategoryError", "get_benchmark", "make_judge",
    "prediction_as_scored", "score", "xlsx_roundtrip",
]
