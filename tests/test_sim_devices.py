"""Device profiles: every number sourced, inherited factors, bad profiles refused with the field named."""
import json
import re
from pathlib import Path

import pytest

from bluelm_v.config import ConfigError, load_raw
from bluelm_v.sim import list_devices, load_device
from bluelm_v.sim.devices import Efficiency, si

SHIPPED = ("dimensity-9300", "dimensity-9400", "snapdragon-8-gen-3", "this-cpu")
# The source key users have: the first column of docs/sources.md's table.
SOURCES = (Path(__file__).resolve().parent.parent / "docs" / "sources.md").read_text()
FACT_TAGS = set(re.findall(r"^\| ([\w-]+) \|", SOURCES.split("## Source key")[1].split("\n## ")[0], re.M)) - {"tag"}


def _sourced(raw):
    """Every {"value", "source", ...} object in a raw profile."""
    if isinstance(raw, dict):
        if "value" in raw and "source" in raw:
            yield raw
        else:
            for v in raw.values():
                yield from _sourced(v)


def test_shipped_profiles_load_with_all_factors():
    assert set(SHIPPED) <= set(list_devices())
    for name in SHIPPED:
        dev = load_device(name)
        needed = Efficiency.CPU_FIELDS + (Efficiency.NPU_FIELDS if dev.has_npu else ())
        for f in needed:
            assert dev.efficiency.get(f) > 0, (name, f)
    assert load_device("dimensity-9300").has_npu and not load_device("this-cpu").has_npu


def test_every_number_says_where_it_comes_from():
    for name in SHIPPED:
        for q in _sourced(load_raw("devices", name)):
            tags = [t.strip("[],;") for t in re.split(r"[ ,]+", q["source"]) if t.strip("[],;?")]
            assert tags and set(tags) <= FACT_TAGS, (name, q)  # each tag is explained in docs/sources.md
            tag = tags[0]
            if tag in ("fitted", "measured"):
                assert q.get("note"), (name, q)  # says what it was fitted on / measured with


def test_fitted_factors_name_their_cells():
    raw = load_raw("devices", "dimensity-9300")
    fitted = {k: v for k, v in raw["efficiency"].items() if v["source"] == "fitted"}
    assert len(fitted) >= 6
    for v in fitted.values():
        assert v["note"].startswith("on ") and "placeholder" not in v["note"]


def test_what_if_profiles_inherit_the_9300_factors():
    d93, d94 = load_device("dimensity-9300"), load_device("dimensity-9400")
    assert d94.efficiency.npu_llm == d93.efficiency.npu_llm
    assert si(d94.dram_bandwidth) > si(d93.dram_bandwidth)
    assert d94.npu.rate("int16") > d93.npu.rate("int16")


def _write(tmp_path, mutate):
    raw = load_raw("devices", "dimensity-9300")
    mutate(raw)
    p = tmp_path / "dev.json"
    p.write_text(json.dumps(raw))
    return p


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["dram_bandwidth"].update(unit="furlongs"), "unit 'furlongs'"),
    (lambda r: r["dram_bandwidth"].update(value=-1), "must be positive"),
    (lambda r: r["efficiency"]["npu_llm"].update(note=""), "must say in its note"),
    (lambda r: r["efficiency"]["npu_llm"].update(value=1.5), "cannot exceed 1"),
    (lambda r: r["efficiency"].pop("npu_memory"), "npu_memory missing"),
    (lambda r: r["npu"]["peak"].update(int3={"value": 1, "unit": "TOPS", "source": "D"}), "unknown precision"),
    (lambda r: r.update(efficiency_from="dev"), "cycle"),
    (lambda r: r["efficiency"]["cpu_call"].update(unit="fraction"), "unit 'fraction'"),
])
def test_bad_profiles_are_refused(tmp_path, mutate, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_device(_write(tmp_path, lambda r: (mutate(r), r.update(name="dev"))))


def test_unknown_device_and_missing_precision():
    with pytest.raises(ConfigError, match="unknown device config"):
        load_device("pixel-9000")
    with pytest.raises(TypeError):
        load_device(42)
    with pytest.raises(ValueError, match="no int4 throughput"):
        load_device("dimensity-9300").npu.rate("int4")
    with pytest.raises(ValueError, match="has no NPU"):
        load_device("this-cpu").processor("npu")
