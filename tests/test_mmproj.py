"""llama.cpp's files for the VLM families: a GGUF LLM plus its mmproj GGUF (written from a small random HF folder by
tests/mmproj_files.py) load into the reference with the same logits as the folder, and bad pairs are refused by
file and key before any tensor data is read."""
import dataclasses

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from mmproj_files import write_llm, write_mmproj  # noqa: E402

from bluelm_v import FormatError  # noqa: E402
from bluelm_v.models.check_reference import ours_logits  # noqa: E402
from bluelm_v.models.families import _vlm, family  # noqa: E402
from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint  # noqa: E402
from bluelm_v.models.mmproj import split_spec  # noqa: E402
from bluelm_v.models.reference import load_model, load_vlm  # noqa: E402

VISION_OVERRIDES = {"internvl": {"use_mean_pooling": True}}  # as InternVL 2.5 / 3 ship: no final LayerNorm


@pytest.fixture(scope="module", params=["internvl", "idefics3", "llava_onevision"])
def files(request, tmp_path_factory):
    arch = request.param
    d = tmp_path_factory.mktemp(arch)
    folder = family(arch).random_hf(d / "hf", 0, **VISION_OVERRIDES.get(arch, {}))
    return arch, folder, write_llm(folder, arch, d / "llm.gguf"), write_mmproj(folder, arch, d / "mmproj.gguf")


def _logits(loaded, arch, block, prompt_of):
    before, after = _vlm.prompt_text(prompt_of, "Describe it.")
    tok = prompt_of.tokenizer
    ids = tok.encode(before) + block["ids"] + tok.encode(after, add_bos=False)
    with torch.no_grad():
        return ours_logits(loaded, ids, block["tiles"], block["layout"])


def test_gguf_plus_mmproj_gives_the_folders_logits(files):
    arch, folder, llm, mmproj = files
    pair, ref = load_model(f"{llm}+{mmproj}"), load_model(folder)
    assert pair.config.family == arch
    pv, rv = pair.config.vision, ref.config.vision  # mean/std went through float32 in the file
    assert dataclasses.replace(pv, mean=rv.mean, std=rv.std) == rv and pair.config.projector == ref.config.projector
    assert pv.mean == pytest.approx(rv.mean, rel=1e-7) and pv.std == pytest.approx(rv.std, rel=1e-7)
    assert pair.config.dynres == ref.config.dynres and pair.config.image_layout == ref.config.image_layout
    rgb = _vlm.test_image(None, 0)
    ours, theirs = family(arch).prepare_image(pair, rgb, {}), family(arch).prepare_image(ref, rgb, {})
    assert torch.equal(ours["tiles"], theirs["tiles"]) and ours["layout"] == theirs["layout"]
    a, b = _logits(pair, arch, ours, pair), _logits(ref, arch, ours, pair)  # same ids and pixels on both
    assert float((a - b).abs().max()) <= 1e-5


def test_mmproj_keyword_equals_the_plus_spec(files):
    arch, folder, llm, mmproj = files
    a, b = load_model(llm, mmproj=mmproj), load_model(f"{llm}+{mmproj}")
    assert a.config == b.config
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_generation_from_the_pair_takes_an_image(files):
    arch, folder, llm, mmproj = files
    vlm = load_vlm(f"{llm}+{mmproj}")
    vlm.generate([{"type": "image", "value": _vlm.test_image(None, 1)}, {"type": "text", "value": "hi"}],
                 max_new_tokens=2)
    assert vlm.last_image_tokens > 0


def test_quantized_mmproj_stays_close(tmp_path):
    folder = family("idefics3").random_hf(tmp_path / "hf", 0)
    llm = write_llm(folder, "idefics3", tmp_path / "llm.gguf")
    mm = write_mmproj(folder, "idefics3", tmp_path / "mm.gguf", qtype=gguf.GGMLQuantizationType.F16)
    pair, ref = load_model(f"{llm}+{mm}"), load_model(folder)
    block = family("idefics3").prepare_image(pair, _vlm.test_image(None, 0), {})
    diff = float((_logits(pair, "idefics3", block, pair) - _logits(ref, "idefics3", block, pair)).abs().max())
    assert 0 < diff < 0.01  # F16 vision weights: rounding (measured 1e-3 on logits up to 3.5), not a wrong map


def test_split_spec():
    assert split_spec("a.gguf+mmproj-a.gguf") == (__import__("pathlib").Path("a.gguf"),
                                                  __import__("pathlib").Path("mmproj-a.gguf"))
    assert split_spec("tiny")[1] is None and split_spec("x+y")[1] is None


# ---- bad input ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_tensor_reads(monkeypatch):
    """Refusals must come from the headers: reading any tensor's values fails the test."""
    def fail(self, name, *a, **k):
        raise AssertionError(f"tensor {name} was read before the refusal")

    monkeypatch.setattr(GGUFCheckpoint, "dequantize", fail)


