"""The native engine's vision side for the open VLM families (Idefics3 / SmolVLM, InternVL, LLaVA-OneVision)
against the PyTorch reference on small random models (the families' random_hf, written by HF's classes), and
manifests that lie about the vision side refused by field.

f32 packages + f32 KV cache: the same float32 arithmetic in another order; tile embeddings agree to <= 1e-4 and
every prompt position's logits to <= 1e-3 (measured: 8e-6 / 1e-6 / 2e-6 on the embeddings). The quantized
figures (check-reference at q8_0 and the default precision) are in docs/models.md.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bluelm_v.engine import Engine  # noqa: E402
from bluelm_v.export import package  # noqa: E402
from bluelm_v.models.check_reference import ours_logits  # noqa: E402
from bluelm_v.models.families import _vlm, family  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

ARCHES = ["idefics3", "internvl", "llava_onevision"]
PROMPT = "Describe it."


@pytest.fixture(scope="module", params=ARCHES)
def vlm(request, tmp_path_factory):
    arch = request.param
    tmp = tmp_path_factory.mktemp(arch)
    folder = family(arch).random_hf(tmp / "hf", 0)
    loaded = load_model(folder)
    return arch, folder, loaded, package(loaded, tmp / "pkg", quant="f32", vit_quant="f32")


def engine_logits(pkg, ids, submit, **options):
    session = Engine(pkg, kv_cache="f32", context=len(ids), **options).session()
    submit(session)
    return session.prefill(ids, all_logits=True)


def test_tile_embeddings_match_the_reference(vlm):
    _, _, loaded, pkg = vlm
    s = loaded.config.vision.image_size
    tiles = torch.randn(5, 3, s, s, generator=torch.Generator().manual_seed(1))  # 5: a full batch of 4, then 1
    ref = loaded.vlm.encode_tiles(tiles).numpy()
    got = Engine(pkg).encode_tiles(tiles.numpy())
    assert got.shape == ref.shape == (5, loaded.config.image_tokens_per_tile(), loaded.config.llm.hidden)
    assert np.abs(got - ref).max() <= 1e-4


def test_prompt_logits_on_the_familys_own_pixels_match_the_reference(vlm):
    """HF's processor's pixels (Idefics3's split, InternVL's tiles, LLaVA-OneVision's anyres tiles and layout) fed
    through Session.submit_tiles, the family's prompt ids with their image positions: every position's logits."""
    arch, folder, loaded, pkg = vlm
    inputs = family(arch).reference_inputs(folder, loaded, PROMPT, None, 0, {})
    ids, tiles, layout = inputs["our_ids"], inputs["our_tiles"], inputs["layout"]
    ref = ours_logits(loaded, ids, tiles, layout).numpy()
    got = engine_logits(pkg, ids, lambda s: s.submit_tiles(tiles.numpy(), **layout))
    assert inputs["image_tokens"] > 0 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-3


@pytest.mark.parametrize("dynres", [None, {"scheme": "internvl", "max_num": 2}, {"scheme": "bluelm", "alpha": 0.1}],
                         ids=["own", "internvl-2", "bluelm-0.1"])
def test_engine_tiling_of_an_rgb_image_matches_the_reference(vlm, dynres):
    """The engine's own tiling (the family's scheme in C++, or one of ours in its place through EngineOptions::dynres)
    and layout against the reference's on the same image. Idefics3's own splitting (Pillow LANCZOS) is not in C++:
    Session.submit_image runs the family file's engine_tiles and submits the tiles; our schemes put its global image
    last."""
    arch, folder, loaded, pkg = vlm
    rgb = _vlm.test_image(None, 0)
    block = family(arch).prepare_image(loaded, rgb, dynres or {})
    inputs = _vlm.both_sides(loaded, PROMPT, block)
    ids = inputs["our_ids"]
    ref = ours_logits(loaded, ids, block["tiles"], block["layout"]).numpy()
    eng = Engine(pkg, dynres=dynres)
    assert eng.image_tokens(rgb.shape[1], rgb.shape[0]) == inputs["image_tokens"]
    got = engine_logits(pkg, ids, lambda s: s.submit_image(rgb), dynres=dynres)
    assert np.abs(got - ref).max() <= 1e-3


def test_submit_tiles_checks_shapes(vlm):
    _, _, loaded, pkg = vlm
    session = Engine(pkg).session()
    s = loaded.config.vision.image_size
    with pytest.raises(ValueError, match=f"the ViT takes {s}"):
        session.submit_tiles(np.zeros((1, 3, s + 1, s + 1), np.float32))
    with pytest.raises(ValueError, match=r"tiles must be float32 \[tiles, 3, side, side\]"):
        session.submit_tiles(np.zeros((3, s, s), np.float32))
    if loaded.config.image_layout == "anyres_unpad":
        with pytest.raises(ValueError, match="anyres layout: 3 tiles for a 2x2 grid"):
            session.submit_tiles(np.zeros((3, 3, s, s), np.float32), grid=(2, 2), image_hw=(100, 100))


# ---- hostile manifests ---------------------------------------------------------------------------------------
def edited(pkg, tmp_path, fn):
    out = tmp_path / "edited"
    shutil.copytree(pkg, out)
    m = json.loads((out / "manifest.json").read_text())
    fn(m)
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _set(path, value):
    def fn(m):
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return fn


def _drop_tensor(name):
    return lambda m: m["tensors"].pop(name)


HOSTILE = {
    "merge-0": ("idefics3", _set(["model", "projector", "merge"], 0), r"model\.projector\.merge = 0 is outside"),
    "merge-over-grid": ("idefics3", _set(["model", "projector", "merge"], 9), r"model\.projector\.merge = 9 is outside \[1, 8\]"),
    "merge-huge": ("internvl", _set(["model", "projector", "merge"], 1 << 40), r"model\.projector\.merge = \d+ is outside"),
    "kind": ("idefics3", _set(["model", "projector", "kind"], "conv"), r"model\.projector\.kind must be 'mlp' or 'linear'"),
    "linear-with-norm": ("idefics3", _set(["model", "projector", "layer_norm"], True), r"model\.projector\.layer_norm must be false"),
    "layout": ("llava_onevision", _set(["model", "image_layout"], "spiral"), r"model\.image_layout = 'spiral'"),
    "max-tiles": ("llava_onevision", _set(["model", "anyres_max_tiles"], 0), r"model\.anyres_max_tiles = 0 is outside"),
    "norm": ("internvl", _set(["model", "vision", "norm"], "batch_norm"), r"model\.vision\.norm must be"),
    "arch": ("internvl", _set(["model", "vision", "arch"], "vit_h"), r"model\.vision\.arch must be"),
    "no-newline": ("llava_onevision", _drop_tensor("image_newline"), "image_newline"),
    "class-token-off": ("internvl", _set(["model", "vision", "class_token"], False), "position_embedding"),
    "merge-disagrees-with-weights": ("idefics3", _set(["model", "projector", "merge"], 2), "mm_projector.linear_1.weight"),
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """One f32 package per family (the hostile cases edit copies of them)."""
    out = {}
    for arch in ARCHES:
        tmp = tmp_path_factory.mktemp(f"{arch}-hostile")
        out[arch] = package(load_model(family(arch).random_hf(tmp / "hf", 0)), tmp / "pkg", quant="f32",
                            vit_quant="f32")
    return out


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_vision_manifest_is_refused_naming_the_field(packages, case, tmp_path):
    arch, fn, message = HOSTILE[case]
    bad = edited(packages[arch], tmp_path, fn)
    with pytest.raises(ValueError, match=message) as err:
        Engine(bad, release_vit=False)  # the ViT built at load, so its tensors are checked now
    assert "manifest.json" in str(err.value) or "tensor" in str(err.value)
