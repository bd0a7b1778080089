"""VQA accuracy (TextVQA; VLMEvalKit's ``dataset/utils/vqa_eval.py``) and the shared VQA aggregate table.

Prediction and every gold answer are normalised (``textnorm.normalize_vqa_answer``). For gold answer i,
acc_i = min(1, #(other gold answers equal to the prediction) / 3); the sample score is the mean of acc_i. With a
``split`` column the table has one entry per split plus ``Overall``; otherwise ``Overall`` plus one entry per
sorted ``category``. Values are 100 x mean, unrounded.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from bluelm_v.evaluation.errors import ScoringError

from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import answer_list, json_value, sorted_values, string_items, texts
from bluelm_v.evaluation.textnorm import normalize_vqa_answer


def vqa_table(frame: pd.DataFrame, scores: list[float], dataset: str) -> dict:
    """The aggregate of VLMEvalKit's ImageVQADataset (TextVQA, DocVQA)."""
    hit = np.asarray(scores, dtype=float)

    def pct(values) -> float:
        return float(np.mean(values)) * 100 if len(values) else float("nan")

    out: dict = {}
    if "split" in frame.columns:
        split = np.asarray(list(frame["split"]), dtype=object)
        for sp in dict.fromkeys(split.tolist()):
            out[json_value(sp)] = pct(hit[split == sp])
        out["Overall"] = pct(hit)
    else:
        out["Overall"] = pct(hit)
        if "category" in frame.columns:
            cats = np.asarray(list(frame["category"]), dtype=object)
            for c in sorted_values(cats.tolist(), "category", dataset):
                out[json_value(c)] = pct(hit[cats == c])
    return out


def vqa_match(pred: str, gts) -> list[float]:
    """acc_i for each gold answer (``gts`` and ``pred`` already normalised)."""
    k = gts.count(pred)
    same, other = min(1.0, (k - 1) / 3), min(1.0, k / 3)
    return [same if g == pred else other for g in gts]


@lru_cache(maxsize=1 << 16)
def normalized_answers(answer_text: str, dataset: str) -> tuple[str, ...]:
    gts = string_items(answer_list(answer_text, dataset, None), "answer", dataset, None)
    return tuple(normalize_vqa_answer(g) for g in gts)


@register("vqa_accuracy", version="1", required=("index", "answer", "prediction"),
          description="TextVQA accuracy: min(1, matches among the other answers / 3), averaged")
def score_vqa(frame: pd.DataFrame, ctx: Context) -> Scored:
    preds = texts(frame["prediction"])
    answers = texts(frame["answer"])
    per_record, scores = [], []
    for index, pred, ans in zip(frame["index"], preds, answers):
        index = json_value(index)
        try:
            norm_gts = normalized_answers(ans, ctx.dataset)
        except ScoringError as exc:
            raise ScoringError(f"record {index!r}: {exc}") from None
        norm_pred = normalize_vqa_answer(pred)
        match = vqa_match(norm_pred, norm_gts)
        score = sum(match) / len(match) if match else float("nan")
        scores.append(score)
        per_record.append({"index": index, "prediction_as_scored": pred, "normalized_prediction": norm_pred,
                           "normalized_answers": list(norm_gts), "match": match, "score": json_value(score)})
    return Scored(per_record, vqa_table(frame, scores, ctx.dataset))


__all__ = ["score_vqa", "vqa_match", "vqa_table"]
