"""Issue 18's targets in the benchmark rows (configs/suites/kernels.json): a row a target applies to says whether it
met it and by how much it missed, and rows it does not apply to carry none."""
import pytest

from bench_helpers import load_benchmark


@pytest.fixture(scope="module")
def bench_kernels():
    return load_benchmark("kernels")


@pytest.fixture(scope="module")
def bench_formats():
    return load_benchmark("engine_formats")


def stream_row(threads=1, nbytes=3 << 20, frac=0.85, ci_low=0.80):
    return {"mode": "stream", "kernel": "gemv", "T": 1, "threads": threads, "bytes": nbytes, "isa": "avx2",
            "format": "q4_0", "fraction_of_probe": frac, "ci_low": ci_low}


def test_streaming_rows_of_2_mb_or_more_at_one_thread_are_held_to_0_88_of_the_read_on_their_median(bench_kernels):
    targets = bench_kernels.load_targets()
    assert targets["stream_1thread"] == {**targets["stream_1thread"], "min_bytes": 2 << 20, "fraction_of_read": 0.88}
    row = stream_row(frac=0.85, ci_low=0.95)  # judged on the median, not ci_low
    bench_kernels.apply_target(row, targets)
    assert row["target"] == 0.88 and row["target_met"] is False and row["missed_by"] == pytest.approx(0.03)
    row = stream_row(frac=0.90, ci_low=0.70)
    bench_kernels.apply_target(row, targets)
    assert row["target_met"] is True and "missed_by" not in row
    row = stream_row(nbytes=(2 << 20) - 1)  # below 2 MB
    bench_kernels.apply_target(row, targets)
    assert "target" not in row
    row = stream_row(threads=2)
    bench_kernels.apply_target(row, targets)
    assert "target" not in row


def test_chunk_128_gemm_rows_keep_their_ci_low_targets(bench_kernels):
    targets = bench_kernels.load_targets()
    row = {"mode": "hot", "kernel": "gemm", "T": 128, "threads": 1, "bytes": 1 << 20, "isa": "avx2", "format": "q4_k",
           "fraction_of_probe": 0.70, "ci_low": 0.50}
    bench_kernels.apply_target(row, targets)
    assert row["target"] == 0.55 and row["target_met"] is False and row["missed_by"] == pytest.approx(0.05)
    hot_gemv = {**row, "kernel": "gemv", "T": 1}
    del hot_gemv["target"], hot_gemv["target_met"], hot_gemv["missed_by"]
    bench_kernels.apply_target(hot_gemv, targets)
    assert "target" not in hot_gemv


def native(quant="q4_0", test="tg64", speedup=1.1, bw=0.75):
    row = {"model": "smollm2-135m", "quant": quant, "test": test, "threads": 2, "engine": "native-int8",
           "speedup_vs_llamacpp": speedup}
    if test == "tg64":
        row["effective_bw_fraction"] = bw
    return row


def test_native_format_rows_say_which_issue_18_targets_they_miss_and_by_how_much(bench_formats):
    targets = bench_formats.load_format_targets()
    assert targets["effective_bw_fraction"] == 0.8 and targets["speedup_vs_llamacpp"] == 1.2
    assert targets["speedup_quants"] == ["q4_0", "q4_k_m"]
    row = native(speedup=1.1, bw=0.75)
    bench_formats.apply_format_targets(row, targets)
    assert row["speedup_missed_by"] == pytest.approx(0.1) and row["effective_bw_missed_by"] == pytest.approx(0.05)
    assert bench_formats.missed_text(row) == "x 0.10, bw 0.05"
    row = native(quant="q4_k_m", test="pp512", speedup=2.5)
    bench_formats.apply_format_targets(row, targets)
    assert row["target_speedup_vs_llamacpp"] == 1.2 and "speedup_missed_by" not in row
    assert "target_effective_bw_fraction" not in row and bench_formats.missed_text(row) == "met"
    row = native(quant="q8_0", speedup=0.9, bw=0.85)  # Q8_0: no speed-up target, the bandwidth one only
    bench_formats.apply_format_targets(row, targets)
    assert "target_speedup_vs_llamacpp" not in row and "effective_bw_missed_by" not in row
    assert bench_formats.missed_text(row) == "met"
    llama = {**native(), "engine": "llama.cpp"}
    del llama["speedup_vs_llamacpp"]
    bench_formats.apply_format_targets(llama, targets)
    assert bench_formats.missed_text(llama) == "" and "target_effective_bw_fraction" not in llama
