"""Depth rows of the engine benchmark (benchmarks/engine.py --depth), shaped like llama-bench's -d option: tg64@dD is
64 decode steps after a D-token prompt, pp512@dD a 512-token prefill (chunks of 128) after it.

Each row carries
  - tokens_per_s: the median (decode: of the 64 step times; prefill: of --repeat runs) and a bootstrap 95% interval
    of that median (ci95);
  - bytes_per_token (decode): the LLM's packed weights plus the KV cache a step reads (kv_bytes_per_token x the
    mean cache length over the 64 steps);
  - read_gbps and effective_bw_fraction (decode): a plain read of bytes_per_token bytes with the same threads
    (kernels.roofline read_bandwidth), measured in the same worker right after the row, and bytes_per_token x
    tokens/s over it;
  - attention_share, attention_gflops and fma_fraction (prefill at D > 0): the time above pp512@d0 is the time the
    deeper cache costs, which is attention (the rest of each layer does the same work at any depth); its FLOPs
    (4 hd per query head and key, minus d0's) over that time, and that rate over the f32 FMA probe of the tier the
    attention products run (AVX-512 where the CPU has it, else AVX2), measured in the same worker.
Decode rows keep one session per depth and take their 64 steps in 4 interleaved rounds of 16, so the shared host's
busy spells spread over all depths.
Targets of issue 23 are written into the rows they apply to (target, missed_by when missed).
"""
from __future__ import annotations

import statistics

TG_DEPTHS = [0, 512, 2048, 4096, 8192]
PP_DEPTHS = [0, 512, 2048, 4096]


def worker_depth(pkg: str, threads: int, repeat: int, tg_depths: list, pp_depths: list, kv_cache: str = "int8") -> dict:
    import json
    import time
    from pathlib import Path

    import numpy as np

    from bluelm_v import _core
    from bluelm_v.engine import Engine

    max_context = json.loads((Path(pkg) / "manifest.json").read_text())["model"]["llm"]["max_context"]
    need = max([d + 64 for d in tg_depths] + [d + 512 for d in pp_depths])
    # int8 activations with the cache asked for (int8, as the figures in docs/engine.md were first measured, or f16,
    # the package default since): the rows compare the cache's reads with a plain read of its bytes, and rows of
    # the two caches differ only in the cache.
    e = Engine(pkg, threads=threads, context=min(need, max_context), activations="int8", kv_cache=kv_cache)
    rng = np.random.default_rng(0)
    vocab = min(30000, e._e.vocab)
    prompt = [int(i) for i in rng.integers(100, vocab, max(need, 1))]
    out = {"kv_bytes_per_token": e.kv_bytes_per_token, "kv_cache": e.kv_cache, "activations": e.activations,
           "weight_bytes": e._e.llm_resident_bytes, "isa": _core.active_isa(),
           "max_context": max_context, "context": e.context, "tg": {}, "pp": {}}
    s = e.session()

    def fill(session, d):
        session.reset()
        if d:
            session.prefill(prompt[:d], chunk=128)

    # Decode: one session per depth, all filled first, then 4 rounds of 16 steps at each depth in turn, so a busy
    # spell of the shared host spreads over every depth instead of landing on one row.
    sessions, tokens, steps = {}, {}, {}
    for d in tg_depths:
        if d + 64 > e.context:
            out["tg"][str(d)] = {"skipped": f"{d} + 64 positions exceed the model's max_context {max_context}"}
            continue
        sessions[d] = e.session()
        fill(sessions[d], d)
        tokens[d], steps[d] = prompt[d] if d < len(prompt) else 1, []
    for _ in range(4):
        for d, sd in sessions.items():
            for _ in range(16):
                t0 = time.perf_counter()
                tokens[d] = int(sd.decode(tokens[d]).argmax())
                steps[d].append(time.perf_counter() - t0)
    for d in sessions:
        nbytes = out["weight_bytes"] + out["kv_bytes_per_token"] * (d + 32)
        out["tg"][str(d)] = {"step_s": steps[d], "read_gbps": _core.read_bandwidth(nbytes, threads, 3)}
    del sessions
    extra = prompt[:512]
    for d in pp_depths:
        if d + 512 > e.context:  # e.g. pp512@d4096 of a model with max_context 4,096: a row that cannot exist
            out["pp"][str(d)] = {"skipped": f"{d} + 512 positions exceed the model's max_context {max_context}"}
            continue
        runs = []
        for _ in range(repeat):
            fill(s, d)
            t0 = time.perf_counter()
            s.prefill(extra, chunk=128)
            runs.append(time.perf_counter() - t0)
        out["pp"][str(d)] = {"run_s": runs}
    # The f32 FMA probe of the tier the attention products run (AVX-512 where the CPU has it).
    probe = {"avx512": "fp32_fma_avx512", "avx2": "fp32_fma_avx2"}.get(_core.active_isa())
    out["fma_probe"] = probe
    out["fma_gflops"] = _core.measure_peak(probe, threads, 3) if probe else None
    return out


