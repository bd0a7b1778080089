"""The paper's latency cells (configs/suites/latency-targets.json) beside the simulator, and the fit of the
efficiency factors on the cells marked "fit" (eval/latency_table.py prints and writes both)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from bluelm_v.config import Sourced, config_path, load
from bluelm_v.sim.devices import UNITS, Device, load_device
from bluelm_v.sim.simulate import Breakdown, simulate
from bluelm_v.sim.workload import Deployment, WorkloadSpec

METRICS = ("conv_s", "vit_s", "init_s", "encode_s", "pipeline_hidden_s", "image_processing_s", "prefill_s",
           "ttft_s", "decode_tokens_per_s", "peak_memory_gb")


@dataclass(frozen=True)
class Setting:
    model: str  # a model-config name, or a key of Targets.workloads
    device: str
    deployment: Optional[Deployment] = None  # None: the model config's own deployment
    note: str = ""


@dataclass(frozen=True)
class Cell:
    id: str
    paper: float
    unit: Literal["s", "tok/s", "GB"]
    metric: Literal[METRICS]  # type: ignore[valid-type]
    setting: str
    source: str
    role: Literal["fit", "held_out"]
    image: Optional[tuple[int, int]] = None  # image size; with grid, the canvas is forced to that grid
    grid: Optional[tuple[int, int]] = None
    tiles: Optional[int] = None  # a bare tile count (the Fig. 5 labels)
    prompt_tokens: Optional[int] = None
    text_tokens: Optional[int] = None
    note: str = ""
    caveat: str = ""  # why the cell may miss, printed when it does

    @property
    def held_out(self) -> bool:
        return self.role == "held_out"


@dataclass(frozen=True)
class Alternative:
    """Another reading of a cell's unknown setting, simulated beside it (not part of the fit or the goals)."""

    cell: str
    label: str
    image: Optional[tuple[int, int]] = None
    grid: Optional[tuple[int, int]] = None
    tiles: Optional[int] = None
    prompt_tokens: Optional[int] = None
    text_tokens: Optional[int] = None

    def apply(self, base: Cell) -> Cell:
        """``base`` with this reading's image and prompt in place of its own."""
        changes: dict = {}
        if self.tiles is not None:
            changes.update(tiles=self.tiles, image=None, grid=None)
        elif self.image is not None or self.grid is not None:
            changes.update(image=self.image, grid=self.grid, tiles=None)
        if self.prompt_tokens is not None:
            changes.update(prompt_tokens=self.prompt_tokens)
        elif self.text_tokens is not None:
            changes.update(prompt_tokens=None, text_tokens=self.text_tokens)
        return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class FitSpec:
    device: str
    free: list[str]


@dataclass(frozen=True)
class Targets:
    name: str
    description: str
    settings: dict[str, Setting]
    workloads: dict[str, WorkloadSpec]
    fit: FitSpec
    cells: list[Cell]
    alternatives: list[Alternative] = field(default_factory=list)

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"no cell {cell_id!r}")

    def __post_init__(self):
        ids = [c.id for c in self.cells]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate cell id(s): {', '.join(dup)}")
        for c in self.cells:
            if c.setting not in self.settings:
                raise ValueError(f"cell {c.id}: unknown setting {c.setting!r}")
            if sum(x is not None for x in (c.image or c.grid, c.tiles)) != 1:
                raise ValueError(f"cell {c.id}: give an image/grid or a tile count")
            if not c.paper > 0:
                raise ValueError(f"cell {c.id}: paper value must be positive")
        for a in self.alternatives:
            if a.cell not in ids:
                raise ValueError(f"alternative {a.label!r}: unknown cell {a.cell!r}")


@dataclass(frozen=True)
class Row:
    cell: str
    paper: float
    simulated: float
    rel_error: float
    held_out: bool
    unit: str
    source: str
    note: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_targets(name: str = "latency-targets") -> Targets:
    return load("suites", name, Targets)


