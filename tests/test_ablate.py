"""The alpha and chunk-size ablations: size sources, sweep properties, the command line."""
import json
import subprocess
import sys

import numpy as np
from pathlib import Path

import pytest

from bluelm_v import dynres
from bluelm_v.ablation.alpha import alpha_sweep, scheme_specs
from bluelm_v.ablation.chunk import chunk_sweep
from bluelm_v.ablation.sizes import MIXTURE, mixture_sizes, sizes_from_file, sizes_from_images, sizes_from_tsv
from bluelm_v.cli import main
from bluelm_v.image import encode_base64
from bluelm_v.samples import sample_bytes


def run_cli(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "bluelm_v", *args], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})


def test_mixture_is_seeded_and_covers_every_kind():
    a, b, c = mixture_sizes(2000, seed=1), mixture_sizes(2000, seed=1), mixture_sizes(2000, seed=2)
    assert np.array_equal(a.widths, b.widths) and not np.array_equal(a.widths, c.widths)
    assert set(a.kinds) == set(MIXTURE) and (a.widths > 0).all() and (a.heights > 0).all()
    receipts = a.kinds == "receipt"
    assert (a.heights[receipts] > a.widths[receipts]).all()  # tall
    banners = a.kinds == "banner"
    assert (a.widths[banners] > 2 * a.heights[banners]).all()  # wide
    with pytest.raises(ValueError):
        mixture_sizes(0)
    with pytest.raises(ValueError, match="shares"):
        mixture_sizes(10, shares={"sculpture": 1.0})


def test_sizes_files(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("Width,Height,kind\n500,102,banner\n1080,2400,screenshot\n")
    s = sizes_from_file(csv)
    assert list(s.widths) == [500, 1080] and list(s.kinds) == ["banner", "screenshot"]
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"sizes": [[500, 102], {"width": 394, "height": 390}]}))
    assert list(sizes_from_file(js).heights) == [102, 390]
    for text, message in (("w,x\n1,2\n", "no height or h column"), ("w,h\n10,-3\n", "row 0: height"),
                          ("w,h\n10,abc\n", "row 0: height")):
        csv.write_text(text)
        with pytest.raises(ValueError, match=message):
            sizes_from_file(csv)
    js.write_text("[[1, 2], [3]]")
    with pytest.raises(ValueError, match="item 1"):
        sizes_from_file(js)
    js.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        sizes_from_file(js)
    with pytest.raises(FileNotFoundError):
        sizes_from_file(tmp_path / "none.csv")


