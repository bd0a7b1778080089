"""eval --scheme/--alpha/--grid on torch: and native: models, and `ablate alpha --measure` (issue 17 item 5):
accuracy with bootstrap intervals, the paired difference against the model's own tiling, measured image tokens and
TTFT per alpha, from real eval runs of the tiny model."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from bluelm_v import dynres
from bluelm_v.ablation.measured import bootstrap_mean, question_values
from bluelm_v.image import encode_base64

from eval_helpers import write_tsv

TINY_TILE, TINY_TOKENS_PER_TILE = 70, 9
WIDE = (182, 73)  # at tile 70: 17 tiles at alpha 0, 4 at 0.1, 3 at 0.5 (checked below)


def png_b64(w: int, h: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return encode_base64(buf.getvalue())


def tiles(alpha: float) -> int:
    return dynres.plan(*WIDE, "bluelm", alpha=alpha, tile=TINY_TILE).patches


def mmstar(path, n=6):
    rows = [{"index": i + 1, "question": f"Which one? ({i})", "A": "cat", "B": "dog", "C": "horse", "D": "bird",
             "answer": "ABCD"[i % 4], "category": "coarse", "l2_category": "x", "image": png_b64(*WIDE, i)}
            for i in range(n)]
    return write_tsv(path, rows)


def test_the_wide_test_image_tiles_differently_per_alpha():
    assert (tiles(0.0), tiles(0.1), tiles(0.5)) == (17, 4, 3)


def test_question_values_take_groups_hits_or_scores():
    assert question_values([{"index": 1, "hit": 1}, {"index": 2, "hit": 0}]) == {1: 1.0, 2: 0.0}
    assert question_values([{"index": 1, "score": 0.5}, {"index": 2, "score": float("nan")}]) == {1: 0.5}
    groups = [{"g_index": 7, "hit": 1}, {"g_index": 8, "hit": 0}]
    assert question_values([{"index": 1, "hit": 0}], groups) == {7: 1.0, 8: 0.0}
    with pytest.raises(ValueError, match="no per-question hit or score"):
        question_values([{"index": 1, "log": "x"}])


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_questions():
    rng = np.random.default_rng(0)
    small = (rng.random(40) < 0.6).astype(float)
    large = (rng.random(4000) < 0.6).astype(float)
    lo_s, hi_s = bootstrap_mean(small, 2000, np.random.default_rng(1))
    lo_l, hi_l = bootstrap_mean(large, 2000, np.random.default_rng(1))
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~sqrt(100) narrower
    assert bootstrap_mean(np.ones(30), 500, np.random.default_rng(2)) == (1.0, 1.0)


@pytest.fixture(scope="module")
def tiny_pkg(tmp_path_factory):
    from bluelm_v.export.package import package

    return package("tiny", tmp_path_factory.mktemp("pkg") / "tiny", random=True)


def test_engine_dynres_option_replaces_the_package_tiling(tiny_pkg):
    from bluelm_v import FormatError
    from bluelm_v.engine import Engine

    assert Engine(tiny_pkg).image_tokens(*WIDE) == tiles(0.1) * TINY_TOKENS_PER_TILE  # the package's alpha 0.1
    for alpha in (0.0, 0.5):
        e = Engine(tiny_pkg, dynres={"scheme": "bluelm", "alpha": alpha})
        assert e.image_tokens(*WIDE) == tiles(alpha) * TINY_TOKENS_PER_TILE
    internvl = Engine(tiny_pkg, dynres={"scheme": "internvl", "max_num": 4})
    assert internvl.image_tokens(*WIDE) == \
        dynres.plan(*WIDE, "internvl", max_num=4, tile=TINY_TILE).patches * TINY_TOKENS_PER_TILE
    with pytest.raises(FormatError, match="engine option dynres.*tile"):
        Engine(tiny_pkg, dynres={"scheme": "bluelm", "tile": 384})
    with pytest.raises(FormatError, match="engine option dynres.*alpha"):
        Engine(tiny_pkg, dynres={"scheme": "bluelm", "alpha": -1})
    with pytest.raises(TypeError, match="dynres must be a dict"):
        Engine(tiny_pkg, dynres="bluelm")


def _eval(model, tsv, work, *extra):
    from bluelm_v.cli import main

    return main(["eval", "--model", model, "--data", f"MMStar={tsv}", "--work-dir", str(work), "--no-md5",
                 "--max-new-tokens", "2", "--no-progress", *extra])


def _log_entries(work):
    from bluelm_v.evaluation.store import read_log

    (log,) = work.glob("*/*/*.log.jsonl")
    return read_log(log)[0]


@pytest.mark.parametrize("kind", ["torch", "native"])
def test_eval_scheme_flags_tile_the_model_and_are_part_of_the_run(tmp_path, tiny_pkg, kind, capsys):
    model = "torch:tiny" if kind == "torch" else f"native:{tiny_pkg}"
    tsv = mmstar(tmp_path / "MMStar.tsv", 2)
    seen = {}
    for alpha in (0.0, 0.5):
        work = tmp_path / f"a{alpha}"
        assert _eval(model, tsv, work, "--scheme", "bluelm", "--alpha", str(alpha)) == 0
        entries = _log_entries(work)
        assert [e["timing"]["image_tokens"] for e in entries] == [tiles(alpha) * TINY_TOKENS_PER_TILE] * 2
        assert all(e["timing"]["ttft_s"] > 0 for e in entries)
        status = json.loads(next(work.glob("*/*/status.json")).read_text())
        assert status["adapter"]["dynres"] == {"scheme": "bluelm", "alpha": alpha}
        seen[alpha] = next(work.glob("*/*")).name  # the run id
    assert seen[0.0] != seen[0.5]  # another tiling is another run, never a reuse of the other's answers


def test_eval_scheme_on_a_model_that_tiles_its_own_way_is_an_error(tmp_path, capsys):
    tsv = mmstar(tmp_path / "MMStar.tsv", 2)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "m_MMStar.tsv").write_text("index\tprediction\n1\tA\n2\tB\n")
    assert _eval(f"replay:{tmp_path / 'r'}", tsv, tmp_path / "o", "--scheme", "bluelm", "--alpha", "0.2") == 1
    assert "replace the image tiling of torch: and native: models" in capsys.readouterr().err


def test_ablate_alpha_measure_gives_accuracy_intervals_paired_differences_tokens_and_ttft(tmp_path, tiny_pkg):
    from bluelm_v.cli import main

    tsv = mmstar(tmp_path / "MMStar.tsv", 6)
    out = tmp_path / "ab"
    assert main(["ablate", "alpha", "--measure", "--model", f"native:{tiny_pkg}", "--data", f"MMStar={tsv}",
                 "--alphas", "0,0.5", "--no-md5", "--max-new-tokens", "2", "--resamples", "500", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads((out / "alpha_measured.json").read_text())
    assert (out / "alpha_measured.png").stat().st_size > 10_000
    own, a0, a5 = res["settings"]
    assert [s["label"] for s in res["settings"]] == ["own tiling", "alpha 0", "alpha 0.5"]
    assert own["dynres"] is None and a5["dynres"] == {"scheme": "bluelm", "alpha": 0.5, "candidates":
                                                     [list(g) for g in dynres.square_grid(4, descending=True)]}
    assert [s["mean_image_tokens"] for s in (own, a0, a5)] == [t * TINY_TOKENS_PER_TILE for t in (4, 17, 3)]
    for s in (own, a0, a5):
        assert s["questions"] == 6 and s["samples"] == 6 and s["ttft_median_s"] > 0
        assert s["ci_low"] <= s["accuracy"] <= s["ci_high"]
        # the accuracy is the eval's own headline (MMStar Overall) of that run
        score = json.loads(next((tmp_path / "ab" / "runs").glob(f"*/{s['run_dir'].rsplit('/', 1)[-1]}/*_score.json"))
                           .read_text())
        assert s["accuracy"] == pytest.approx(score["metrics"]["none"]["Overall"], abs=1e-9)
    # a second run reuses every answer (same runs folder), and gives the same figures
    assert main(["ablate", "alpha", "--measure", "--model", f"native:{tiny_pkg}", "--data", f"MMStar={tsv}",
                 "--alphas", "0,0.5", "--no-md5", "--max-new-tokens", "2", "--resamples", "500", "--out", str(out),
                 "--no-progress"]) == 0
    again = json.loads((out / "alpha_measured.json").read_text())
    assert [s["accuracy"] for s in again["settings"]] == [s["accuracy"] for s in res["settings"]]


def test_ablate_alpha_measure_needs_data(tmp_path, capsys):
    from bluelm_v.cli import main

    assert main(["ablate", "alpha", "--measure", "--model", "torch:tiny", "--out", str(tmp_path)]) != 0
    assert "needs --data" in capsys.readouterr().err


from bluelm_v.evaluation.adapters import ModelAdapter  # noqa: E402


class OracleAdapter(ModelAdapter):
    """A model whose answers depend on the tiling it is given: right on even indices with its own tiling, right on
    all but every third index at alpha 0.5, never right at alpha 0 (so the accuracies and the paired differences
    are known)."""

    kind, takes_dynres = "oracle", True

    def generate(self, message, *, dataset, index):
        right = "ABCD"[(index - 1) % 4]
        alpha = None if self.dynres is None else self.dynres["alpha"]
        ok = (alpha is None and index % 2 == 0) or (alpha == 0.5 and index % 3 != 0)
        return right if ok else "ABCD"[index % 4]

    def sample_timing(self):
        return {"ttft_s": 0.001, "prompt_tokens": 10, "image_tokens": 9}


def test_measured_accuracies_and_paired_differences_are_the_known_ones(tmp_path):
    from bluelm_v.ablation.measured import measure_alpha
    from bluelm_v.evaluation.adapters import ADAPTERS, register_adapter

    register_adapter("oracle", "test_ablate_measured:OracleAdapter")
    try:
        tsv = mmstar(tmp_path / "MMStar.tsv", 60)
        res = measure_alpha("oracle:x", f"MMStar={tsv}", [0.0, 0.5], work_dir=tmp_path / "runs", resamples=1000,
                            check_md5=False)
    finally:
        ADAPTERS.pop("oracle")
    own, a0, a5 = res.settings
    assert (own.accuracy, a0.accuracy, a5.accuracy) == (50.0, 0.0, pytest.approx(100 * 40 / 60))
    assert (a0.diff, a5.diff) == (-50.0, pytest.approx(100 * 40 / 60 - 50))
    # a5 vs own, per question: +1 on 20 odd non-multiples of 3, -1 on 10 even multiples of 3, 0 elsewhere
    # (mean 1/6, sd 0.687): the normal approximation's half-width is 1.96 * 0.687 / sqrt(60) = 17.4 points
    d = np.array([1] * 20 + [-1] * 10 + [0] * 30)
    half = 1.96 * d.std() / np.sqrt(60) * 100
    assert a5.diff_ci_low < a5.diff < a5.diff_ci_high
    assert (a5.diff_ci_high - a5.diff_ci_low) / 2 == pytest.approx(half, rel=0.2)
    assert a0.diff_ci_high < 0  # -1 on the 30 questions own tiling gets right, 0 elsewhere: clearly worse
    assert own.ci_low < 50.0 < own.ci_high and own.ci_high - own.ci_low < 30
    frame = res.to_frame()
    assert list(frame.index) == ["own tiling", "alpha 0", "alpha 0.5"] and frame.loc["alpha 0", "accuracy"] == 0.0
