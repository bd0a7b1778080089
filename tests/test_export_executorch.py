"""ExecuTorch: the static graphs lowered to .pte programs with the XNNPACK delegate (bluelm_v.export.
executorch_export), run by executorch.runtime and compared with the PyTorch modules they come from (float32:
1e-4, relative to the output's scale for the ViT whose activations reach tens)."""
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch", reason="executorch (pip install executorch==1.5.1) is not installed")

from bluelm_v.export.executorch_export import export_executorch, graph_modules, run_pte  # noqa: E402
from bluelm_v.export.qnn import vision_inputs  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

CHUNK, TILES, CONTEXT = 4, 2, 16


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    loaded = load_model("tiny")
    out = export_executorch(loaded, tmp_path_factory.mktemp("pte"), chunk=CHUNK, tile_batch=TILES,
                            max_context=CONTEXT)
    return loaded, out


def _inputs(loaded, name, args):
    """Real inputs where there are some (tiles of the shipped samples), else random ones of the graph's shapes,
    with a causal mask and positions."""
    g = torch.Generator().manual_seed(1)
    if name == "vit":
        return (torch.from_numpy(vision_inputs(loaded.config, TILES)[0]),)
    if name == "projector":
        with torch.no_grad():
            return (loaded.vlm.vision_tower(torch.from_numpy(vision_inputs(loaded.config, TILES)[0])),)
    embeds, pos, mask, keys, values = args
    t, past = embeds.shape[1], keys.shape[2]
    start = 5
    m = torch.full(mask.shape, float("-inf"))
    m[0, 0, :, :start] = 0
    m[0, 0, :, past:] = torch.triu(torch.full((t, t), float("-inf")), 1)
    return (torch.randn(embeds.shape, generator=g), start + torch.arange(t)[None], m,
            torch.randn(keys.shape, generator=g), torch.randn(values.shape, generator=g))


def test_every_program_is_written_and_described(programs):
    loaded, out = programs
    meta = json.loads((out / "executorch.json").read_text())
    assert set(meta["programs"]) == {"llm_prefill", "llm_decode", "vit", "projector"}
    for name, p in meta["programs"].items():
        assert (out / p["file"]).stat().st_size == p["bytes"] > 0
        assert p["delegate_calls"] >= 1, name  # XNNPACK took part of every graph
    assert meta["programs"]["llm_prefill"]["inputs"][0] == [1, CHUNK, loaded.config.llm.hidden]


@pytest.mark.parametrize("name", ["llm_prefill", "llm_decode", "vit", "projector"])
def test_pte_matches_the_torch_module(programs, name):
    loaded, out = programs
    module, args = graph_modules(loaded, CHUNK, TILES, CONTEXT)[name]
    feeds = _inputs(loaded, name, args)
    with torch.no_grad():
        want = module(*feeds)
    want = want if isinstance(want, tuple) else (want,)
    got = run_pte(out / f"{name}.pte", feeds)
    assert len(got) == len(want)
    for a, b in zip(want, got):
        assert a.shape == b.shape
        scale = max(1.0, float(a.abs().max()))
        assert float((a - b).abs().max()) <= 1e-4 * scale, name


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk 16 must be smaller than max_context 16"):
        export_executorch("tiny", tmp_path, chunk=16, max_context=16)
