"""MathVista testmini (VLMEvalKit's ``dataset/utils/mathvista.py``): rule-based prefetch, then the judge's extracted
answer.

Prefetch on the raw prediction: multi_choice -> any letter ``can_infer`` finds over the choices (right or wrong,
``'Z'`` included) is taken; integer -> ``int(prediction) == int(answer)`` and non-zero (a correct 0 is falsy);
float -> ``float(prediction) == float(answer)`` exactly; text and list answers never. Otherwise the judge is asked
(up to 5 tries at temperature 0.5 * try) and its reply becomes ``res`` (all tries failing leaves ``''``). The final
check runs on ``res`` after the spreadsheet round trip; text and list answers are always wrong (VLMEvalKit compares
the string 'None' with the answer). Without a judge we run exactly VLMEvalKit with a judge whose every call fails:
the ``no_judge`` rule-based lower bound. Metrics: rows Overall, each task and each skill with tot, prefetch, hit,
prefetch_rate and acc (percent).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from functools import lru_cache

import pandas as pd

from bluelm_v.evaluation.errors import ScoringError, UndefinedNameError
from bluelm_v.evaluation.matching import infer_choice
from bluelm_v.evaluation.roundtrip import as_scored_text, is_missing, xlsx_roundtrip
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, rows_of, literal

FAIL_MESSAGE = "Failed to obtain answer via API."
TRIES = 5
PREFETCHED = "Prefetch succeed"

# The few-shot extraction prompt VLMEvalKit sends MathVista's judge (utils/mathvista.py, itself from the
# MathVista authors), reproduced as text so judged numbers stay comparable. Its typo "respone" is kept.
_EXAMPLES = (
    "\nHint: Please answer the question requiring an integer answer and provide the final value,\n"
    "e.g., 1, 2, 3, at the end.\n\nQuestion: Which number is missing?\n\n"
    "Model response: The number missing in the sequence is 14.\n\nExtracted answer: 14\n",
    "\nHint: Please answer the question requiring a floating-point number with one decimal place and provide the "
    "final value,\ne.g., 1.2, 1.3, 1.4, at the end.\n\nQuestion: What is the fraction of females facing the "
    "camera?\n\nModel response: The fraction of females facing the camera is 0.6,\nwhich means that six out of "
    "ten females in the group are facing the camera.\n\nExtracted answer: 0.6\n",
    "\nHint: Please answer the question requiring a floating-point number with two decimal places and provide the "
    "final value,\ne.g., 1.23, 1.34, 1.45, at the end.\n\nQuestion: How much money does Luca need to buy a sour "
    "apple candy and a butter-scotch candy? (Unit: $)\n\nModel response: Luca needs $1.45 to buy a sour apple "
    "candy and a butterscotch candy.\n\nExtracted answer: 1.45\n",
    "\nHint: Please answer the question requiring a Python list as an answer and provide the final list,\n"
    "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.\n\nQuestion: Between which two years does the line graph saw "
    "its maximum peak?\n\nModel response: The line graph saw its maximum peak between 2007 and 2008.\n\n"
    "Extracted answer: [2007, 2008]\n",
    "\nHint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n\n"
    "Question: What fraction of the shape is blue?\n\nChoices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n\n"
    "Model response: The correct answer is (B) 8/11.\n\nExtracted answer: B\n",
)
_TASK = "\nPlease read the following example.\nThen extract the answer from the model response and type it at the end " \
        "of the prompt.\n\n"


def judge_prompt(question, prediction) -> str:
    prompt = _TASK + "".join(example + "\n" for example in _EXAMPLES)
    return prompt + as_scored_text(question) + "\n" + "Model respone: " + as_scored_text(prediction) + \
        "Extracted answer:"


def _choices(row: dict, dataset: str):
    values = literal(row.get("choices"), "choices", dataset, row.get("index"))
    try:
        return {chr(65 + i): v for i, v in enumerate(values)}
    except TypeError:
        raise ScoringError(f"{dataset}: record {row.get('index')!r}: choices {values!r} is not a list") from None


def post_check(row: dict, response, prefetch: bool, dataset: str):
    """VLMEvalKit's ``post_check``: the prefetched value (truthy) / True on success, else False."""
    res, ans = None, row.get("answer")
    try:
        if row.get("question_type") == "multi_choice":
            ans = row.get("answer_option")
            res = infer_choice(response, _choices(row, dataset)) or False
            if prefetch:
                return res
        elif row.get("answer_type") == "integer":
            res = int(response)
            ans = int(row.get("answer"))
        elif row.get("answer_type") == "float":
            res = float(response)
            ans = float(row.get("answer"))
        else:
            res, ans = str(res), as_scored_text(ans)
    except (ValueError, OverflowError):
        pass
    except TypeError:  # e.g. int(None): VLMEvalKit would crash here
        raise ScoringError(f"{dataset}: record {row.get('index')!r}: cannot compare {response!r} with "
                           f"{row.get('answer')!r}") from None
    if res == ans:
        return res if prefetch else True
    return False