class Evaluator:
    """Simulates cells, caching model configs so a fit can call it thousands of times."""

    def __init__(self, targets: Targets):
        self.targets = targets
        self._models: dict[str, object] = {}

    def model(self, name: str):
        if name not in self._models:
            from bluelm_v.models.config import load_model_config

            self._models[name] = self.targets.workloads.get(name) or load_model_config(name)
        return self._models[name]

    def image(self, cell: Cell):
        from bluelm_v import dynres

        if cell.tiles is not None:
            return cell.tiles
        if cell.grid is not None:
            m, n = cell.grid
            w, h = cell.image or (384 * m, 384 * n)
            return dynres.plan(w, h, "bluelm", candidates=[(m, n)])
        return tuple(cell.image)

    def breakdown(self, cell: Cell, device: Optional[Device] = None) -> Breakdown:
        s = self.targets.settings[cell.setting]
        dev = device if device is not None and device.name == s.device else load_device(s.device)
        kw = {} if cell.text_tokens is None else {"text_tokens": cell.text_tokens}
        return simulate(self.model(s.model), dev, self.image(cell), cell.prompt_tokens, deployment=s.deployment, **kw)

    def value(self, cell: Cell, device: Optional[Device] = None) -> float:
        return float(getattr(self.breakdown(cell, device), cell.metric))

    def alternatives(self, device: Optional[Device] = None) -> list[tuple[Alternative, Row]]:
        out = []
        for a in self.targets.alternatives:
            c = a.apply(self.targets.cell(a.cell))
            sim = self.value(c, device)
            out.append((a, Row(c.id, c.paper, sim, (sim - c.paper) / c.paper, c.held_out, c.unit, c.source, a.label)))
        return out

    def rows(self, device: Optional[Device] = None) -> list[Row]:
        out = []
        for c in self.targets.cells:
            sim = self.value(c, device)
            out.append(Row(c.id, c.paper, sim, (sim - c.paper) / c.paper, c.held_out, c.unit, c.source, c.note))
        return out


def with_factors(device: Device, values: dict[str, float], note: str = "") -> Device:
    """``device`` with efficiency factors replaced (values in SI: fractions, seconds)."""
    eff = device.efficiency
    changes = {}
    for name, v in values.items():
        old = getattr(eff, name)
        unit = old.unit if old is not None else ("s" if name.endswith("_call") else "fraction")
        changes[name] = Sourced(v / UNITS[unit], "fitted", unit, note or "fitted")
    return dataclasses.replace(device, efficiency=dataclasses.replace(eff, **changes))


@dataclass
class FitResult:
    device: str
    values: dict[str, float]  # SI
    cells: dict[str, list[str]]  # factor -> fit cells it moves
    cost: float
    rows: list[Row] = field(default_factory=list)


def fit(targets: Optional[Targets] = None, progress: bool = False, base_device: Optional[Device] = None) -> FitResult:
    """Least squares on log(simulated / paper) over the "fit" cells, in log space of the free factors, starting
    from the stored profile (or ``base_device``, whose non-free factors stay as they are)."""
    import numpy as np
    from scipy.optimize import least_squares

    targets = targets or load_targets()
    ev = Evaluator(targets)
    base = base_device if base_device is not None else load_device(targets.fit.device)
    if base.name != targets.fit.device:
        raise ValueError(f"the fit is for {targets.fit.device}, got a profile of {base.name}")
    free = list(targets.fit.free)
    cells = [c for c in targets.cells if not c.held_out]
    x0 = np.log([base.efficiency.get(n) for n in free])
    lo = np.array([math.log(1e-6)] * len(free))
    hi = np.array([math.log(5.0) if n.endswith("_call") else 0.0 for n in free])
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)

    def residuals(x):
        dev = with_factors(base, dict(zip(free, np.exp(x))))
        return np.array([math.log(ev.value(c, dev) / c.paper) for c in cells])

    res = least_squares(residuals, x0, bounds=(lo, hi), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12,
                        verbose=2 if progress else 0)
    values = dict(zip(free, np.exp(res.x).tolist()))
    jac = np.abs(res.jac)
    moved = {n: [c.id for c, j in zip(cells, jac[:, i]) if j > 1e-3] for i, n in enumerate(free)}
    dev = with_factors(base, values)
    return FitResult(base.name, values, moved, float(res.cost), ev.rows(dev))


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def write_fit(result: FitResult) -> Path:
    """Store fitted factors in the device profile (configs/devices/<device>.json), each saying what it was
    fitted on."""
    path = config_path("devices", result.device)
    raw = json.loads(path.read_text(encoding="utf-8"))
    eff = raw.setdefault("efficiency", {})
    for name, v in result.values.items():
        unit = eff.get(name, {}).get("unit") or ("s" if name.endswith("_call") else "fraction")
        cells = ", ".join(result.cells.get(name, [])) or "no cell (unconstrained)"
        eff[name] = {"value": _sig(v / UNITS[unit]), "unit": unit, "source": "fitted",
                     "note": f"on {cells} (eval/latency_table.py --fit, joint least squares on log error)"}
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["Alternative", "Cell", "Evaluator", "FitResult", "Row", "Targets", "fit", "load_targets", "with_factors", "write_fit"]
