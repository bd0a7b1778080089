"""Scoring speed: ``bluelm_v.evaluation.score`` on 100,000 synthetic predictions of every benchmark, against a plain
pandas row-by-row loop (``DataFrame.apply``) of the same rules, timed in the same run.

The synthetic predictions mix the shapes real models produce (bare letters, "(B)", "The answer is C", option text,
sentences, empty strings, refusals; near-miss VQA answers; numbers). Both sides score the same table and must
agree on every per-record value; the table prints medians and the ratio baseline / ours.

    python benchmarks/scoring.py [--rows N] [--repeat R] [--only NAME,...] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bluelm_v.evaluation import score
from bluelm_v.evaluation.matching import infer_choice, options_of
from bluelm_v.evaluation.roundtrip import is_missing, prediction_as_scored
from bluelm_v.evaluation.scorers.anls import anls_distance, anls_score
from bluelm_v.evaluation.scorers.mathvista import extract_answer, post_check
from bluelm_v.evaluation.scorers.mtvqa import mtvqa_hit
from bluelm_v.evaluation.scorers.ocrbench import CATEGORIES, ocrbench_hit
from bluelm_v.evaluation.scorers.vqa import vqa_match
from bluelm_v.evaluation.scorers import Context
from bluelm_v.evaluation.textnorm import normalize_vqa_answer, yes_no_extract

WORDS = ("cat dog horse bird red blue green sunny rainy apple banana cherry stop open exit total invoice "
         "coca cola sign street tree car bus truck piano flute drum violin").split()
normalize_uncached = normalize_vqa_answer.__wrapped__


def _phrase(rng, lo=1, hi=3) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi + 1)))


def mcq_records(n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        opts = [_phrase(rng) for _ in range(4)]
        ans = "ABCD"[rng.integers(4)]
        kind = rng.integers(8)
        pred = ["B", f"({ans})", f"The answer is {ans}.", opts[rng.integers(4)], f"{ans}. {opts[0]}",
                "I think it shows " + _phrase(rng, 6, 12), "", "b"][kind]
        rows.append({"index": i + 1, "question": f"q{i}", "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                     "answer": ans, "category": f"cat{i % 7}", "l2-category": f"l2_{i % 3}", "prediction": pred})
    return rows


def mmbench_records(n: int, rng) -> list[dict]:
    rows = []
    groups = n // 4
    for g in range(groups):
        opts = [_phrase(rng) for _ in range(4)]
        ans = rng.integers(4)
        for k in range(4):
            rot = opts[k:] + opts[:k]
            gt = "ABCD"[(ans - k) % 4]
            pred = [gt, f"({gt})", "A", rot[(ans - k) % 4]][rng.integers(4)]
            rows.append({"index": g + 1 + k * 1_000_000, "question": f"q{g}", "A": rot[0], "B": rot[1], "C": rot[2],
                         "D": rot[3], "answer": gt, "category": f"cat{g % 20}", "l2-category": "coarse_perception",
                         "split": "dev", "prediction": pred})
    return rows


def textvqa_records(n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        main = _phrase(rng, 1, 2)
        answers = [main if rng.random() < 0.6 else _phrase(rng, 1, 2) for _ in range(10)]
        pred = [main, main.upper() + ".", _phrase(rng), "", f"the {main}"][rng.integers(5)]
        rows.append({"index": i + 1, "question": "q", "answer": str(answers), "prediction": pred})
    return rows


def docvqa_records(n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        ans = f"{_phrase(rng, 1, 3)} {rng.integers(1000)}"
        pred = [ans, ans[:-1], ans.upper(), _phrase(rng), ""][rng.integers(5)]
        rows.append({"index": i + 1, "question": "q", "answer": str([ans, ans.replace(' ', '')]), "prediction": pred})
    return rows


def ocrbench_records(n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        ans = _phrase(rng, 1, 2)
        pred = [ans, f"The text is {ans.upper()}.", _phrase(rng), ""][rng.integers(4)]
        rows.append({"index": i + 1, "question": "q", "answer": str([ans]), "category": CATEGORIES[i % 10],
                     "prediction": pred})
    return rows


def mtvqa_records(n: int, rng) -> list[dict]:
    return [{"index": i + 1, "question": "q", "answer": (a := _phrase(rng, 1, 2)), "category": ["DE", "FR", "JA"][i % 3],
             "split": "test", "prediction": [a, a.upper() + ".", _phrase(rng)][rng.integers(3)]} for i in range(n)]


def hallusion_records(n: int, rng) -> list[dict]:
    return [{"index": f"VD_chart_1_{i // 6}_{i % 3}_{i % 2}", "question": "q", "answer": ["Yes", "No"][i % 2],
             "category": ["VD", "VS"][i % 2], "l2-category": ["chart", "map", "ocr"][i % 3],
             "prediction": ["Yes", "No.", "yes, it is", "I don't know", ""][rng.integers(5)]} for i in range(n)]


def mathvista_records(n: int, rng) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"index": i + 1, "question": "q", "answer": "8/11", "question_type": "multi_choice",
                         "answer_type": "text", "choices": "['3/11', '8/11', '6/11', '3/5']", "answer_option": "B",
                         "task": "fqa", "skills": "['scientific reasoning']",
                         "prediction": ["B", "(B) 8/11", "8/11", "The answer is C", "b"][rng.integers(5)]})
        else:
            a = int(rng.integers(1, 50))
            rows.append({"index": i + 1, "question": "q", "answer": str(a), "question_type": "free_form",
                         "answer_type": "integer", "choices": None, "answer_option": None, "task": "mwp",
                         "skills": "['arithmetic reasoning', 'algebraic reasoning']",
                         "prediction": [str(a), f" {a} ", f"{a}.", f"There are {a}"][rng.integers(4)]})
    return rows


# ---- baselines: the same rules, one pandas row at a time ----------------------------------------------------------
def _frame(records) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records).astype(object)
    df["prediction"] = prediction_as_scored(df["prediction"].tolist())
    return df


def base_mcq(records):
    df = _frame(records)
    df["hit"] = df.apply(lambda r: int((infer_choice(r["prediction"], options_of(r, is_missing)) or "Z") == r["answer"]),
                         axis=1)
    return df["hit"].tolist(), df.groupby("category")["hit"].mean().to_dict()


def base_mmbench(records):
    df = _frame(records)
    df["g"] = df["index"] % 1_000_000
    df["ok"] = df.apply(lambda r: infer_choice(r["prediction"], options_of(r, is_missing)) == r["answer"], axis=1)
    return df.groupby("g")["ok"].all().astype(int).tolist(), None


def base_textvqa(records):
    def row(r):
        gts = [normalize_uncached(g) for g in eval(r["answer"])]  # noqa: S307 - trusted synthetic data
        return float(np.mean(vqa_match(normalize_uncached(r["prediction"]), gts)))

    return _frame(records).apply(row, axis=1).tolist(), None


def base_docvqa(records):
    return _frame(records).apply(lambda r: anls_score([anls_distance(g, r["prediction"]) for g in eval(r["answer"])]),
                                 axis=1).tolist(), None


def base_ocrbench(records):
    return _frame(records).apply(lambda r: int(ocrbench_hit(r["prediction"], eval(r["answer"]), r["category"])),
                                 axis=1).tolist(), None


def base_mtvqa(records):
    return _frame(records).apply(lambda r: mtvqa_hit(r["answer"], r["prediction"]), axis=1).tolist(), None


def base_hallusion(records):
    df = _frame(records)
    return (df.apply(lambda r: yes_no_extract(r["prediction"]), axis=1) == df["answer"]).tolist(), None


def base_mathvista(records):
    ctx = Context("MathVista_MINI")

    def row(r):
        d = r.to_dict()
        res = extract_answer(d, ctx)
        d["res"] = np.nan if res["res"] == "" else res["res"]
        return bool(post_check(d, d["res"], False, ctx.dataset))

    df = pd.DataFrame.from_records(records).astype(object)
    return df.apply(row, axis=1).tolist(), None


CASES = {
    "MMStar": (mcq_records, base_mcq, lambda r: [x["hit"] for x in r]),
    "MMBench_DEV_EN_V11": (mmbench_records, base_mmbench, None),
    "TextVQA_VAL": (textvqa_records, base_textvqa, lambda r: [x["score"] for x in r]),
    "DocVQA_VAL": (docvqa_records, base_docvqa, lambda r: [x["score"] for x in r]),
    "OCRBench": (ocrbench_records, base_ocrbench, lambda r: [x["hit"] for x in r]),
    "MTVQA_TEST": (mtvqa_records, base_mtvqa, lambda r: [x["score"] for x in r]),
    "HallusionBench": (hallusion_records, base_hallusion, lambda r: [x["score"] for x in r]),
    "MathVista_MINI": (mathvista_records, base_mathvista, lambda r: [x["hit"] for x in r]),
}


def clear_caches() -> None:
    """Empty every memo of the scorers, so no repetition profits from an earlier one."""
    from bluelm_v.evaluation import matching, textnorm
    from bluelm_v.evaluation.scorers import common, mathvista, vqa

    for fn in (textnorm.normalize_vqa_answer, textnorm.yes_no_extract, matching._infer_letter, common.parse_literal,
               vqa.normalized_answers, mathvista._skills):
        fn.cache_clear()


def timed(fn, repeat: int) -> tuple[float, object]:
    samples, out = [], None
    for _ in range(repeat):
        clear_caches()
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    table = Table(title=f"scoring {args.rows:,} predictions (median of {args.repeat})")
    for col in ("benchmark", "ours (s)", "pandas row loop (s)", "ratio", "rows/s (ours)"):
        table.add_column(col, justify="right" if col != "benchmark" else "left")
    results = []
    for name, (make, baseline, values) in CASES.items():
        if only and name not in only:
            continue
        records = make(args.rows, np.random.default_rng(0))
        ours_s, result = timed(lambda: score(name, records), args.repeat)
        base_s, base_out = timed(lambda: baseline(records), args.repeat)
        if values is not None:  # both sides must agree on every record
            mine = values(sorted(result.per_record, key=lambda r: str(r["index"])) if name == "HallusionBench"
                          else result.per_record)
            theirs = base_out[0]
            if name == "HallusionBench":
                order = sorted(range(len(records)), key=lambda i: str(records[i]["index"]))
                theirs = [theirs[i] for i in order]
            if not np.allclose(np.asarray(mine, float), np.asarray(theirs, float), rtol=0, atol=1e-12):
                raise SystemExit(f"{name}: ours and the baseline disagree")
        results.append({"benchmark": name, "rows": len(records), "ours_s": ours_s, "baseline_s": base_s,
                        "ratio": base_s / ours_s})
        table.add_row(name, f"{ours_s:.3f}", f"{base_s:.3f}", f"{base_s / ours_s:.2f}x", f"{len(records) / ours_s:,.0f}")
    Console().print(table)
    print("VLMEvalKit on the reference machine (docs/sources.md): 100k rows take 7.8 s (OCRBench) to ~2 h (MMStar).")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