@pytest.fixture(scope="module")
def ivl(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    folder = family("internvl").random_hf(d / "hf", 0, use_mean_pooling=True)
    return d, folder, write_llm(folder, "internvl", d / "llm.gguf"), write_mmproj(folder, "internvl", d / "mm.gguf")


def test_missing_mmproj_file_is_named(ivl):
    d, _, llm, _ = ivl
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_model(llm, mmproj=d / "nope.gguf")


def test_an_image_for_a_vlm_llm_without_its_mmproj_asks_for_it(ivl):
    _, _, llm, _ = ivl
    with pytest.raises(ValueError, match="needs its mmproj"):
        load_vlm(llm).generate([{"type": "image", "value": _vlm.test_image(None, 0)}, {"type": "text", "value": "x"}])


def test_mmproj_given_as_the_model_is_refused(ivl, no_tensor_reads):
    _, _, _, mm = ivl
    with pytest.raises(FormatError, match="general.architecture is 'clip'"):
        load_model(mm)


def test_an_llm_given_as_the_mmproj_is_refused(ivl, no_tensor_reads):
    _, _, llm, _ = ivl
    with pytest.raises(FormatError, match=r"llm.gguf: key general.architecture is 'qwen2', not 'clip'"):
        load_model(llm, mmproj=llm)


def test_unsupported_projector_type_names_the_key(ivl, no_tensor_reads):
    d, folder, llm, _ = ivl
    bad = write_mmproj(folder, "internvl", d / "qwen.gguf", projector_type="qwen2vl_merger")
    with pytest.raises(FormatError, match=r"qwen.gguf: key clip.projector_type is 'qwen2vl_merger'"):
        load_model(llm, mmproj=bad)


def test_mismatched_width_names_the_key(ivl, no_tensor_reads):
    d, folder, llm, _ = ivl
    bad = write_mmproj(folder, "internvl", d / "wide.gguf", projection_dim=96)
    with pytest.raises(FormatError, match=r"wide.gguf: key clip.vision.projection_dim is 96 .* width 64"):
        load_model(llm, mmproj=bad)


def test_mmproj_of_another_family_misses_the_llms_tokens(ivl, tmp_path, no_tensor_reads):
    _, _, llm, _ = ivl
    folder = family("idefics3").random_hf(tmp_path / "hf", 0)
    other = write_mmproj(folder, "idefics3", tmp_path / "idefics3.gguf")
    with pytest.raises(FormatError, match=r"llm.gguf: the tokenizer has no '<image>' token"):
        load_model(llm, mmproj=other)


def test_engine_packages_the_pair_and_encodes_as_the_reference(ivl, tmp_path):
    """LLM.gguf+mmproj.gguf packages from the reference's tensors; the engine's ViT and projector give the tile
    embeddings the reference loaded from the same files gives."""
    import numpy as np

    from bluelm_v.engine import Engine
    from bluelm_v.export.package import package

    _, _, llm, mm = ivl
    pkg = package(f"{llm}+{mm}", tmp_path / "pkg", quant="f32", vit_quant="f32")
    ref = load_model(llm, mmproj=mm)
    s = ref.config.vision.image_size
    tiles = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    got = Engine(pkg).encode_tiles(tiles.numpy())
    assert np.abs(got - ref.vlm.encode_tiles(tiles).numpy()).max() <= 1e-4


def test_qwen2_llm_gguf_alone_packages_and_the_engine_runs_it(ivl, tmp_path):
    """The pair's Qwen2 LLM GGUF (Q/K/V biases carried as f32 tensors) runs in the engine as the reference runs it."""
    import numpy as np

    from bluelm_v.engine import Engine
    from bluelm_v.export.package import package
    from bluelm_v.models.llm import prefill

    _, _, llm, _ = ivl
    pkg = package(str(llm), tmp_path / "pkg", quant="f32")
    assert "model.layers.0.self_attn.q_proj.bias" in (pkg / "manifest.json").read_text()
    ref = load_model(llm)
    ids = list(range(3, 60))
    with torch.no_grad():
        want = prefill(ref.llm, ref.llm.new_cache(1, len(ids)), tokens=torch.tensor([ids]), all_logits=True)[0]
    got = Engine(pkg, kv_cache="f32").session().prefill(ids, all_logits=True)
    assert np.abs(got - want.numpy()).max() <= 1e-4 * max(1.0, float(want.abs().max()))


def test_check_reference_compares_the_files_with_hf_on_their_folder(files):
    from bluelm_v.models.check_reference import check_reference

    arch, folder, llm, mmproj = files
    rec = check_reference(model=str(folder), gguf=f"{llm}+{mmproj}", tokens=4)
    assert rec["compared"].startswith("torch reference from") and rec["arch"] == arch
    assert rec["max_abs_logit_diff_all_steps"] <= 1e-3 and rec["greedy_agreement"] == 1.0
    assert rec["image_tokens"] > 0


def test_generate_cli_takes_mmproj_like_the_plus_spec(ivl):
    import subprocess
    import sys

    from PIL import Image

    d, _, llm, mm = ivl
    img = d / "x.png"
    Image.fromarray(_vlm.test_image(None, 3)).save(img)
    r = subprocess.run([sys.executable, "-m", "bluelm_v", "generate", "--model", str(llm), "--mmproj", str(mm),
                        "--image", str(img), "--prompt", "Hi", "--max-new-tokens", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    want = load_vlm(f"{llm}+{mm}").generate([{"type": "image", "value": str(img)}, {"type": "text", "value": "Hi"}],
                                            max_new_tokens=4)
    assert r.stdout[:-1] == want


def test_eval_torch_adapter_takes_the_pair_and_fingerprints_both_files(ivl):
    from bluelm_v.evaluation.adapters import make_adapter

    _, _, llm, mm = ivl
    a = make_adapter(f"torch:{llm}+{mm}", max_new_tokens=2)
    assert a.takes_images and a.name == "torch-llm.gguf-mm.gguf"
    assert "2 file(s)" in a.identity()
    out = a.generate([{"type": "image", "value": _vlm.test_image(None, 0)}, {"type": "text", "value": "x"}],
                     dataset="d", index=0)
    assert isinstance(out, str)