def extract_answer(row: dict, ctx: Context) -> dict:
    """``MathVista_auxeval``: prefetch, else the judge (or a judge that always fails)."""
    pred = row["prediction"]
    prefetched = post_check(row, pred, True, ctx.dataset)  # VLMEvalKit calls it twice; it is deterministic
    if prefetched:
        return {"res": prefetched, "log": PREFETCHED}
    log = ""
    prompt = judge_prompt(row.get("question"), pred) if ctx.judge is not None else None
    for i in range(TRIES):
        reply = ctx.judge.ask(prompt, temperature=i * 0.5, key=json_value(row["index"])) if ctx.judge else None
        if ctx.judge is not None:
            ctx.stats.record(reply, not (reply is None or FAIL_MESSAGE in reply))
        if reply is None or FAIL_MESSAGE in reply:
            log += f"Try {i}: output is {as_scored_text(pred)}, failed to parse.\n"
        else:
            return {"res": reply, "log": log + "Succeed"}
    return {"res": "", "log": log + "All 5 retries failed.\n"}


def skills_of(value, dataset: str, index) -> list:
    """``eval(skills)``; a SyntaxError means one skill named by the whole text (VLMEvalKit's fallback)."""
    if not isinstance(value, str):
        raise ScoringError(f"{dataset}: record {index!r}: skills must be text, got {value!r}")
    try:
        return list(_skills(value))
    except ScoringError as exc:
        raise type(exc)(f"{dataset}: record {index!r}: {exc}") from None


@lru_cache(maxsize=1 << 14)
def _skills(value: str) -> tuple:
    try:
        tree = ast.parse(value.lstrip(" \t"), mode="eval")
    except SyntaxError:
        return (value,)
    if isinstance(tree.body, ast.Name):
        raise UndefinedNameError(f"skills {value!r} is a bare word (VLMEvalKit's eval raises NameError)")
    parsed = literal(value, "skills", "MathVista", None)
    if isinstance(parsed, (str, list, tuple, set, dict)):
        return tuple(parsed)
    raise ScoringError(f"skills {value!r} is not a list")


def mathvista_table(rows: list[dict], hits: list[bool], dataset: str) -> dict:
    tot, fetch, hit = defaultdict(int), defaultdict(int), defaultdict(int)
    tot["Overall"] = 0
    for row, ok in zip(rows, hits):
        task = json_value(row.get("task"))
        skills = skills_of(row.get("skills"), dataset, row.get("index"))
        tot["Overall"] += 1
        for s in skills:
            tot[s] += 1
        tot[task] += 1
        if row["log"] == PREFETCHED:
            for k in ["Overall", task] + skills:
                fetch[k] += 1
        if ok:
            for k in ["Overall", task] + skills:
                hit[k] += 1
    return {k: {"tot": tot[k], "prefetch": fetch[k], "hit": hit[k], "prefetch_rate": fetch[k] / tot[k] * 100,
                "acc": hit[k] / tot[k] * 100} for k in tot}


def check_skills(frame: pd.DataFrame, ctx: Context) -> None:
    """Every skills cell must parse before the judge is asked: the table is built only after all the grades."""
    for index, value in zip(frame["index"], frame["skills"]):
        skills_of(value, ctx.dataset, json_value(index))


@register("mathvista", version="1", required=("index", "question", "answer", "question_type", "answer_type",
                                               "prediction", "task", "skills"),
          judge="optional", description="MathVista prefetch + judge extraction; no judge = always-failing judge",
          precheck=check_skills)
def score_mathvista(frame: pd.DataFrame, ctx: Context) -> Scored:
    rows = rows_of(frame)
    results = [extract_answer(row, ctx) for row in rows]
    # VLMEvalKit stores res in a spreadsheet before the final check: '' -> NaN, numbers stay numbers.
    stored = xlsx_roundtrip([r["res"] for r in results])
    hits, per_record = [], []
    for row, result, res in zip(rows, results, stored):
        row["log"], row["res"] = result["log"], res
        ok = bool(post_check(row, res, False, ctx.dataset))
        hits.append(ok)
        entry = {"res": None if is_missing(res) else json_value(res), "log": result["log"],
                 "prefetched": result["log"] == PREFETCHED, "hit": ok}
        per_record.append({"index": json_value(row["index"]), **entry,
                           ("no_judge" if ctx.judge is None else "judged"): dict(entry)})
    return Scored(per_record, mathvista_table(rows, hits, ctx.dataset))


__all__ = ["judge_prompt", "post_check", "score_mathvista"]
