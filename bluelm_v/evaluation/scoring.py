"""``score(benchmark, records, judge=None)``: VLMEvalKit's scores for a table of predictions.

Steps: resolve the benchmark (dataset or family name) to its scorer; put the records in a table (``None`` = empty
cell); emulate the prediction file's spreadsheet round trip on every column but ``index`` (documented in
``roundtrip``: this is where ``prediction_as_scored`` comes from); normalise ``index`` as VLMEvalKit's dataset
loader does (all integer-like -> int, else str); run the scorer. The result records the scorer version and the
judge (or ``RULE_BASED``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from bluelm_v.evaluation.benchmarks import Benchmark, get_benchmark
from bluelm_v.evaluation.errors import ScoringError
from bluelm_v.evaluation.judges import describe, make_judge
from bluelm_v.evaluation.roundtrip import frame_roundtrip, is_missing
from bluelm_v.evaluation.scorers import Context, get_scorer
from bluelm_v.evaluation.scorers.common import json_value


@dataclass
class ScoreResult:
    benchmark: str  # VLMEvalKit dataset name
    family: str
    scorer: str
    scorer_version: str
    judge: str  # judge description, or RULE_BASED
    per_record: list[dict]
    metrics: dict
    tables: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    judge_stats: dict = field(default_factory=dict)  # replies read, unparsed, examples (JudgeStats.to_dict())

    @property
    def per_group(self) -> list[dict] | None:
        return self.tables.get("per_group")

    def to_frame(self) -> pd.DataFrame:
        """The metrics as VLMEvalKit tabulates them: one row per split or group (a nested dict's outer keys), one
        column per metric; a flat dict is one row named after the benchmark."""
        if self.metrics and all(isinstance(v, dict) for v in self.metrics.values()):
            return pd.DataFrame.from_dict(self.metrics, orient="index")
        return pd.DataFrame([self.metrics], index=[self.benchmark])

    def records_frame(self) -> pd.DataFrame:
        """The per-record scoring (index, what was extracted, hit or score, ...) as a DataFrame."""
        return pd.DataFrame.from_records(self.per_record)

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "family": self.family, "scorer": self.scorer,
                "scorer_version": self.scorer_version, "judge": self.judge, "metrics": self.metrics,
                "tables": self.tables, "notes": self.notes, "seconds": self.seconds, "judge_stats": self.judge_stats}


def plain(value: Any) -> Any:
    """Metrics as plain JSON values: NaN -> None (the vectors' null), numpy scalars -> Python, keys kept."""
    if isinstance(value, dict):
        return {json_value(k) if not isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return json_value(value)


def records_frame(records: Any) -> pd.DataFrame:
    """A list of dicts or a DataFrame -> a DataFrame of object columns (None/NaN = empty cell)."""
    if isinstance(records, pd.DataFrame):
        frame = records.copy()
    elif isinstance(records, Mapping):
        raise TypeError("records must be a list of dicts or a DataFrame, not a single dict")
    elif isinstance(records, Iterable) and not isinstance(records, (str, bytes)):
        rows = list(records)
        bad = next((r for r in rows if not isinstance(r, Mapping)), None)
        if bad is not None:
            raise TypeError(f"every record must be a dict, got {type(bad).__name__}")
        frame = pd.DataFrame.from_records(rows)
    else:
        raise TypeError(f"records must be a list of dicts or a DataFrame, got {type(records).__name__}")
    return frame.astype(object)


def normalise_index(values: list) -> list:
    """VLMEvalKit's dataset loader: index -> str, then -> int if every one is an integer literal."""
    out = []
    for v in values:
        if is_missing(v):
            raise ScoringError("a record has no index")
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(v)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        return out
    as_text = [str(v) for v in out]
    try:
        return [int(t) for t in as_text] if all(t.strip().lstrip("+-").isdigit() for t in as_text) else as_text
    except ValueError:
        return as_text


def prepare(frame: pd.DataFrame, scorer_required: tuple[str, ...], dataset: str) -> pd.DataFrame:
    missing = [c for c in scorer_required if c not in frame.columns]
    if missing:
        raise ScoringError(f"{dataset}: records lack column(s) {', '.join(missing)} "
                           f"(have: {', '.join(map(str, frame.columns))})")
    frame = frame.drop(columns=[c for c in ("image",) if c in frame.columns])
    frame["index"] = normalise_index(list(frame["index"]))
    return frame_roundtrip(frame, keep=("index",))


def score(benchmark: str | Benchmark, records: Any, judge: Any = None, *, progress: bool = False) -> ScoreResult:
    """Score ``records`` (dataset fields plus ``prediction``) exactly as VLMEvalKit scores ``benchmark``.

    ``judge``: None (rule-based; every result says so), ``"URL#model"`` (an OpenAI-compatible endpoint), a dict
    ``{index: reply or [replies]}``, a callable ``fn(prompt)`` or an object with ``generate``. MMVet without a
    judge raises ``JudgeRequired``.
    """
    bench = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(str(benchmark))
    scorer = get_scorer(bench.scorer)
    judge_obj = make_judge(judge)
    if not bench.has_answers:
        raise ScoringError(f"{bench.name} has no answers ({bench.note})")
    start = time.perf_counter()
    frame = prepare(records_frame(records), scorer.required, bench.name)
    ctx = Context(dataset=bench.name, judge=judge_obj, progress=progress)
    if judge_obj is not None and scorer.precheck is not None:
        scorer.precheck(frame, ctx)  # before the first judge call: never pay for grades that would be discarded
    scored = scorer.fn(frame, ctx)
    notes = list(scored.notes)
    if judge_obj is None and scorer.judge == "optional":
        notes.append("rule-based: rows the rules cannot read count as wrong; VLMEvalKit would ask "
                     "its default judge there")
    return ScoreResult(benchmark=bench.name, family=bench.family, scorer=scorer.name,
                       scorer_version=scorer.version, judge=describe(judge_obj), per_record=scored.per_record,
                       metrics=plain(scored.metrics), tables=plain(scored.tables), notes=notes,
                       seconds=time.perf_counter() - start, judge_stats=ctx.stats.to_dict())


__all__ = ["ScoreResult", "normalise_index", "prepare", "records_frame", "score"]
