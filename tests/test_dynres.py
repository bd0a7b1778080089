"""Dynamic-resolution API: the paper's examples, bad input, and properties over random sizes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bluelm_v import LimitError, dynres

sizes = st.integers(min_value=1, max_value=6000)


def test_paper_examples():
    assert dynres.plan(500, 102).grid == (2, 1)
    assert dynres.plan(500, 102).canvas == (768, 384)
    assert dynres.plan(394, 390, "llava_next", **dynres.grid_params("llava_next", 3)).grid == (2, 2)
    assert dynres.plan(394, 390, "bluelm", **dynres.grid_params("bluelm", 3)).patches == 1
    p = dynres.plan(380, 76, "internvl", max_num=6)
    assert (p.grid, p.canvas, p.patches, p.tokens_vit, p.tokens_ds) == ((5, 1), (1920, 384), 6, 4374, 1176)
    assert p.area_ratio == pytest.approx(25.5, abs=0.05)
    # Phone screens use 2:4: 9 patches, 6561 tokens before and 1764 after down-sampling.
    s = dynres.plan(1080, 2400)
    assert (s.grid, s.patches, s.tokens_vit, s.tokens_ds) == ((2, 4), 9, 6561, 1764)


def test_alpha_zero_printed_rule_is_not_llava_next():
    # docs/dynamic-resolution.md: with "<" and alpha 0 the first maximal-R_e candidate (the largest canvas) wins.
    assert dynres.plan(394, 390, alpha=0).grid == (4, 4)
    assert dynres.plan(394, 390, alpha=0, clause2="<=").grid == dynres.plan(394, 390, "llava_next").grid


def test_fallback_only_when_every_candidate_keeps_nothing():
    assert dynres.plan(10000, 1).fallback
    assert dynres.plan(10000, 1).grid == (1, 1)
    assert not dynres.plan(1536, 1).fallback
    assert not dynres.plan(10000, 1, "llava_next").fallback


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: dynres.plan(0, 10), ValueError),
        (lambda: dynres.plan(10, -1), ValueError),
        (lambda: dynres.plan(10.5, 10), TypeError),
        (lambda: dynres.plan("10", 10), TypeError),
        (lambda: dynres.plan(100000, 100000), LimitError),
        (lambda: dynres.plan(10, 10, max_pixels=99), LimitError),
        (lambda: dynres.plan(10, 10, "anyres"), ValueError),
        (lambda: dynres.plan(10, 10, alpha=-1), ValueError),
        (lambda: dynres.plan(10, 10, alpha=float("nan")), ValueError),
        (lambda: dynres.plan(10, 10, candidates=[]), ValueError),
        (lambda: dynres.plan(10, 10, candidates=[(1, 2, 3)]), ValueError),
        (lambda: dynres.plan(10, 10, candidates=[(0, 1)]), ValueError),
        (lambda: dynres.plan(10, 10, clause2="<<"), ValueError),
        (lambda: dynres.plan(10, 10, thumbnail="sometimes"), ValueError),
        (lambda: dynres.plan(10, 10, layout="crop"), ValueError),
        (lambda: dynres.plan(10, 10, "internvl", max_num=0), ValueError),
        (lambda: dynres.plan(10, 10, tile=0), ValueError),
        (lambda: dynres.plan(10, 10, alhpa=0.1), TypeError),
    ],
)
def test_bad_input_is_a_clear_error(call, error):
    with pytest.raises(error) as exc:
        call()
    assert str(exc.value)


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="width and height"):
        dynres.plan(0, 5)
    with pytest.raises(TypeError, match="alhpa"):
        dynres.plan(5, 5, alhpa=1)
    with pytest.raises(ValueError, match="index 2"):
        dynres.plan_batch([5, 5, 0], [5, 5, 5])


def test_batch_rejects_bad_arrays():
    with pytest.raises(ValueError):
        dynres.plan_batch([1, 2], [1])
    with pytest.raises(TypeError):
        dynres.plan_batch([1.5], [2])
    assert dynres.plan_batch(np.array([], dtype=np.int64), np.array([], dtype=np.int64))["patches"].shape == (0,)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(sizes, sizes, st.sampled_from(dynres.SCHEMES))
def test_content_fits_the_canvas_and_tiles_cover_it(w, h, scheme):
    p = dynres.plan(w, h, scheme)
    cw, ch = p.content
    W, H = p.canvas
    assert (W, H) == (384 * p.grid[0], 384 * p.grid[1])
    assert 1 <= cw <= W and 1 <= ch <= H
    ox, oy = p.offset
    assert 0 <= ox and ox + cw <= W and 0 <= oy and oy + ch <= H
    if scheme == "internvl":
        assert (cw, ch) == (W, H)
    else:
        # fit_pad keeps the aspect ratio (to a pixel of rounding) and touches two opposite sides.
        assert cw == W or ch == H
        # ceil() adds under one pixel to the derived side: relative aspect error below 1/(side - 1).
        if min(cw, ch) > 1:
            assert abs((cw / ch) / (w / h) - 1) <= 1.0 / (min(cw, ch) - 1) + 1e-9
        assert (ox, oy) == ((W - cw) // 2, (H - ch) // 2)
    assert p.tokens_vit == 729 * p.patches and p.tokens_ds == 196 * p.patches


@settings(max_examples=300, derandomize=True, deadline=None)
@given(sizes, sizes, st.sampled_from([0.05, 0.1, 0.2, 0.5]), st.sampled_from([3, 4]))
def test_relaxed_never_more_tiles_than_llava_next(w, h, alpha, k):
    # Spec "observed invariants" (checked there on 150k sizes): relaxed matching with alpha > 0 never
    # selects more local patches than LLaVA-NeXT on the same grid.
    relaxed = dynres.plan(w, h, "bluelm", alpha=alpha, **dynres.grid_params("bluelm", k))
    llava = dynres.plan(w, h, "llava_next", **dynres.grid_params("llava_next", k))
    assert relaxed.local_patches <= llava.local_patches


@settings(max_examples=200, derandomize=True, deadline=None)
@given(sizes, sizes)
def test_local_patches_non_increasing_in_alpha(w, h):
    counts = [dynres.plan(w, h, alpha=a).local_patches for a in (0.05, 0.1, 0.2, 0.5)]
    assert counts == sorted(counts, reverse=True)


def test_batch_equals_single_on_random_sizes():
    rng = np.random.default_rng(0)
    w = np.exp(rng.uniform(0, np.log(10000), 20000)).astype(np.int64) + 1
    h = np.exp(rng.uniform(0, np.log(10000), 20000)).astype(np.int64) + 1
    for scheme in dynres.SCHEMES:
        out = dynres.plan_batch(w, h, scheme, threads=2)
        for i in range(0, 20000, 97):
            p = dynres.plan(int(w[i]), int(h[i]), scheme)
            assert (out["grid_m"][i], out["grid_n"][i]) == p.grid
            assert (out["content_w"][i], out["content_h"][i]) == p.content
            assert out["fallback"][i] == p.fallback
