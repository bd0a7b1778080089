"""Logit margins and the engine's error on teacher-forced greedy steps: SmolLM2-135M (a trained model) against the
random models of ``check-reference --arch llama|qwen2 --random``, to tell a near-tie problem from an engine one.

    python tools/logit_margins.py                  # SmolLM2 (5 chat prompts x 256 steps) and the random models
    python tools/logit_margins.py --smollm2-requant q4_0 q8_0   # + SmolLM2's float weights re-rounded to a format
    python tools/logit_margins.py --off-grid       # the random models with their weights as drawn

Per step: the margin (top-1 minus top-2 logit), the same in units of the step's logit standard deviation over the
vocabulary (z, scale-free), and the engine's logit error at the deployed default (package's precision) in the same
units. SmolLM2's steps are tests/data/smollm2-greedy.json's; a random model's are 64 greedy steps of the reference
after check-reference's default prompt. Prints one JSON line per model (docs/models.md has the figures).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bluelm_v._paths import resolve_model_spec
from bluelm_v.engine import Engine
from bluelm_v.export.package import package
from bluelm_v.models.check_reference import DEFAULT_PROMPT
from bluelm_v.models.families import family
from bluelm_v.models.llm import prefill
from bluelm_v.models.reference import load_model

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "smollm2-greedy.json"


def logits(loaded, ids: list) -> np.ndarray:
    lm = loaded.llm
    with torch.no_grad():
        return prefill(lm, lm.new_cache(1, len(ids)), tokens=torch.tensor([ids]), all_logits=True)[0].numpy()


def greedy(loaded, ids: list, n: int) -> list:
    seq = list(ids)
    for _ in range(n):
        seq.append(int(logits(loaded, seq)[-1].argmax()))
    return seq[len(ids):]


def stats(ref: np.ndarray, eng: np.ndarray) -> dict:
    """ref, eng: [steps, vocab] logits of the reference and the engine at the same steps."""
    top = np.sort(ref, axis=-1)
    margin, sd = top[:, -1] - top[:, -2], ref.std(-1)
    z = margin / sd
    out = {"steps": len(ref), "logit_sd_median": np.median(sd), "margin_median": np.median(margin),
           "margin_p10": np.percentile(margin, 10), "z_median": np.median(z), "z_p10": np.percentile(z, 10),
           "steps_with_z_below_0.1": (z < 0.1).mean(), "engine_error_sd_over_logit_sd": np.median((eng - ref).std(-1) / sd),
           "engine_agreement": (eng.argmax(-1) == ref.argmax(-1)).mean()}
    return {k: round(float(v), 4) if k != "steps" else v for k, v in out.items()}


def smollm2_steps(loaded, pkg: Path) -> tuple[np.ndarray, np.ndarray]:
    eng = Engine(pkg)
    ref, got = [], []
    for p in json.loads(DATA.read_text())["prompts"]:
        full, t = p["ids"] + p["greedy"], len(p["ids"])
        steps = slice(t - 1, t - 1 + len(p["greedy"]))
        ref.append(logits(loaded, full)[steps])
        got.append(eng.session().prefill(full, all_logits=True)[steps])
    return np.concatenate(ref), np.concatenate(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--off-grid", action="store_true",
                    help="random models with their weights as drawn, not rounded onto the q4_0 grid")
    ap.add_argument("--smollm2-requant", nargs="*", default=[], metavar="FMT",
                    help="also package SmolLM2's float weights re-rounded to these formats")
    args = ap.parse_args()
    gguf = resolve_model_spec("smollm2-135m-gguf")
    with tempfile.TemporaryDirectory() as tmp:
        smol = load_model(gguf)
        print("smollm2 (its Q4_1 file on both sides)", json.dumps(stats(*smollm2_steps(smol, package(gguf, Path(tmp) / "s")))))
        for fmt in args.smollm2_requant:
            pkg = package(smol, Path(tmp) / f"s-{fmt}", quant=fmt)
            print(f"smollm2 float weights re-rounded to {fmt}", json.dumps(stats(*smollm2_steps(smol, pkg))))
        for arch in ("llama", "qwen2"):
            ours = load_model(family(arch).random_hf(Path(tmp) / arch, 0, weight_grid=None if args.off_grid else "q4_0"))
            ids = ours.tokenizer.encode(DEFAULT_PROMPT)
            full = ids + greedy(ours, ids, 64)
            steps = slice(len(ids) - 1, len(full) - 1)
            eng = Engine(package(ours, Path(tmp) / f"{arch}-pkg")).session().prefill(full, all_logits=True)[steps]
            print(f"random {arch}{' (off the grid)' if args.off_grid else ''}", json.dumps(stats(logits(ours, full)[steps], eng)))


if __name__ == "__main__":
    main()
