"""Quantization formats from Python: registry, round-trip error bounds, GGUF byte compatibility, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluelm_v import quant

gguf = pytest.importorskip("gguf")

GGUF_TYPES = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q8_0": "Q8_0"}
K_TYPES = {"q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K"}  # the gguf package dequantizes these, never quantizes


def test_registry_mirrors_the_formats():
    assert set(quant.FORMATS) == {"q4_0", "q4_1", "q8_0", "q4_0_g64", "q4_0_g128", "q4_1_g64", "q4_1_g128",
                                  "q8_0_g64", "q8_0_g128", "q4_k", "q5_k", "q6_k", "q8_k", "q5_0", "q5_1"}
    for name, ggml in {**GGUF_TYPES, **K_TYPES, "q8_k": "Q8_K"}.items():
        info = quant.FORMATS[name]
        qt = gguf.GGMLQuantizationType[ggml]
        assert (info.group, info.block_bytes) == gguf.GGML_QUANT_SIZES[qt] and info.gguf_type == int(qt)
    assert quant.FORMATS["q4_0_g128"].bits_per_weight == pytest.approx(4.125)
    assert quant.row_bytes("q4_1_g64", 128) == 2 * 36


@pytest.mark.parametrize("fmt", list(GGUF_TYPES))
def test_bytes_identical_to_the_gguf_package(fmt):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((37, 256)) * rng.uniform(0.01, 10, (37, 1))).astype(np.float32)
    x[3] = 0.0  # an all-zero row (scale 0)
    x[5, :32] = 7.0  # a constant block
    x[6, :32] = -7.0  # a constant negative block (Q5_0's clamp at level 31)
    x[7, 32:64] = np.float32(3e-7)  # a block of subnormal fp16 scales
    x[8, 64:96] = np.linspace(-6e4, 6e4, 32, dtype=np.float32)  # a block near fp16's largest scale
    ours = quant.quantize(x, fmt)
    theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType[GGUF_TYPES[fmt]])
    assert ours.tobytes() == np.asarray(theirs).tobytes()
    deq_theirs = gguf.quants.dequantize(ours, gguf.GGMLQuantizationType[GGUF_TYPES[fmt]])
    np.testing.assert_array_equal(quant.dequantize(ours, fmt, 256), deq_theirs.reshape(37, 256))


def _random_k_blocks(fmt: str, n: int, seed: int) -> np.ndarray:
    """n random blocks of a K-quant with finite fp16 scales (every other byte random)."""
    info = quant.FORMATS[fmt]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, info.block_bytes), dtype=np.uint8)
    scales = rng.uniform(-2, 2, (n, 2)).astype(np.float16).view(np.uint8)
    if fmt == "q6_k":
        raw[:, 208:210] = scales[:, :2]
    else:
        raw[:, 0:4] = scales
    return raw


@pytest.mark.parametrize("fmt", list(K_TYPES))
def test_k_quant_dequantize_matches_the_gguf_package(fmt):
    qt = gguf.GGMLQuantizationType[K_TYPES[fmt]]
    raw = _random_k_blocks(fmt, 64, seed=5).reshape(8, -1)  # 8 rows of 8 super-blocks
    np.testing.assert_array_equal(quant.dequantize(raw, fmt, 8 * 256), gguf.quants.dequantize(raw, qt).reshape(8, -1))
    x = (np.random.default_rng(2).standard_normal((6, 512)) * 0.05).astype(np.float32)
    ours = quant.quantize(x, fmt)
    np.testing.assert_array_equal(quant.dequantize(ours, fmt, 512), gguf.quants.dequantize(ours, qt).reshape(6, 512))


def _k_tensors_match_llama_cpp(original, requantized):
    """Every K-quant tensor llama.cpp wrote into `requantized` (from `original`'s weights, dequantized by the gguf
    package as llama.cpp dequantizes them) equals our quantizer's bytes; returns the formats compared."""
    src = {t.name: t for t in gguf.GGUFReader(original).tensors}
    seen = set()
    for t in gguf.GGUFReader(requantized).tensors:
        fmt = t.tensor_type.name.lower()
        if fmt not in K_TYPES:
            continue
        s = src[t.name]
        x = np.asarray(gguf.quants.dequantize(s.data, s.tensor_type), np.float32)
        x = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        ours = quant.quantize(x, fmt)
        theirs = np.asarray(t.data).reshape(ours.shape)
        assert np.array_equal(ours, theirs), f"{t.name} ({fmt}): bytes differ from llama.cpp's"
        seen.add(fmt)
    return seen


