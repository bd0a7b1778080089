"""MMBench circular evaluation (VLMEvalKit's ``dataset/image_mcq.py`` and ``tools.py``).

Rotation k of question g has index g + k * 1e6 (``g_index`` = index mod 1e6 unless the records carry a
``g_index`` column). Only a main row (index == g_index) starts a group; the group is every row with that g_index,
in index order. Exact matching: the group scores 1 only if every row extracts exactly its own answer, 0 as soon as
one row extracts a different letter (``'Z'`` included), 0 if some row extracts nothing. With a judge, rows that
the rules could not read go to the judge, as VLMEvalKit's ``eval_circular_group`` does. The aggregate is
``report_acc`` over the main rows carrying their group's hit.
"""
from __future__ import annotations

import pandas as pd

from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.matching import infer_choice, options_of
from bluelm_v.evaluation.roundtrip import is_missing
from bluelm_v.evaluation.scorers import Context, Scored, register
from bluelm_v.evaluation.scorers.common import json_value, rows_of, texts
from bluelm_v.evaluation.scorers.mcq import (EXACT_MATCH_FAILED, extract_item, lowercase_columns, option_letters,
                                            report_acc)

ROTATION_STRIDE = 1_000_000


def _as_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise ScoringError(f"MMBench circular evaluation needs integer {what}, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ScoringError(f"MMBench circular evaluation needs integer {what}, got {value!r}")


def judge_group(ctx: Context, rows: list[dict], gold: list, found: list) -> dict:
    """``eval_circular_group`` for a group the rules left undecided (every found letter was right)."""
    log = ""
    for i, (row, gt) in enumerate(zip(rows, gold)):
        if found[i]:
            log += f"Rolling {i} Matched.\n"
            continue
        letter, match_log, _ = extract_item(ctx, row, json_value(row["index"]))
        if letter != gt:
            log += (f"Failed in Rolling {i}: Answer is {gt}; Prediction is {row['prediction']}; "
                    f"Pre-fetched is {letter}; Match Log is {match_log}.\n")
            return {"hit": 0, "log": log}
        log += f"Rolling {i}: Answer is {gt}, Prediction is {row['prediction']}, Pre-fetched is {letter}.\n"
    return {"hit": 1, "log": log}


@register("mmbench_circular", version="1", required=("index", "answer", "prediction"), judge="optional",
          description="MMBench circular evaluation over rotations, report_acc over main rows")
def score_circular(frame: pd.DataFrame, ctx: Context) -> Scored:
    frame = lowercase_columns(frame)
    frame["index"] = [_as_int(v, "index") for v in frame["index"]]
    frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
    frame["prediction"] = texts(frame["prediction"])
    if "g_index" in frame.columns:
        frame["g_index"] = [_as_int(v, "g_index") for v in frame["g_index"]]
    else:
        frame["g_index"] = [int(i % ROTATION_STRIDE) for i in frame["index"]]
    rows = rows_of(frame)
    letters = option_letters(frame)

    per_record, extracted = [], {}
    for row in rows:
        letter = infer_choice(row["prediction"], options_of(row, is_missing, letters)) or None
        extracted[row["index"]] = letter
        gt = row["answer"]
        per_record.append({"index": row["index"], "g_index": row["g_index"], "prediction_as_scored": row["prediction"],
                           "gt_letter": json_value(gt), "extracted": letter, "rotation_correct": letter == gt})

    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["g_index"], []).append(row)
    main_positions = [i for i, row in enumerate(rows) if row["index"] == row["g_index"]]
    per_group, hits = [], []
    for pos in main_positions:
        g = rows[pos]["index"]
        members = groups[g]
        gold = [m["answer"] for m in members]
        found = [extracted[m["index"]] for m in members]
        result = None
        for i, (m, gt, letter) in enumerate(zip(members, gold, found)):
            if letter and letter != gt:
                result = {"hit": 0, "log": f"Failed in Prefetching Rolling {i}: Answer is {gt}, "
                                          f"Prediction is {m['prediction']}, Pre-fetched is {letter}. "}
                break
        if result is None:
            if all(letter == gt for letter, gt in zip(found, gold)):
                result = {"hit": 1, "log": "Succeed During Pre-fetching"}
            elif ctx.judge is None:
                result = {"hit": 0, "log": EXACT_MATCH_FAILED}
            else:
                result = judge_group(ctx, members, gold, found)
        hits.append(result["hit"])
        per_group.append({"g_index": g, "hit": result["hit"], "log": result["log"]})

    main = frame.iloc[main_positions].reset_index(drop=True)
    metrics = report_acc(main, hits, ctx.dataset)
    notes = []
    orphans = sorted(set(groups) - {rows[p]["index"] for p in main_positions})
    if orphans:
        notes.append(f"{len(orphans)} rotation group(s) without a main row are not scored (VLMEvalKit does the same)")
    return Scored(per_record, metrics, tables={"per_group": per_group}, notes=notes)


__all__ = ["ROTATION_STRIDE", "score_circular"]
