"""The main job (``bluelm-v demo``, ``make demo``): what the resolution schemes do to real kinds of images.

Sections run in order; each prints to the console and may write files into the output folder. Later parts of the
project (kernels, engine, simulator) add their own sections to ``SECTIONS``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from bluelm_v import dynres
from bluelm_v.samples import SAMPLES, make_sample

SCHEME_LABELS = {"bluelm": "BlueLM-V relaxed", "llava_next": "LLaVA-NeXT", "internvl": "InternVL"}

# The paper's worked examples (Fig. 3, Fig. 9, §3.2): size, scheme, params, the grid the paper reports.
PAPER_EXAMPLES = [
    ((394, 390), "llava_next", dynres.grid_params("llava_next", 3), (2, 2), "Fig. 3A: 4x the area"),
    ((394, 390), "bluelm", dynres.grid_params("bluelm", 3), (1, 1), "Fig. 3A"),
    ((380, 76), "internvl", {"max_num": 6}, (5, 1), "Fig. 3B: 25x the area"),
    ((380, 76), "bluelm", dynres.grid_params("bluelm", 3), (1, 1), "Fig. 3B"),
    ((380, 393), "llava_next", dynres.grid_params("llava_next", 3), (1, 2), "Fig. 9A: 384x768"),
    ((380, 393), "bluelm", dynres.grid_params("bluelm", 3), (1, 1), "Fig. 9A: 384x384"),
    ((500, 102), "internvl", {"max_num": 6}, (5, 1), "Fig. 9B: 1920x384"),
    ((500, 102), "bluelm", {}, (2, 1), "Fig. 9B: 768x384"),
    ((1080, 2400), "bluelm", {}, (2, 4), "§3.2: phone screens use 2:4"),
]


def paper_examples_table() -> tuple[Table, int]:
    t = Table(title="The paper's worked examples, recomputed")
    for col in ("image", "scheme", "paper", "ours", "canvas", "tokens (729/196)", "area ratio", "source"):
        t.add_column(col)
    mismatches = 0
    for (w, h), scheme, params, expected, source in PAPER_EXAMPLES:
        p = dynres.plan(w, h, scheme, **params)
        ok = p.grid == expected
        mismatches += not ok
        t.add_row(
            f"{w}x{h}", SCHEME_LABELS[scheme], f"{expected[0]}:{expected[1]}",
            f"[{'green' if ok else 'red'}]{p.grid[0]}:{p.grid[1]}[/]", f"{p.canvas[0]}x{p.canvas[1]}",
            f"{p.tokens_vit}/{p.tokens_ds}", f"{p.area_ratio:.2f}", source,
        )
    return t, mismatches


def samples_table(images: dict[str, np.ndarray]) -> Table:
    t = Table(title="Sample images under the three schemes (4x4 grid, each scheme's defaults)")
    for col in ("image", "size", "scheme", "grid", "canvas", "patches", "tokens (ViT / after 2x2)", "upscale", "wasted"):
        t.add_column(col)
    for name, img in images.items():
        h, w = img.shape[:2]
        for scheme in dynres.SCHEMES:
            p = dynres.plan(w, h, scheme)
            t.add_row(
                name if scheme == "bluelm" else "", f"{w}x{h}" if scheme == "bluelm" else "", SCHEME_LABELS[scheme],
                f"{p.grid[0]}:{p.grid[1]}", f"{p.canvas[0]}x{p.canvas[1]}", str(p.patches),
                f"{p.tokens_vit} / {p.tokens_ds}", f"{p.upscale:.2f}x", f"{p.wasted_area:.0%}",
                end_section=scheme == dynres.SCHEMES[-1],
            )
    return t


def canvas_from_tiles(pixels: np.ndarray, plan: dynres.Plan) -> np.ndarray:
    """Reassemble the local tiles (as the ViT sees them) into the canvas, for display."""
    m, n = plan.grid
    tile = pixels.shape[-1]
    start = 1 if plan.thumbnail_first and plan.patches > plan.local_patches else 0
    local = pixels[start:start + m * n]
    rgb = ((local.transpose(0, 2, 3, 1) * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
    return rgb.reshape(n, m, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(n * tile, m * tile, 3)


def tiles_figure(images: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bluelm_v.image import preprocess

    rows, cols = len(images), len(dynres.SCHEMES)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for r, (name, img) in enumerate(images.items()):
        for c, scheme in enumerate(dynres.SCHEMES):
            ax = axes[r][c]
            pre = preprocess(img, scheme)
            plan = pre.plan
            canvas = canvas_from_tiles(pre.pixels, plan)
            step = max(1, max(canvas.shape[:2]) // 384)  # keep the figure small
            ax.imshow(canvas[::step, ::step], extent=(0, canvas.shape[1], canvas.shape[0], 0))
            tile = pre.pixels.shape[-1]
            for x in range(0, plan.canvas[0] + 1, tile):
                ax.axvline(x, color="#ff3b30", lw=1.2)
            for y in range(0, plan.canvas[1] + 1, tile):
                ax.axhline(y, color="#ff3b30", lw=1.2)
            ax.set_xlim(0, plan.canvas[0])
            ax.set_ylim(plan.canvas[1], 0)
            ax.set_xticks([])
            ax.set_yticks([])
            thumb = " + thumbnail" if plan.patches > plan.local_patches else ""
            ax.set_title(f"{SCHEME_LABELS[scheme]}\n{plan.grid[0]}:{plan.grid[1]}{thumb}, {plan.tokens_ds} tokens",
                         fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name}\n{img.shape[1]}x{img.shape[0]}", fontsize=10)
    fig.suptitle("Tiles each scheme cuts (what the ViT sees; red lines are 384-pixel tile borders)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def dynres_section(console: Console, out_dir: Path) -> bool:
    table, mismatches = paper_examples_table()
    console.print(table)
    images = {name: make_sample(name) for name in SAMPLES}
    console.print(samples_table(images))
    fig = tiles_figure(images, out_dir / "dynres_tiles.png")
    console.print(f"figure of the tiles chosen: [bold]{fig}[/]")
    if mismatches:
        console.print(f"[red]{mismatches} paper example(s) do not match[/]")
    return mismatches == 0


def simulator_section(console: Console, out_dir: Path) -> bool:
    from bluelm_v.sim.demo_section import simulator_section as section

    return section(console, out_dir)


SECTIONS: list[tuple[str, Callable[[Console, Path], bool]]] = [
    ("Dynamic resolution", dynres_section),
    ("Device-latency simulator", simulator_section),
]


def run(out_dir: Path, console: Console | None = None) -> bool:
    if console is None:
        import sys

        # Piped output (make demo in CI, a log file) would otherwise be wrapped at 80 columns.
        console = Console() if sys.stdout.isatty() else Console(width=160)
    ok = True
    for title, section in SECTIONS:
        console.rule(f"[bold]{title}")
        ok = section(console, out_dir) and ok
    return ok
