"""The package as a library in a notebook: entry points visible in dir(bluelm_v) without importing torch, results
that are tables come back as pandas DataFrames, library calls draw no progress bars unless asked, and a missing
optional dependency is one line naming the extra to install."""
import subprocess
import sys

import pandas as pd
import pytest

import bluelm_v


def test_entry_points_are_listed_and_light():
    names = set(dir(bluelm_v))
    assert {"Engine", "plan", "preprocess", "simulate", "score", "FormatError", "LimitError"} <= names
    assert "annotations" not in names
    code = ("import sys, bluelm_v; names = dir(bluelm_v); p = bluelm_v.plan(500, 102); "
            "print(p.grid, 'torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["(2,", "1)", "False", "False"]


def test_results_come_back_as_dataframes():
    from bluelm_v.ablation.alpha import alpha_sweep
    from bluelm_v.ablation.chunk import chunk_sweep
    from bluelm_v.ablation.sizes import mixture_sizes
    from bluelm_v.evaluation import score

    chunk = chunk_sweep([32, 128, 512]).to_frame()
    assert isinstance(chunk, pd.DataFrame) and list(chunk.index) == [32, 128, 512] and "prefill_s" in chunk
    alpha = alpha_sweep(mixture_sizes(50, seed=1), (0.0, 0.1)).to_frame()
    assert len(alpha) >= 2 and "mean_tokens" in alpha and alpha.index.name == "label"
    sim = bluelm_v.simulate("bluelm-v-3b", "dimensity-9300", image=(768, 1536)).to_frame()
    assert sim.index.name == "name" and (sim["seconds"] >= 0).all() and len(sim) >= 3
    records = [{"index": i, "question": "q", "A": "x", "B": "y", "answer": "A", "category": c, "prediction": p}
               for i, (c, p) in enumerate([("c1", "A"), ("c1", "B"), ("c2", "A")])]
    result = score("MMStar", records)
    table = result.to_frame()
    assert list(table.index) == ["none"] and table.loc["none", "Overall"] == pytest.approx(2 / 3)
    assert table.loc["none", "c2"] == 1.0
    assert list(result.records_frame()["hit"]) == [1, 0, 1]


def test_engine_timing_is_a_dataframe_row(tmp_path):
    from bluelm_v.export.package import package
    from bluelm_v.samples import make_sample

    engine = bluelm_v.Engine(package("tiny", tmp_path / "pkg", random=True))
    runs = [engine.chat(make_sample("chart"), "What is it?", max_new_tokens=4).timing.to_frame() for _ in range(2)]
    table = pd.concat(runs, ignore_index=True)
    assert len(table) == 2 and (table["ttft_s"] > 0).all() and (table["tiles"] >= 1).all()


def test_library_calls_draw_no_progress_bars(capsys):
    from bluelm_v.ablation.chunk import chunk_sweep

    chunk_sweep([32, 128])
    assert capsys.readouterr().err == ""
    chunk_sweep([32, 128], progress=True)
    assert "%" in capsys.readouterr().err  # asked for: a bar


def test_a_missing_torch_names_the_cpu_index():
    """PyPI's torch for Linux is the CUDA build; the one-line error points at PyTorch's CPU index."""
    from bluelm_v.cli import missing_extra

    line = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert "pip install 'bluelm-v[torch]'" in line and "--index-url https://download.pytorch.org/whl/cpu" in line
    assert "index-url" not in missing_extra(ModuleNotFoundError("No module named 'gguf'", name="gguf"))


def test_a_missing_extra_is_one_line():
    code = ("import sys; sys.modules['torch'] = None; from bluelm_v.cli import main; "
            "sys.exit(main(['generate', '--model', 'tiny', '--prompt', 'hi']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'bluelm-v[torch]'" in lines[0] and "Traceback" not in done.stderr


def test_packaging_draws_a_bar_only_when_asked(tmp_path, capsys):
    """package() and the GGUF dequantizer drew tqdm bars from library calls; the command line asks for them."""
    from bluelm_v.cli import main
    from bluelm_v.export.package import package

    package("tiny", tmp_path / "quiet", random=True)
    assert "packaging" not in capsys.readouterr().err
    package("tiny", tmp_path / "loud", random=True, progress=True)
    assert "packaging tiny" in capsys.readouterr().err
    assert main(["package", "--model", "tiny", "--random", "--out", str(tmp_path / "cli")]) == 0
    assert "packaging tiny" in capsys.readouterr().err
    assert main(["package", "--model", "tiny", "--random", "--out", str(tmp_path / "cli2"), "--no-progress"]) == 0
    assert "packaging" not in capsys.readouterr().err


def test_run_packages_a_config_quietly_with_no_progress(tmp_path, capsys, monkeypatch):
    """run packages what it is given into the cache first; --no-progress keeps that quiet, as everywhere else."""
    from bluelm_v.cli import main

    monkeypatch.setenv("BLUELM_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "2", "--no-progress"]) == 0
    assert "packaging" not in capsys.readouterr().err
    monkeypatch.setenv("BLUELM_CACHE", str(tmp_path / "cache2"))
    assert main(["run", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "2"]) == 0
    assert "packaging" in capsys.readouterr().err
