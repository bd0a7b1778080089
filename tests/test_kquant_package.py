"""GGUF K-quant files (Q4_K_M as llama.cpp makes them) into a package and through the native engine.

The Q4_K_M file is made in the session from the shipped SmolLM2 Q4_1 GGUF by llama.cpp's own quantizer
(conftest.smollm2_q4_k_m). SmolLM2's rows of 576 are not a multiple of 256, so only its ffn_down matrices
(K = 1536) are K-quants there (Q4_K, and Q6_K in the layers Q4_K_M favours); llama.cpp made the others Q5_0 and
Q8_0. All of them are carried into the package byte for byte."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from bluelm_v.engine import Engine  # noqa: E402
from bluelm_v.export import package  # noqa: E402
from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

BLOCK_TYPES = {"Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "Q8_0"}


@pytest.fixture(scope="module")
def q4km_pkg(smollm2_q4_k_m, tmp_path_factory):
    # quant names the format of tensors of other types (none in this file: every matrix is carried as it is).
    return package(smollm2_q4_k_m, tmp_path_factory.mktemp("q4km"), quant="q4_0")


def _carried(gguf_path, pkg) -> dict[str, int]:
    """Every block tensor of the GGUF is in the package byte for byte in its own format, every other one f32;
    returns the count of tensors per GGUF type."""
    manifest = json.loads((pkg / "manifest.json").read_text())
    blob = (pkg / "weights.bin").read_bytes()
    ck = GGUFCheckpoint(gguf_path)
    carried = {}
    for hf, g in ck.hf_names(ck.model_config().llm).items():
        raw = ck.raw(g)
        entry = manifest["tensors"][hf]
        if raw.qtype in BLOCK_TYPES:
            assert entry["format"] == raw.qtype.lower() and "note" not in entry, (hf, entry)
            assert blob[entry["offset"]:entry["offset"] + entry["bytes"]] == raw.data.tobytes(), hf
        else:
            assert raw.qtype == "F32" and entry["format"] == "f32", (hf, raw.qtype, entry)
        carried[raw.qtype] = carried.get(raw.qtype, 0) + 1
    return carried


def test_q4_k_m_package_carries_its_211_block_tensors_byte_for_byte_and_61_f32_as_f32(q4km_pkg, smollm2_q4_k_m):
    assert _carried(smollm2_q4_k_m, q4km_pkg) == {"Q4_K": 16, "Q6_K": 14, "Q5_0": 166, "Q8_0": 15, "F32": 61}


def _teacher_forced(path, pkg):
    """Logits over 39 tokens from the PyTorch reference (the GGUF's weights dequantized by the gguf package) and
    from the engine (int16 activations, f32 KV cache), and how far apart they are."""
    from bluelm_v.models.llm import prefill

    ref = load_model(path)
    ids = ref.tokenizer.encode("The history of mathematics deals with the origin of discoveries in mathematics "
                               "and the mathematical methods and notation of the past. Before the modern age, "
                               "written examples of new mathematical developments came from a few places.")[:48]
    with torch.no_grad():
        lm = ref.llm
        want = prefill(lm, lm.new_cache(1, len(ids)), tokens=torch.tensor([ids]), all_logits=True)[0].numpy()
    got = Engine(pkg, activations="int16", kv_cache="f32").session().prefill(ids, chunk=32, all_logits=True)
    rel = np.abs(got - want).max() / np.abs(want).max()
    agree = (got.argmax(-1) == want.argmax(-1)).mean()
    print(f"max |diff| / max |logit| = {rel:.4f}, top-1 agreement {agree:.3f} over {len(ids)} positions")
    return rel, agree


def test_q5_1_file_is_packaged_byte_for_byte_and_its_logits_match_the_reference(smollm2_q5_1, tmp_path):
    """Q5_1 (asymmetric: the minima term is added by the kernel driver, and Q, K, V / gate, up are stacked into one
    matrix whose minima follow its last panel)."""
    pkg = package(smollm2_q5_1, tmp_path / "q5_1", quant="q4_0")
    assert _carried(smollm2_q5_1, pkg) == {"Q5_1": 210, "Q8_0": 1, "F32": 61}  # every matrix of 30 layers Q5_1
    rel, agree = _teacher_forced(smollm2_q5_1, pkg)
    assert rel < 0.02 and agree >= 0.95, (rel, agree)


def test_engine_logits_on_q4_k_m_match_the_reference_on_its_dequantized_weights(q4km_pkg, smollm2_q4_k_m):
    """Teacher-forced logits over 39 tokens: the engine (Q4_K / Q6_K through the K-quant kernel, Q5_0 through q8_0
    panels) against the PyTorch reference on the GGUF's weights dequantized by the gguf package."""
    rel, agree = _teacher_forced(smollm2_q4_k_m, q4km_pkg)
    assert rel < 0.02 and agree >= 0.95, (rel, agree)  # measured 0.0004 and 1.0


def test_nan_q5_scale_or_minimum_is_refused_before_packaging(smollm2_q5_1, smollm2_q4_k_m, tmp_path):
    from bluelm_v import FormatError

    for path, name, qtype, block_bytes, fields in (
            (smollm2_q4_k_m, "blk.2.attn_q.weight", "Q5_0", 22, ((0, "scale"),)),
            (smollm2_q5_1, "blk.2.ffn_up.weight", "Q5_1", 24, ((0, "scale"), (2, "minimum")))):
        t = next(t for t in GGUFCheckpoint(path)._reader.tensors if t.name == name)
        assert t.tensor_type.name == qtype
        for at, what in fields:
            data = bytearray(path.read_bytes())
            pos = int(t.data_offset) + block_bytes * 7 + at  # block 7
            data[pos:pos + 2] = (0x7E00).to_bytes(2, "little")  # an fp16 NaN
            bad = tmp_path / f"nan-{qtype}-{at}.gguf"
            bad.write_bytes(bytes(data))
            with pytest.raises(FormatError, match=f"{name} \\({qtype}\\) block 7 has a non-finite fp16 {what}"):
                package(bad, tmp_path / "pkg")