def test_q4_k_and_q6_k_quantize_like_llama_cpp(smollm2_gguf, smollm2_q4_k_m):
    assert _k_tensors_match_llama_cpp(smollm2_gguf, smollm2_q4_k_m) == {"q4_k", "q6_k"}


def test_q5_k_quantizes_like_llama_cpp(smollm2_gguf, smollm2_q5_k_m):
    assert _k_tensors_match_llama_cpp(smollm2_gguf, smollm2_q5_k_m) == {"q5_k", "q6_k"}


@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(["q4_k", "q5_k", "q6_k", "q8_k"]), rows=st.integers(1, 4), blocks=st.integers(1, 3),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_k_quant_round_trip_error_bound(fmt, rows, blocks, scale, seed):
    """K-quants: each element within one level of its super-block's coarsest sub-block, a level being the
    block's span over the format's levels (2 max|x| / 15 for q4_k, / 31 for q5_k; max|x| / 32 for q6_k; half of
    max|x| / 127 for q8_k), plus the fp16 rounding of the scales."""
    k = 256 * blocks
    x = (np.random.default_rng(seed).standard_normal((rows, k)) * scale).astype(np.float32)
    back = quant.dequantize(quant.quantize(x, fmt), fmt, k)
    err = np.abs(back - x).reshape(rows, blocks, 256).max(-1)
    amax = np.abs(x).reshape(rows, blocks, 256).max(-1)
    level = {"q4_k": 2 * amax / 15, "q5_k": 2 * amax / 31, "q6_k": amax / 32, "q8_k": amax / 254}[fmt]
    assert (err <= level * 1.02 + amax * 2**-10).all()


@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(sorted(f for f in quant.FORMATS if not quant.FORMATS[f].super_block)), rows=st.integers(1, 9), blocks=st.integers(1, 4),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_round_trip_error_bound(fmt, rows, blocks, scale, seed):
    """|w - deq(q(w))| <= d/2 per element (d the block's step), plus fp16 rounding of the scale; int4 symmetric
    maps the largest magnitude m to -8d exactly, so values near -m clamp at 7d: up to one step there."""
    info = quant.FORMATS[fmt]
    k = info.group * blocks
    x = (np.random.default_rng(seed).standard_normal((rows, k)) * scale).astype(np.float32)
    back = quant.dequantize(quant.quantize(x, fmt), fmt, k)
    xb = x.reshape(rows, blocks, info.group)
    err = np.abs(back - x).reshape(rows, blocks, info.group).max(-1)
    amax = np.abs(xb).max(-1)
    if info.kind == "int4_sym":
        step = 2 * amax / 8  # d = m / -8; values span [-8d, 7d]: error <= d (not d/2) at the clamped end
    elif info.kind == "int4_asym":
        step = (xb.max(-1) - xb.min(-1)) / 15
    elif info.kind == "int5_sym":
        step = 2 * amax / 16  # d = m / -16; values span [-16d, 15d]: error <= d at the clamped end, as int4_sym
    elif info.kind == "int5_asym":
        step = (xb.max(-1) - xb.min(-1)) / 31
    else:
        step = amax / 127
    # fp16 scales: relative 2^-11 for normal values, absolute 2^-25 per step below 6.1e-5 (subnormal), times q <= 127
    assert (err <= step * 0.5 * (1 + 2e-3) + amax * 2**-10 + 127 * 2.0**-24).all()


def test_torch_tensors_in_and_out_without_copies():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 64)
    q = quant.quantize(x, "q8_0")
    assert isinstance(q, torch.Tensor) and q.dtype == torch.uint8 and q.shape == (4, 68)
    back = quant.dequantize(q, "q8_0", 64)
    assert isinstance(back, torch.Tensor) and torch.allclose(back, x, atol=0.05)


def test_bad_input_is_refused_clearly():
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="unknown quantization format"):
        quant.quantize(x, "q3_k")
    with pytest.raises(TypeError, match="float32"):
        quant.quantize(x.astype(np.float64), "q4_0")
    with pytest.raises(ValueError, match="contiguous"):
        quant.quantize(np.ones((64, 2), np.float32).T, "q4_0")
    with pytest.raises(ValueError, match="multiple"):
        quant.quantize(np.ones((2, 33), np.float32), "q4_0")
    with pytest.raises(ValueError, match="finite|NaN|nan|inf"):
        quant.quantize(np.full((1, 32), np.nan, np.float32), "q8_0")
    with pytest.raises(ValueError, match="bytes"):
        quant.dequantize(np.zeros((2, 17), np.uint8), "q4_0", 32)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        quant.quantize([[1.0] * 32], "q4_0")
