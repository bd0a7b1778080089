"""The reproduction of the paper's latency cells meets what docs/simulator.md claims."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bluelm_v.config import ConfigError, from_dict, load_raw
from bluelm_v.sim import load_device
from bluelm_v.sim.reproduce import Evaluator, Targets, fit, load_targets

ROOT = Path(__file__).resolve().parents[1]
# The one cell docs/simulator.md says misses, and why (MiniCPM-V's unpublished test image).
DOCUMENTED_MISSES = {"minicpm/image_processing"}


@pytest.fixture(scope="module")
def rows():
    return Evaluator(load_targets()).rows()


def test_targets_hold_the_papers_cells():
    t = load_targets()
    ids = {c.id for c in t.cells}
    for res in ("384x768", "768x768", "768x1152", "768x1536", "768x1920"):
        assert {f"{res}/vit", f"{res}/prefill"} <= ids
    assert {"table5/image_processing", "table5/prefill", "table5/decode", "minicpm/prefill"} <= ids
    paper = {c.id: c.paper for c in t.cells}
    assert paper["768x1920/prefill"] == 4.42 and paper["table5/decode"] == 24.4 and paper["minicpm/prefill"] == 13.9
    assert sum(c.held_out for c in t.cells) >= 10 and sum(not c.held_out for c in t.cells) <= 10


def test_fitted_cells_within_10_percent(rows):
    for r in rows:
        if not r.held_out:
            assert abs(r.rel_error) <= 0.10, r


def test_held_out_cells_within_15_percent_except_the_documented_miss(rows):
    misses = {r.cell for r in rows if r.held_out and abs(r.rel_error) > 0.15}
    assert misses == DOCUMENTED_MISSES


def test_per_resolution_vit_column_follows_from_the_batching(rows):
    for r in rows:
        if r.cell.endswith("/vit"):
            assert abs(r.rel_error) < 0.01, r


def test_stored_factors_are_what_the_fit_gives():
    result = fit()
    stored = load_device(result.device).efficiency
    for name, v in result.values.items():
        assert stored.get(name) == pytest.approx(v, rel=0.01), name
    assert result.cost < 1e-3


def test_targets_refuse_bad_cells():
    raw = load_raw("suites", "latency-targets")
    bad = dict(raw, cells=raw["cells"] + [dict(raw["cells"][0])])
    with pytest.raises(ConfigError, match="duplicate cell"):
        from_dict(Targets, bad)
    bad = dict(raw, cells=[dict(raw["cells"][0], setting="nowhere")])
    with pytest.raises(ConfigError, match="unknown setting"):
        from_dict(Targets, bad)
    bad = dict(raw, cells=[dict(raw["cells"][0], metric="speed")])
    with pytest.raises(ConfigError, match="is not one of"):
        from_dict(Targets, bad)


def test_latency_table_script_writes_json_rows(tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(ROOT / "eval" / "latency_table.py"), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert {"cell", "paper", "simulated", "rel_error", "held_out"} <= set(rows[0])
    assert any(x["cell"] == "768x1536/vit" for x in rows)
    assert "MISS minicpm/image_processing" in r.stdout and "fitted cells: 9/9 within 10%" in r.stdout