def test_sizes_from_image_headers(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(sample_bytes("banner"))
    (tmp_path / "sub" / "b.png").write_bytes(sample_bytes("chart"))
    (tmp_path / "notes.txt").write_text("not an image")
    s = sizes_from_images(tmp_path, progress=False)
    assert sorted(zip(s.widths.tolist(), s.heights.tolist())) == [(394, 390), (500, 102)]
    (tmp_path / "bad.png").write_bytes(sample_bytes("banner")[:100])
    with pytest.raises(ValueError, match="bad.png"):
        sizes_from_images(tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .jpg"):
        sizes_from_images(tmp_path / "empty", progress=False)


def test_sizes_from_a_vlmevalkit_tsv(tmp_path):
    b64 = encode_base64(sample_bytes("banner"))
    chart = encode_base64(sample_bytes("chart"))
    tsv = tmp_path / "bench.tsv"
    rows = [("0", b64), ("1", "0"), ("2", repr([chart, b64]))]  # an image, a reference to row 0, two images
    tsv.write_text("index\tquestion\timage\n" + "".join(f"{i}\tq\t{img}\n" for i, img in rows))
    s = sizes_from_tsv(tsv, progress=False)
    assert list(zip(s.widths.tolist(), s.heights.tolist())) == [(500, 102), (500, 102), (394, 390), (500, 102)]
    tsv.write_text("index\timage\n0\t" + b64[:200] + "!!" + b64[200:] + "\n")
    with pytest.raises(ValueError, match="row index 0"):
        sizes_from_tsv(tsv, progress=False)
    tsv.write_text("index\timage\n0\t7\n")
    with pytest.raises(ValueError, match="neither base64 nor the index"):
        sizes_from_tsv(tsv, progress=False)
    tsv.write_text("index\tquestion\n0\tq\n")
    with pytest.raises(ValueError, match="no 'image' column"):
        sizes_from_tsv(tsv, progress=False)


@pytest.fixture(scope="module")
def sweep():
    return alpha_sweep(mixture_sizes(1500, seed=3), (0, 0.05, 0.1, 0.2, 0.5), progress=False)


def test_alpha_sweep_properties(sweep):
    by = {s.label: s for s in sweep.schemes}
    relaxed = sorted((s for s in sweep.schemes if s.scheme == "bluelm" and s.clause2 == "<"), key=lambda s: s.alpha)
    tokens = [s.mean_tokens for s in relaxed]
    assert all(a >= b for a, b in zip(tokens[1:], tokens[2:]))  # non-increasing for alpha > 0
    ttft = [s.ttft_mean_s for s in relaxed[1:]]
    assert all(a >= b for a, b in zip(ttft, ttft[1:]))
    for s in relaxed[1:]:
        assert s.more_than_llava_next == 0  # never more tiles than LLaVA-NeXT
    llava, le0 = by["LLaVA-NeXT"], by["relaxed a=0 (<=)"]
    assert le0.fewer_than_llava_next == le0.more_than_llava_next == 0  # the same grids as LLaVA-NeXT...
    assert le0.mean_tokens <= llava.mean_tokens  # ...but no thumbnail on 1x1 grids (LLaVA-NeXT always adds one)
    assert by["relaxed a=0"].mean_tokens > llava.mean_tokens  # printed rule at alpha 0 is not LLaVA-NeXT
    assert by["relaxed a=0.1"].upscaled_fraction < llava.upscaled_fraction
    assert by["InternVL"].wasted_area == pytest.approx(0.0)  # stretch layout has no padding
    assert sum(by["relaxed a=0.1"].patches_histogram.values()) == sweep.n


def test_alpha_sweep_tokens_match_dynres(sweep):
    sizes = mixture_sizes(1500, seed=3)
    p = dynres.plan_batch(sizes.widths, sizes.heights, "bluelm", **dynres.grid_params("bluelm", 4), alpha=0.1)
    s = next(x for x in sweep.schemes if x.label == "relaxed a=0.1")
    assert s.mean_image_tokens == pytest.approx(p["tokens_ds"].mean())


def test_scheme_specs_reject_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        scheme_specs([1.5], 4)
    with pytest.raises(ValueError, match="clause2"):
        scheme_specs([0.1], 4, "<<")


def test_chunk_sweep_agrees_with_the_papers_t128():
    r = chunk_sweep([32, 128, 512, 2048], progress=False)
    assert r.best_chunk == 128 and r.agrees_with_paper
    p = {row.chunk: row.prefill_s for row in r.rows}
    assert all(2.5 <= v <= 5.0 for v in p.values())  # inside Fig. 8's axis
    assert len({round(row.decode_tokens_per_s, 6) for row in r.rows}) == 1  # decode is always t1
    assert "memory-bound" in r.explanation and "C + t" in r.explanation


def test_cli_alpha_writes_json_and_figures(tmp_path, capsys):
    sizes = tmp_path / "s.csv"
    sizes.write_text("w,h\n500,102\n394,390\n1080,2400\n2016,1512\n576,1800\n")
    out = tmp_path / "out"
    assert main(["ablate", "alpha", "--sizes", str(sizes), "--alphas", "0,0.1,0.5", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "LLaVA-NeXT" in text and "relaxed a=0.1" in text and "not LLaVA-NeXT" in text
    data = json.loads((out / "alpha_ablation.json").read_text())
    assert data["n"] == 5 and len(data["schemes"]) == 6
    for png in ("alpha_ablation.png", "alpha_tiles.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_chunk_and_measure(tmp_path):
    out = tmp_path / "out"
    r = run_cli("ablate", "chunk", "--chunks", "16,32,128,512,2048", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "agrees with the paper's t128" in r.stdout and "[t, C+t]" in r.stdout
    data = json.loads((out / "chunk_ablation.json").read_text())
    assert data["best_chunk"] == 128 and len(data["rows"]) == 5
    assert (out / "chunk_ablation.png").is_file()
    # Measured CPU prefill through the native engine, on the tiny model's package (written to a temporary cache).
    env = {"HOME": str(tmp_path), "BLUELM_CACHE": str(tmp_path / "cache")}
    r = run_cli("ablate", "chunk", "--chunks", "16,64", "--measure", "--measure-model", "tiny", "--measure-tokens",
                "256", "--out", str(out), "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "chunk_ablation.json").read_text())
    rows = data["rows"]
    assert all(row["measured_cpu_prefill_s"] > 0 for row in rows)
    # Measured attention over earlier chunks beside it; the simulated part exists only for dynamic (CPU) attention.
    assert all(row["measured_cpu_attention_s"] >= 0 for row in rows)
    assert all(row["attention_cross_s"] is None for row in rows)
    assert "compare them with --device this-cpu" in r.stdout
    # The JSON says what was measured, not only the simulated sweep's model and prompt.
    m = data["measured"]
    assert m["model"] == "tiny" and m["prompt_tokens"] == 256 and m["weights"] == "seeded random q4_0"
    assert isinstance(m["threads"], int) and m["threads"] >= 1 and m["cpu"] and m["repeats"] == 1
    assert data["model"] == "bluelm-v-3b" and data["prompt_tokens"] == 2048
    # The package is cached where every other command caches (BLUELM_CACHE), and the record names it.
    pkg = Path(m["package"])
    assert pkg.parent == tmp_path / "cache" / "packages" and pkg.name.startswith("tiny-q4_0-")
    assert (pkg / "manifest.json").is_file()


def test_chunk_rows_split_attention_over_earlier_chunks_on_cpu():
    # this-cpu attends the keys so far: the part over earlier chunks is the attention minus the chunks' own
    # triangles, all of it bar a t/N share at small t, none of it in one chunk.
    from bluelm_v.ablation.chunk import chunk_rows

    rows = {r.chunk: r for r in chunk_rows([16, 128, 2048], "smollm2-135m", "this-cpu", 2048, 2048)}
    for t in (16, 128):
        assert 0 < rows[t].attention_cross_s < rows[t].attention_s
    assert rows[16].attention_cross_s / rows[16].attention_s > rows[128].attention_cross_s / rows[128].attention_s
    assert rows[2048].attention_cross_s == 0.0


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "s.csv"
    bad.write_text("w,h\n1,0\n")
    r = run_cli("ablate", "alpha", "--sizes", str(bad), "--out", str(tmp_path))
    assert r.returncode == 1 and "row 0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ablate", "chunk", "--device", "nokia-3310", "--out", str(tmp_path))
    assert r.returncode == 1 and "unknown device config" in r.stderr
