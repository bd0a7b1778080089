"""The native engine answers a family VLM's request end to end (issue 17): ``Engine(pkg).generate(prompt, images)``,
``bluelm-v run --package PKG --image IMG`` and ``bluelm-v eval --model native:PKG`` on the random model of each
family (check-reference's), the prompt's image block built by the engine from the package's ``model.image_block``
and each image's actual tiles.

The packages are f32 (weights, KV cache), so the engine runs the same float32 model as HF transformers in another
order: the greedy tokens must be the same, N_TOKENS of them (measured: 40 of 40 for each family).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bluelm_v import FormatError  # noqa: E402
from bluelm_v.cli import main  # noqa: E402
from bluelm_v.engine import Engine  # noqa: E402
from bluelm_v.export import package  # noqa: E402
from bluelm_v.models.check_reference import greedy  # noqa: E402
from bluelm_v.models.families import _vlm, family  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

ARCHES = ["idefics3", "internvl", "llava_onevision"]
PROMPT = "Describe it."
N_TOKENS = 32
SCHEME = {"scheme": "bluelm", "alpha": 0.1}


@pytest.fixture(scope="module", params=ARCHES)
def fam(request, tmp_path_factory):
    """The family's random HF folder, our loaded model, an f32 package of it and the synthetic test image (also as
    a PNG file, which decodes to the same pixels in C++ and in Pillow)."""
    from PIL import Image

    arch = request.param
    tmp = tmp_path_factory.mktemp(arch)
    folder = family(arch).random_hf(tmp / "hf", 0)
    loaded = load_model(folder)
    rgb = _vlm.test_image(None, 0)
    Image.fromarray(rgb).save(tmp / "image.png")
    hf = getattr(transformers, family(arch).HF_AUTO).from_pretrained(str(folder), dtype=torch.float32).eval()
    return {"arch": arch, "folder": folder, "loaded": loaded, "rgb": rgb, "png": tmp / "image.png", "hf": hf,
            "pkg": package(loaded, tmp / "pkg", quant="f32", vit_quant="f32")}


@torch.no_grad()
def hf_greedy(f, dynres: dict) -> tuple[list[int], dict]:
    """HF transformers' greedy tokens on the family's prompt: its processor's pixels, or ours when ``dynres``
    replaces the tiling (check_reference's inputs: LLaVA-OneVision's model then takes our canvas as its pinpoint)."""
    inputs = family(f["arch"]).reference_inputs(f["folder"], f["loaded"], PROMPT, f["rgb"], 0, dynres)
    hf = f["hf"]
    saved = {k: getattr(hf.config, k) for k in inputs.get("hf_config", {})}
    for key, value in inputs.get("hf_config", {}).items():
        setattr(hf.config, key, value)
        setattr(getattr(hf, "model", hf).config, key, value)
    try:
        return greedy(hf, torch.tensor([inputs["ids"]]), N_TOKENS, inputs.get("hf_kwargs", {})), inputs
    finally:
        for key, value in saved.items():
            setattr(hf.config, key, value)
            setattr(getattr(hf, "model", hf).config, key, value)


def test_engine_generate_gives_hf_transformers_greedy_tokens_on_the_familys_own_tiling(fam):
    ref, inputs = hf_greedy(fam, {})
    r = Engine(fam["pkg"], kv_cache="f32").generate(PROMPT, images=[fam["rgb"]], max_new_tokens=N_TOKENS)
    assert r.timing.prompt_tokens == len(inputs["ids"]) and r.timing.image_tokens == inputs["image_tokens"]
    assert r.tokens == ref and len(r.tokens) == N_TOKENS


def test_engine_generate_with_our_scheme_gives_hf_greedy_tokens_on_our_tiles(fam):
    """--scheme bluelm --alpha 0.1 in place of the family's tiling: the engine's C++ tiler cuts the tiles and the
    image block follows its grid (Idefics3: our thumbnail as the global image, moved last)."""
    ref, inputs = hf_greedy(fam, SCHEME)
    engine = Engine(fam["pkg"], kv_cache="f32", dynres=SCHEME)
    r = engine.generate(PROMPT, images=[fam["rgb"]], max_new_tokens=N_TOKENS)
    assert r.timing.prompt_tokens == len(inputs["ids"]) and r.timing.tiles == inputs["preprocessing"]["tiles_ours"]
    assert r.tokens == ref


def test_run_command_on_a_family_package_gives_hf_greedy_tokens(fam, capsys):
    ref, _ = hf_greedy(fam, {})
    assert main(["run", "--package", str(fam["pkg"]), "--image", str(fam["png"]), "--prompt", PROMPT, "--json",
                 "--kv-cache", "f32", "--max-new-tokens", str(N_TOKENS)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == ref


def test_run_scheme_flags_retile_and_the_block_follows_the_grid(fam, capsys):
    ref, _ = hf_greedy(fam, SCHEME)
    assert main(["run", "--package", str(fam["pkg"]), "--image", str(fam["png"]), "--prompt", PROMPT, "--json",
                 "--kv-cache", "f32", "--max-new-tokens", str(N_TOKENS), "--scheme", "bluelm", "--alpha", "0.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dynres"] == SCHEME and out["tokens"] == ref


def test_engine_image_tokens_count_the_tiling_the_session_uses(fam):
    """Engine.image_tokens on the family's own tiling (Idefics3's split sizes computed without resizing)."""
    inputs = family(fam["arch"]).reference_inputs(fam["folder"], fam["loaded"], PROMPT, fam["rgb"], 0, {})
    h, w = fam["rgb"].shape[:2]
    assert Engine(fam["pkg"]).image_tokens(w, h) == inputs["image_tokens"]


# ---- the block itself --------------------------------------------------------------------------------------
def test_engine_idefics3_block_equals_the_python_block_for_every_grid(tmp_path):
    """The C++ expansion of the package's image block against the family file's own image_block, grid by grid
    (1x1 unsplit to 6x6, with and without the global image)."""
    from bluelm_v.models.families import idefics3

    loaded = load_model(idefics3.random_hf(tmp_path / "hf", 0))
    engine = Engine(package(loaded, tmp_path / "pkg", quant="q8_0"))
    per_tile = loaded.config.image_tokens_per_tile()
    assert engine._e.image_block(1, 1, 1, 0, per_tile) == idefics3.image_block(loaded, 0, 0, False)
    for rows in range(1, 7):
        for cols in range(1, 7):
            for glob in (0, 1):
                if rows * cols == 1 and not glob:
                    continue
                patches = rows * cols + glob
                got = engine._e.image_block(patches, cols, rows, glob, patches * per_tile)
                assert got == idefics3.image_block(loaded, rows, cols, bool(glob)), (rows, cols, glob)


def test_engine_tiling_beyond_the_blocks_markers_is_refused_before_encoding(tmp_path):
    """Idefics3 has <row_r_col_c> up to 6x6: a 7-column grid of our scheme is refused at submit, naming both."""
    from bluelm_v.models.families import idefics3

    loaded = load_model(idefics3.random_hf(tmp_path / "hf", 0))
    pkg = package(loaded, tmp_path / "pkg", quant="q8_0")
    session = Engine(pkg, dynres={"scheme": "bluelm", "candidates": [[7, 1]]}).session()
    with pytest.raises(ValueError, match=r"1 rows x 7 columns of tiles.*markers for up to 6 x 6"):
        session.submit_image(np.zeros((50, 700, 3), np.uint8))
    assert session.pending_images == 0


def test_engine_image_larger_than_the_context_is_refused_at_submit(fam):
    session = Engine(fam["pkg"], context=24).session()
    with pytest.raises(ValueError, match=r"prompt positions, more than the context of 24"):
        session.submit_image(fam["rgb"])
    assert session.pending_images == 0


def test_submit_tiles_without_the_grid_a_per_tile_block_needs_fails_in_generate(fam):
    """prefill() with the caller's ids needs no grid; generate() builds the block and says what is missing."""
    if fam["arch"] != "idefics3":
        pytest.skip("only Idefics3's block has per-tile markers")
    inputs = family("idefics3").reference_inputs(fam["folder"], fam["loaded"], PROMPT, fam["rgb"], 0, {})
    session = Engine(fam["pkg"]).session()
    session.submit_tiles(inputs["our_tiles"].numpy())
    with pytest.raises(ValueError, match=r"without their grid.*give grid=\(m, n\)"):
        session.generate(PROMPT, max_new_tokens=1)


