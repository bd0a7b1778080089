"""Image preprocessing speed: our C++ pipeline against the PIL + numpy pipeline, in the same run.

For the paper's five resolutions (384x768 ... 768x1920 canvases, 3 to 11 patches with the thumbnail) a photo
1.4x larger than the canvas is decoded from JPEG, resized (Pillow's bicubic), padded, tiled and normalized into
[P, 3, 384, 384] float32. Also: dynamic-resolution planning throughput (plan_batch) against Algorithm 1 written
in plain Python.

    python benchmarks/preprocess.py [--json PATH] [--repeat N]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import time_call, write_json  # noqa: E402

from bluelm_v import dynres  # noqa: E402
from bluelm_v.image import load_image, preprocess  # noqa: E402

RESOLUTIONS = [(384, 768), (768, 768), (768, 1152), (768, 1536), (768, 1920)]  # canvas W x H, the paper's table


def photo(w: int, h: int) -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx ^ yy) & 255)], -1) + rng.integers(-20, 20, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pil_pipeline(data: bytes, plan: dynres.Plan) -> np.ndarray:
    """What LLaVA-style code does with PIL: decode, fit-and-pad resize, crop tiles, thumbnail, normalize."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    W, H = plan.canvas
    canvas = Image.new("RGB", (W, H), (0, 0, 0))
    canvas.paste(img.resize(plan.content, Image.BICUBIC), plan.offset)
    tiles = [canvas.crop((x, y, x + 384, y + 384)) for y in range(0, H, 384) for x in range(0, W, 384)]
    tiles.append(img.resize((384, 384), Image.BICUBIC))
    arr = np.stack([np.asarray(t, dtype=np.float32) for t in tiles]) / 255.0
    return ((arr - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


def python_algorithm1(w: int, h: int, cands, alpha=0.1):
    best, ref, wmin = None, 0, float("inf")
    for m, n in cands:
        W, H = 384 * m, 384 * n
        s = min(W / w, H / h)
        re = min(int(w * s) * int(h * s), w * h)
        rw = W * H - re
        if re - ref > alpha * ref or (ref - re < alpha * ref and rw < wmin):
            best, ref, wmin = (m, n), re, rw
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    console = Console()
    rows = []
    table = Table(title="Preprocessing: JPEG bytes -> normalized tiles (median ms)")
    for col in ("canvas", "source", "patches", "PIL+numpy", "ours 1 thr", "ours 2 thr", "speedup (2 thr)"):
        table.add_column(col, justify="right")
    for W, H in RESOLUTIONS:
        src_w, src_h = int(W * 1.4), int(H * 1.4)
        data = photo(src_w, src_h)
        grid = [(W // 384, H // 384)]
        plan = dynres.plan(src_w, src_h, candidates=grid)
        ref = pil_pipeline(data, plan)
        ours = preprocess(data, candidates=grid).pixels
        assert ours.shape == ref.shape, (ours.shape, ref.shape)
        # Same decoder family and Pillow-exact resizing: differences come only from JPEG decoding.
        assert np.abs(ours - ref).mean() < 0.02
        t_pil = time_call(lambda: pil_pipeline(data, plan), args.repeat)
        t1 = time_call(lambda: preprocess(data, candidates=grid, threads=1), args.repeat)
        t2 = time_call(lambda: preprocess(data, candidates=grid, threads=2), args.repeat)
        table.add_row(f"{W}x{H}", f"{src_w}x{src_h}", str(plan.patches), f"{t_pil['median_s']*1e3:.1f}",
                      f"{t1['median_s']*1e3:.1f}", f"{t2['median_s']*1e3:.1f}",
                      f"{t_pil['median_s']/t2['median_s']:.2f}x")
        for name, t, threads in (("pil", t_pil, 1), ("native", t1, 1), ("native", t2, 2)):
            rows.append({"test": f"preprocess{W}x{H}", "engine": name, "threads": threads, "patches": plan.patches,
                         **t, "speedup_vs_pil": t_pil["median_s"] / t["median_s"]})
    console.print(table)

    # Planning throughput.
    rng = np.random.default_rng(0)
    n = 1_000_000
    w = np.exp(rng.uniform(0, np.log(8000), n)).astype(np.int64) + 1
    h = np.exp(rng.uniform(0, np.log(8000), n)).astype(np.int64) + 1
    cands = dynres.default_candidates("bluelm")
    k = 20_000
    t_py = time_call(lambda: [python_algorithm1(int(a), int(b), cands) for a, b in zip(w[:k], h[:k])], 3)
    t_b1 = time_call(lambda: dynres.plan_batch(w, h, threads=1), 3)
    t_b2 = time_call(lambda: dynres.plan_batch(w, h, threads=2), 3)
    py_rate = k / t_py["median_s"]
    t2 = Table(title="Dynamic-resolution planning (bluelm, 4x4 grid)")
    for col in ("implementation", "sizes/s", "vs Python"):
        t2.add_column(col, justify="right")
    for name, rate in (("Python Algorithm 1", py_rate), ("plan_batch 1 thread", n / t_b1["median_s"]),
                       ("plan_batch 2 threads", n / t_b2["median_s"])):
        t2.add_row(name, f"{rate/1e6:.2f} M", f"{rate/py_rate:.0f}x")
        rows.append({"test": "plan_batch", "engine": name, "sizes_per_s": rate, "speedup_vs_python": rate / py_rate})
    console.print(t2)
    write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
