"""Fuzzing the image readers: mutated, truncated and spliced files must give FormatError/LimitError (or decode),
never crash or hang. (A libFuzzer harness for longer runs: `make fuzz`, csrc/image/fuzz_image.cpp.)"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bluelm_v import FormatError, LimitError
from bluelm_v.image import decode_base64, load_image, probe
from bluelm_v.samples import sample_bytes

SEEDS = {fmt: sample_bytes("chart", fmt) for fmt in ("PNG", "JPEG", "WEBP")}


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xD9, 0xDA]))
        elif op == "cut":
            data = data[:pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_images_never_crash(data):
    try:
        img = load_image(data, max_pixels=4_000_000)
    except (FormatError, LimitError):
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    fmt, w, h = probe(data)
    assert img.shape[:2] == (h, w)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash(data):
    with pytest.raises((FormatError, LimitError)):
        load_image(data)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(max_size=64))
def test_random_base64_text_never_crashes(text):
    try:
        decode_base64(text)
    except FormatError:
        pass