# ---- hostile manifests -------------------------------------------------------------------------------------
def _edited(pkg, tmp_path, fn):
    out = tmp_path / "edited"
    shutil.copytree(pkg, out)
    m = json.loads((out / "manifest.json").read_text())
    fn(m["model"])
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _set_block(**kv):
    return lambda model: model["image_block"].update(kv)


HOSTILE = {
    "open-out-of-vocab": ("internvl", _set_block(open=[300]), r"model\.image_block\.open holds token id 300, outside "
                                                               r"the vocabulary \[0, 300\)"),
    "negative-id": ("internvl", _set_block(close=[-1]), r"model\.image_block\.close holds token id -1"),
    "not-a-list": ("internvl", _set_block(open=5), r"model\.image_block\.open must be a list of token ids"),
    "too-long": ("internvl", _set_block(open=[1] * 65), r"model\.image_block\.open has 65 ids, more than 64"),
    "marker-out-of-vocab": ("idefics3", lambda m: m["image_block"]["tile_markers"]["ids"][3].append(400),
                            r"model\.image_block\.tile_markers\.ids\[3\]\.entry holds token id 400"),
    "marker-table-short": ("idefics3", lambda m: m["image_block"]["tile_markers"]["ids"].pop(),
                           r"model\.image_block\.tile_markers\.ids must be a list of rows \* cols = 36"),
    "marker-grid-huge": ("idefics3", lambda m: m["image_block"]["tile_markers"].update(rows=1 << 40),
                         r"model\.image_block\.tile_markers\.rows = \d+ is outside \[1, 64\]"),
    "splitting-unknown": ("idefics3", lambda m: m.update(image_splitting="lanczos"),
                          r"model\.image_splitting = 'lanczos' is not 'scheme' or 'family'"),
    "anyres-with-tile-markers": ("llava_onevision", _set_block(row_end=[10]),
                                 r"model\.image_block: the anyres_unpad layout places the image's rows itself"),
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    out = {}
    for arch in ARCHES:
        tmp = tmp_path_factory.mktemp(f"{arch}-block")
        out[arch] = package(load_model(family(arch).random_hf(tmp / "hf", 0)), tmp / "pkg", quant="q8_0")
    return out


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_image_block_is_refused_at_load_naming_the_field(packages, case, tmp_path):
    arch, fn, message = HOSTILE[case]
    with pytest.raises(FormatError, match=message) as err:
        Engine(_edited(packages[arch], tmp_path, fn))
    assert "manifest.json" in str(err.value)


def test_idefics3_package_refuses_cpp_tiling_unless_a_tiling_replaces_it(packages, tmp_path):
    """Idefics3 tiles its images in Python (Pillow's LANCZOS splitting, which csrc/image does not have): its package
    says model.image_splitting 'family', so the C++ core alone (no tiles from Python) refuses to tile an image with
    model.dynres, which is not the family's tiling; with a tiling given in its place it tiles, and the C++ CLI too."""
    import subprocess

    from bluelm_v._paths import native_program

    pkg = packages["idefics3"]
    assert json.loads((pkg / "manifest.json").read_text())["model"]["image_splitting"] == "family"
    for arch in ("internvl", "llava_onevision"):  # tiled by their model.dynres, in C++ too
        assert "image_splitting" not in json.loads((packages[arch] / "manifest.json").read_text())["model"]
    refused = r"this idefics3 package tiles images with its family's own splitting"
    native = Engine(pkg)._e
    with pytest.raises(ValueError, match=refused):
        native.image_tokens(64, 48)
    with pytest.raises(ValueError, match=refused):
        native.session().submit_rgb(_vlm.test_image(None, 0))
    assert Engine(pkg).image_tokens(64, 48) > 0  # the Python Engine tiles it the family's way
    assert Engine(pkg, dynres=SCHEME)._e.image_tokens(64, 48) > 0
    from PIL import Image

    Image.fromarray(_vlm.test_image(None, 0)).save(tmp_path / "image.png")
    args = ["run", "--model", str(pkg), "--image", str(tmp_path / "image.png"), "--prompt", PROMPT,
            "--max-new-tokens", "2"]
    cpp = subprocess.run([str(native_program("bluelm")), *args], capture_output=True, text=True, timeout=300)
    assert cpp.returncode == 1 and "its family's own splitting" in cpp.stderr
    cpp = subprocess.run([str(native_program("bluelm")), *args, "--dynres", json.dumps(SCHEME)],
                         capture_output=True, text=True, timeout=300)
    assert cpp.returncode == 0, cpp.stderr


def test_family_package_without_an_image_block_is_refused_in_generate_not_guessed(packages, tmp_path):
    """A package written before model.image_block: BlueLM-V's one run would be the wrong prompt, so generate() with
    an image refuses, naming what is missing (prefill with the family's ids still works)."""
    old = _edited(packages["internvl"], tmp_path, lambda m: m.pop("image_block"))
    session = Engine(old).session()
    session.submit_image(_vlm.test_image(None, 0))
    with pytest.raises(ValueError, match=r"no model\.image_block.*'internvl' prompt layout"):
        session.generate(PROMPT, max_new_tokens=1)


# ---- eval ----------------------------------------------------------------------------------------------------
def test_eval_native_on_a_family_package_answers_and_reports_random_weights(packages, tmp_path):
    """A few MMStar-shaped items through the existing eval path on the InternVL package: every item answered (image
    tokens in each row's timing), and report.md says the weights are random."""
    import io

    from PIL import Image

    from bluelm_v.evaluation.store import read_log
    from bluelm_v.image import encode_base64
    from eval_helpers import write_tsv

    def png(seed):
        buf = io.BytesIO()
        Image.fromarray(_vlm.test_image(None, seed)).save(buf, format="PNG")
        return encode_base64(buf.getvalue())

    rows = [{"index": i + 1, "question": f"Which one? ({i})", "A": "cat", "B": "dog", "C": "horse", "D": "bird",
             "answer": "ABCD"[i], "category": "coarse", "l2_category": "x", "image": png(i)} for i in range(3)]
    tsv = write_tsv(tmp_path / "MMStar.tsv", rows)
    work = tmp_path / "work"
    assert main(["eval", "--model", f"native:{packages['internvl']}", "--data", f"MMStar={tsv}", "--work-dir",
                 str(work), "--no-md5", "--max-new-tokens", "3", "--no-progress"]) == 0
    (log,) = work.glob("*/*/*.log.jsonl")
    entries = read_log(log)[0]
    assert len(entries) == 3 and all(e["timing"]["image_tokens"] == 28 for e in entries)
    report = next(work.rglob("report.md")).read_text()
    assert "random weights" in report
