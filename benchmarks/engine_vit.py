"""ViT rows of the engine benchmark (benchmarks/engine.py --vit): the bluelm-v-3b ViT + projector (SigLIP so400m,
27 layers, q8_0 weights, seeded random) per 384x384 tile, in one worker per thread count that interleaves, round
after round,
  - native           the engine's ViT as shipped (int16 activations in one pass where the tier has it, the AVX-512
                     int8 tiles with unsigned weights w + 128);
  - native-two-pass  the same process and weights with int16 activations as two int8 passes
                     (_core.set_int16_one_pass(False)), the in-process A/B of the one-pass kernel (where the active
                     tier has it);
  - native-signtrick the same with the AVX-512 int8 tiles' former sign trick (_core.set_int8_sign_trick), on
                     AVX-512 hosts only (the switch does nothing elsewhere);
  - torch-f32        the reference's SiglipVisionTower + Projector of the same config in float32 (random weights:
                     the speed, not the values, is compared), on the same number of tiles.
Each row: seconds_per_tile (median over the rounds) with a bootstrap 95% interval (ci_low, ci_high), and the
median of the per-round ratios against the other variants (speedup_vs_two_pass, speedup_vs_signtrick,
speedup_vs_torch) with their own
intervals. The engine is packaged with a 1-layer, 32000-token LLM (the ViT is what is timed; a full 3B LLM would
only cost minutes of packaging and gigabytes of disk); its tiles are those of a 384x384 image.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bluelm_v.export.cached import writer_digest

from common import median_ci

CACHE = Path.home() / ".cache" / "bluelm-v" / "packages"
# package folders carry the writer code's digest: a package made by other code is never reused
WRITER = writer_digest()[:10]
VIT_PACKAGE = "bluelm-v-3b-vit-q8_0-random"


def vit_package() -> Path:
    """The 3B config with a 1-layer, 32000-token LLM, packaged once (q8_0 ViT, q4_0 LLM, seeded random weights)."""
    from bluelm_v.export import package

    root = Path(__file__).resolve().parents[1]
    out = CACHE / f"{VIT_PACKAGE}-{WRITER}"
    if (out / "manifest.json").is_file():
        return out
    cfg = json.loads((root / "configs" / "models" / "bluelm-v-3b.json").read_text())
    cfg["name"] = "bluelm-v-3b-vit"
    cfg["llm"]["layers"], cfg["llm"]["vocab"] = 1, 32000
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{VIT_PACKAGE}.json"
    path.write_text(json.dumps(cfg))
    print(f"packaging the bluelm-v-3b ViT with random weights into {out} (once)")
    package(str(path), out, quant="q4_0", vit_quant="q8_0", random=True)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["model"]["dynres"]["candidates"] = [[1, 1]]  # one tile per image
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def worker_vit(pkg: str, threads: int, rounds: int) -> dict:
    import numpy as np
    import torch

    from bluelm_v import _core
    from bluelm_v.engine import Engine
    from bluelm_v.models.config import load_model_config
    from bluelm_v.models.projector import Projector
    from bluelm_v.models.vision import SiglipVisionTower

    e = Engine(pkg, threads=threads, context=1024)
    img = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    cfg = load_model_config(str(Path(pkg).parent / f"{VIT_PACKAGE}.json"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tower, proj = SiglipVisionTower(cfg.vision).eval(), Projector(cfg.projector, cfg.vision, cfg.llm.hidden).eval()

    saved = _core.int8_sign_trick(), _core.int16_one_pass()
    switches = {"native": (False, True)}  # variant: (sign trick, int16 one pass)
    if _core.has_gemm_i16("q8_0"):
        switches["native-two-pass"] = (False, False)
    if _core.active_isa() == "avx512":
        switches["native-signtrick"] = (True, True)

    def native(name: str) -> tuple[float, int]:
        _core.set_int8_sign_trick(switches[name][0])
        _core.set_int16_one_pass(switches[name][1])
        t = e.chat(img, "x", max_new_tokens=1, stop=[]).timing
        return t.vit_s, t.tiles

    _, tiles = native("native")  # warm-up, and the tile count torch then runs
    pixels = torch.randn(tiles, 3, cfg.vision.image_size, cfg.vision.image_size)

    def torch_f32() -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            proj(tower(pixels))
            return time.perf_counter() - t0

    torch_f32()
    deploy = json.loads((Path(pkg) / "manifest.json").read_text())["model"].get("deploy", {})
    out = {name: [] for name in [*switches, "torch-f32"]}
    out.update({"tiles": tiles, "isa": _core.active_isa(), "activations": deploy.get("activations")})
    order = [*switches, "torch-f32"]
    for r in range(rounds):
        # The order rotates per round, so no variant always runs right after another.
        for name in order[r % len(order):] + order[:r % len(order)]:
            out[name].append(torch_f32() / tiles if name == "torch-f32" else native(name)[0] / tiles)
    _core.set_int8_sign_trick(saved[0])
    _core.set_int16_one_pass(saved[1])
    return out


def vit_rows(res: dict, threads: int) -> list[dict]:
    rows = []
    per = {k: res[k] for k in ("native", "native-two-pass", "native-signtrick", "torch-f32") if k in res}
    for name, xs in per.items():
        med, lo, hi = median_ci(xs)
        row = {"model": "bluelm-v-3b", "test": "vit384x384", "threads": threads, "engine": name,
               "seconds_per_tile": round(med, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
               "rounds": len(xs), "tiles": res["tiles"], "isa": res["isa"], "activations": res["activations"],
               "peak_rss_mb": round(res["_peak_rss_mb"], 1)}
        for other, key in (("native-two-pass", "speedup_vs_two_pass"), ("native-signtrick", "speedup_vs_signtrick"),
                           ("torch-f32", "speedup_vs_torch")):
            if other == name or name == "torch-f32" or other not in per:
                continue
            ratios = [b / a for a, b in zip(xs, per[other])]  # per round: other's time over this one's
            rmed, rlo, rhi = median_ci(ratios)
            row[key] = round(rmed, 3)
            row[key + "_ci"] = [round(rlo, 3), round(rhi, 3)]
        rows.append(row)
    return rows


def print_vit_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="ViT + projector per 384x384 tile (medians of interleaved rounds; 95% bootstrap intervals)")
    for c in ("threads", "engine", "isa", "s / tile", "ci", "vs two passes", "vs sign trick", "vs torch f32",
              "peak RSS MB"):
        t.add_column(c, justify="right")
    for r in rows:
        sp = lambda k: f"{r[k]:.3f}x [{r[k + '_ci'][0]:.3f}, {r[k + '_ci'][1]:.3f}]" if k in r else ""  # noqa: E731
        t.add_row(str(r["threads"]), r["engine"], r["isa"], f"{r['seconds_per_tile']:.3f}",
                  f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", sp("speedup_vs_two_pass"), sp("speedup_vs_signtrick"),
                  sp("speedup_vs_torch"),
                  f"{r['peak_rss_mb']:.0f}")
    Console(width=160).print(t)
