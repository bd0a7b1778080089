"""The Markdown report of a run: each dataset's headline number beside the paper's (configs/suites), how it was
scored (scorer version, judge or rule-based), and how many samples failed."""
from __future__ import annotations

from pathlib import Path

from bluelm_v.evaluation.judges import RULE_BASED
from bluelm_v.evaluation.suites import entry_for, headline


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_report(status: dict) -> str:
    lines = [f"# Evaluation report: {status.get('model_name')} ({status.get('run_id')})", "",
             f"- model: `{status.get('model')}`",
             f"- judge: {status.get('judge')}",
             f"- bluelm-v {status.get('versions', {}).get('bluelm_v')}, git {status.get('git') or 'unknown'}, "
             f"world size {status.get('world_size')}, limit {status.get('limit') or 'none'}"]
    if status.get("judge") == RULE_BASED:
        lines.append("- **rule-based scoring, not comparable to judged numbers**: answers the rules cannot read "
                     "count as wrong (VLMEvalKit would ask a judge model there); MathVista is a lower bound and "
                     "MMVet cannot be scored")
    lines += ["", "| dataset | ours | paper | samples (ok / failed / total) | scorer | state |",
              "|---|---|---|---|---|---|"]
    notes = []
    for name, entry in status.get("datasets", {}).items():
        counts = entry.get("counts", {})
        found = entry_for(name)
        ours = headline(found[1], entry.get("metrics", {})) if found and entry.get("state") == "scored" else None
        paper = found[1].paper.value if found and found[1].paper else None
        label = found[1].label if found else name
        state = entry.get("state", "?")
        if state != "scored":
            state += f": {entry.get('reason', '')}"
        lines.append(f"| {label} (`{name}`) | {_fmt(ours)} | {_fmt(paper)} | {counts.get('ok', 0)} / "
                     f"{counts.get('failed', 0)} / {counts.get('rows', 0)} | {entry.get('scorer')} "
                     f"v{entry.get('scorer_version')} | {state} |")
        if found and found[1].paper and found[1].paper.note:
            notes.append(f"- {label}: paper figure: {found[1].paper.note} (source {found[1].paper.source})")
        for n in entry.get("notes", []):
            notes.append(f"- {label}: {n}")
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "Paper figures: Lu et al., BlueLM-V-3B (arXiv 2411.10640), Tables 3 and 4 "
                  "(configs/suites/opencompass.json, ocr.json).", ""]
    return "\n".join(lines)


def write_report(path: Path, status: dict) -> None:
    path.write_text(render_report(status), encoding="utf-8")


__all__ = ["render_report", "write_report"]
