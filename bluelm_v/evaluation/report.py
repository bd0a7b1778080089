"""The Markdown report of a run: each dataset's headline number (VLMEvalKit's: failed samples count as wrong)
beside the figure over successful samples only and the paper's (configs/suites), how it was scored (scorer
version, judge or rule-based), and where each row comes from (model spec, limit, data file, date, weights): a run
folder can hold datasets scored by several invocations, so every row describes itself."""
from __future__ import annotations

from pathlib import Path

from bluelm_v.evaluation.judges import RULE_BASED
from bluelm_v.evaluation.suites import entry_for, headline


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cell(text) -> str:
    """Table-safe text: no pipes or newlines breaking the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ok_only(found, entry: dict) -> str:
    counts = entry.get("counts", {})
    if entry.get("state") != "scored":
        return "-"
    if not counts.get("failed") and not counts.get("missing"):
        return "="  # every sample answered: the same number
    if not found or "metrics_ok_only" not in entry:
        return "-"
    return _fmt(headline(found[1], entry["metrics_ok_only"]))


def render_report(status: dict) -> str:
    lines = [f"# Evaluation report: {status.get('model_name')} ({status.get('run_id')})", "",
             f"- judge: {status.get('judge')}",
             f"- bluelm-v {status.get('versions', {}).get('bluelm_v')}, git {status.get('git') or 'unknown'}, "
             f"world size {status.get('world_size')}",
             "- **ours** is VLMEvalKit's number: a failed or missing sample is scored with VLMEvalKit's failure "
             "text as its prediction (wrong; its MMBench circular group fails). **ok only** is the figure over "
             "successful samples (`=`: every sample answered)."]
    if status.get("judge") == RULE_BASED:
        lines.append("- **rule-based scoring, not comparable to judged numbers**: answers the rules cannot read "
                     "count as wrong (VLMEvalKit would ask a judge model there); MathVista is a lower bound and "
                     "MMVet cannot be scored")
    lines += ["", "| dataset | ours | ok only | paper | samples (ok / failed / missing / total) | limit | data | "
                  "model | weights | scored | scorer | state |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
        limit = entry.get("limit")
        origin = entry.get("data_origin") or ("official MD5" if entry.get("md5_official") else "not official")
        lines.append(" | ".join([
            f"| {label} (`{name}`)", _fmt(ours), _ok_only(found, entry), _fmt(paper),
            f"{counts.get('ok', 0)} / {counts.get('failed', 0)} / {counts.get('missing', 0)} / {counts.get('rows', 0)}",
            "none" if limit is None else str(limit), _cell(origin), f"`{_cell(entry.get('model', status.get('model')))}`",
            _cell(entry.get("weights", "unknown")), _cell(entry.get("date", "?")),
            f"{entry.get('scorer')} v{entry.get('scorer_version')}", _cell(state)]) + " |")
        if found and found[1].paper and found[1].paper.note:
            notes.append(f"- {label}: paper figure: {found[1].paper.note} (source {found[1].paper.source})")
        if "images dropped" in str(entry.get("weights", "")):
            notes.append(f"- {label}: **images dropped**: the model answered from the text alone (a blind baseline)")
        if "random weights" in str(entry.get("weights", "")):
            notes.append(f"- {label}: **random weights**: this number says nothing about a trained model")
        stats = entry.get("judge_stats") or {}
        if stats.get("unparsed"):
            examples = "; ".join(repr(e) for e in stats.get("examples", []))
            notes.append(f"- {label}: {stats['unparsed']} of {stats['replies']} judge replies could not be read "
                         f"(e.g. {_cell(examples)})")
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
