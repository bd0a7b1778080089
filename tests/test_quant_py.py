"""Quantization formats from Python: registry, round-trip error bounds, GGUF byte compatibility, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluelm_v import quant

gguf = pytest.importorskip("gguf")

GGUF_TYPES = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q8_0": "Q8_0"}


def test_registry_mirrors_the_formats():
    assert set(quant.FORMATS) == {"q4_0", "q4_1", "q8_0", "q4_0_g64", "q4_0_g128", "q4_1_g64", "q4_1_g128",
                                  "q8_0_g64", "q8_0_g128"}
    for name, ggml in GGUF_TYPES.items():
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
    ours = quant.quantize(x, fmt)
    theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType[GGUF_TYPES[fmt]])
    assert ours.tobytes() == np.asarray(theirs).tobytes()
    deq_theirs = gguf.quants.dequantize(ours, gguf.GGMLQuantizationType[GGUF_TYPES[fmt]])
    np.testing.assert_array_equal(quant.dequantize(ours, fmt, 256), deq_theirs.reshape(37, 256))


@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(sorted(quant.FORMATS)), rows=st.integers(1, 9), blocks=st.integers(1, 4),
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
