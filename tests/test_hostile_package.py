"""Issue 19, the model package reader: each hostile package of the report, made as it was reproduced, must give a
FormatError / LimitError naming the file and the field, from Engine and from the C++ CLI, never a crash, a hang,
an allocation of gigabytes or a model that silently runs other weights.

Each load runs in a child process under a 4 GiB address-space cap and a timeout, so a regression is a failed test
(segfault, MemoryError, hang), not a dead test run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from bluelm_v._paths import native_program  # noqa: E402
from bluelm_v.export import package  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from bluelm_v.engine import Engine
try:
    e = Engine(sys.argv[1], threads=1)
    e.chat(None, "hi", max_new_tokens=1)
    print("LOADED")
except BaseException as exc:
    print(f"{type(exc).__name__}: {exc}")
"""


@pytest.fixture(scope="module")
def tiny_pkg(tmp_path_factory):
    return package(load_model("tiny"), tmp_path_factory.mktemp("tiny_q8"), quant="q8_0", vit_quant="q8_0")


def copy_of(pkg, tmp_path, name="pkg"):
    out = tmp_path / name
    shutil.copytree(pkg, out)
    return out


def edit(pkg, tmp_path, fn):
    out = copy_of(pkg, tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    fn(m)
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def engine_outcome(pkg, timeout=120) -> str:
    """'LOADED' or 'ExceptionType: message' from Engine(pkg) in a capped child; a crash or hang fails the test."""
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(pkg)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Engine({pkg}) hung for {timeout} s")
    assert r.returncode == 0, f"Engine({pkg}) died with exit code {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout.strip().splitlines()[-1]


def cli_outcome(pkg, timeout=120) -> str:
    try:
        r = subprocess.run([str(native_program("bluelm")), "run", "--model", str(pkg), "--prompt", "hi",
                            "--max-new-tokens", "1"], capture_output=True, text=True, timeout=timeout,
                           errors="backslashreplace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"bluelm run --model {pkg} hung for {timeout} s")
    assert r.returncode in (0, 1, 2), f"bluelm run died with code {r.returncode}: {r.stderr[-2000:]}"
    return r.stderr


def test_manifest_nested_100000_deep_is_a_limit_error(tiny_pkg, tmp_path):
    out = copy_of(tiny_pkg, tmp_path)
    text = (out / "manifest.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    text = text.replace('"model": {', '"model": {"x": ' + deep + ", ", 1)
    (out / "manifest.json").write_text(text)
    got = engine_outcome(out)
    assert got.startswith("LimitError") and "manifest.json" in got and "nested deeper than 64" in got, got
    assert "nested deeper" in cli_outcome(out)


@pytest.mark.parametrize("name", ["weights.bin", "tokenizer.bin"])
def test_fifo_in_the_package_is_refused_at_once(tiny_pkg, tmp_path, name):
    out = copy_of(tiny_pkg, tmp_path)
    (out / name).unlink()
    os.mkfifo(out / name)
    got = engine_outcome(out, timeout=60)
    assert got.startswith("FormatError") and f"{name}: not a regular file" in got, got
    assert "not a regular file" in cli_outcome(out, timeout=60)


def test_symlink_out_of_the_package_is_refused(tiny_pkg, tmp_path):
    out = copy_of(tiny_pkg, tmp_path)
    other = copy_of(tiny_pkg, tmp_path, "elsewhere")
    (out / "weights.bin").unlink()
    (out / "weights.bin").symlink_to(other / "weights.bin")
    got = engine_outcome(out)
    assert got.startswith("FormatError") and "weights.file" in got and "outside the package folder" in got, got
    # A symlink that stays inside the package is fine.
    (out / "weights.bin").unlink()
    shutil.copy(other / "weights.bin", out / "real.bin")
    (out / "weights.bin").symlink_to("real.bin")
    assert engine_outcome(out) == "LOADED"


def test_huge_deploy_chunk_is_a_limit_error_naming_the_field(tiny_pkg, tmp_path):
    def chunk(m):
        m["model"]["deploy"]["chunk"] = 1048576

    got = engine_outcome(edit(tiny_pkg, tmp_path, chunk))
    assert got.startswith("LimitError") and "manifest.json: model.deploy.chunk = 1048576" in got, got


def test_engine_chunk_and_context_are_checked_against_memory(tiny_pkg):
    from bluelm_v import LimitError
    from bluelm_v.engine import Engine

    # The tiny model's max_context is 1024; a chunk of 2^40 tokens is refused before anything is allocated.
    with pytest.raises(LimitError, match="chunk 1099511627776"):
        Engine(tiny_pkg, chunk=1 << 40)


def test_tensor_offset_inside_another_tensor_is_refused(tiny_pkg, tmp_path):
    def overlap(m):
        t = m["tensors"]
        a = t["language_model.model.layers.0.mlp.up_proj.weight"]
        t["language_model.model.layers.0.mlp.gate_proj.weight"]["offset"] = a["offset"]  # same format and shape

    got = engine_outcome(edit(tiny_pkg, tmp_path, overlap))
    assert got.startswith("FormatError") and "manifest.json" in got and "lies inside tensor" in got, got
    assert "gate_proj" in got and "up_proj" in got


def test_invalid_utf8_in_the_manifest_is_a_format_error(tiny_pkg, tmp_path):
    out = copy_of(tiny_pkg, tmp_path)
    data = (out / "manifest.json").read_bytes()
    (out / "manifest.json").write_bytes(data.replace(b'"source": "', b'"source": "\xff\xfe', 1))
    got = engine_outcome(out)
    assert got.startswith("FormatError") and "manifest.json: not UTF-8 text" in got, got
    # JSON strings with invalid UTF-8 inside the model config too (nlohmann quotes the bytes in its message).
    data = (tiny_pkg / "manifest.json").read_bytes().replace(b'"name": "', b'"name": "\xc3', 1)
    (out / "manifest.json").write_bytes(data)
    got = engine_outcome(out)
    assert got.startswith("FormatError") and "not UTF-8" in got, got


def test_non_finite_scale_in_the_package_is_refused(tiny_pkg, tmp_path):
    out = copy_of(tiny_pkg, tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    t = m["tensors"]["language_model.model.layers.0.mlp.down_proj.weight"]
    assert t["format"] == "q8_0"
    data = bytearray((out / "weights.bin").read_bytes())
    data[t["offset"] + 34 * 3: t["offset"] + 34 * 3 + 2] = (0x7E00).to_bytes(2, "little")  # block 3: NaN scale
    (out / "weights.bin").write_bytes(bytes(data))
    got = engine_outcome(out)
    assert got.startswith("FormatError") and "down_proj.weight': block 3" in got and "non-finite scale" in got, got


def test_prompt_with_a_lone_surrogate_is_a_unicode_error(tiny_pkg):
    from bluelm_v.engine import Engine

    eng = Engine(tiny_pkg, threads=1)
    with pytest.raises(UnicodeEncodeError, match="prompt holds a lone surrogate") as info:
        eng.chat(None, json.loads('"hi \\udc80"'), max_new_tokens=1)
    assert info.value.start == 3
    with pytest.raises(UnicodeEncodeError, match="stop string holds a lone surrogate"):
        eng.chat(None, "hi", max_new_tokens=1, stop=["\ud800"])
    assert eng.chat(None, "hi", max_new_tokens=1).finish_reason in ("eos", "length", "stop")


def test_the_reference_package_still_loads(tiny_pkg):
    assert engine_outcome(tiny_pkg) == "LOADED"
