"""ANLS as VLMEvalKit computes it (DocVQA, InfoVQA; ``dataset/utils/vqa_eval.py``).

distance = Levenshtein(norm(answer), norm(prediction)) / max(len(answer.upper()), len(prediction.upper())), with
norm = strip, lower-case, collapse whitespace; the denominator uses the raw strings. Sample score = 1 - the
smallest distance, set to 0 when that is below 0.5 (a similarity of exactly 0.5 is kept). Aggregate as TextVQA.
"""
from __future__ import annotations

import pandas as pd
from rapidfuzz.distance import Levenshtein

from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import answer_list, json_value, string_items, texts
from bluelm_v.evaluation.scorers.vqa import vqa_table
from bluelm_v.evaluation.errors import ScoringError

THRESHOLD = 0.5


def anls_distance(answer: str, prediction: str) -> float:
    a = " ".join(answer.strip().lower().split())
    p = " ".join(prediction.strip().lower().split())
    length = max(len(answer.upper()), len(prediction.upper()))
    return 0.0 if length == 0 else Levenshtein.distance(a, p) / length


def anls_score(distances: list[float]) -> float:
    best = 1 - min(distances)
    return 0.0 if best < THRESHOLD else best


@register("anls", version="1", required=("index", "answer", "prediction"),
          description="ANLS with VLMEvalKit's raw-length denominator and >= 0.5 kept")
def score_anls(frame: pd.DataFrame, ctx: Context) -> Scored:
    preds = texts(frame["prediction"])
    answers = texts(frame["answer"])
    per_record, scores = [], []
    for index, pred, ans in zip(frame["index"], preds, answers):
        index = json_value(index)
        gts = string_items(answer_list(ans, ctx.dataset, index), "answer", ctx.dataset, index)
        if not gts:
            raise ScoringError(f"{ctx.dataset}: record {index!r} has an empty answer list")
        distances = [anls_distance(g, pred) for g in gts]
        score = anls_score(distances)
        scores.append(score)
        per_record.append({"index": index, "prediction_as_scored": pred, "anls_distance_per_answer": distances,
                           "score": score})
    return Scored(per_record, vqa_table(frame, scores, ctx.dataset))


__all__ = ["anls_distance", "anls_score", "score_anls"]
