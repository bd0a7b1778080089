"""``bluelm-v eval``: run a model over benchmarks, durably and resumably, then score as VLMEvalKit does.

Layout (like VLMEvalKit's): ``{work_dir}/{model}/{run_id}/`` holds, per dataset D,
``{model}_{D}.rank{r}.log.jsonl`` (the durable per-sample log), ``{model}_{D}.tsv`` and ``.jsonl`` (merged
predictions with status and failure reason), ``{model}_{D}_score.json`` (metrics, judge, scorer version, counts),
``{model}_{D}_acc.csv`` (the metrics flattened), ``{model}_{D}_records.jsonl`` (per-record scoring), optionally
``{model}_{D}.xlsx``; and ``status.json`` and ``report.md`` for the run.

The run id is derived from the model spec and the generation settings, so the same command finds the same run and
resumes it: samples already in a log are not computed again. Samples are sharded over ranks by position
(``i % world == rank``); every rank appends to its own log; rank 0 merges and scores after a barrier.

Check first, then spend: every dataset is found, MD5-checked and its header checked, the keys matched to their
endpoints (``keys``), and the judge and the model endpoint reached, before the first sample. Scoring follows
VLMEvalKit: a failed or missing sample is scored with VLMEvalKit's failure text as its prediction (so it is wrong,
and its MMBench circular group fails); the figure over successful samples only is kept beside it as ``ok only``.
Judge replies are cached in the run folder (``judge_cache.jsonl``); a dataset whose judge replies are unreadable
more than ``JUDGE_FAILURE_LIMIT`` of the time is ``judge failed``, not ``scored``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bluelm_v.evaluation.adapters import ModelAdapter, endpoint_of, make_adapter
from bluelm_v.evaluation.benchmarks import get_benchmark
from bluelm_v.evaluation.data import Dataset, Resolved, load_dataset, parse_data_arg, resolve_dataset
from bluelm_v.evaluation.errors import AdapterError, EvaluationError, JudgeRequired, ScoringError
from bluelm_v.evaluation.inference import RateLimiter, SampleWork, run_samples
from bluelm_v.evaluation.judges import CachedJudge, describe as describe_judge, make_judge, parse_judge_spec
from bluelm_v.evaluation.keys import resolve_keys
from bluelm_v.evaluation.matching import FAIL_MSG
from bluelm_v.evaluation.prompts import get_builder
from bluelm_v.evaluation.roundtrip import is_missing
from bluelm_v.evaluation.scorers import get_scorer
from bluelm_v.evaluation.scoring import score
from bluelm_v.evaluation.store import PredictionLog, RunLock, is_done, merge_logs
from bluelm_v.evaluation.suites import load_suite, suite_names


@dataclass
class RunConfig:
    model: str
    data: list[str]
    work_dir: Path = Path("eval-out")
    limit: int | None = None
    run_id: str | None = None
    model_name: str | None = None
    judge: str | None = None
    data_root: str | None = None
    check_md5: bool = True
    max_new_tokens: int = 512
    temperature: float = 0.0
    progress: bool = False  # the command line turns it on (--no-progress turns it off)
    export_xlsx: bool = False
    max_model_errors: int = 5
    api_key_env: str | None = None  # the variable holding the model endpoint's key (default: $OPENAI_API_KEY)
    judge_api_key_env: str | None = None  # the judge's (default: $OPENAI_API_KEY)
    api_nproc: int = 4  # requests in flight, for adapters that may be called concurrently
    batch_size: int = 1  # samples per generate call, for adapters that batch (hf:)
    rate_limit: float | None = None  # request starts per minute
    timeout: float | None = None  # seconds per request (HTTP adapters)
    extra_body: dict | None = None  # engine-specific request fields (HTTP adapters)
    system_prompt: str | None = None
    dynres: dict | None = None  # one of our tiling schemes in place of the model's own (torch:, native:)
    argv: list[str] = field(default_factory=list)


JUDGE_FAILURE_LIMIT = 0.05  # more unreadable judge replies than this fraction: the dataset is "judge failed"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def plain_name(value: str, flag: str) -> str:
    """A name from the command line that becomes a folder or file name: one path component, never '..'."""
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise EvaluationError(f"{flag} {value!r} must be a plain name (letters, digits, '.', '_', '-'; no '/' or "
                              "'..'): it names a folder inside --work-dir")
    return value


def expand_data(items: list[str]) -> list[tuple[str, Path | None]]:
    """Dataset names, NAME=PATH items and suite names (``opencompass``, ``ocr``) -> [(dataset, path)]."""
    out: list[tuple[str, Path | None]] = []
    suites = set(suite_names())
    for item in items:
        name, path = parse_data_arg(item)
        if path is None and name in suites:
            out += [(e.dataset, None) for e in load_suite(name).benchmarks]
        else:
            out.append((get_benchmark(name).name, path))
    seen, unique = set(), []
    for name, path in out:
        if name not in seen:
            seen.add(name)
            unique.append((name, path))
    return unique


def default_run_id(cfg: RunConfig, content: str | None = None) -> str:
    """From everything that changes an answer: the model spec, the generation settings, the request fields and
    system prompt, the image tiling, and ``content`` (the adapter's fingerprint of its files: a replay file, a checkpoint, a
    package), so an edited file is a new run, never a silent reuse of old answers."""
    key = {"model": cfg.model, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
    if cfg.extra_body:
        key["extra_body"] = cfg.extra_body
    if cfg.system_prompt is not None:
        key["system_prompt"] = cfg.system_prompt
    if cfg.dynres:
        key["dynres"] = cfg.dynres
    if content is not None:
        key["content"] = content
    return "run-" + hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict:
    import numpy

    from bluelm_v import __version__

    out = {"bluelm_v": __version__, "python": platform.python_version(), "pandas": pd.__version__,
           "numpy": numpy.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


class Runner:
    def __init__(self, cfg: RunConfig, *, rank: int = 0, world: int = 1, barrier: Callable[[], None] | None = None):
        if not 0 <= rank < world:
            raise EvaluationError(f"rank {rank} out of range for world size {world}")
        self.cfg, self.rank, self.world = cfg, rank, world
        self.barrier = barrier or (lambda: None)
        self.datasets = expand_data(cfg.data)
        if not self.datasets:
            raise EvaluationError("no dataset given (--data NAME[,NAME...])")
        if cfg.model_name is not None:
            plain_name(cfg.model_name, "--model-name")
        if cfg.run_id is not None:
            plain_name(cfg.run_id, "--run-id")
        self.judge = None
        self.adapter: ModelAdapter | None = None
        self.resolved: dict[str, Resolved] = {}
        self.status: dict = {}
        self.problems: list[str] = []  # what makes this invocation exit non-zero (the scores are kept)

    # ---- set-up: check first, then spend ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything that can fail before the first sample: datasets found, MD5- and header-checked; keys
        matched to endpoints; the judge and the model reachable. Nothing is written before this passes."""
        for name, path in self.datasets:
            self.resolved[name] = resolve_dataset(name, path, root=self.cfg.data_root, check_md5=self.cfg.check_md5)
        judge_url = None
        if isinstance(self.cfg.judge, str):
            judge_url = parse_judge_spec(self.cfg.judge)[0]
        model_url = endpoint_of(self.cfg.model)
        keys = resolve_keys(model_url, judge_url, model_env=self.cfg.api_key_env,
                            judge_env=self.cfg.judge_api_key_env)
        self.key_sources = keys.describe()
        if self.cfg.judge is not None:
            self.judge = make_judge(self.cfg.judge, api_key=keys.judge) if judge_url else make_judge(self.cfg.judge)
            if self.rank == 0:
                self.judge.check()
        options: dict = {"max_new_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature}
        if model_url is not None:
            options.update(api_key=keys.model, extra_body=self.cfg.extra_body, system_prompt=self.cfg.system_prompt)
            if self.cfg.timeout is not None:
                options["timeout"] = self.cfg.timeout
        elif self.cfg.extra_body or self.cfg.system_prompt is not None or self.cfg.timeout is not None:
            raise EvaluationError("--extra-body, --system-prompt and --timeout apply to HTTP endpoints (openai:) only")
        if self.cfg.batch_size > 1:
            options["batch_size"] = self.cfg.batch_size
        if self.cfg.dynres:
            options["dynres"] = self.cfg.dynres
        self.adapter = make_adapter(self.cfg.model, **options)
        if self.cfg.batch_size > 1 and not callable(getattr(self.adapter, "generate_batch", None)):
            raise AdapterError(f"--batch-size {self.cfg.batch_size}: the {self.adapter.kind} adapter does not batch "
                               "(hf: and torch: do; openai: takes --api-nproc instead)")
        self.adapter.check(datasets=list(self.resolved))
        with_images = [n for n, r in self.resolved.items() if r.has_images]
        if with_images and not self.adapter.takes_images:
            raise AdapterError(f"{self.cfg.model} cannot take images ({self.adapter.why_no_images()}); "
                               f"{', '.join(with_images)} are image benchmarks")

    def open(self) -> Path:
        if self.adapter is None:
            self.prepare()
        self.model_name = plain_name(self.cfg.model_name or self.adapter.name, "model name")
        self.run_id = self.cfg.run_id or default_run_id(self.cfg, self.adapter.identity())
        work = Path(self.cfg.work_dir)
        self.run_dir = work / self.model_name / self.run_id
        if not self.run_dir.resolve().is_relative_to(work.resolve()):
            raise EvaluationError(f"run folder {self.run_dir} would lie outside --work-dir {work}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir / f".lock.rank{self.rank}")  # a second writer is an error, not a duplicate
        if self.judge is not None:
            self.judge = CachedJudge(self.judge, self.run_dir / "judge_cache.jsonl")
        status_path = self.run_dir / "status.json"
        old = json.loads(status_path.read_text()) if status_path.exists() else {}
        self.status = {
            "run_id": self.run_id, "model": self.cfg.model, "model_name": self.model_name,
            "adapter": self.adapter.describe(), "argv": self.cfg.argv, "versions": versions(), "git": git_hash(),
            "judge": describe_judge(self.judge), "keys": self.key_sources, "world_size": self.world,
            "requests": {"api_nproc": self.cfg.api_nproc, "batch_size": self.cfg.batch_size,
                         "rate_limit_rpm": self.cfg.rate_limit, "timeout_s": self.cfg.timeout,
                         "extra_body": self.cfg.extra_body, "system_prompt": self.cfg.system_prompt},
            "started": old.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")), "invocations": old.get("invocations", 0) + 1,
            "datasets": old.get("datasets", {}),
        }
        self._save_status()
        return self.run_dir

    def _save_status(self) -> None:
        if self.rank == 0:
            write_json_atomic(self.run_dir / "status.json", self.status)

    def _file(self, dataset: str, suffix: str) -> Path:
        return self.run_dir / f"{self.model_name}_{dataset}{suffix}"

    def _logs(self, dataset: str) -> list[Path]:
        return sorted(self.run_dir.glob(f"{self.model_name}_{dataset}.rank*.log.jsonl"))

    # ---- inference ----------------------------------------------------------------------------------------------
    def infer(self, ds: Dataset) -> dict:
        """Run this rank's share of the dataset; every finished sample is durable as soon as it finishes."""
        name = ds.bench.name
        rows = ds.rows(self.cfg.limit)
        done = merge_logs(self._logs(name), data=self._data_id(ds))
        mine = [row for i, row in enumerate(rows) if i % self.world == self.rank]
        todo = [row for row in mine if not is_done(done.get(row["index"]))]
        if len(todo) < len(mine):
            print(f"{name}: reusing {len(mine) - len(todo)} of {len(mine)} answers already in {self.run_dir}",
                  file=sys.stderr)
        concurrent = getattr(self.adapter, "concurrent", False)
        nproc = self.cfg.api_nproc if concurrent else 1
        work = SampleWork(self.adapter, get_builder(ds.bench.prompt), ds, self.rank, self.limiter, self._data_id(ds))
        bar = _progress(len(todo), f"{self.model_name}/{name} rank {self.rank}/{self.world}", self.cfg.progress)
        watch = _Watch(self, name, len(mine), len(mine) - len(todo))

        with PredictionLog(self._file(name, f".rank{self.rank}.log.jsonl")) as log:
            def append(entry: dict) -> None:
                log.append(entry)
                watch.see(entry)
                bar.update()
                if watch.failed:
                    bar.set_postfix(failed=watch.failed, refresh=False)

            try:
                computed = run_samples(todo, work, append, nproc=nproc, batch=self.cfg.batch_size,
                                       max_model_errors=self.cfg.max_model_errors)
            finally:
                bar.close()
                watch.flush()
        return {"computed": computed, "example_prompt": work.example}

    def _data_id(self, ds: Dataset) -> str:
        return ds.md5[:12]

    # ---- merging and scoring (rank 0) ---------------------------------------------------------------------------
    def collect(self, ds: Dataset) -> tuple[pd.DataFrame, dict]:
        rows = ds.rows(self.cfg.limit)
        merged = merge_logs(self._logs(ds.bench.name), data=self._data_id(ds))
        table, counts = [], {"rows": len(rows), "ok": 0, "failed": 0, "missing": 0, "failed_by_kind": {}}
        seconds = 0.0
        for row in rows:
            e = merged.get(row["index"])
            fields = Dataset.fields(row)
            if e is None:
                counts["missing"] += 1
                table.append({**fields, "prediction": FAIL_MSG, "status": "missing", "failure": "no prediction"})
                continue
            seconds += float(e.get("seconds") or 0.0)
            if e["status"] == "ok":
                counts["ok"] += 1
                table.append({**fields, "prediction": e["prediction"], "status": "ok", "failure": None})
            else:
                counts["failed"] += 1
                kind = e.get("kind", "model")
                counts["failed_by_kind"][kind] = counts["failed_by_kind"].get(kind, 0) + 1
                table.append({**fields, "prediction": FAIL_MSG, "status": "failed",
                              "failure": f"{kind}: {e.get('reason')}"})
        counts["inference_seconds"] = round(seconds, 3)
        columns = [*ds.frame.columns.drop(["image", "_image_ref"], errors="ignore"), "prediction", "status", "failure"]
        return pd.DataFrame.from_records(table, columns=columns), counts

    def write_predictions(self, name: str, frame: pd.DataFrame) -> None:
        """``.tsv`` and ``.jsonl`` of every row; a failed or missing sample's prediction is VLMEvalKit's failure
        text (as in VLMEvalKit's own files, so they score the same there), its ``status`` and ``failure`` say why."""
        frame.to_csv(self._file(name, ".tsv"), sep="\t", index=False)
        with open(self._file(name, ".jsonl"), "w", encoding="utf-8") as f:
            for rec in frame.to_dict("records"):
                f.write(json.dumps({k: (None if is_missing(v) else v) for k, v in rec.items()},
                                   ensure_ascii=False, default=str) + "\n")

    def export_xlsx(self, name: str, frame: pd.DataFrame) -> str | None:
        """The prediction file as VLMEvalKit writes it (xlsxwriter, strings_to_formulas off: control characters
        become ``_xHHHH_``). Optional: a failure is returned as a note, never raised past the scores."""
        try:
            with pd.ExcelWriter(self._file(name, ".xlsx"), engine="xlsxwriter",
                                engine_kwargs={"options": {"strings_to_formulas": False}}) as writer:
                frame.to_excel(writer, index=False)
        except ImportError:
            return "--export-xlsx needs xlsxwriter (pip install bluelm-v[eval]); no .xlsx written"
        except Exception as exc:  # noqa: BLE001 - an optional export must not lose the scores or the report
            return f"--export-xlsx failed ({type(exc).__name__}: {exc}); the scores and other files are complete"
        return None

    def _score(self, ds: Dataset, records: pd.DataFrame):
        if isinstance(self.judge, CachedJudge):
            self.judge.new_pass()
        return score(ds.bench, records, judge=self.judge, progress=self.cfg.progress)

    def provenance(self, ds: Dataset) -> dict:
        """What this dataset's row says of itself: every invocation scores its own datasets, so a report over
        several invocations describes each row, not one header."""
        return {"model": self.cfg.model, "limit": self.cfg.limit, "limit_note": ds.limit_note(self.cfg.limit),
                "data_origin": ("official file, MD5 checked" if ds.md5_ok else
                                "official name, MD5 differs (--no-md5)" if ds.md5_ok is False else
                                "not the official file (no official MD5 applies)"),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "weights": self.adapter.weights(ds.bench.name)}

    def score_dataset(self, ds: Dataset, frame: pd.DataFrame, counts: dict) -> dict:
        name = ds.bench.name
        scorer = get_scorer(ds.bench.scorer)
        entry = {"scorer": scorer.name, "scorer_version": scorer.version, "judge": describe_judge(self.judge),
                 "counts": counts, "file": str(ds.path), "md5": ds.md5, "md5_official": ds.md5_ok,
                 "prompt": {"builder": ds.bench.prompt, "version": get_builder(ds.bench.prompt).version},
                 **self.provenance(ds), "notes": list(ds.notes)}
        if entry["limit_note"]:
            entry["notes"].append(entry["limit_note"])
        not_ok = counts["failed"] + counts["missing"]
        if not_ok:
            entry["notes"].append(f"{not_ok} of {counts['rows']} sample(s) failed or have no prediction: scored as "
                                  f"VLMEvalKit scores them (its failure text as the prediction: wrong); 'ok only' "
                                  f"covers the other {counts['ok']}")
        if not counts["ok"] and counts["rows"]:
            self.problems.append(f"{name}: every one of its {counts['rows']} samples failed "
                                 f"({_kinds(counts['failed_by_kind'])}); the first reasons are in "
                                 f"{self._file(name, '.tsv').name}")
        if not counts["rows"]:
            self.problems.append(f"{name}: no sample to run (every row was dropped or the file has none)")
        if not ds.bench.has_answers:
            entry.update(state="unscored", reason=ds.bench.note)
            self.problems.append(f"{name}: unscored: {ds.bench.note}; predictions are in "
                                 f"{self._file(name, '.tsv').name}")
            return entry
        records = frame.drop(columns=["status", "failure"])
        ok = frame[frame["status"] == "ok"].drop(columns=["status", "failure"])
        start = time.perf_counter()
        try:
            result = self._score(ds, records)
        except JudgeRequired as exc:
            entry.update(state="unscored", reason=str(exc))
            self.problems.append(f"{name}: unscored: {exc}")
            return entry
        except ScoringError as exc:
            entry.update(state="scoring failed", reason=str(exc))
            self.problems.append(f"{name}: scoring failed: {exc}")
            return entry
        stats = result.judge_stats
        entry["judge_stats"] = stats
        if isinstance(self.judge, CachedJudge):
            entry["judge_calls"] = {"asked": self.judge.calls, "cached": self.judge.hits}
        if stats.get("replies") and stats["unparsed"] / stats["replies"] > JUDGE_FAILURE_LIMIT:
            reason = (f"{stats['unparsed']} of {stats['replies']} judge replies could not be read (limit "
                      f"{JUDGE_FAILURE_LIMIT:.0%}); examples: " + "; ".join(repr(e) for e in stats["examples"]))
            entry.update(state="judge failed", reason=reason, metrics_if_trusted=result.metrics)
            self.problems.append(f"{name}: judge failed: {reason}")
        else:
            entry.update(state="scored", metrics=result.metrics)
        entry["scoring_seconds"] = round(time.perf_counter() - start, 4)
        entry["notes"] += result.notes
        if not_ok and not ok.empty and entry["state"] == "scored":
            try:
                entry["metrics_ok_only"] = self._score(ds, ok).metrics
            except ScoringError as exc:
                entry["notes"].append(f"'ok only' cannot be scored: {exc}")
        write_json_atomic(self._file(name, "_score.json"), {**entry, "tables": result.tables})
        flat = flatten(result.metrics)
        pd.DataFrame({"metric": list(flat), "value": list(flat.values())}).to_csv(self._file(name, "_acc.csv"),
                                                                              index=False)
        with open(self._file(name, "_records.jsonl"), "w", encoding="utf-8") as f:
            for rec in result.per_record:
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        return entry

    # ---- the whole run ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.prepare()
        self.limiter = RateLimiter(self.cfg.rate_limit)
        self.open()
        try:
            for name, _ in self.datasets:
                ds = load_dataset(name, resolved=self.resolved[name])
                t0 = time.perf_counter()
                info = self.infer(ds)
                self.barrier()
                if self.rank != 0:
                    continue
                frame, counts = self.collect(ds)
                self.write_predictions(name, frame)
                entry = self.score_dataset(ds, frame, counts)
                if self.cfg.export_xlsx:
                    problem = self.export_xlsx(name, frame)
                    if problem:
                        entry["notes"].append(problem)
                        self.problems.append(f"{name}: {problem}")
                entry["wall_seconds_this_invocation"] = round(time.perf_counter() - t0, 3)
                entry["computed_this_invocation"] = info["computed"]
                if info["example_prompt"] is not None:
                    entry["prompt"]["example"] = info["example_prompt"]
                elif "prompt" in self.status["datasets"].get(name, {}):
                    entry["prompt"].setdefault("example", self.status["datasets"][name]["prompt"].get("example"))
                self.status["datasets"][name] = entry
                self._save_status()
        finally:
            if self.adapter is not None:
                self.adapter.close()
            self.lock.release()
            if self.rank == 0:
                # Written even when a later dataset fails: the report covers what was scored.
                from bluelm_v.evaluation.report import write_report

                self.status.pop("progress", None)
                self.status["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                self.status["problems"] = list(self.problems)
                self._save_status()
                write_report(self.run_dir / "report.md", self.status)
        return self.status


def flatten(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _kinds(by_kind: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "none logged"


class _Watch:
    """Progress another terminal or a notebook can follow: ``status.json``'s ``progress`` (dataset, done, total,
    failed, samples/s, ETA) rewritten atomically at most once a second by rank 0."""

    def __init__(self, runner: "Runner", dataset: str, total: int, reused: int):
        self.runner, self.dataset, self.total = runner, dataset, total
        self.done, self.failed, self.new = reused, 0, 0
        self.t0 = self.last = time.monotonic()
        self.flush()

    def see(self, entry: dict) -> None:
        self.done += 1
        self.new += 1
        self.failed += entry["status"] != "ok"
        if time.monotonic() - self.last >= 1.0:
            self.flush()

    def flush(self) -> None:
        if self.runner.rank != 0:
            return
        self.last = now = time.monotonic()
        rate = self.new / (now - self.t0) if now > self.t0 and self.new else 0.0
        left = self.total - self.done
        self.runner.status["progress"] = {
            "dataset": self.dataset, "done": self.done, "total": self.total, "failed": self.failed,
            "samples_per_s": round(rate, 3), "eta_s": round(left / rate, 1) if rate else None,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.runner._save_status()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)


__all__ = ["RunConfig", "Runner", "default_run_id", "expand_data", "flatten"]
