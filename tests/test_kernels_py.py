"""The quantized kernels from Python and torch: every ISA tier against torch (dequantize, then matmul) within the
error bound of docs/kernels.md, awkward shapes, the fused down-sampler, torch custom ops (opcheck), bad input.

Bound: the kernels quantize each activation group b to int8 with step d_b = max|x_b| / 127, so
|y - W_deq x| <= sum_b d_b / 2 * sum_{i in b} |W_deq[n, i]|  (+ float32 rounding, 1e-5 relative here)."""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluelm_v import _core, kernels, quant

from bench_helpers import load_benchmark

FORMATS = sorted(quant.FORMATS)


def bound(wd: np.ndarray, x: np.ndarray, group: int) -> np.ndarray:
    """[t, n] error bound for x [t, k] against dequantized weights wd [n, k]."""
    t, k = x.shape
    d = np.abs(x.reshape(t, k // group, group)).max(-1) / 127  # [t, blocks]
    wsum = np.abs(wd).reshape(wd.shape[0], k // group, group).sum(-1)  # [n, blocks]
    return (d / 2) @ wsum.T


def check(fmt: str, n: int, k: int, t: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = (rng.standard_normal((t, k)) * rng.uniform(0.1, 10, (t, 1))).astype(np.float32)
    rows = quant.quantize(w, fmt)
    wd = quant.dequantize(rows, fmt, k)
    p = kernels.PackedWeights.from_rows(rows, fmt, n, k)
    got = kernels.gemm(x, p)
    exact = x.astype(np.float64) @ wd.astype(np.float64).T
    tol = bound(wd, x, quant.FORMATS[fmt].group) + 1e-5 * (np.abs(x) @ np.abs(wd).T) + 1e-6
    assert got.shape == (t, n)
    assert (np.abs(got - exact) <= tol).all(), np.abs(got - exact).max()
    return got


@pytest.fixture(params=[isa for isa in _core.supported_isas()])
def isa(request):
    saved = _core.active_isa()
    _core.set_active_isa(request.param)
    yield request.param
    _core.set_active_isa(saved)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,t", [(1, 1), (31, 7), (33, 128), (4097, 1), (33, 129)])
def test_gemm_against_torch_on_awkward_shapes(isa, fmt, n, t):
    torch = pytest.importorskip("torch")
    g = quant.FORMATS[fmt].group
    k = 4096 + g if n <= 33 and t <= 7 else 2 * g
    got = check(fmt, n, k, t)
    # The same through torch: dequantize, then matmul (float32) - agreement within the bound.
    rows = quant.quantize(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), fmt)
    wd = torch.from_numpy(quant.dequantize(rows, fmt, k))
    assert got.shape == (t, wd.shape[0])


def test_every_tier_agrees_with_scalar():
    saved = _core.active_isa()
    outs = {}
    try:
        for tier in _core.supported_isas():
            _core.set_active_isa(tier)
            outs[tier] = [check(fmt, 37, 4 * quant.FORMATS[fmt].group, 9, seed=3) for fmt in FORMATS]
    finally:
        _core.set_active_isa(saved)
    for tier, res in outs.items():
        for a, b in zip(res, outs["scalar"]):  # integer dot products are exact; float sums differ in order only
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("fmt", ["q4_k", "q5_k", "q6_k"])
def test_kquant_gemm_at_top_levels_and_full_scale_activations_has_no_int16_overflow(isa, fmt):
    """Rows at +1 but for one -1 per 32 put almost every level at its top (15 / 31 / 63); activations +-1 scale to
    +-127 where the levels are highest: the int16 sums the GEMM keeps before widening are at their largest (a wrong
    run length, e.g. Q5_K summed over 8 steps, wraps them and misses the bound by orders of magnitude)."""
    n, k, t = 24, 512, 9  # three 8-row panels (a pair and a single), two 4-token blocks and a tail
    w = np.ones((n, k), np.float32)
    w[:, ::32] = -1.0
    w[1::2] *= -1.0  # odd rows at the bottom levels instead
    x = np.ones((t, k), np.float32)
    x[:, ::32] = -1.0
    x[1::2] *= -1.0  # odd tokens negative
    rows = quant.quantize(w, fmt)
    wd = quant.dequantize(rows, fmt, k)
    got = kernels.gemm(x, kernels.PackedWeights.from_rows(rows, fmt, n, k))
    exact = x.astype(np.float64) @ wd.astype(np.float64).T
    tol = bound(wd, x, quant.FORMATS[fmt].group) + 1e-5 * (np.abs(x) @ np.abs(wd).T) + 1e-6
    assert (np.abs(got - exact) <= tol).all(), np.abs(got - exact).max()
    assert np.abs(exact).max() > 0.9 * k  # the products are at full scale, not cancelled


@pytest.mark.skipif(not _core.isa_supported("avx512"), reason="the VNNI K-quant tile needs an AVX-512 CPU")
@pytest.mark.parametrize("fmt", ["q4_k", "q5_k", "q6_k"])
def test_avx512_kquant_vnni_tile_equals_scalar_on_partial_quads_token_tails_and_thread_splits(fmt):
    """The AVX-512 tier's K-quant GEMM works on four 8-row panels at once and 4 tokens at a time, 128 tokens per
    unpacked tile: N of 8..57 rows leaves quads of 1-4 panels and a partial last panel, T of 4..7 and 131 leaves token
    tails of 0-3 and a second 128-token tile, and 2 threads split the panels at other than quad boundaries. Each
    result equals the scalar tier's up to float summation order (the integer products are exact)."""
    import bluelm_v

    rng = np.random.default_rng(11)
    saved_isa, saved_threads = _core.active_isa(), bluelm_v.get_num_threads()
    try:
        for n in (8, 20, 32, 33, 57):
            for k in (256, 768):
                w = rng.standard_normal((n, k)).astype(np.float32)
                p = kernels.PackedWeights.from_rows(quant.quantize(w, fmt), fmt, n, k)
                for t in (4, 5, 6, 7, 131):
                    x = (rng.standard_normal((t, k)) * rng.uniform(0.1, 10, (t, 1))).astype(np.float32)
                    _core.set_active_isa("scalar")
                    bluelm_v.set_num_threads(1)
                    ref = kernels.gemm(x, p)
                    _core.set_active_isa("avx512")
                    for threads in (1, 2):
                        bluelm_v.set_num_threads(threads)
                        got = kernels.gemm(x, p)
                        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max(),
                                                   err_msg=f"{fmt} n={n} k={k} t={t} threads={threads}")
    finally:
        _core.set_active_isa(saved_isa)
        bluelm_v.set_num_threads(saved_threads)


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(FORMATS), n=st.integers(1, 70), blocks=st.integers(1, 5), t=st.integers(1, 9),
       seed=st.integers(0, 2**31 - 1))
def test_gemm_property(fmt, n, blocks, t, seed):
    check(fmt, n, blocks * quant.FORMATS[fmt].group, t, seed)


@pytest.mark.skipif(not _core.isa_supported("avx512"), reason="the AVX-512 VNNI int8 tiles need an AVX-512 CPU")
def test_avx512_int8_unsigned_tiles_equal_the_sign_trick_for_every_t():
    """The unsigned-weight int8 tiles (w + 128) take the offset out of the integer sum, so for every T from 1 to 33
    (GEMV, every tile width and remainder) they give the sign trick's bytes, and scalar's within float order; on a
    single block (K = 32) scalar's bytes too. The former float correction missed by ~1e-6 relative, enough for the
    int8 activation quantization of the next layer to flip and move the tiny ViT's outputs by 0.08."""
    saved_isa, saved_trick = _core.active_isa(), _core.int8_sign_trick()
    rng = np.random.default_rng(7)
    try:
        for k in (32, 96, 4128):
            for n in (1, 17, 33):
                w = rng.standard_normal((n, k)).astype(np.float32)
                p = kernels.pack(w, "q8_0")
                x = (rng.standard_normal((33, k)) * rng.uniform(0.1, 10, (33, 1))).astype(np.float32)
                _core.set_active_isa("scalar")
                ref = kernels.gemm(x, p)
                _core.set_active_isa("avx512")
                for t in range(1, 34):
                    _core.set_int8_sign_trick(True)
                    sign = kernels.gemm(x[:t], p)
                    _core.set_int8_sign_trick(False)
                    uns = kernels.gemm(x[:t], p) if t > 1 else kernels.gemv(x[0], p)[None]
                    np.testing.assert_array_equal(uns, sign, err_msg=f"K={k} N={n} T={t}")
                    if k == 32:
                        np.testing.assert_array_equal(uns, ref[:t], err_msg=f"K={k} N={n} T={t}")
                    else:
                        np.testing.assert_allclose(uns, ref[:t], rtol=0, atol=1e-6 * np.abs(ref).max())
    finally:
        _core.set_active_isa(saved_isa)
        _core.set_int8_sign_trick(saved_trick)


I16_FORMATS = [f for f in FORMATS if quant.FORMATS[f].group in (32, 64, 128) and not f.endswith("_k")]


def i16_model(x: np.ndarray, wd: np.ndarray, group: int) -> np.ndarray:
    """numpy's own model of gemm_i16: each group of x rounded to int16 (nearest even) on the step amax / 32767
    (float32 arithmetic, as the kernels), then multiplied exactly with the dequantized weights."""
    t, k = x.shape
    xb = x.reshape(t, k // group, group)
    amax = np.abs(xb).max(-1, keepdims=True)
    inv = np.where(amax > 0, np.float32(32767) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(np.clip(xb * inv, -32767, 32767))
    xq = (q * (amax / np.float32(32767)).astype(np.float64)).reshape(t, k)
    return xq @ wd.astype(np.float64).T


@pytest.mark.parametrize("fmt", I16_FORMATS)
def test_gemm_i16_equals_a_numpy_model_of_its_int16_rounding_and_is_the_scalar_tiers_bytes(fmt):
    """gemm_i16 (int16 activations in one pass) against numpy's model of its rounding, within float32 order
    (1e-6 of the terms' magnitude: int16 rounding alone would be ~1.5e-5 of a group's largest value), for token
    counts covering the 4-token tiles and their 1-3 tails and 1-2 panel tiles; every tier with the kernel gives the
    scalar tier's bytes; int8 activations (gemm) are ~100x further from exact."""
    group = quant.FORMATS[fmt].group
    rng = np.random.default_rng(11)
    saved = _core.active_isa()
    tiers = []
    try:
        for tier in _core.supported_isas():
            _core.set_active_isa(tier)
            if _core.has_gemm_i16(fmt):
                tiers.append(tier)
        assert "scalar" in tiers
        for n, k, t in ((1, group, 1), (9, 3 * group, 6), (17, 2 * group, 35), (40, 4096 + group, 5)):
            w = rng.standard_normal((n, k)).astype(np.float32)
            x = (rng.standard_normal((t, k)) * rng.uniform(0.1, 10, (t, 1))).astype(np.float32)
            x[:, 3] *= 40  # an outlier channel
            bias = rng.standard_normal(n).astype(np.float32)
            rows = quant.quantize(w, fmt)
            wd = quant.dequantize(rows, fmt, k)
            p = kernels.PackedWeights.from_rows(rows, fmt, n, k)
            model = i16_model(x, wd, group) + bias
            mag = np.abs(x) @ np.abs(wd).T + np.abs(bias)
            out = {}
            for tier in tiers:
                _core.set_active_isa(tier)
                out[tier] = kernels.gemm_i16(x, p, bias)
            assert out["scalar"].shape == (t, n)
            assert (np.abs(out["scalar"] - model) <= 1e-6 * mag + 1e-6).all(), np.abs(out["scalar"] - model).max()
            for tier in tiers:
                np.testing.assert_array_equal(out[tier], out["scalar"], err_msg=f"{tier} {n}x{k} T={t}")
            exact = x.astype(np.float64) @ wd.astype(np.float64).T + bias
            err16 = np.abs(out["scalar"] - exact).max()
            assert err16 * 30 < np.abs(kernels.gemm(x, p, bias) - exact).max()
    finally:
        _core.set_active_isa(saved)


def test_gemm_i16_refuses_k_quants_and_bad_shapes():
    rng = np.random.default_rng(1)
    kq = kernels.pack(rng.standard_normal((8, 256)).astype(np.float32), "q4_k")
    assert not _core.has_gemm_i16("q4_k")
    with pytest.raises(ValueError, match="one scale per group"):
        kernels.gemm_i16(np.zeros((2, 256), np.float32), kq)
    p = kernels.pack(rng.standard_normal((8, 64)).astype(np.float32), "q8_0")
    with pytest.raises(ValueError, match="K = 32 columns"):
        kernels.gemm_i16(np.zeros((2, 32), np.float32), p)


def test_gemv_equals_gemm_row_and_reference():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((45, 128)).astype(np.float32)
    x = rng.standard_normal(128).astype(np.float32)
    for fmt in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"):
        rows = quant.quantize(w, fmt)
        p = kernels.PackedWeights.from_rows(rows, fmt, 45, 128)
        y = kernels.gemv(x, p)
        np.testing.assert_allclose(y, kernels.gemm(x[None], p)[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(y, kernels.gemm_reference(rows, fmt, 45, 128, x[None])[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(p.rows(), rows)  # pack / unpack is exact (Q5: levels widened to int8 and back)


def test_downsample_matches_the_reference_model():
    torch = pytest.importorskip("torch")
    from bluelm_v.models.projector import downsample

    x = np.random.default_rng(4).standard_normal((27, 27, 48)).astype(np.float32)
    got = kernels.downsample_2x2(x)
    want = downsample(torch.from_numpy(x).reshape(1, 729, 48), 27)[0].numpy().reshape(14, 14, 192)
    np.testing.assert_array_equal(got, want)
    assert kernels.downsample_2x2(np.ones((1, 1, 3), np.float32)).shape == (1, 1, 12)


def test_downsample_linear_matches_unfused():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 5, 16)).astype(np.float32)
    w = rng.standard_normal((24, 64)).astype(np.float32)
    gamma, beta, bias = (rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32),
                         rng.standard_normal(24).astype(np.float32))
    p = kernels.pack(w, "q8_0")
    got = kernels.downsample_linear(x, p, gamma, beta, bias, eps=1e-5)
    ds = kernels.downsample_2x2(x).reshape(-1, 64)
    ln = (ds - ds.mean(-1, keepdims=True)) / np.sqrt(ds.var(-1, keepdims=True) + 1e-5) * gamma + beta
    wd = quant.dequantize(quant.quantize(w, "q8_0"), "q8_0", 64)
    want = ln @ wd.T + bias
    assert got.shape == (12, 24)
    assert (np.abs(got - want) <= bound(wd, ln.astype(np.float32), 32) * 1.01 + 1e-4).all()


def test_torch_ops_pass_opcheck_and_match():
    torch = pytest.importorskip("torch")
    import bluelm_v.kernels_torch  # noqa: F401  (registers torch.ops.bluelm.*)

    w = torch.randn(40, 64)
    p = kernels.pack(w, "q4_0")
    x = torch.randn(2, 5, 64)
    y = torch.ops.bluelm.gemm_packed(x, p.data, "q4_0", 40, 64)
    assert y.shape == (2, 5, 40)
    torch.testing.assert_close(y.reshape(10, 40), kernels.gemm(x.reshape(10, 64).contiguous(), p))
    cases = [(torch.ops.bluelm.gemm_packed.default, (x, p.data, "q4_0", 40, 64)),
             (torch.ops.bluelm.downsample_2x2.default, (torch.randn(5, 5, 8),)),
             (torch.ops.bluelm.quantize.default, (w, "q8_0")),
             (torch.ops.bluelm.dequantize.default, (torch.ops.bluelm.quantize(w, "q8_0"), "q8_0", 64))]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


def test_numpy_and_torch_without_copies():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 64)
    p = kernels.pack(x.numpy(), "q8_0")
    y = kernels.gemm(x, p)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (3, 3)
    yn = kernels.gemm(x.numpy(), p)
    assert isinstance(yn, np.ndarray)
    np.testing.assert_array_equal(y.numpy(), yn)
    # The torch result shares the kernel's output buffer (from_numpy), so writing through one shows in the other.
    y.numpy()[0, 0] = 123.0
    assert y[0, 0].item() == 123.0


def test_bad_input_is_refused_clearly():
    p = kernels.pack(np.ones((8, 64), np.float32), "q4_0")
    with pytest.raises(TypeError, match="float32"):
        kernels.gemm(np.ones((2, 64), np.float64), p)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.gemm(np.ones((64, 2), np.float32).T, p)
    with pytest.raises(ValueError, match="K = 64"):
        kernels.gemm(np.ones((2, 32), np.float32), p)
    with pytest.raises(ValueError, match="multiple"):
        kernels.pack(np.ones((8, 33), np.float32), "q4_0")
    bad = kernels.PackedWeights("q4_0", 8, 64, p.data[:-1].copy())
    with pytest.raises(ValueError, match="bytes"):
        kernels.gemm(np.ones((1, 64), np.float32), bad)
    with pytest.raises(ValueError, match=r"\[h, w, c\]"):
        kernels.downsample_2x2(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="threads"):
        kernels.set_num_threads(-1)


def test_thread_count_does_not_change_results():
    import bluelm_v

    before = bluelm_v.get_num_threads()
    rng = np.random.default_rng(7)
    p = kernels.pack(rng.standard_normal((257, 256)).astype(np.float32), "q4_1")
    x = rng.standard_normal((13, 256)).astype(np.float32)
    try:
        bluelm_v.set_num_threads(1)
        one = kernels.gemm(x, p)
        bluelm_v.set_num_threads(2)
        two = kernels.gemm(x, p)
    finally:
        bluelm_v.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


_SMALL_PRODUCT_SCRIPT = """
import sys, numpy as np, bluelm_v
from bluelm_v import kernels
bluelm_v.set_num_threads(2)
rng = np.random.default_rng(3)
w = rng.standard_normal((64, 576)).astype(np.float32)   # 64 x 576 = 36864 MACs per token: a 'small product'
x = rng.standard_normal((3, 576)).astype(np.float32)
sys.stdout.buffer.write(kernels.gemm(x, kernels.pack(w, "q4_0")).tobytes())
"""


def _run_small_product(limit):
    import os
    import subprocess
    import sys

    env = dict(os.environ, BLUELM_MIN_PARALLEL_MACS=limit)
    return subprocess.run([sys.executable, "-c", _SMALL_PRODUCT_SCRIPT], env=env, capture_output=True, timeout=120)


def test_small_products_on_one_thread_give_the_same_bytes_and_bad_limits_are_refused():
    # A limit of 0 splits every product over the pool; a huge one keeps every product on the calling thread.
    split, inline = _run_small_product("0"), _run_small_product("1000000000")
    assert split.returncode == 0 and inline.returncode == 0, (split.stderr, inline.stderr)
    assert len(split.stdout) == 3 * 64 * 4 and split.stdout == inline.stdout
    bad = _run_small_product("many")
    assert bad.returncode != 0 and b"BLUELM_MIN_PARALLEL_MACS='many' is not a non-negative integer" in bad.stderr


_PREFETCH_SCRIPT = """
from bluelm_v import _core
print(_core.decode_prefetch_l2())
"""


def test_decode_prefetch_level_follows_the_environment_and_refuses_bad_values():
    import os
    import subprocess
    import sys

    def run(value):
        env = dict(os.environ, BLUELM_DECODE_PREFETCH=value)
        return subprocess.run([sys.executable, "-c", _PREFETCH_SCRIPT], env=env, capture_output=True, timeout=120)

    l1, l2, bad = run("l1"), run("l2"), run("L3")
    assert l1.returncode == 0 and l1.stdout.strip() == b"False", l1.stderr
    assert l2.returncode == 0 and l2.stdout.strip() == b"True", l2.stderr
    assert bad.returncode != 0 and b"BLUELM_DECODE_PREFETCH='L3' is not l1 or l2" in bad.stderr


@contextmanager
def kernel_switches(**values):
    """Sets _core's A/B switches (each name read by _core.<name>() and set by _core.set_<name>(), the active ISA
    among them) for the block, and restores what they were after it, whatever the block set in between."""
    saved = {name: getattr(_core, name)() for name in values}
    try:
        for name, value in values.items():
            getattr(_core, f"set_{name}")(value)
        yield
    finally:
        for name, value in saved.items():
            getattr(_core, f"set_{name}")(value)


@pytest.mark.parametrize("fmt", ["q4_0", "q8_0", "q5_0", "q4_k", "q6_k"])
def test_decode_prefetch_to_l1_or_l2_gives_the_same_bytes(isa, fmt):
    """The decode tiles' prefetch level (L1 or L2) moves no result: a 1-token and a 3-token product on 40 x 1024
    weights give the same bytes either way, in every tier."""
    rng = np.random.default_rng(12)
    p = kernels.pack(rng.standard_normal((40, 1024)).astype(np.float32), fmt)
    x = rng.standard_normal((3, 1024)).astype(np.float32)
    out = {}
    with kernel_switches(decode_prefetch_l2=False):
        for l2 in (False, True):
            _core.set_decode_prefetch_l2(l2)
            out[l2] = (kernels.gemv(x[0], p), kernels.gemm(x, p))
    np.testing.assert_array_equal(out[False][0], out[True][0])
    np.testing.assert_array_equal(out[False][1], out[True][1])
    assert np.abs(out[True][0]).max() > 0


@pytest.mark.skipif("avx512" not in _core.supported_isas(), reason="the AVX-512 tier's switch")
@pytest.mark.parametrize("fmt", ["q4_0", "q8_0"])
@pytest.mark.parametrize("k", [1024, 5760])
def test_avx512_one_token_q4_0_and_q8_0_on_either_tile_agree_with_the_avx2_tier(fmt, k):
    """The AVX-512 tier's one-token Q4_0 / Q8_0 product runs on its pair tile or on the AVX2 tier's one-panel tile
    (avx512_pair_decode; Q8_0 where that tile reads it the AMD way, decode_scales_last, on here: the scales last at
    K = 1024, the next panel's scales prefetched at 5760): off, it is the AVX2 tier's bytes; on, the same values to
    float rounding."""
    rng = np.random.default_rng(13)
    p = kernels.pack(rng.standard_normal((40, k)).astype(np.float32), fmt)
    x = rng.standard_normal(k).astype(np.float32)
    with kernel_switches(decode_scales_last=True, active_isa="avx2", avx512_pair_decode=False):
        ref = kernels.gemv(x, p)
        _core.set_active_isa("avx512")
        out = {}
        for pair in (False, True):
            _core.set_avx512_pair_decode(pair)
            out[pair] = kernels.gemv(x, p)
    np.testing.assert_array_equal(out[False], ref)
    np.testing.assert_allclose(out[True], ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
    assert np.abs(ref).max() > 0


@pytest.mark.skipif("avx2" not in _core.supported_isas(), reason="the AVX2 tier's switch")
@pytest.mark.parametrize("k", [576, 2304, 5760])
def test_avx2_one_token_q8_0_scales_last_gives_the_same_bytes(k):
    """decode_scales_last: the AVX2 one-panel Q8_0 tile applies each panel's scales after its levels (K up to 3072)
    or per block (past it, prefetching the next panel's scales); the products are the same bytes either way, and
    close to the float product of the dequantized weights."""
    fmt = "q8_0"
    rng = np.random.default_rng(k)
    w = rng.standard_normal((300, k)).astype(np.float32)
    p = kernels.pack(w, fmt)
    x = rng.standard_normal(k).astype(np.float32)
    out = {}
    with kernel_switches(active_isa="avx2", decode_scales_last=False):
        for last in (False, True):
            _core.set_decode_scales_last(last)
            out[last] = kernels.gemv(x, p)
    np.testing.assert_array_equal(out[False], out[True])
    assert _core.scales_last_fits(fmt, k) == (k <= 3072)
    ref = quant.dequantize(quant.quantize(w, fmt), fmt, k) @ x
    np.testing.assert_allclose(out[True], ref, rtol=0.05, atol=0.05 * np.abs(ref).max())


def test_packed_weights_are_huge_page_aligned_and_the_advice_can_be_turned_off(monkeypatch):
    # 1024 x 4096 q4_0 packs into 2.25 MiB: library memory aligned to 2 MiB (huge pages, csrc/common/memory.h).
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((1024, 4096)) * 0.05).astype(np.float32)
    rows = quant.quantize(w, "q4_0")
    big = kernels.PackedWeights.from_rows(rows, "q4_0", 1024, 4096)
    assert big.nbytes >= 2 << 20 and big.data.ctypes.data % (2 << 20) == 0
    assert big.data.flags.writeable and big.data.flags.c_contiguous
    small = kernels.PackedWeights.from_rows(rows[:8], "q4_0", 8, 4096)
    assert small.data.ctypes.data % 64 == 0
    x = rng.standard_normal((2, 4096)).astype(np.float32)
    np.testing.assert_array_equal(kernels.gemm(x, small), kernels.gemm(x, big)[:, :8])
    monkeypatch.setenv("BLUELM_HUGEPAGES", "0")
    assert not _core.hugepage_advice()
    off = kernels.PackedWeights.from_rows(rows, "q4_0", 1024, 4096)
    np.testing.assert_array_equal(off.data, big.data)
    monkeypatch.setenv("BLUELM_HUGEPAGES", "1")
    assert _core.hugepage_advice()


def test_weight_arena_packs_matrices_back_to_back_and_outlives_its_handle():
    import gc
    import sys

    rng = np.random.default_rng(4)
    ws = [(rng.standard_normal((n, 256)) * 0.05).astype(np.float32) for n in (40, 24, 8)]
    own = [kernels.pack(w, "q4_0") for w in ws]
    need = sum(p.nbytes for p in own)
    arena = kernels.WeightArena(need + 64)
    assert arena.capacity >= need and arena.used == 0
    packed = [kernels.pack(w, "q4_0", arena=arena) for w in ws]
    if sys.platform.startswith("linux"):
        base = packed[0].data.ctypes.data
        assert base % (2 << 20) == 0  # the arena starts on a huge page
        offsets = [p.data.ctypes.data - base for p in packed]
        sizes = [(p.nbytes + 63) // 64 * 64 for p in packed]
        assert offsets == [0, sizes[0], sizes[0] + sizes[1]]  # back to back, 64-byte aligned, in packing order
        assert arena.used == sum(sizes)
    # Full: the next matrix gets an allocation of its own, and nothing changes for the caller.
    extra = kernels.pack(ws[0], "q4_0", arena=arena)
    np.testing.assert_array_equal(extra.data, own[0].data)
    del arena
    gc.collect()  # the packed arrays keep the arena's memory alive
    x = rng.standard_normal((3, 256)).astype(np.float32)
    for p, o in zip(packed, own):
        np.testing.assert_array_equal(p.data, o.data)
        np.testing.assert_array_equal(kernels.gemm(x, p), kernels.gemm(x, o))
    with pytest.raises(Exception, match="capacity"):
        kernels.WeightArena(-1)


def test_gemv_call_timer_times_every_call_and_refuses_bad_stacks():
    """The benchmark's stream rows time GEMVs call by call in C++ (_core.time_gemv_calls)."""
    n, k = 40, 64
    rows = quant.quantize(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), "q4_0")
    stack = [kernels.PackedWeights.from_rows(rows, "q4_0", n, k).data for _ in range(3)]
    x = np.ones(k, np.float32)
    times = _core.time_gemv_calls(stack, "q4_0", n, k, x, 7)
    assert times.shape == (7,) and np.all(times > 0) and np.all(np.isfinite(times))
    with pytest.raises(ValueError, match="at least one"):
        _core.time_gemv_calls([], "q4_0", n, k, x, 1)
    with pytest.raises(ValueError, match="calls"):
        _core.time_gemv_calls(stack, "q4_0", n, k, x, 0)
    with pytest.raises(ValueError, match="K = 64"):
        _core.time_gemv_calls(stack, "q4_0", n, k, np.ones(32, np.float32), 1)
    with pytest.raises(ValueError):  # a packed buffer of other dimensions than the stated n, k
        _core.time_gemv_calls(stack + [stack[0][:-1]], "q4_0", n, k, x, 1)
    with pytest.raises(TypeError, match="uint8"):
        _core.time_gemv_calls([None], "q4_0", n, k, x, 1)


@pytest.mark.skipif(not _core.isa_supported("avx2"), reason="the attention mix loops are AVX2 loops")
def test_attention_mix_loops_are_listed_measured_and_kept_out_of_the_quant_formats():
    peaks = {p["name"]: p for p in _core.roofline_peaks()}
    for name, fmt in (("mix_attn_scores_avx2", "attn_scores_i8"), ("mix_attn_values_avx2", "attn_values_i16")):
        assert peaks[name]["format"] == fmt and peaks[name]["probe"] == "fp32_fma_avx2" and peaks[name]["unit"] == "GOPS"
        assert _core.measure_peak(name, 1, 1, 0.01) > 1.0
    # benchmarks/kernels.py pairs quant formats with their GEMM mix loops: the attention loops must not join them
    probe, mixes = _bench_kernels().tier_loops("avx2")
    assert probe == "int8_maddubs_paddw_avx2"
    assert "q4_0" in mixes and not any(f.startswith("attn_") for f in mixes)


def _bench_kernels():
    return load_benchmark("kernels")


@pytest.mark.parametrize("tokens", [1, 2, 3])
def test_avx512_one_token_q6_k_agrees_with_the_avx2_tier(tokens):
    """The AVX-512 tier's own Q6_K decode kernel (1-3 tokens) gives the AVX2 tier's products up to float rounding (the
    same integer sum per row and super-block, spread over other lanes), on 2304 x 2304 weights and a partial panel."""
    if "avx512" not in _core.supported_isas():
        pytest.skip("no AVX-512 tier on this CPU")
    rng = np.random.default_rng(66)
    for n, k in ((2304, 2304), (13, 512)):
        p = kernels.pack(rng.standard_normal((n, k)).astype(np.float32), "q6_k")
        x = rng.standard_normal((tokens, k)).astype(np.float32) * 2
        out = {}
        for isa in ("avx2", "avx512"):
            with kernel_switches(active_isa=isa):
                out[isa] = kernels.gemm(x, p)
        scale = np.abs(out["avx2"]).max()
        np.testing.assert_allclose(out["avx512"], out["avx2"], rtol=0, atol=2e-5 * scale)
        assert not np.array_equal(out["avx2"], np.zeros_like(out["avx2"]))


@pytest.mark.parametrize("isa", [i for i in ("scalar", "avx2", "avx512", "neon", "neon_dotprod")
                                 if i in _core.supported_isas()])
def test_q6_k_decode_of_two_and_three_tokens_gives_each_tokens_one_token_bytes(isa):
    """The x86 Q6_K decode unpacks a row's levels once for all 2-3 tokens (int16 activations' two passes, or a
    three-token tile); each token's outputs must be the bytes of a one-token call on that token alone, in every tier,
    on 2304 x 2304 weights, a partial panel and a width of one super-block."""
    rng = np.random.default_rng(61)
    for n, k in ((2304, 2304), (13, 512), (24, 256)):
        p = kernels.pack(rng.standard_normal((n, k)).astype(np.float32), "q6_k")
        x = rng.standard_normal((3, k)).astype(np.float32) * 3
        with kernel_switches(active_isa=isa):
            alone = np.stack([kernels.gemm(x[i:i + 1], p)[0] for i in range(3)])
            for tokens in (2, 3):
                np.testing.assert_array_equal(kernels.gemm(x[:tokens], p), alone[:tokens])
        assert np.abs(alone).max() > 0


@pytest.mark.parametrize("fmt", ["q4_k", "q5_k"])
def test_avx512_k45_decode_with_vpdpbusd_gives_the_avx2_walks_bytes(fmt):
    """The AVX-512 tier's Q4_K / Q5_K decode of 2-3 tokens with vpdpbusd (avx512_k45_decode on) gives the bytes of
    the AVX2 walk over the same panels (off) and of the AVX2 tier (the int16 activations' two passes are 2 tokens; one
    token runs the AVX2 walk either way), on 2304 x 2304 weights and a partial panel."""
    if "avx512" not in _core.supported_isas():
        pytest.skip("no AVX-512 tier on this CPU")
    rng = np.random.default_rng(45)
    for n, k in ((2304, 2304), (13, 512)):
        p = kernels.pack(rng.standard_normal((n, k)).astype(np.float32), fmt)
        for tokens in (1, 2, 3):
            x = rng.standard_normal((tokens, k)).astype(np.float32) * 2
            out = {}
            for name, switches in (("vnni", dict(active_isa="avx512", avx512_k45_decode=True)),
                                   ("maddubs", dict(active_isa="avx512", avx512_k45_decode=False)),
                                   ("avx2", dict(active_isa="avx2"))):
                with kernel_switches(**switches):
                    out[name] = kernels.gemm(x, p)
            np.testing.assert_array_equal(out["vnni"], out["maddubs"])
            np.testing.assert_array_equal(out["vnni"], out["avx2"])
            assert np.abs(out["vnni"]).max() > 0


def test_kernels_benchmark_times_q6_k_on_the_avx2_tier_as_a_companion_row():
    """benchmarks/kernels.py's avx512_q6_k_decode switch: on the AVX-512 tier a Q6_K streaming row gets a companion
    row timed on the AVX2 tier (format q6_k_avx2_decode, isa avx2), rounds alternating, and the tier is restored."""
    if "avx512" not in _core.supported_isas():
        pytest.skip("no AVX-512 tier on this CPU")
    bench = _bench_kernels()
    get, _, applies, _ = bench.DECODE_SWITCHES["avx512_q6_k_decode"]
    base = {"format": "q6_k", "isa": "avx512", "median_s": 2e-3, "gbps": 10.0, "fraction_of_probe": 0.9}
    seen = []

    def kernel_s():
        seen.append(_core.active_isa())
        return 1e-3 if _core.active_isa() == "avx512" else 3e-3

    with kernel_switches(active_isa="avx512"):
        assert get() and applies("q6_k", "avx512") and not applies("q6_k", "avx2")
        assert not applies("q4_k", "avx512")
        row = bench.switch_row(base, "q6_k", kernel_s, "avx512_q6_k_decode", "avx2_decode")
        assert _core.active_isa() == "avx512"
    assert row["format"] == "q6_k_avx2_decode" and row["isa"] == "avx2" and row["switch_on"] is False
    assert row["speedup_vs_baseline"] == pytest.approx(1 / 3) and "fraction_of_probe" not in row
    assert sorted(set(seen)) == ["avx2", "avx512"] and len(seen) == 2 * bench.ROUNDS
    assert seen[0] == "avx512" and seen[2] == "avx2"  # alternating order


def test_scales_last_fits_q8_0_up_to_6_kb_of_activations_and_held_back_values():
    """scales_last_fits: Q8_0 where K + 32 bytes per block <= 6 KB (K <= 3072), no other format."""
    assert _core.scales_last_fits("q8_0", 576) and _core.scales_last_fits("q8_0", 3072)
    assert not _core.scales_last_fits("q8_0", 3104) and not _core.scales_last_fits("q8_0", 5760)
    assert not _core.scales_last_fits("q4_0", 576) and not _core.scales_last_fits("q4_k", 2304)
