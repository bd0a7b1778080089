"""OCRBench's 1000-point score (VLMEvalKit's ``dataset/utils/ocrbench.py``).

A row hits if any listed answer, normalised, is a substring of the normalised prediction: lower-case + strip +
newline -> space for the ordinary categories; for "Handwritten Mathematical Expression Recognition" no lower-casing
but every space removed. Metrics are raw counts: the six recognition categories summed as "Text Recognition",
four more groups, "Final Score" (sum) and "Final Score Norm" (Final Score / 10, which assumes all 1000 items).
"""
from __future__ import annotations

import pandas as pd

from bluelm_v.evaluation.errors import ScoringError, UnknownCategoryError
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, literal, string_items, texts

RECOGNITION = ("Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
               "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition")
HME = "Handwritten Mathematical Expression Recognition"
CATEGORIES = RECOGNITION + ("Scene Text-centric VQA", "Doc-oriented VQA", "Key Information Extraction", HME)


def ocrbench_hit(prediction: str, answers: list[str], category: str) -> bool:
    if category == HME:
        pred = prediction.strip().replace("\n", " ").replace(" ", "")
        return any(a.strip().replace("\n", " ").replace(" ", "") in pred for a in answers)
    pred = prediction.lower().strip().replace("\n", " ")
    return any(a.lower().strip().replace("\n", " ") in pred for a in answers)


def _answers(value, dataset: str, index) -> list[str]:
    parsed = literal(value, "answer", dataset, index)
    if isinstance(parsed, str):  # VLMEvalKit iterates whatever eval() gives: a string yields its characters
        parsed = list(parsed)
    if not isinstance(parsed, (list, tuple)):
        raise ScoringError(f"{dataset}: record {index!r}: answer must be a list literal, got {value!r}")
    return string_items(list(parsed), "answer", dataset, index)


@register("ocrbench", version="1", required=("index", "answer", "prediction", "category"),
          description="OCRBench substring hits, raw counts and Final Score")
def score_ocrbench(frame: pd.DataFrame, ctx: Context) -> Scored:
    counts = dict.fromkeys(CATEGORIES, 0)
    per_record = []
    for index, pred, ans, cat in zip(frame["index"], texts(frame["prediction"]), frame["answer"], frame["category"]):
        index = json_value(index)
        answers = _answers(ans, ctx.dataset, index)
        hit = ocrbench_hit(pred, answers, cat)
        if hit:
            if cat not in counts:  # VLMEvalKit raises KeyError only when an unknown category hits
                raise UnknownCategoryError(f"{ctx.dataset}: record {index!r} has category {cat!r}, not one of "
                                           f"the 10 OCRBench categories")
            counts[cat] += 1
        per_record.append({"index": index, "category": json_value(cat), "hit": int(hit),
                           "prediction_as_scored": pred})
    metrics = {"Text Recognition": sum(counts[c] for c in RECOGNITION)}
    for name in CATEGORIES[len(RECOGNITION):]:
        metrics[name] = counts[name]
    metrics["Final Score"] = sum(metrics[k] for k in list(metrics))
    metrics["Final Score Norm"] = float(metrics["Final Score"]) / 10
    return Scored(per_record, metrics)


__all__ = ["CATEGORIES", "HME", "ocrbench_hit", "score_ocrbench"]
