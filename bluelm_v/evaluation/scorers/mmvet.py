"""MMVet (VLMEvalKit's ``dataset/utils/mmvet.py``): every sample is graded 0.0-1.0 by an LLM judge; there is no
rule-based path.

Reply parsing: ``float(reply)``, accepted if 0 <= value <= 1 (so 'nan' is accepted, 'inf' and '1.2' are not), up
to 5 tries at temperature 0.5 * try, else 0.0. Aggregates (x100, sum / count): capability rows rec, ocr, know, gen,
spat, math (a sample counts for each capability name that is a substring of its category) plus Overall, and a
second table per exact category string (',' -> '_') in first-seen order plus Overall. The two tables share their
counters, as in VLMEvalKit, so a category string equal to a capability name is counted in both rows.
"""
from __future__ import annotations

from collections import defaultdict

import pandas as pd

from bluelm_v.evaluation.errors import EmptyGroupError, JudgeRequired
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, texts

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
TRIES = 5

# VLMEvalKit's MMVet grading prompt (utils/mmvet.py, from the MM-Vet authors), reproduced as text so judged
# numbers stay comparable; tests/data/eval-vectors/mmvet.json holds a full example.
GRADER_PROMPT = """
Compare the ground truth and prediction from AI models, to give a correctness score for the prediction.
<AND> in the ground truth means it is totally right
only when all elements in the ground truth are present in the prediction,
and <OR> means it is totally right when any one element in the ground truth is present in the prediction.
The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right).
Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme talks about Iceland and Greenland. It's pointing out that despite their names,
Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme is using humor to point out the misleading nature of Iceland's and Greenland's names.
Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow.
The text 'This is why I have trust issues' is a playful way to suggest
that these contradictions can lead to distrust or confusion.
The humor in this meme is derived from the unexpected contrast between the names of the countries
and their actual physical characteristics. | 1.0
"""


def grader_prompt(question: str, answer: str, prediction: str) -> str:
    gt = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT + "\n" + " | ".join([question, gt, prediction, ""])


def parse_grade(replies, stats=None) -> tuple[float, str]:
    """Parse judge replies the way ``MMVet_auxeval`` does; ``replies`` yields one reply per try (None = failed).
    ``stats`` (a ``JudgeStats``), if given, records each reply and whether it parsed."""
    log = ""
    for i, reply in zip(range(TRIES), replies):
        text = "Failed to obtain answer via API." if reply is None else reply
        try:
            value = float(text)
        except ValueError:
            log += f"Try {i}: output is {text}, failed to parse.\n"
            if stats is not None:
                stats.record(reply, False)
            continue
        if value < 0 or value > 1:
            log += f"Try {i}: output is {text}, invalid score: {value}.\n"
            if stats is not None:
                stats.record(reply, False)
            continue
        if stats is not None:
            stats.record(reply, True)
        return value, log + "Succeed"
    return 0.0, log + "All 5 retries failed.\n"


def mmvet_tables(categories: list[str], grades: list[float]) -> dict:
    tot, score = defaultdict(int), defaultdict(float)
    combos: list[str] = []
    for cate, grade in zip(categories, grades):
        combo = cate.replace(",", "_")
        if combo not in combos:
            combos.append(combo)
        for cap in CAPABILITIES:
            if cap in cate:
                tot[cap] += 1
                score[cap] += grade
        tot["Overall"] += 1
        tot[combo] += 1
        score["Overall"] += grade
        score[combo] += grade

    def row(k: str) -> dict:
        if tot[k] == 0:
            raise EmptyGroupError(f"MMVet capability {k!r} has no sample (VLMEvalKit divides by zero)")
        return {"tot": tot[k], "acc": score[k] / tot[k] * 100}

    return {"capability": {k: row(k) for k in (*CAPABILITIES, "Overall")},
            "category_combination": {k: row(k) for k in (*combos, "Overall")}}


def check_capabilities(frame: pd.DataFrame, ctx: Context) -> None:
    """VLMEvalKit divides by each capability's count after grading every sample: a subset without one of the six
    would pay for every grade and then fail, so it is refused before the first judge call."""
    categories = texts(frame["category"])
    absent = [cap for cap in CAPABILITIES if not any(cap in c for c in categories)]
    if absent:
        raise EmptyGroupError(f"{ctx.dataset}: no sample has capability {', '.join(map(repr, absent))}; VLMEvalKit "
                              "divides by each capability's count (ZeroDivisionError), so these records cannot be "
                              "scored; nothing was sent to the judge")


@register("mmvet", version="1", required=("index", "question", "answer", "prediction", "category"),
          judge="required", description="MMVet LLM grading (judge required), capability and combination tables",
          precheck=check_capabilities)
def score_mmvet(frame: pd.DataFrame, ctx: Context) -> Scored:
    if ctx.judge is None:
        raise JudgeRequired(f"{ctx.dataset} is graded only by an LLM judge (VLMEvalKit has no rule-based path); "
                            "pass a judge (--judge URL#model)")
    questions, answers = texts(frame["question"]), texts(frame["answer"])
    preds, categories = texts(frame["prediction"]), texts(frame["category"])
    per_record, grades = [], []
    for index, q, a, p in zip(frame["index"], questions, answers, preds):
        key = json_value(index)
        prompt = grader_prompt(q, a, p)
        replies = (ctx.judge.ask(prompt, temperature=i * 0.5, key=key) for i in range(TRIES))
        grade, log = parse_grade(replies, ctx.stats)
        grades.append(grade)
        per_record.append({"index": key, "score": json_value(grade), "log": log, "prediction_as_scored": p,
                           "judge_prompt_tail": " | ".join([q, a.replace("<AND>", " <AND> ").replace("<OR>", " <OR> "),
                                                            p, ""])})
    return Scored(per_record, mmvet_tables(categories, grades))


__all__ = ["grader_prompt", "mmvet_tables", "parse_grade", "score_mmvet"]
