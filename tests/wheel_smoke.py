"""The smoke suite tests/test_wheel.py runs with the installed wheel, in a fresh venv without torch, inside a mount
namespace that hides the system's image codecs, OpenCV and C++ headers.

    python wheel_smoke.py OUT_DIR PACKAGE_DIR HIDDEN_FILE...

Checks that each HIDDEN_FILE cannot be loaded and torch cannot be imported, then runs the package: plan, decode and
preprocess of JPEG/PNG/WebP written by Pillow, a quantized kernel, the engine on a model package, the vendored C++
CLI. Writes the images and results to OUT_DIR (result.json, *.npy) for the test to compare with the source build.
Standard library, numpy and Pillow only (the wheel's own dependencies); an AssertionError is a failure.
"""
import ctypes
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def check_hidden(files: list[str]) -> list[str]:
    for f in files:
        try:
            ctypes.CDLL(f)
        except OSError:
            continue
        raise AssertionError(f"{f} is still loadable: the namespace does not hide it")
    assert importlib.util.find_spec("torch") is None, "torch is importable in the fresh venv"
    return files


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:500]
    arr = np.clip(np.stack([xx // 2, yy, (xx + yy) % 256], -1) + rng.integers(-30, 30, (300, 500, 3)), 0, 255)
    pil = Image.fromarray(arr.astype(np.uint8))
    out = {}
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"quality": 80})):
        buf = io.BytesIO()
        pil.save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    return out


def main(out: Path, package: Path, hidden: list[str]) -> None:
    result = {"hidden": len(check_hidden(hidden))}
    import bluelm_v
    from bluelm_v import _core
    from bluelm_v.image import load_image
    from bluelm_v.kernels import gemm, pack

    result["core"] = _core.__file__
    plan = bluelm_v.plan(1000, 500)
    result["plan"] = {"grid": list(plan.grid), "patches": plan.patches, "canvas": list(plan.canvas)}

    for fmt, data in images().items():
        (out / f"image.{fmt.lower()}").write_bytes(data)
        ours = load_image(data)
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ours.shape == want.shape, (fmt, ours.shape, want.shape)
        diff = np.abs(ours.astype(int) - want).mean()
        assert diff == 0 if fmt == "PNG" else diff < 1.0, (fmt, diff)
        pre = bluelm_v.preprocess(data)
        assert pre.pixels.shape == (pre.plan.patches, 3, 384, 384), (fmt, pre.pixels.shape)
        np.save(out / f"tiles_{fmt.lower()}.npy", pre.pixels)
        result[f"decode_{fmt}"] = float(diff)

    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 256), dtype=np.float32)
    x = rng.standard_normal((5, 256), dtype=np.float32)
    y = gemm(x, pack(w, "q8_0"))
    err = float(np.abs(y - x @ w.T).max() / np.abs(x @ w.T).max())
    assert err < 0.02, f"q8_0 gemm relative error {err}"
    result["gemm_rel_err"] = err

    engine = bluelm_v.Engine(package, threads=1)
    answer = engine.chat(out / "image.jpeg", "What is in the picture?", max_new_tokens=8)
    result["engine_tokens"] = list(answer.tokens)
    assert len(answer.tokens) > 0

    cli = Path(bluelm_v.__file__).parent / "bin" / "bluelm"
    r = subprocess.run([str(cli), "plan", "1000x500", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    result["cli_plan"] = json.loads(r.stdout)
    r = subprocess.run([str(cli), "run", "--model", str(package), "--image", str(out / "image.webp"), "--prompt", "hi",
                        "--max-new-tokens", "4", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result["cli_run"] = "ok"
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