def worker_depth_llamacpp(gguf: str, threads: int, repeat: int, tg_depths: list, pp_depths: list, flash: bool,
                          max_context: int, kv_bytes_per_token: int) -> dict:
    """The same rows from llama.cpp (llama-cpp-python) on the GGUF file: its default f16 KV cache, flash attention on
    or off. A depth's prompt is evaluated once and its state saved; each row starts from that state."""
    import os
    import time

    import numpy as np
    from llama_cpp import Llama

    from bluelm_v import _core

    need = max([d + 64 for d in tg_depths] + [d + 512 for d in pp_depths])
    n_ctx = min(need, max_context)
    llm = Llama(model_path=gguf, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                flash_attn=flash, verbose=False)
    rng = np.random.default_rng(0)
    prompt = [int(i) for i in rng.integers(100, 30000, need)]
    # A step reads the file's tensors (near enough: its metadata is a few hundred KB) and the f16 cache.
    out = {"tg": {}, "pp": {}, "context": n_ctx, "weight_bytes": os.path.getsize(gguf),
           "kv_bytes_per_token": kv_bytes_per_token, "flash_attn": flash}
    for d in sorted(set(tg_depths) | set(pp_depths)):
        if d in pp_depths and d + 512 > n_ctx:
            out["pp"][str(d)] = {"skipped": f"{d} + 512 positions exceed the model's max_context {max_context}"}
        if d + 64 > n_ctx:
            if d in tg_depths:
                out["tg"][str(d)] = {"skipped": f"{d} + 64 positions exceed the model's max_context {max_context}"}
            continue
        llm.reset()
        if d:
            llm.eval(prompt[:d])
        state = llm.save_state()
        if d in tg_depths:
            # The prompt's next tokens (a step costs the same whatever the token; llama-cpp-python keeps no logits
            # without logits_all).
            steps = []
            for i in range(64):
                t0 = time.perf_counter()
                llm.eval([prompt[d + i]])
                steps.append(time.perf_counter() - t0)
            out["tg"][str(d)] = {"step_s": steps}
        if d in pp_depths and d + 512 <= n_ctx:
            runs = []
            for _ in range(repeat):
                llm.load_state(state)
                t0 = time.perf_counter()
                llm.eval(prompt[d:d + 512])
                runs.append(time.perf_counter() - t0)
            out["pp"][str(d)] = {"run_s": runs}
    for d, r in out["tg"].items():
        if "step_s" in r:
            nbytes = out["weight_bytes"] + kv_bytes_per_token * (int(d) + 32)
            r["read_gbps"] = _core.read_bandwidth(nbytes, threads, 3)
    return out


def bootstrap_ci(samples: list, stat, draws: int = 2000, seed: int = 0) -> list:
    """95% percentile interval of stat(resample) over `draws` resamples with replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.asarray(samples)
    vals = sorted(stat(x[rng.integers(0, len(x), len(x))]) for _ in range(draws))
    return [round(float(vals[int(0.025 * draws)]), 2), round(float(vals[int(0.975 * draws) - 1]), 2)]


def llamacpp_kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> int:
    """llama.cpp's default cache: f16 keys and values."""
    return layers * kv_heads * head_dim * 2 * 2


