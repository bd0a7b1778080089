"""Vanilla multiple choice (MMStar, AI2D, MMMU) with exact matching and an optional judge; ``report_acc``.

Per record: ``extracted`` (a letter, ``'Z'`` when nothing is found) and ``hit``. MMMU open questions (option A
empty) become A = gold text, B = "Other Answers", and every gold answer that is not one capital letter counts as
A (VLMEvalKit's ``dataset/image_mcq.py``).
The aggregate is one row per ``split`` (``'none'`` without a split column): ``Overall``, then
the sorted ``l2-category`` values (only a column with exactly that name; MMBench's names abbreviated), then the
sorted ``category`` values; fractions in [0, 1], NaN where a split has no such row.
"""
from __future__ import annotations

import random
import re
import string

import numpy as np
import pandas as pd

from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.matching import API_FAILURE, LETTERS, infer_choice, options_of
from bluelm_v.evaluation.roundtrip import is_missing
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, rows_of, mean, sorted_values, texts

MMB_ABBREVIATIONS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}
EXACT_MATCH_FAILED = "Failed in Prefetch, no GPT-based answer matching under `exact_matching` policy."
JUDGE_RETRIES = 3
_CJK = re.compile("[\u4e00-\u9fff]")

# The option-matching prompt VLMEvalKit sends its MCQ judge (multiple_choice.py build_prompt / build_prompt_cn),
# reproduced as text so judged numbers stay comparable.
JUDGE_PROMPT_EN = (
    "You are an AI assistant who will help me to match an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, and you need to find which option is most "
    "similar to the answer. If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \nQuestion: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\nExample 2: \nQuestion: What is the main object in image?\n"
    "Options: A. teddy bear B. rabbit C. cat D. dog\nAnswer: Spider\nYour output: Z\nExample 3: \n"
    "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)
JUDGE_PROMPT_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。你会被提供：一个问题，多个选项，一个答案。"
    "你的任务是找到与答案意义最相近的选项。如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n问题: {}?\n选项: {}\n答案: {}\n输出: "
)


def lowercase_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """MCQ evaluation lower-cases every column name except single capital letters (the option columns)."""
    return frame.rename(columns=lambda c: c if c in string.ascii_uppercase else str(c).lower())


def option_letters(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c for c in LETTERS if c in frame.columns)


def mmmu_preprocess(frame: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Open questions (option A empty) -> A = gold answer, B = 'Other Answers'; gold -> 'A' unless a capital."""
    frame = frame.copy()
    if "A" not in frame.columns or "B" not in frame.columns:
        raise ScoringError("MMMU records need option columns A and B (empty for open questions)")
    open_rows = [is_missing(a) for a in frame["A"]]
    frame["A"] = [ans if o else a for a, ans, o in zip(frame["A"], frame["answer"], open_rows)]
    frame["B"] = ["Other Answers" if o else b for b, o in zip(frame["B"], open_rows)]
    gold = [v if (isinstance(v, str) and v in string.ascii_uppercase and len(v) == 1) else "A"
            for v in frame["answer"]]
    return frame, gold


def option_string(options: dict) -> str:
    out = "There are several options: \n"
    for letter, text in options.items():
        if not is_missing(text):
            out += f"{letter}. {text}\n"
    return out


def judge_choice(ctx: Context, row: dict, options: dict, option_text: str, key) -> tuple[str, str]:
    """VLMEvalKit's ``extract_answer_from_item`` after the rules failed: ask the judge up to three times; if it
    never gives a usable letter, pick one at random (seeded by dataset and index, so reruns agree)."""
    question = texts([row.get("question")])[0]
    template = JUDGE_PROMPT_CN if _CJK.search(question) else JUDGE_PROMPT_EN
    prompt = template.format(question, option_text, row["prediction"])
    for _ in range(JUDGE_RETRIES):
        reply = ctx.judge.ask(prompt, temperature=0.0, key=key)
        if reply is None or API_FAILURE in reply:
            ctx.stats.record(reply, False)
            continue
        letter = infer_choice(reply, options)
        ctx.stats.record(reply, bool(letter))
        if letter:
            return letter, reply
    pool = (list(options) + ["Z"]) if "Z" not in options else []
    if not pool:
        raise ScoringError(f"{ctx.dataset}: record {key!r}: judge failed and 'Z' is an option; nothing to draw")
    return random.Random(f"{ctx.dataset}:{key}").choice(pool), "Failed to predict, thus randomly generate one. "


def extract_item(ctx: Context, row: dict, key, letters=LETTERS) -> tuple[str, str, str | None]:
    """(letter or 'Z', log, rule-based letter or None) for one vanilla MCQ row."""
    options = options_of(row, is_missing, letters)
    option_text = option_string(options) if ctx.judge is not None else ""  # before matching lowers the texts
    found = infer_choice(row["prediction"], options)
    if found:
        return found, row["prediction"], found
    if ctx.judge is None:
        return "Z", EXACT_MATCH_FAILED, None
    letter, log = judge_choice(ctx, row, options, option_text, key)
    return letter, log, None


def report_acc(frame: pd.DataFrame, hits: list[int], dataset: str) -> dict:
    """VLMEvalKit's ``report_acc`` as {split: {column: fraction}}."""
    hit = np.asarray(hits, dtype=float)
    split = list(frame["split"]) if "split" in frame.columns else ["none"] * len(frame)
    splits = list(dict.fromkeys(split)) if split else ["none"]
    split_arr = np.asarray(split, dtype=object)
    out = {sp: {"Overall": mean(hit[split_arr == sp])} for sp in splits}
    for group in ("l2-category", "category"):
        if group not in frame.columns:
            continue
        values = np.asarray(list(frame[group]), dtype=object)
        for ab in sorted_values(values, group, dataset):
            name = MMB_ABBREVIATIONS.get(ab, ab)
            mask = values == ab
            for sp in splits:
                out[sp][name] = mean(hit[mask & (split_arr == sp)])
    return out


def score_vanilla(frame: pd.DataFrame, ctx: Context, open_questions: bool) -> Scored:
    frame = lowercase_columns(frame)
    frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
    frame["prediction"] = texts(frame["prediction"])
    if open_questions:
        frame, gold = mmmu_preprocess(frame)
    else:
        gold = list(frame["answer"])
    rows = rows_of(frame)
    letters = option_letters(frame)
    per_record, hits = [], []
    for row, gt in zip(rows, gold):
        key = json_value(row["index"])
        letter, log, _ = extract_item(ctx, row, key, letters)
        hit = int(letter == gt)
        hits.append(hit)
        per_record.append({"index": key, "prediction_as_scored": row["prediction"], "gt_letter": json_value(gt),
                           "extracted": letter, "hit": hit, "log": f"Match Log: {log}. "})
    return Scored(per_record, report_acc(frame, hits, ctx.dataset))


@register("mcq", version="1", required=("index", "answer", "prediction"), judge="optional",
          description="vanilla multiple choice (can_infer, exact matching), report_acc")
def score_mcq(frame: pd.DataFrame, ctx: Context) -> Scored:
    return score_vanilla(frame, ctx, open_questions=False)


@register("mcq_mmmu", version="1", required=("index", "answer", "prediction", "A", "B"), judge="optional",
          description="vanilla multiple choice with MMMU's open questions turned into A/B, report_acc")
def score_mmmu(frame: pd.DataFrame, ctx: Context) -> Scored:
    return score_vanilla(frame, ctx, open_questions=True)


__all__ = ["MMB_ABBREVIATIONS", "extract_item", "lowercase_columns", "mmmu_preprocess", "report_acc", "score_mcq",
           "score_mmmu", "score_vanilla"]
