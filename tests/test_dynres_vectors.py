"""The public dynamic-resolution vectors (tests/data/dynres-vectors.json) must pass exactly:
every record field, every scheme, every size; through plan(), plan_batch() and the named presets."""
import numpy as np
import pytest

from bluelm_v import dynres

PARAM_KEYS = ("candidates", "alpha", "clause2", "min_num", "max_num", "thumbnail", "layout")


def scheme_params(entry: dict) -> tuple[str, dict]:
    """A vector file `schemes` entry -> (scheme, params) of the public API."""
    params = {"candidates": [tuple(c) for c in entry["candidates_in_order"]]}
    for key in PARAM_KEYS[1:]:
        if key in entry:
            params[key] = entry[key]
    return entry["selection"], params


def record(plan: dynres.Plan) -> dict:
    r = {
        "grid": list(plan.grid), "canvas": list(plan.canvas), "content": list(plan.content),
        "patches": plan.patches, "tokens_vit": plan.tokens_vit, "tokens_ds": plan.tokens_ds,
    }
    if plan.fallback:
        r["fallback"] = True
    return r


def test_vector_file_shape(dynres_vectors):
    assert len(dynres_vectors["cases"]) == 157
    assert len(dynres_vectors["schemes"]) == 27


def test_every_record_exact(dynres_vectors):
    mismatches = []
    for name, entry in dynres_vectors["schemes"].items():
        scheme, params = scheme_params(entry)
        for case in dynres_vectors["cases"]:
            got = record(dynres.plan(case["w"], case["h"], scheme, **params))
            want = case["r"][name]
            if got != want:
                mismatches.append((name, case["w"], case["h"], got, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]}"


def test_batch_equals_vectors(dynres_vectors):
    w = np.array([c["w"] for c in dynres_vectors["cases"]])
    h = np.array([c["h"] for c in dynres_vectors["cases"]])
    for name, entry in dynres_vectors["schemes"].items():
        scheme, params = scheme_params(entry)
        out = dynres.plan_batch(w, h, scheme, **params)
        for i, case in enumerate(dynres_vectors["cases"]):
            want = case["r"][name]
            got = {
                "grid": [int(out["grid_m"][i]), int(out["grid_n"][i])],
                "canvas": [int(out["canvas_w"][i]), int(out["canvas_h"][i])],
                "content": [int(out["content_w"][i]), int(out["content_h"][i])],
                "patches": int(out["patches"][i]), "tokens_vit": int(out["tokens_vit"][i]),
                "tokens_ds": int(out["tokens_ds"][i]),
            }
            if out["fallback"][i]:
                got["fallback"] = True
            assert got == want, (name, case["w"], case["h"])


def test_presets_reproduce_vectors(dynres_vectors):
    table = dynres.presets()
    assert set(table) == set(dynres_vectors["schemes"])
    for name, entry in dynres_vectors["schemes"].items():
        # The preset's candidate list is the vector file's enumeration order.
        assert dynres.default_candidates(table[name].scheme, **table[name].params()) == [
            tuple(c) for c in entry["candidates_in_order"]
        ], name
        for case in dynres_vectors["cases"][::5]:
            assert record(dynres.plan_preset(case["w"], case["h"], name)) == case["r"][name], (name, case["id"])


@pytest.mark.parametrize("scheme", dynres.SCHEMES)
def test_defaults_are_the_bluelm4x4_entries(dynres_vectors, scheme):
    names = {"bluelm": "bluelm4x4/bluelm_relaxed@0.1", "llava_next": "bluelm4x4/llava_next", "internvl": "bluelm4x4/internvl"}
    entry = dynres_vectors["schemes"][names[scheme]]
    assert dynres.default_candidates(scheme) == [tuple(c) for c in entry["candidates_in_order"]]
    for case in dynres_vectors["cases"]:
        assert record(dynres.plan(case["w"], case["h"], scheme)) == case["r"][names[scheme]]


def test_summary_means_reproduced(dynres_vectors):
    """The file's per-scheme means over its 157 sizes follow from the records; recompute them from plans."""
    w = np.array([c["w"] for c in dynres_vectors["cases"]])
    h = np.array([c["h"] for c in dynres_vectors["cases"]])
    for name, summary in dynres_vectors["summary"].items():
        if name not in dynres_vectors["schemes"]:
            continue
        scheme, params = scheme_params(dynres_vectors["schemes"][name])
        out = dynres.plan_batch(w, h, scheme, **params)
        assert round(float(out["tokens_ds"].mean()), 2) == pytest.approx(summary["mean_tokens_ds"], abs=0.006)
        assert round(float(out["patches"].mean()), 4) == pytest.approx(summary["mean_patches"], abs=6e-5)
