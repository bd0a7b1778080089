"""This machine's profile: the measurement writes a valid, sourced profile; the engine hook says it is missing."""
import json
import shutil

import pytest

from bluelm_v.config import config_path
from bluelm_v.sim import load_device
from bluelm_v.sim.measure import measure_bandwidth, measure_cpu_prefill, write_host_profile


def test_bandwidth_measurement_is_positive():
    r = measure_bandwidth(1 << 24, repeats=1)
    assert r["read"] > 1e8 and r["copy"] > 1e8 and r["threads"] >= 1


def test_write_host_profile_keeps_the_profile_valid(tmp_path):
    path = tmp_path / "this-cpu.json"
    shutil.copy(config_path("devices", "this-cpu"), path)
    result = {"read_bandwidth": 12e9, "copy_bandwidth": 20e9, "threads": 2, "fp32_gemm": 80e9, "cpu": "Test CPU",
              "date": "2026-01-02", "quick": True}
    write_host_profile(result, path)
    dev = load_device(path)
    assert dev.dram_bandwidth.value == 20.0 and dev.dram_bandwidth.source == "measured"
    assert "2026-01-02" in dev.dram_bandwidth.note and "Test CPU" in dev.dram_bandwidth.note
    assert dev.cpu.peak["fp32"].value == 80.0 and dev.cpu.peak["int8"].source == "assumed"
    assert json.loads(path.read_text())["measured"]["host"] == "Test CPU"


def test_shipped_this_cpu_profile_was_measured():
    dev = load_device("this-cpu")
    assert dev.dram_bandwidth.source == "measured" and dev.measured.get("date")
    assert dev.cpu.peak["fp32"].source == "measured"


def test_measured_cpu_prefill_through_the_engine(tmp_path):
    got = measure_cpu_prefill([8, 64], "tiny", prompt_tokens=128, package_dir=tmp_path / "pkg", progress=False)
    assert set(got) == {8, 64} and all(v > 0 for v in got.values())
    # Bad requests are refused before anything runs.
    with pytest.raises(ValueError, match="chunk sizes"):
        measure_cpu_prefill([0], "tiny", package_dir=tmp_path / "pkg")


def test_measured_cpu_prefill_packages_a_gguf_with_its_own_weights(smollm2_gguf, tmp_path, monkeypatch):
    # A checkpoint (here the SmolLM2 GGUF) is packaged with its weights, not replaced by a random config package.
    monkeypatch.setenv("BLUELM_CACHE", str(tmp_path / "cache"))
    record: dict = {}
    got = measure_cpu_prefill([32], str(smollm2_gguf), prompt_tokens=64, record=record)
    assert set(got) == {32} and got[32] > 0
    assert record["weights"] == "package" and "random" not in record["package"]
    assert (tmp_path / "cache" / "packages").is_dir()
