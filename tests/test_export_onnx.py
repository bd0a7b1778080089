"""ONNX export (bluelm_v.export.onnx_export) checked with onnx and ONNX Runtime against the reference model.

Tolerances: fp32 graphs do the reference's float32 arithmetic (max |diff| 1e-4 on logits). Quantized graphs
(MatMulNBits, float activations: accuracy level 0 pinned) are compared with the reference whose matrices are
replaced by the same q4_0 / q8_0 values, so they agree to float rounding as well (1e-3, measured ~1e-6-1e-5)."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bluelm_v import quant  # noqa: E402
from bluelm_v.export import export_onnx  # noqa: E402
from bluelm_v.export.onnx_runner import OnnxModel  # noqa: E402
from bluelm_v.models.llm import decode_step, prefill  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402


def spread(loaded, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            p.copy_((1 + 0.1 * torch.randn(p.shape, generator=gen)) if (p.dim() == 1 and "norm" in name)
                    else 0.1 * torch.randn(p.shape, generator=gen))
    return loaded


def quantized_copy(loaded, llm_fmt, vit_fmt):
    """The reference with every matrix that the export quantizes replaced by its quantized values."""
    import copy

    from bluelm_v.models.reference import LoadedModel

    ref = LoadedModel(loaded.config, copy.deepcopy(loaded.model), loaded.tokenizer, loaded.source)
    with torch.no_grad():
        for name, mod in ref.model.named_modules():
            if isinstance(mod, torch.nn.Linear) and mod.weight.shape[1] % 32 == 0:
                fmt = vit_fmt if name.startswith(("vision_tower", "mm_projector")) else llm_fmt
                w = mod.weight.detach().float().contiguous().numpy()
                mod.weight.copy_(torch.from_numpy(quant.dequantize(quant.quantize(w, fmt), fmt, w.shape[1])))
        lm = ref.llm
        if lm.lm_head is None:  # the export quantizes the tied output head too; the embedding lookup stays float
            w = lm.model.embed_tokens.weight.detach().float().contiguous().numpy()
            head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            head.weight.copy_(torch.from_numpy(quant.dequantize(quant.quantize(w, llm_fmt), llm_fmt, w.shape[1])))
            lm.lm_head = head
    return ref


def ref_logits(loaded, ids):
    lm = loaded.llm
    with torch.no_grad():
        return prefill(lm, lm.new_cache(1, len(ids) + 4), tokens=torch.tensor([ids]), all_logits=True)[0].numpy()


def ref_greedy(loaded, ids, n):
    lm = loaded.llm
    with torch.no_grad():
        cache = lm.new_cache(1, len(ids) + n)
        logits = prefill(lm, cache, tokens=torch.tensor([ids]))
        out = []
        for _ in range(n):
            out.append(int(logits[0].argmax()))
            logits = decode_step(lm, cache, torch.tensor([out[-1]]))
    return out


@pytest.fixture(scope="module")
def tiny():
    return spread(load_model("tiny"))


@pytest.mark.parametrize("q", ["fp32", "w4a16"])
def test_tiny_export_matches_reference(tiny, tmp_path, q):
    out = export_onnx(tiny, tmp_path / q, chunk=16, tile_batch=2, max_context=128, quant=q, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    for g in manifest["graphs"].values():
        onnx.checker.check_model(str(out / g["file"]))
        model = onnx.load(str(out / g["file"]), load_external_data=False)
        for v in list(model.graph.input) + list(model.graph.output):
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in v.type.tensor_type.shape.dim), v.name
    if q == "w4a16":
        ops = {n.op_type for n in onnx.load(str(out / "llm_prefill.onnx"), load_external_data=False).graph.node}
        assert "MatMulNBits" in ops and "MatMul" in ops  # attention products stay float
    # the decode graph reads the prefill graph's weights file
    dec = onnx.load(str(out / "llm_decode.onnx"), load_external_data=False)
    assert sum(i.data_location == onnx.TensorProto.EXTERNAL for i in dec.graph.initializer) > 10
    ref = tiny if q == "fp32" else quantized_copy(tiny, "q4_0", "q8_0")
    m = OnnxModel(out)
    for ids in (list(range(20, 25)), list(range(30, 30 + 45))):  # shorter than a chunk; several chunks
        m.reset()
        got = m.prefill(m.embed(ids))
        assert np.abs(got - ref_logits(ref, ids)).max() <= (1e-4 if q == "fp32" else 1e-3)
        assert m.greedy(ids, 10) == ref_greedy(ref, ids, 10)
    tiles = torch.randn(3, 3, 70, 70, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref.vlm.encode_tiles(tiles).numpy()
    assert np.abs(m.encode_tiles(tiles.numpy()) - want).max() <= 1e-4


def test_smollm2_w4a16_export(smollm2_gguf, tmp_path):
    ref = load_model(smollm2_gguf)
    out = export_onnx(ref, tmp_path / "smol", chunk=32, max_context=160, quant="w4a16", progress=False)
    m = OnnxModel(out)
    qref = quantized_copy(ref, "q4_0", "q8_0")
    ids = ref.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    got = m.prefill(m.embed(ids))
    assert np.abs(got - ref_logits(qref, ids)).max() <= 2e-3
    assert m.greedy(ids, 16) == ref_greedy(qref, ids, 16)


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="smaller than max_context"):
        export_onnx("tiny", tmp_path / "a", chunk=256, max_context=128)
    with pytest.raises(ValueError, match="unknown quantization"):
        export_onnx("tiny", tmp_path / "b", quant="w3a7")
    with pytest.raises(ValueError, match="exceeds the model's context"):
        export_onnx("tiny", tmp_path / "c", chunk=16, max_context=1 << 20)
    with pytest.raises(FileNotFoundError):
        OnnxModel(tmp_path / "nothing")


def test_cli_export(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "bluelm_v", "export", "--model", "tiny", "--out", str(tmp_path / "o"),
                        "--target", "onnx", "--chunk", "8", "--tile-batch", "1", "--max-context", "64", "--quant",
                        "w8a16"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["quantization"] == "w8a16"
    r = subprocess.run([sys.executable, "-m", "bluelm_v", "export", "--model", "tiny", "--out", str(tmp_path / "p"),
                        "--chunk", "512", "--max-context", "64"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "max_context" in r.stderr and "Traceback" not in r.stderr


def test_a_prompt_from_its_first_tokens_cache_gives_the_same_logits_as_the_whole_prompt(tiny, tmp_path):
    # the QNN export keeps a prompt's first token out of its graphs (docs/export.md): the runtime starts from that
    # token's cache, computed beforehand, which must be what the whole prompt's prefill would have written
    from bluelm_v.export import export_onnx
    from bluelm_v.export.onnx_runner import OnnxModel

    folder = export_onnx(tiny, tmp_path / "f", chunk=4, tile_batch=1, max_context=32, quant="fp32", progress=False)
    model = OnnxModel(folder)
    ids = [1, 40, 41, 42, 43, 44, 45, 46, 47]  # nine tokens: the rest spans two chunks of 4 after the first
    model.reset()
    whole = model.prefill(model.embed(ids))
    model.set_prefix(ids[0], *model.prefix_cache(ids[0]))
    assert model.length == 1
    np.testing.assert_allclose(model.prefill(model.embed(model.after_prefix(ids))), whole[1:], rtol=1e-4, atol=1e-4)
    assert model.greedy(ids, 3) == OnnxModel(folder).greedy(ids, 3)
    with pytest.raises(ValueError, match="must be finite, of shape"):
        model.set_prefix(1, np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32))
    model.set_prefix(None)
    assert model.length == 0 and model.after_prefix([7, 8]) == [7, 8]


def test_the_last_prefill_chunk_is_padded_with_copies_of_its_last_row_not_zeros(tiny, tmp_path):
    # padded rows are dropped, but a quantized graph's ranges see them: zero rows are no token (docs/export.md)
    from bluelm_v.export import export_onnx
    from bluelm_v.export.onnx_runner import OnnxModel

    folder = export_onnx(tiny, tmp_path / "f", chunk=4, tile_batch=1, max_context=16, quant="fp32", progress=False)
    model = OnnxModel(folder)
    seen = []
    session = model.sessions["llm_prefill"]

    class Recording:
        def run(self, names, feeds):
            seen.append(feeds["inputs_embeds"][0].copy())
            return session.run(names, feeds)

    model.sessions["llm_prefill"] = Recording()
    embeds = model.embed([1, 40, 41, 42, 43, 44])  # a full chunk, then 2 real rows and 2 padded
    logits = model.prefill(embeds)
    assert logits.shape[0] == 6 and len(seen) == 2
    np.testing.assert_array_equal(seen[1][:2], embeds[4:])
    np.testing.assert_array_equal(seen[1][2:], np.repeat(embeds[5:], 2, axis=0))
