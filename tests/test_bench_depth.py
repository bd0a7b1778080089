"""benchmarks/engine_depth.py: depths that do not fit a model's context become rows that say so, not a failed run.

The bluelm-v-3b shape has max_context 4,096, so its pp512@d4096 (4,608 positions) cannot exist; the worker used to
raise on it after filling every other row (the whole run lost). Here the tiny model (max_context 1,024) stands in."""
import importlib.util
import statistics
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def depth():
    spec = importlib.util.spec_from_file_location("bench_engine_depth",
                                                  Path(__file__).parents[1] / "benchmarks" / "engine_depth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_pkg(tmp_path_factory):
    from bluelm_v.export.package import package

    return package("tiny", tmp_path_factory.mktemp("pkg") / "tiny", random=True)


def test_depths_past_max_context_are_skipped_rows_and_the_rest_are_measured(depth, tiny_pkg):
    # tg64@d1000 needs 1,064 positions and pp512@d600 1,112: both past 1,024. The others fit.
    res = depth.worker_depth(str(tiny_pkg), 1, 2, [0, 1000], [0, 256, 600], "int8")
    assert res["max_context"] == 1024
    assert "1000 + 64 positions exceed the model's max_context 1024" == res["tg"]["1000"]["skipped"]
    assert "600 + 512 positions exceed the model's max_context 1024" == res["pp"]["600"]["skipped"]
    assert len(res["tg"]["0"]["step_s"]) == 64
    assert len(res["pp"]["0"]["run_s"]) == 2 and len(res["pp"]["256"]["run_s"]) == 2

    res["_peak_rss_mb"] = 1.0  # what engine.py's child runner adds
    rows = {r["test"]: r for r in depth.depth_rows("tiny", res, 1, layers=2, heads=4, head_dim=16)}
    assert set(rows) == {"tg64@d0", "tg64@d1000", "pp512@d0", "pp512@d256", "pp512@d600"}
    assert rows["tg64@d1000"]["skipped"] and "tokens_per_s" not in rows["tg64@d1000"]
    assert rows["pp512@d600"]["skipped"] and "tokens_per_s" not in rows["pp512@d600"]
    assert rows["tg64@d0"]["tokens_per_s"] > 0 and rows["pp512@d0"]["tokens_per_s"] > 0
    # The measured prefill row at depth is still compared with d0.
    want = statistics.median(res["pp"]["0"]["run_s"]) / statistics.median(res["pp"]["256"]["run_s"])
    assert rows["pp512@d256"]["vs_d0"] == pytest.approx(want, abs=1e-3)
    depth.print_depth_rows(list(rows.values()))  # prints skipped rows without failing


def test_llamacpp_worker_skips_the_same_depths(depth, smollm2_gguf):
    # llama.cpp's worker on the SmolLM2 GGUF with the context capped at 1,024: pp512@d600 used to be left out of the
    # rows silently; now it is a skipped row, as tg64@d1000 already was.
    pytest.importorskip("llama_cpp")
    res = depth.worker_depth_llamacpp(str(smollm2_gguf), 1, 1, [0, 1000], [0, 600], False, 1024, 12960)
    assert res["context"] == 1024
    assert res["tg"]["1000"]["skipped"] == "1000 + 64 positions exceed the model's max_context 1024"
    assert res["pp"]["600"]["skipped"] == "600 + 512 positions exceed the model's max_context 1024"
    assert len(res["tg"]["0"]["step_s"]) == 64 and len(res["pp"]["0"]["run_s"]) == 1
    res["_peak_rss_mb"] = 1.0
    rows = {r["test"]: r for r in depth.depth_rows("smollm2", res, 1, 30, 9, 64, engine="llama.cpp fa=off")}
    assert set(rows) == {"tg64@d0", "tg64@d1000", "pp512@d0", "pp512@d600"}
    assert "tokens_per_s" not in rows["pp512@d600"] and rows["pp512@d0"]["tokens_per_s"] > 0
