"""Reproduce the paper's device latencies with the simulator (docs/simulator.md).

    python eval/latency_table.py                 # paper vs simulated, error per cell, fitted vs held out
    python eval/latency_table.py --json out.json # also one JSON row per cell
    python eval/latency_table.py --fit           # re-fit the Dimensity 9300 factors and store them first

Cells and settings: configs/suites/latency-targets.json. Goals: every fitted cell within 10%, every held-out
cell within 15%; cells that miss are listed with the reason.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bluelm_v.sim import load_device
from bluelm_v.sim.reproduce import Evaluator, Row, fit, load_targets, write_fit

FIT_GOAL, HELD_OUT_GOAL = 0.10, 0.15


def _fmt(v: float, unit: str) -> str:
    return f"{v:.3g} {unit}" if abs(v) < 100 else f"{v:.0f} {unit}"


def goal(row: Row) -> float:
    return HELD_OUT_GOAL if row.held_out else FIT_GOAL


def rows_table(rows: list[Row]) -> Table:
    t = Table(title="BlueLM-V-3B on the Dimensity 9300: paper vs simulator")
    for col, just in (("cell", "left"), ("paper", "right"), ("simulated", "right"), ("error", "right"),
                      ("role", "left"), ("setting", "left")):
        t.add_column(col, justify=just)
    for r in rows:
        ok = abs(r.rel_error) <= goal(r)
        err = f"[{'green' if ok else 'red'}]{r.rel_error:+.1%}[/]"
        t.add_row(r.cell, _fmt(r.paper, r.unit), _fmt(r.simulated, r.unit), err,
                  "held out" if r.held_out else "fit", r.note)
    return t


def factors_table(device: str) -> Table:
    dev = load_device(device)
    t = Table(title=f"Efficiency factors of {device}")
    for col in ("factor", "value", "source", "note"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for name in dev.efficiency.__dataclass_fields__:
        q = getattr(dev.efficiency, name)
        if q is not None:
            t.add_row(name, f"{q.value:.4g} {q.unit}", q.source, q.note)
    return t


def summary(rows: list[Row], targets) -> tuple[list[str], bool]:
    lines, ok = [], True
    for held, name, g in ((False, "fitted", FIT_GOAL), (True, "held-out", HELD_OUT_GOAL)):
        sel = [r for r in rows if r.held_out == held]
        worst = max(sel, key=lambda r: abs(r.rel_error))
        inside = sum(abs(r.rel_error) <= g for r in sel)
        lines.append(f"{name} cells: {inside}/{len(sel)} within {g:.0%}; worst {worst.cell} {worst.rel_error:+.1%}")
    for r in rows:
        if abs(r.rel_error) > goal(r):
            ok = False
            cav = targets.cell(r.cell).caveat or "no explanation recorded"
            lines.append(f"MISS {r.cell}: paper {_fmt(r.paper, r.unit)}, simulated {_fmt(r.simulated, r.unit)} "
                         f"({r.rel_error:+.0%}). Why: {cav}")
    return lines, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write one JSON row per cell to this file")
    ap.add_argument("--fit", action="store_true", help="re-fit the factors on the 'fit' cells and store them")
    args = ap.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    targets = load_targets()
    if args.fit:
        with console.status("fitting the efficiency factors..."):
            result = fit(targets)
        console.print(f"fitted {', '.join(result.values)} (cost {result.cost:.3g}); stored in {write_fit(result)}")
    ev = Evaluator(targets)
    rows = ev.rows()
    console.print(rows_table(rows))
    console.print(factors_table(targets.fit.device))
    alt = Table(title="Other readings of settings the sources leave open (not in the goals)")
    for col in ("cell", "reading", "paper", "simulated", "error"):
        alt.add_column(col)
    for a, r in ev.alternatives():
        alt.add_row(r.cell, a.label, _fmt(r.paper, r.unit), _fmt(r.simulated, r.unit), f"{r.rel_error:+.1%}")
    console.print(alt)
    lines, ok = summary(rows, targets)
    for line in lines:
        console.print(line, highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
        console.print(f"rows written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