def depth_rows(model: str, res: dict, threads: int, layers: int, heads: int, head_dim: int,
               engine: str = "native") -> list[dict]:
    import numpy as np

    base = {"model": model, "threads": threads, "engine": engine, "isa": res.get("isa"),
            "kv_cache": res.get("kv_cache", "f16"), "activations": res.get("activations"),
            "kv_bytes_per_token": res["kv_bytes_per_token"], "peak_rss_mb": round(res["_peak_rss_mb"], 1)}
    # The targets are set for SmolLM2 with the int8 cache; other rows carry the same fields without them.
    targeted = engine.startswith("native") and base["kv_cache"] == "int8" and model.startswith("smollm2")
    rows = []
    tg = {}
    for d, r in sorted(res["tg"].items(), key=lambda kv: int(kv[0])):
        if "skipped" in r:
            rows.append({**base, "test": f"tg64@d{d}", "skipped": r["skipped"]})
            continue
        tps = 1.0 / statistics.median(r["step_s"])
        tg[int(d)] = tps
        nbytes = res["weight_bytes"] + res["kv_bytes_per_token"] * (int(d) + 32)
        frac = nbytes * tps / (r["read_gbps"] * 1e9)
        row = {**base, "test": f"tg64@d{d}", "tokens_per_s": round(tps, 2),
               "ci95": bootstrap_ci(r["step_s"], lambda x: 1.0 / float(np.median(x))),
               "bytes_per_token": int(nbytes), "read_gbps": round(r["read_gbps"], 2),
               "effective_bw_fraction": round(frac, 3)}
        if int(d) in (2048, 4096) and targeted:
            row["target"] = "effective_bw_fraction >= 0.75"
            if frac < 0.75:
                row["missed_by"] = round(0.75 - frac, 3)
        rows.append(row)
    if 0 in tg and 4096 in tg and targeted:
        ratio = tg[4096] / tg[0]
        row = next(r for r in rows if r["test"] == "tg64@d4096")
        row["vs_d0"] = round(ratio, 3)
        row["target_vs_d0"] = ">= 0.45"
        if ratio < 0.45:
            row["vs_d0_missed_by"] = round(0.45 - ratio, 3)
    pp_med = {int(d): statistics.median(r["run_s"]) for d, r in res["pp"].items() if "run_s" in r}

    def attn_flops(d):  # QK^T and PV: 2 FLOPs each per query head, key and head dimension, causal over the 512
        return 4 * head_dim * heads * layers * sum(d + i + 1 for i in range(512))

    for d, r in sorted(res["pp"].items(), key=lambda kv: int(kv[0])):
        if "skipped" in r:
            rows.append({**base, "test": f"pp512@d{d}", "skipped": r["skipped"]})
            continue
        d = int(d)
        med = pp_med[d]
        row = {**base, "test": f"pp512@d{d}", "tokens_per_s": round(512 / med, 2),
               "ci95": bootstrap_ci(r["run_s"], lambda x: 512 / float(np.median(x))), "runs": len(r["run_s"])}
        if d > 0 and 0 in pp_med:
            extra = med - pp_med[0]
            row["attention_share"] = round(extra / med, 3)
            if extra > 0:
                rate = (attn_flops(d) - attn_flops(0)) / extra / 1e9
                row["attention_gflops"] = round(rate, 1)
                if res.get("fma_gflops"):
                    row["fma_probe"] = res["fma_probe"]
                    row["fma_probe_gflops"] = round(res["fma_gflops"], 1)
                    row["fma_fraction"] = round(rate / res["fma_gflops"], 3)
            row["vs_d0"] = round(pp_med[0] / med, 3)
            if d == 4096 and targeted:
                row["target_vs_d0"] = ">= 0.35"
                if pp_med[0] / med < 0.35:
                    row["vs_d0_missed_by"] = round(0.35 - pp_med[0] / med, 3)
        rows.append(row)
    return rows


def print_depth_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="attention at depth (medians; ci95 is a bootstrap interval of the median)")
    for c in ("model", "engine", "isa", "kv", "test", "thr", "tok/s", "ci95", "bytes/token", "read GB/s", "bw fraction", "vs d0",
              "attn share", "attn GFLOP/s", "of FMA probe"):
        t.add_column(c, justify="right")
    for r in rows:
        if "skipped" in r:
            t.add_row(r["model"], r["engine"], str(r.get("isa") or ""), r["kv_cache"], r["test"], str(r["threads"]),
                      "skipped: " + r["skipped"], *[""] * 8)
            continue
        g = lambda k, f="{}": f.format(r[k]) if k in r else ""  # noqa: E731
        t.add_row(r["model"], r["engine"], str(r.get("isa") or ""), r["kv_cache"], r["test"], str(r["threads"]),
                  g("tokens_per_s", "{:.1f}"), g("ci95"),
                  g("bytes_per_token"), g("read_gbps"), g("effective_bw_fraction"), g("vs_d0"),
                  g("attention_share"), g("attention_gflops"), g("fma_fraction"))
    Console(width=200).print(t)
