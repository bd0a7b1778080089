"""The alpha ablation measured on a model: accuracy, image tokens and time to first token per alpha, from real
evaluation runs (``bluelm-v ablate alpha --measure``).

Each setting (the model's own tiling, then BlueLM-V's relaxed matching at each alpha) is one ``eval`` run of the
same questions, kept under ``work_dir`` so a re-run reuses its answers. Per question the scorer's own value is read
(``hit`` 0/1, or ``score`` in [0, 1]; an MMBench question group counts once, as its circular evaluation does), so
the accuracy is the benchmark's rule-based headline. Each accuracy gets a bootstrap 95% interval over questions,
and each alpha the paired difference against the model's own tiling on the same questions with its own interval:
the question a researcher asks is whether alpha moves accuracy by more than the resampling noise of this set.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

OWN = "own tiling"


@dataclass
class MeasuredSetting:
    label: str
    dynres: Optional[dict]  # None: the model's own tiling
    alpha: Optional[float]
    questions: int  # scored questions (an MMBench group is one)
    accuracy: float  # %, the mean of the per-question values
    ci_low: float
    ci_high: float
    diff: Optional[float]  # accuracy points against the model's own tiling, same questions (None for it)
    diff_ci_low: Optional[float]
    diff_ci_high: Optional[float]
    samples: int  # rows run (MMBench: every rotation)
    failed: int
    mean_image_tokens: float
    mean_prompt_tokens: float
    ttft_median_s: float
    ttft_mean_s: float
    run_dir: str


@dataclass
class MeasuredAlphaResult:
    model: str
    dataset: str
    limit: Optional[int]
    grid: Optional[int]
    resamples: int
    seed: int
    settings: list[MeasuredSetting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self):
        """One row per setting (label as the index)."""
        import pandas as pd

        return pd.DataFrame([asdict(s) for s in self.settings]).set_index("label")


def question_values(per_record: list[dict], per_group: Optional[list[dict]] = None) -> dict:
    """{question key: value in [0, 1]} from a scorer's records: the group's hit for circular benchmarks, else each
    record's ``hit`` or ``score``."""
    if per_group:
        return {g["g_index"]: float(g["hit"]) for g in per_group}
    out = {}
    for rec in per_record:
        value = rec.get("hit", rec.get("score"))
        if value is None:
            raise ValueError("the benchmark's scorer gives no per-question hit or score; ablate alpha --measure "
                             "needs one (multiple choice, VQA, OCR and yes/no benchmarks have it)")
        value = float(value)
        if np.isfinite(value):
            out[rec["index"]] = value
    return out


