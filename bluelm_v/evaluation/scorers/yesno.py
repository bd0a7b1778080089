"""Yes/no questions: HallusionBench (VLMEvalKit's ``dataset/utils/yorn.py``).

``extracted`` = Yes / No / Unknown by the word rule (``textnorm.yes_no_extract``); a judge, when given, is asked
only for the Unknowns (up to 5 times, temperature 0.5 * try). ``score`` = (answer == extracted), exact.
Metrics (x100) per row Overall / each category / each l2-category: aAcc (mean score), fAcc (groups by
l2-category + set_id + figure_id must be all right), qAcc (l2-category + set_id + question_id); ids are the 4th,
5th and 6th underscore fields of the index. A category and an l2-category of the same name share one row (the
later wins).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, texts
from bluelm_v.evaluation.textnorm import yes_no_extract

JUDGE_TRIES = 5
# VLMEvalKit's YOrN_match_prompt (utils/yorn.py), reproduced as text so judged numbers stay comparable.
JUDGE_PROMPT = (
    "You are an AI assistant who will help me to match an answer with two options of a question. "
    "The options are only Yes / No. You are provided with a question and an answer, and you need to find which "
    "option (Yes / No) is most similar to the answer. If the meaning of all options are significantly different "
    "from the answer, output Unknown. Your should output a single word among the following 3 choices: Yes, No, "
    "Unknown.\nExample 1: \nQuestion: Is the word in this image 'Hello'?\nAnswer: The word in this image is "
    "'Hello'.\nYour output: Yes\nExample 2: \nQuestion: Is the word in this image 'Hello'?\nAnswer: The word in "
    "this image is not 'Hello'.\nYour output: No\nExample 3: \nQuestion: {}?\nAnswer: {}\nYour output: "
)


def judge_yes_no(ctx: Context, question, prediction: str, key) -> str:
    prompt = JUDGE_PROMPT.format(question, prediction)
    for i in range(JUDGE_TRIES):
        reply = ctx.judge.ask(prompt, temperature=0.5 * i, key=key)
        answer = yes_no_extract(reply) if reply is not None else "Unknown"
        ctx.stats.record(reply, answer != "Unknown")
        if answer != "Unknown":
            return answer
    return "Unknown"


def _group_all_right(keys: list[str], scores: np.ndarray) -> float:
    groups: dict[str, bool] = {}
    for k, s in zip(keys, scores):
        groups[k] = groups.get(k, True) and bool(s)
    return float(np.mean(list(groups.values()))) * 100 if groups else float("nan")


def _rating(fkeys, qkeys, scores) -> dict:
    aacc = float(np.mean(scores)) * 100 if len(scores) else float("nan")
    return {"aAcc": aacc, "fAcc": _group_all_right(fkeys, scores), "qAcc": _group_all_right(qkeys, scores)}


@register("hallusionbench", version="1", required=("index", "answer", "prediction", "l2-category"),
          judge="optional", description="yes/no extraction, aAcc/fAcc/qAcc")
def score_hallusion(frame: pd.DataFrame, ctx: Context) -> Scored:
    preds = texts(frame["prediction"])
    indices = [str(i) for i in frame["index"]]
    extracted = [yes_no_extract(p) for p in preds]
    if ctx.judge is not None:
        questions = list(frame["question"]) if "question" in frame.columns else [None] * len(preds)
        for i, e in enumerate(extracted):
            if e == "Unknown":
                extracted[i] = judge_yes_no(ctx, questions[i], preds[i], json_value(frame["index"].iloc[i]))
    answers = list(frame["answer"])
    scores = np.array([a == e for a, e in zip(answers, extracted)], dtype=bool)
    l2 = [texts([v])[0] for v in frame["l2-category"]]
    fkeys, qkeys = [], []
    for idx, cat in zip(indices, l2):
        parts = idx.split("_")
        if len(parts) < 6:
            raise ScoringError(f"{ctx.dataset}: index {idx!r} must have 6 underscore fields "
                               "(<category>_<subcategory>_<visual_input>_<set_id>_<figure_id>_<question_id>)")
        fkeys.append(f"{cat}_{parts[3]}_{parts[4]}")
        qkeys.append(f"{cat}_{parts[3]}_{parts[5]}")
    per_record = [{"index": json_value(i), "prediction_as_scored": p, "extracted": e, "score": bool(s),
                   "fAcc_key": f, "qAcc_key": q}
                  for i, p, e, s, f, q in zip(frame["index"], preds, extracted, scores, fkeys, qkeys)]

    metrics = {"Overall": _rating(fkeys, qkeys, scores)}
    for column in ("category", "l2-category"):
        if column not in frame.columns:
            continue
        values = list(frame[column])
        members = defaultdict(list)
        for pos, v in enumerate(values):
            members[v].append(pos)
        for value, pos in members.items():
            metrics[json_value(value)] = _rating([fkeys[p] for p in pos], [qkeys[p] for p in pos], scores[pos])
    return Scored(per_record, metrics)


__all__ = ["score_hallusion"]
