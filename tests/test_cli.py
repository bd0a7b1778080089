"""The command lines: ``bluelm-v`` (Python) and ``bluelm`` (C++, no Python needed)."""
import json
import subprocess
import sys

import pytest

from bluelm_v import dynres
from bluelm_v._paths import native_program
from bluelm_v.cli import main
from bluelm_v.samples import sample_bytes


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bluelm_v", *args], capture_output=True, text=True, timeout=300)


def test_plan_size(capsys):
    assert main(["plan", "500x102"]) == 0
    out = capsys.readouterr().out
    assert "grid=2:1" in out and "canvas=768x384" in out and "tokens=2187/588" in out


def test_plan_options_and_json(capsys):
    assert main(["plan", "380x76", "--scheme", "internvl", "--max-num", "6", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["grid"] == [5, 1] and d["tokens_ds"] == 1176
    assert main(["plan", "394x390", "--scheme", "llava_next", "--grid", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == [2, 2]


def test_plan_image_file(tmp_path, capsys):
    path = tmp_path / "screen.png"
    path.write_bytes(sample_bytes("screenshot"))
    assert main(["plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == [2, 4]


def test_plan_bad_input_is_one_line_error(tmp_path):
    r = run_cli("plan", "0x10")
    assert r.returncode == 1 and "error" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(sample_bytes("banner")[:100])
    r = run_cli("plan", str(bad))
    assert r.returncode == 1 and "truncated PNG" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("plan", "nope.png")
    assert r.returncode == 1 and "neither" in r.stderr


def test_light_commands_do_not_import_torch():
    code = "import sys; from bluelm_v.cli import main; main(['plan','10x10']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("False"), r.stdout + r.stderr


def test_info_lists_isa_and_configs():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    assert "scalar" in r.stdout and "dynres-presets" in r.stdout


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0 and "demo" in r.stdout and "plan" in r.stdout


@pytest.mark.parametrize("size", ["500x102", "1080x2400", "10000x1", "394x390"])
def test_cpp_cli_agrees_with_python(size):
    r = subprocess.run([str(native_program("bluelm")), "plan", size, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    w, h = map(int, size.split("x"))
    p = dynres.plan(w, h)
    assert got["grid"] == list(p.grid) and got["content"] == list(p.content) and got["tokens_ds"] == p.tokens_ds
    assert got["fallback"] == p.fallback


def test_cpp_cli_reads_image_header_and_refuses_bad_input(tmp_path):
    path = tmp_path / "r.jpg"
    path.write_bytes(sample_bytes("receipt", "JPEG"))
    bin_ = str(native_program("bluelm"))
    r = subprocess.run([bin_, "plan", str(path), "--scheme", "internvl", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["width"] == 576
    for args in (["plan", "0x5"], ["plan", "5x5", "--alpha"], ["plan", "5x5", "--scheme", "x"], ["frobnicate"]):
        r = subprocess.run([bin_, *args], capture_output=True, text=True)
        assert r.returncode != 0 and r.stderr


def test_cpp_test_program_passes():
    r = subprocess.run([str(native_program("bluelm_tests"))], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