def bootstrap_mean(values: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` resampled with replacement."""
    if len(values) == 0:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _run_setting(model: str, data: str, dynres: Optional[dict], *, work_dir: Path, limit: Optional[int],
                 max_new_tokens: int, progress: bool, data_root: Optional[str], check_md5: bool):
    from bluelm_v.evaluation.runner import Runner, RunConfig
    from bluelm_v.evaluation.store import merge_logs

    cfg = RunConfig(model=model, data=[data], work_dir=work_dir, limit=limit, max_new_tokens=max_new_tokens,
                    progress=progress, dynres=dynres, data_root=data_root, check_md5=check_md5,
                    argv=["ablate", "alpha", "--measure"])
    runner = Runner(cfg)
    status = runner.run()
    (name, _), = runner.datasets
    entry = status["datasets"].get(name, {})
    if entry.get("state") != "scored":
        raise RuntimeError(f"{name} was not scored ({entry.get('state', 'no state')}: {entry.get('reason', '')}); "
                           f"see {runner.run_dir / 'report.md'}")
    stem = runner.run_dir / f"{runner.model_name}_{name}"
    records = [json.loads(line) for line in Path(f"{stem}_records.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    per_group = json.loads(Path(f"{stem}_score.json").read_text(encoding="utf-8")).get("tables", {}).get("per_group")
    logs = list(merge_logs(runner._logs(name)).values())
    return runner, name, entry, records, per_group, logs


def measure_alpha(model: str, data: str, alphas: Sequence[float] = (0.0, 0.1, 0.2, 0.5), *, grid: Optional[int] = None,
                  limit: Optional[int] = None, work_dir: str | Path = "ablate-out/runs", max_new_tokens: int = 32,
                  resamples: int = 2000, seed: int = 0, progress: bool = False, data_root: Optional[str] = None,
                  check_md5: bool = True) -> MeasuredAlphaResult:
    """Evaluate ``model`` (an eval spec: ``torch:SPEC`` or ``native:PACKAGE``) on ``data`` (a benchmark name or
    NAME=PATH) with its own tiling and with relaxed matching at each alpha; see the module doc."""
    from bluelm_v.dynres import grid_params

    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    settings: list[tuple[str, Optional[dict], Optional[float]]] = [(OWN, None, None)]
    for a in alphas:
        if not (a >= 0 and np.isfinite(a)):
            raise ValueError(f"alpha must be a finite number >= 0, got {a}")
        params = {"scheme": "bluelm", "alpha": float(a), **(grid_params("bluelm", grid) if grid else {})}
        settings.append((f"alpha {a:g}", params, float(a)))
    result = MeasuredAlphaResult(model=model, dataset=data, limit=limit, grid=grid, resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)
    own: dict = {}
    for label, dynres, alpha in settings:
        runner, name, entry, records, per_group, logs = _run_setting(
            model, data, dynres, work_dir=Path(work_dir), limit=limit, max_new_tokens=max_new_tokens,
            progress=progress, data_root=data_root, check_md5=check_md5)
        result.dataset = name
        values = question_values(records, per_group)
        keys = sorted(values, key=str)
        v = np.array([values[k] for k in keys], dtype=np.float64)
        low, high = bootstrap_mean(v, resamples, rng)
        diff = diff_low = diff_high = None
        if label == OWN:
            own = values
        else:
            common = [k for k in keys if k in own]
            d = np.array([values[k] - own[k] for k in common], dtype=np.float64)
            if len(d):
                diff = float(d.mean() * 100)
                lo, hi = bootstrap_mean(d, resamples, rng)
                diff_low, diff_high = lo * 100, hi * 100
        timings = [e["timing"] for e in logs if e.get("status") == "ok" and isinstance(e.get("timing"), dict)]
        ttft = np.array([t["ttft_s"] for t in timings], dtype=np.float64)
        result.settings.append(MeasuredSetting(
            label=label, dynres=dynres, alpha=alpha, questions=len(v), accuracy=float(v.mean() * 100) if len(v) else
            float("nan"), ci_low=low * 100, ci_high=high * 100, diff=diff, diff_ci_low=diff_low,
            diff_ci_high=diff_high, samples=len(logs), failed=sum(1 for e in logs if e.get("status") != "ok"),
            mean_image_tokens=float(np.mean([t["image_tokens"] for t in timings])) if timings else float("nan"),
            mean_prompt_tokens=float(np.mean([t["prompt_tokens"] for t in timings])) if timings else float("nan"),
            ttft_median_s=float(np.median(ttft)) if len(ttft) else float("nan"),
            ttft_mean_s=float(ttft.mean()) if len(ttft) else float("nan"), run_dir=str(runner.run_dir)))
        for note in entry.get("notes", []) or []:
            if note not in result.notes:
                result.notes.append(note)
    if not any(s.mean_image_tokens == s.mean_image_tokens for s in result.settings):
        result.notes.append("the adapter measured no per-sample timing: image tokens and TTFT are missing")
    return result


def measured_figure(res: MeasuredAlphaResult, path: str | Path) -> Path:
    """Accuracy with its 95% interval per alpha (the own tiling as a band), and the measured TTFT and image tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    own = res.settings[0]
    alphas = [s for s in res.settings if s.alpha is not None]
    x = [s.alpha for s in alphas]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.axhspan(own.ci_low, own.ci_high, color="0.85", label=f"{OWN}: {own.accuracy:.1f}% (95% CI)")
    ax1.axhline(own.accuracy, color="0.4", lw=1)
    ax1.errorbar(x, [s.accuracy for s in alphas],
                 yerr=[[s.accuracy - s.ci_low for s in alphas], [s.ci_high - s.accuracy for s in alphas]],
                 fmt="o-", capsize=4, label="relaxed matching (bootstrap 95% CI)")
    ax1.set_xlabel("alpha")
    ax1.set_ylabel(f"{res.dataset} accuracy (%)")
    ax1.set_title(f"{res.model}: {own.questions} questions")
    ax1.legend(fontsize=8)
    ax2.plot(x, [s.ttft_median_s for s in alphas], "o-", color="C1", label="TTFT median (measured)")
    ax2.axhline(own.ttft_median_s, color="C1", ls="--", lw=1, label=f"{OWN} TTFT")
    ax2.set_xlabel("alpha")
    ax2.set_ylabel("time to first token (s)")
    ax3 = ax2.twinx()
    ax3.plot(x, [s.mean_image_tokens for s in alphas], "s:", color="C2", label="image tokens (mean)")
    ax3.set_ylabel("image tokens per sample")
    lines = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax2.legend(lines, [h.get_label() for h in lines], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["MeasuredAlphaResult", "MeasuredSetting", "bootstrap_mean", "measure_alpha", "measured_figure",
           "question_values"]
