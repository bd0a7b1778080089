"""The engine's decode-step profile (Session.start_profile / stop_profile, runtime/llm.h StepProfile) and
benchmarks/decode_profile.py over it, on the tiny model (2 layers, hidden 64, random weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench_helpers import load_benchmark
from bluelm_v.engine import DecodeProfile, Engine

PROMPT = list(range(1, 9))


@pytest.fixture(scope="module")
def tiny_q4(tmp_path_factory):
    from bluelm_v.export.package import package

    return package("tiny", tmp_path_factory.mktemp("pkg") / "tiny_q4", random=True)


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory):
    from bluelm_v.export.package import package

    return package("tiny", tmp_path_factory.mktemp("pkg") / "tiny_f32", random=True, quant="f32", vit_quant="f32")


def _engine(pkg) -> Engine:
    return Engine(str(pkg), threads=1, kv_cache="f16", activations="int8", context=128)


def _profile(e: Engine, steps: int) -> DecodeProfile:
    s = e.session()
    s.prefill(PROMPT, chunk=128)
    s.start_profile()
    tok = PROMPT[-1]
    for _ in range(steps):
        tok = int(s.decode(tok).argmax())
    return s.stop_profile()


def test_five_profiled_steps_count_every_op_and_the_bytes_each_reads(tiny_q4):
    e = _engine(tiny_q4)
    layers = json.loads((tiny_q4 / "manifest.json").read_text())["model"]["llm"]["layers"]
    p = _profile(e, 5)
    assert p.steps == 5
    calls = {(o["op"], o["format"]): o["calls"] for o in p.ops}
    # per step: two norms per layer and the final one, two residual adds per layer, one head
    assert calls[("rms_norm", "")] == 5 * (2 * layers + 1)
    assert calls[("residual", "")] == 5 * 2 * layers
    for op in ("attention", "rope_kv_store", "swiglu"):
        assert calls[(op, "")] == 5 * layers
    for op in ("qkv", "o", "gate_up", "down"):
        assert calls[(op, "q4_0")] == 5 * layers
    assert calls[("head", "q4_0")] == 5
    products = [o for o in p.ops if o["format"]]
    # the products read the packed weights once per step
    assert sum(o["bytes"] for o in products) == 5 * e._e.llm_resident_bytes
    # attention reads every cached position: 9 at the first step after the 8-token prompt, 13 at the fifth
    att = next(o for o in p.ops if o["op"] == "attention")
    assert att["bytes"] == e.kv_bytes_per_token * sum(range(9, 14))
    assert all(o["seconds"] >= 0 for o in p.ops)
    assert sum(o["seconds"] for o in p.ops) <= p.seconds


def test_the_frame_and_summary_split_the_whole_step(tiny_q4):
    p = _profile(_engine(tiny_q4), 4)
    df = p.frame(read_gbps=10.0)
    assert df["share"].sum() == pytest.approx(1.0, abs=1e-9)
    assert df.iloc[-1]["op"] == "other"
    assert df["ms_per_step"].sum() == pytest.approx(1e3 * p.seconds / 4, rel=1e-9)
    head = df[df["op"] == "head"].iloc[0]
    assert head["fraction_of_read"] == pytest.approx(head["gbps"] / 10.0)
    assert np.isnan(df[df["op"] == "rms_norm"].iloc[0]["gbps"])  # reads no weights
    sm = p.summary(read_gbps=10.0)
    assert sm["products_ms"] + sm["attention_ms"] + sm["glue_ms"] == pytest.approx(sm["ms"], rel=1e-9)
    assert sm["effective_bw_fraction"] == pytest.approx(
        (sm["weight_mb"] + sm["kv_mb"]) * 1e6 / (sm["ms"] / 1e3) / 1e9 / 10.0, rel=1e-9)


def test_profiled_decode_steps_give_the_unprofiled_logits_bit_for_bit(tiny_q4):
    e = _engine(tiny_q4)
    a, b = e.session(), e.session()
    la, lb = a.prefill(PROMPT, chunk=128), b.prefill(PROMPT, chunk=128)
    b.start_profile()
    tok = PROMPT[-1]
    for _ in range(6):
        la, lb = a.decode(tok), b.decode(tok)
        np.testing.assert_array_equal(la, lb)
        tok = int(la.argmax())
    assert b.stop_profile().steps == 6


def test_prefill_is_not_profiled_and_stop_without_start_is_an_error(tiny_q4):
    s = _engine(tiny_q4).session()
    s.start_profile()
    s.prefill(PROMPT, chunk=4)
    p = s.stop_profile()
    assert p.steps == 0 and p.ops == ()
    with pytest.raises(ValueError, match="no decode step"):
        p.frame()
    with pytest.raises(ValueError, match="stop_profile"):
        s.stop_profile()
    # a profile that was stopped records nothing more
    s.decode(3)
    s.start_profile()
    assert s.stop_profile().steps == 0


def test_f32_products_report_their_float_weights(tiny_f32):
    cfg = json.loads((tiny_f32 / "manifest.json").read_text())["model"]["llm"]
    p = _profile(_engine(tiny_f32), 2)
    head = next(o for o in p.ops if o["op"] == "head")
    assert head["format"] == "f32"
    assert head["bytes"] == 2 * cfg["vocab"] * cfg["hidden"] * 4
    down = next(o for o in p.ops if o["op"] == "down")
    assert down["bytes"] == 2 * cfg["layers"] * cfg["hidden"] * cfg["intermediate"] * 4


def test_the_benchmark_writes_op_rows_a_step_row_and_a_plot(tiny_q4, tmp_path):
    bench = load_benchmark("decode_profile")
    out, png = tmp_path / "rows.json", tmp_path / "profile.png"
    rows = bench.main(["--packages", str(tiny_q4), "--threads", "1", "--rounds", "2", "--steps", "4", "--depth", "8",
                       "--json", str(out), "--plot", str(png)])
    assert json.loads(out.read_text()) == rows
    step = [r for r in rows if r["op"] == "step"]
    assert len(step) == 1 and step[0]["rounds"] == 2
    assert step[0]["activations"] == "int8" and step[0]["kv_cache"] == "f16"
    assert step[0]["tokens_per_s"] > 0 and step[0]["tokens_per_s_unprofiled"] > 0
    assert 0 < step[0]["effective_bw_fraction_min"] <= step[0]["effective_bw_fraction"] <= \
        step[0]["effective_bw_fraction_max"]
    ops = {(r["op"], r["format"]) for r in rows if r["op"] != "step"}
    assert {("head", "q4_0"), ("attention", ""), ("other", "")} <= ops
    head = next(r for r in rows if r["op"] == "head")
    assert head["calls_per_step"] == 1 and head["fraction_of_read"] > 0
    assert png.stat().st_size > 10_000
    # the deployed default: int16 activations decode as two int8 passes, the products' bytes are the same
    rows16 = bench.main(["--packages", str(tiny_q4), "--threads", "1", "--rounds", "1", "--steps", "2", "--depth", "4",
                         "--activations", "int16", "--kv-cache", "int8"])
    head16 = next(r for r in rows16 if r["op"] == "head")
    assert head16["activations"] == "int16" and head16["mb_per_step"] == head["mb_per_step"]
    with pytest.raises(ValueError, match="does not fit"):
        bench.profile_package(str(tiny_q4), 1, 1, 4, 0)


def test_ab_runs_both_settings_of_a_switch_compares_them_and_restores_the_default(tiny_q4, tmp_path):
    from bluelm_v import _core

    bench = load_benchmark("decode_profile")
    default = _core.kv_prefetch()
    png = tmp_path / "ab.png"
    rows = bench.main(["--packages", str(tiny_q4), "--threads", "1", "--rounds", "3", "--steps", "3", "--depth", "6",
                       "--ab", "kv_prefetch", "--plot", str(png)])
    assert _core.kv_prefetch() == default
    steps = [r for r in rows if r["op"] == "step" and r.get("kind") != "ab"]
    assert sorted(r["switch_on"] for r in steps) == [False, True]
    assert all(r["ab_switch"] == "kv_prefetch" and r["rounds"] == 3 for r in steps)
    ab = [r for r in rows if r.get("kind") == "ab"]
    step = [r for r in ab if r["op"] == "step"]
    assert len(step) == 1 and step[0]["switch_on"] == (not default) and step[0]["rounds"] == 3
    lo, hi = step[0]["tokens_per_s_ratio_ci"]
    assert 0 < lo <= step[0]["tokens_per_s_ratio"] <= hi
    assert step[0]["ms_ratio_ci"][0] <= step[0]["ms_ratio"] <= step[0]["ms_ratio_ci"][1]
    # one comparison per (op, format) that both settings ran, the products and attention among them
    ops = {(r["op"], r["format"]) for r in ab if r["op"] != "step"}
    assert {("head", "q4_0"), ("attention", "")} <= ops
    assert ops == {(r["op"], r["format"]) for r in rows if r.get("kind") != "ab" and r["op"] != "step"}
    assert png.stat().st_size > 10_000


def test_ab_restores_the_switch_after_an_error_and_rejects_unknown_switches(tiny_q4):
    from bluelm_v import _core

    bench = load_benchmark("decode_profile")
    default = _core.decode_prefetch_l2()
    calls = []

    def fail():
        calls.append(_core.decode_prefetch_l2())
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        bench.profile_package(str(tiny_q4), 1, 2, 2, 4, progress=fail, switch="decode_prefetch_l2")
    assert calls == [not default] and _core.decode_prefetch_l2() == default  # round 0 ends on the switched setting
    with pytest.raises(ValueError, match="unknown A/B switch 'warp_drive'"):
        bench.profile_package(str(tiny_q4), 1, 1, 2, 4, switch="warp_drive")
    with pytest.raises(SystemExit):
        bench.main(["--packages", str(tiny_q4), "--ab", "warp_drive"])
