"""Attention over the KV cache (csrc/runtime/attention.h) against torch's scaled_dot_product_attention.

Every tier this machine runs (scalar, and AVX2 on x86) on awkward sizes: lengths 1, 31, 33, 4097 (tails of the
64-position blocks and of the 512-position split-K ranges), head sizes 64, 80, 128, GQA ratios 1, 3, 4, 8, decode
(one query) and prefill (a chunk of queries, causal). The int8 cache is compared with SDPA over the values it stores
(quantized here as the engine does: per group of 32, d = max|x| / 127, round half to even) and the f16 cache over
the halves it stores, so every cache is held to float rounding; the int8 cache's own error against float keys is
bounded separately. Decode and prefill over the int8 cache compute with the query quantized the same way (after
the 1/sqrt(hd) scale), so SDPA gets that query there (its weights of the values in int16 are bounded separately).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bluelm_v import _core  # noqa: E402

TIERS = [t for t in ("scalar", "avx2", "avx512") if _core.isa_supported(t)]


@pytest.fixture(params=TIERS)
def tier(request):
    saved = _core.active_isa()
    _core.set_active_isa(request.param)
    yield request.param
    _core.set_active_isa(saved)


def quantize_i8(x: np.ndarray) -> np.ndarray:
    """What the int8 cache holds for x [..., hd], dequantized."""
    hd = x.shape[-1]
    gs = 32 if hd % 32 == 0 else hd
    g = x.reshape(*x.shape[:-1], hd // gs, gs).astype(np.float32)
    d = np.abs(g).max(-1, keepdims=True) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.rint(g * inv)
    return (q * d).reshape(x.shape).astype(np.float32)


def round_f16(x: np.ndarray) -> np.ndarray:
    """What the f16 cache holds for x, as float32 (IEEE half, round to nearest even)."""
    return x.astype(np.float16).astype(np.float32)


STORED = {"f32": lambda x: x, "int8": quantize_i8, "f16": round_f16}


def decode_query(q: np.ndarray, kv: str) -> np.ndarray:
    """The query attention computes with: over the int8 cache (decode and prefill alike), rounded to int8 per scale
    group after the 1/sqrt(hd) scale; otherwise q itself."""
    if kv != "int8":
        return q
    scale = np.float32(1 / np.sqrt(q.shape[-1]))
    return quantize_i8(q * scale) / scale


def sdpa(q, k, v):
    """q [t, H, hd], k/v [n, Hkv, hd]: query i is position n - t + i and sees positions <= its own."""
    t, heads, _ = q.shape
    n, kvh, _ = k.shape
    rep = heads // kvh
    qt = torch.from_numpy(q).transpose(0, 1).double()
    kt = torch.from_numpy(k).transpose(0, 1).repeat_interleave(rep, 0).double()
    vt = torch.from_numpy(v).transpose(0, 1).repeat_interleave(rep, 0).double()
    mask = torch.arange(n)[None, :] <= (n - t + torch.arange(t))[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    return out.transpose(0, 1).float().numpy()


def draw(n, t, heads, kvh, hd, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((t, heads, hd), dtype=np.float32)
    k = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    k[..., 3::17] *= 6  # outlier channels, as real keys have
    v = rng.standard_normal((n, kvh, hd), dtype=np.float32)
    return q, k, v


@pytest.mark.parametrize("n", [1, 31, 33, 4097])
@pytest.mark.parametrize("hd", [64, 80, 128])
@pytest.mark.parametrize("ratio", [1, 3, 4, 8])
@pytest.mark.parametrize("kv", ["f32", "int8", "f16"])
def test_attention_matches_sdpa(tier, n, hd, ratio, kv):
    kvh = 2 if ratio < 8 else 1
    for t in sorted({1, min(n, 37)}):
        q, k, v = draw(n, t, kvh * ratio, kvh, hd, seed=n * 1000 + hd + ratio + t)
        got = _core.attention(q, k, v, kv)
        stored = (STORED[kv](k), STORED[kv](v))
        want = sdpa(decode_query(q, kv), *stored)
        # Over the int8 cache the softmax weights of the values are rounded to int16 per block (each within
        # 1/65534 of the block's largest): a few 1e-5, bounded at 1.5e-4.
        tol = 1.5e-4 if kv == "int8" else 3e-5
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("hd", [32, 64, 128])
def test_tiers_agree_with_scalar(hd):
    # hd 32, 64, 128: one, two and four scale groups of 32 (the AVX2 tier's unrolled integer scores take each).
    q, k, v = draw(1100, 70, 9, 3, hd, seed=3)
    saved = _core.active_isa()
    try:
        outs = {}
        for t in TIERS:
            _core.set_active_isa(t)
            outs[t] = [_core.attention(q[-rows:], k, v, kv) for kv in ("int8", "f16") for rows in (70, 1)]
    finally:
        _core.set_active_isa(saved)
    for t in TIERS:
        for a, b in zip(outs[t], outs["scalar"]):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


def test_int8_cache_error_is_bounded():
    q, k, v = draw(500, 8, 9, 3, 64, seed=4)
    exact = sdpa(q, k, v)
    # Prefill and decode add the query's int8 rounding on top of the cache's: within a few 1/254 steps.
    got = _core.attention(q, k, v, "int8")
    err = np.abs(got - exact).max()
    assert 1e-5 < err < 0.05, err
    err = np.abs(_core.attention(q[-1:], k, v, "int8") - exact[-1:]).max()
    assert 1e-5 < err < 0.05, err


def test_int8_prefill_rows_equal_decode_of_the_same_position():
    # A prefill chunk's last row and a decode step at the same position compute with the same int8 query and int16
    # weights (over other block ranges and merges: float rounding apart).
    q, k, v = draw(1300, 40, 12, 3, 64, seed=8)
    chunk = _core.attention(q, k, v, "int8")[-1]
    step = _core.attention(q[-1:], k, v, "int8")[0]
    np.testing.assert_allclose(chunk, step, rtol=0, atol=2e-5 * max(1.0, np.abs(step).max()))


def test_attention_refuses_bad_shapes():
    q, k, v = draw(8, 2, 4, 2, 64, seed=5)
    with pytest.raises(ValueError, match="multiple"):
        _core.attention(q[:, :3], k, v, "int8")
    with pytest.raises(ValueError, match="queries"):
        _core.attention(np.zeros((9, 4, 64), np.float32), k, v, "int8")
    with pytest.raises(ValueError, match="head sizes"):
        _core.attention(q[..., :32], k, v, "int8")
    with pytest.raises(ValueError, match="KV cache type"):
        _core.attention(q, k, v, "f8")


def test_decode_query_f32_path_keeps_float_queries():
    # set_decode_query("f32") (the A/B switch of benchmarks/attention.py) decodes with the float query: SDPA over the
    # stored cache with the unrounded query; the default rounds it (the int8 path's difference is visible).
    q, k, v = draw(300, 1, 6, 2, 64, seed=6)
    want = sdpa(q, quantize_i8(k), quantize_i8(v))
    saved = _core.decode_query()
    try:
        _core.set_decode_query("f32")
        np.testing.assert_allclose(_core.attention(q, k, v, "int8"), want, rtol=0, atol=3e-5)
        _core.set_decode_query("int8")
        assert np.abs(_core.attention(q, k, v, "int8") - want).max() > 1e-4
        with pytest.raises(ValueError, match="int8"):
            _core.set_decode_query("f16")
    finally:
        _core.set_decode_query(saved)


@pytest.mark.parametrize("kv", ["int8", "f16", "f32"])
def test_attention_timing_bindings_return_one_time_per_call_and_refuse_bad_shapes(kv):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((40, 3, 64)).astype(np.float32)
    q = rng.standard_normal((9, 64)).astype(np.float32)
    times = _core.time_decode_attention(q, k, k, kv, 3)
    assert times.shape == (3,) and (times > 0).all()
    times = _core.time_prefill_attention(rng.standard_normal((5, 9, 64)).astype(np.float32), k, k, kv, 2)
    assert times.shape == (2,) and (times > 0).all()
    with pytest.raises(ValueError, match="multiple of k's kv_heads"):
        _core.time_decode_attention(q[:8], k, k, kv, 1)
    with pytest.raises(ValueError, match="1 <= t <= n"):
        _core.time_prefill_attention(rng.standard_normal((41, 9, 64)).astype(np.float32), k, k, kv, 1)
