"""MTVQA (VLMEvalKit's ``dataset/image_vqa.py``): score 1 if the answer (strip, lower, every '.' removed) is a
substring of the prediction (same treatment). Metrics x100: one entry per category in first-seen order and
``Average`` over all records (a micro-average), inserted right after the first category as VLMEvalKit does."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, texts


def mtvqa_hit(answer: str, prediction: str) -> float:
    a = answer.strip().lower().replace(".", "")
    p = prediction.strip().lower().replace(".", "")
    return 1.0 if a in p else 0.0


@register("mtvqa", version="1", required=("index", "answer", "prediction", "category"),
          description="MTVQA period-stripped substring match, per-language and micro Average")
def score_mtvqa(frame: pd.DataFrame, ctx: Context) -> Scored:
    if "split" in frame.columns:
        bad = [s for s in frame["split"] if not (isinstance(s, str) and s.lower() == "test")]
        if bad:
            raise ScoringError(f"{ctx.dataset}: only the test split is supported (VLMEvalKit asserts it); "
                               f"found {bad[0]!r}")
    preds, answers = texts(frame["prediction"]), texts(frame["answer"])
    by_category = defaultdict(list)
    per_record = []
    for index, pred, ans, cat in zip(frame["index"], preds, answers, frame["category"]):
        s = mtvqa_hit(ans, pred)
        by_category[json_value(cat)].append(s)
        by_category["Average"].append(s)
        per_record.append({"index": json_value(index), "category": json_value(cat), "score": s,
                           "prediction_as_scored": pred, "answer_as_scored": ans})
    metrics = {k: float(np.mean(v)) * 100 for k, v in by_category.items()}
    return Scored(per_record, metrics)


__all__ = ["mtvqa_hit", "score_mtvqa"]
