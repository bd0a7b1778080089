"""The simulator's section of ``bluelm-v demo``: the paper's latencies reproduced, what each resolution scheme
costs on the phone for the demo's sample images, and the chunk-size optimum (with a figure)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from bluelm_v import dynres
from bluelm_v.samples import SAMPLES

FIT_GOAL, HELD_OUT_GOAL = 0.10, 0.15
SCHEMES = (("BlueLM-V relaxed", "bluelm", {}), ("LLaVA-NeXT", "llava_next", dynres.grid_params("llava_next", 4)),
           ("InternVL", "internvl", {"max_num": 16}))


def latency_table() -> tuple[Table, bool]:
    from bluelm_v.sim.reproduce import Evaluator, load_targets

    rows = Evaluator(load_targets()).rows()
    t = Table(title="Paper vs simulator, Dimensity 9300 (eval/latency_table.py has every cell)")
    for col in ("cell", "paper", "simulated", "error", "role"):
        t.add_column(col, justify="left" if col in ("cell", "role") else "right")
    ok = True
    for r in rows:
        goal = HELD_OUT_GOAL if r.held_out else FIT_GOAL
        inside = abs(r.rel_error) <= goal
        ok = ok and (inside or r.held_out)
        t.add_row(r.cell, f"{r.paper:.3g} {r.unit}", f"{r.simulated:.3g} {r.unit}",
                  f"[{'green' if inside else 'red'}]{r.rel_error:+.1%}[/]", "held out" if r.held_out else "fit")
    return t, ok


def samples_latency_table(device: str = "dimensity-9300") -> Table:
    from bluelm_v.sim import simulate

    t = Table(title=f"Simulated time to first token on {device} (encode + prefill, 16 text tokens)")
    t.add_column("image")
    for label, _, _ in SCHEMES:
        t.add_column(label, justify="right")
    for name, (w, h, _) in SAMPLES.items():
        cells = []
        for _, scheme, params in SCHEMES:
            plan = dynres.plan(w, h, scheme, **params)
            b = simulate("bluelm-v-3b", device, plan)
            cells.append(f"{b.ttft_s:.2f} s ({plan.patches} tile{'' if plan.patches == 1 else 's'})")
        t.add_row(f"{name} {w}x{h}", *cells)
    return t


def simulator_section(console: Console, out_dir: Path) -> bool:
    from bluelm_v.ablation.chunk import chunk_sweep
    from bluelm_v.ablation.plots import chunk_figure

    table, ok = latency_table()
    console.print(table)
    console.print(samples_latency_table())
    res = chunk_sweep([16, 32, 64, 128, 256, 512, 2048], progress=False)
    fig = chunk_figure(res, out_dir / "chunk_ablation.png")
    agree = "agrees with" if res.agrees_with_paper else "differs from"
    console.print(f"chunked prefill: simulated optimum t{res.best_chunk}, which {agree} the paper's t128; "
                  f"figure: [bold]{fig}[/]")
    return ok
