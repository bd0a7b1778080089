"""Where a decode step's time goes, op by op, against a plain read of the same bytes (docs/kernels.md, "Where
the decode bandwidth goes").

    python benchmarks/decode_profile.py                                   # SmolLM2 Q4_0 and Q4_K_M, 1 and 2 threads
    python benchmarks/decode_profile.py --models smollm2-135m,bluelm-v-3b --quants q4_k_m --threads 1,2 \\
        --json profile.json --plot profile.png
    python benchmarks/decode_profile.py --packages path/to/package --threads 1

For each package and thread count, in one process: a prompt of --depth tokens, then per round a plain read
(`read_gbps`: kernels' read_bandwidth over the step's bytes, the same threads), a few untimed steps and --steps
decode steps with the engine's op profile on (Session.start_profile: each op of the step timed on the calling
thread, a parallel one to its last worker's end), and the same number of steps without it (the profile's cost).
The engine runs as benchmarks/engine.py --formats runs it (int8 activations, f16 KV cache) unless --activations /
--kv-cache say otherwise (int16 is the packages' deployed default).

Rows (`--json`), per package and threads:
  - one per (op, format): `ms_per_step`, `share` of the step, `mb_per_step` (weights or KV entries read),
    `gbps` and `fraction_of_read` (those bytes over the op's time, over the read), each the median over rounds
    with `*_min` / `*_max`;
  - one with op `step`: `tokens_per_s` (profiled steps) and `tokens_per_s_unprofiled`, `effective_bw_fraction`
    ((weights + KV) x tokens/s over the read: the engine's figure against issue 18's 0.80),
    `products_fraction_of_read` (the products' weights over their own time: how fast the GEMVs stream inside the
    step), `attention_share`, `glue_share` (norms, RoPE, residuals, SwiGLU and the rest).
With --ab SWITCH, each round also runs the same steps with one of the runtime A/B switches (AB_SWITCHES: the KV
prefetch, the decode prefetch's level, the AVX-512 decode tiles, ...) set the other way from its default, the two
settings in alternating order, and the rows above come once per setting (`ab_switch`, `switch_on`). Rows with
`kind` "ab" compare them, per (op, format) and for the whole step: `ms_ratio` (the switched setting's time over the
default's: the median of per-round ratios, with a bootstrap 95% interval `ms_ratio_ci`) and, on the step's row,
`tokens_per_s_ratio` (switched over default, profiled and unprofiled steps). Where a change is claimed from a switch,
this is the run that measures it in the engine (docs/kernels.md, docs/engine.md).
Models by name are the GGUFs of benchmarks/engine.py --formats (SmolLM2 re-quantized by llama.cpp, the bluelm-v-3b
shape with random weights), packaged byte for byte and cached; --packages takes any package.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import median_ci, write_json  # noqa: E402

from bluelm_v.engine import PRODUCT_OPS as PRODUCTS  # noqa: E402


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _ab_switches() -> dict:
    """Runtime A/B switches of the engine and kernels: name -> (getter, setter). Each is process-wide, so the two
    settings can alternate in one process. All but int16_one_pass give the same logits either way (each has a
    test); int16_one_pass changes how int16 activations are rounded (one int16 pass or two int8 passes)."""
    from bluelm_v import _core

    names = ("kv_prefetch", "decode_prefetch_l2", "avx512_pair_decode", "decode_scales_last", "avx512_k45_decode",
             "int16_one_pass", "int8_sign_trick", "avx512_quads")
    return {n: (getattr(_core, n), getattr(_core, f"set_{n}")) for n in names}


AB_SWITCHES = tuple(_ab_switches())


def profile_package(pkg: str, threads: int, rounds: int, steps: int, depth: int, progress=None,
                    activations: str = "int8", kv_cache: str = "f16", switch: str | None = None) -> dict:
    """Profiles and reads of one package at `threads`: {"profiles": [DecodeProfile], "read_gbps": [...],
    "unprofiled_s": [...]} (one entry per round) and "bytes_per_token" (weights and KV entries of a step at the
    prompt's depth, what the read probe reads). With `switch` (one of AB_SWITCHES), "switched" holds the same
    lists for the steps run with it set the other way (the two settings alternate in order from round to round),
    "switch_default" its default; the switch is back at its default on return, also after an error."""
    import time

    from bluelm_v import _core
    from bluelm_v.engine import Engine

    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds and steps must be at least 1, got {rounds} and {steps}")
    switches = _ab_switches()
    if switch is not None and switch not in switches:
        raise ValueError(f"unknown A/B switch {switch!r} (known: {', '.join(switches)})")
    e = Engine(pkg, threads=threads, activations=activations, kv_cache=kv_cache, context=depth + steps + 32)
    if depth < 1 or depth + steps + 8 > e.context:
        raise ValueError(f"depth {depth} with {steps} steps does not fit the context of {e.context}")
    s = e.session()
    prompt = [(7 * i + 11) % e._e.vocab for i in range(depth)]
    # The bytes a step reads, from the profile of two steps: the products' weights and the KV entries at this depth
    # (a step reads one position more than the last; the read probe's size need not follow that).
    s.prefill(prompt, chunk=128)
    s.start_profile()
    for tok in prompt[:2]:
        s.decode(tok)
    first = s.stop_profile().summary()
    nbytes = int(1e6 * (first["weight_mb"] + first["kv_mb"]))
    out = {"profiles": [], "read_gbps": [], "unprofiled_s": [], "bytes_per_token": nbytes}
    get, set_ = switches[switch] if switch else (None, None)
    default = get() if get else None
    if switch:
        out["switch_default"] = default
        out["switched"] = {"profiles": [], "unprofiled_s": []}

    def run_steps(into: dict) -> None:
        for profiled in (True, False):
            s.reset()
            s.prefill(prompt, chunk=128)
            tok = prompt[-1]
            for _ in range(4):  # untimed: the first steps after prefill pay for its cache traffic
                tok = int(s.decode(tok).argmax())
            if profiled:
                s.start_profile()
            t0 = time.perf_counter()
            for _ in range(steps):
                tok = int(s.decode(tok).argmax())
            if profiled:
                into["profiles"].append(s.stop_profile())
            else:
                into["unprofiled_s"].append((time.perf_counter() - t0) / steps)

    try:
        for r in range(rounds):
            out["read_gbps"].append(_core.read_bandwidth(max(nbytes, 1 << 20), threads, 3))
            order = [False] if not switch else ([False, True] if r % 2 == 0 else [True, False])
            for flipped in order:
                if switch:
                    set_(default != flipped)
                run_steps(out["switched"] if flipped else out)
            if progress:
                progress()
    finally:
        if switch:
            set_(default)
    return out


def profile_rows(label: dict, res: dict) -> list[dict]:
    """Rows of one package and thread count from profile_package's result; `label` (model, quant, threads, ...)
    starts every row."""
    per_op: dict[tuple[str, str], dict[str, list[float]]] = {}
    step = {k: [] for k in ("tokens_per_s", "effective_bw_fraction", "products_fraction_of_read", "attention_share",
                            "glue_share", "products_gbps")}
    for prof, bw in zip(res["profiles"], res["read_gbps"]):
        df = prof.frame(bw)
        for r in df.itertuples(index=False):
            d = per_op.setdefault((r.op, r.format), {"calls_per_step": [], "ms_per_step": [], "share": [],
                                                     "mb_per_step": [], "gbps": [], "fraction_of_read": []})
            for k in d:
                d[k].append(float(getattr(r, k)))
        sm = prof.summary(bw)
        step["tokens_per_s"].append(1e3 / sm["ms"])
        step["effective_bw_fraction"].append(sm["effective_bw_fraction"])
        step["products_fraction_of_read"].append(sm["products_fraction_of_read"])
        step["products_gbps"].append(sm["products_gbps"])
        step["attention_share"].append(sm["attention_ms"] / sm["ms"])
        step["glue_share"].append(sm["glue_ms"] / sm["ms"])
    rows = []
    for (op, fmt), d in per_op.items():
        row = {**label, "op": op, "format": fmt, "calls_per_step": round(statistics.median(d["calls_per_step"]), 2)}
        for k in ("ms_per_step", "share", "mb_per_step", "gbps", "fraction_of_read"):
            vals = [v for v in d[k] if v == v]  # NaN: ops that read nothing
            if not vals:
                continue
            med, lo, hi = _median_range(vals)
            row[k] = round(med, 4)
            if k in ("ms_per_step", "fraction_of_read"):
                row[f"{k}_min"], row[f"{k}_max"] = round(lo, 4), round(hi, 4)
        rows.append(row)
    srow = {**label, "op": "step", "format": "", "bytes_per_token": res["bytes_per_token"],
            "read_gbps": round(statistics.median(res["read_gbps"]), 2),
            "tokens_per_s_unprofiled": round(1 / statistics.median(res["unprofiled_s"]), 2)}
    for k, vals in step.items():
        med, lo, hi = _median_range(vals)
        srow[k] = round(med, 4)
        srow[f"{k}_min"], srow[f"{k}_max"] = round(lo, 4), round(hi, 4)
    srow["rounds"] = len(res["profiles"])
    rows.append(srow)
    return rows


def _op_ms(prof) -> dict[tuple[str, str], float]:
    return {(r.op, r.format): float(r.ms_per_step) for r in prof.frame().itertuples(index=False)}


def ab_rows(label: dict, res: dict) -> list[dict]:
    """The A/B comparison of a profile_package result run with a switch: one row (`kind` "ab") per (op, format)
    with the switched setting's time over the default's, and one for the step (op "step") with its time and
    tokens/s ratios; each the median of per-round ratios with a bootstrap 95% interval."""
    sw = res["switched"]
    per_op: dict[tuple[str, str], list[float]] = {}
    step_ms, unprof = [], []
    for a, b, ua, ub in zip(res["profiles"], sw["profiles"], res["unprofiled_s"], sw["unprofiled_s"]):
        ma, mb = _op_ms(a), _op_ms(b)
        for key in ma.keys() & mb.keys():
            if ma[key] > 0:
                per_op.setdefault(key, []).append(mb[key] / ma[key])
        step_ms.append(b.summary()["ms"] / a.summary()["ms"])
        unprof.append(ub / ua)
    base = {**label, "kind": "ab", "switch_on": not res["switch_default"]}
    rows = []
    for (op, fmt), ratios in sorted(per_op.items()):
        med, lo, hi = median_ci(ratios)
        rows.append({**base, "op": op, "format": fmt, "ms_ratio": round(med, 4), "ms_ratio_ci": [round(lo, 4),
                     round(hi, 4)], "rounds": len(ratios)})
    med, lo, hi = median_ci(step_ms)
    tmed, tlo, thi = median_ci([1 / r for r in step_ms])
    umed, ulo, uhi = median_ci([1 / r for r in unprof])
    rows.append({**base, "op": "step", "format": "", "ms_ratio": round(med, 4),
                 "ms_ratio_ci": [round(lo, 4), round(hi, 4)],
                 "tokens_per_s_ratio": round(tmed, 4), "tokens_per_s_ratio_ci": [round(tlo, 4), round(thi, 4)],
                 "tokens_per_s_ratio_unprofiled": round(umed, 4),
                 "tokens_per_s_ratio_unprofiled_ci": [round(ulo, 4), round(uhi, 4)], "rounds": len(step_ms)})
    return rows


def _config(r: dict) -> tuple:
    """What one table / one bar of the plot describes: the package, threads and (with --ab) the switch's setting."""
    return r["model"], r["quant"], r["threads"], r.get("switch_on")


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    ab = [r for r in rows if r.get("kind") == "ab"]
    rows = [r for r in rows if r.get("kind") != "ab"]
    steps = [r for r in rows if r["op"] == "step"]
    for srow in steps:
        key = _config(srow)
        setting = f", {srow['ab_switch']} {'on' if srow['switch_on'] else 'off'}" if "ab_switch" in srow else ""
        t = Table(title=f"{srow['model']} {srow['quant']}, {srow['threads']} thread(s){setting}, {srow['activations']} "
                        f"activations, {srow['kv_cache']} KV: "
                        f"{srow['tokens_per_s']:.1f} tok/s profiled, {srow['tokens_per_s_unprofiled']:.1f} without; "
                        f"read {srow['read_gbps']:.1f} GB/s; effective_bw_fraction {srow['effective_bw_fraction']:.2f}, "
                        f"products {srow['products_fraction_of_read']:.2f} of the read")
        for c in ("op", "format", "calls/step", "ms/step", "share", "MB/step", "GB/s", "of read"):
            t.add_column(c, justify="left" if c in ("op", "format") else "right", no_wrap=True)
        ops = [r for r in rows if _config(r) == key and r["op"] != "step"]
        for r in sorted(ops, key=lambda r: -r["ms_per_step"]):
            t.add_row(r["op"], r["format"], f"{r['calls_per_step']:g}", f"{r['ms_per_step']:.3f}",
                      f"{r['share']:.3f}", f"{r['mb_per_step']:.2f}" if r.get("mb_per_step") else "",
                      f"{r['gbps']:.1f}" if "gbps" in r else "",
                      f"{r['fraction_of_read']:.2f}" if "fraction_of_read" in r else "")
        console.print(t)
    for srow in [r for r in ab if r["op"] == "step"]:
        key = (srow["model"], srow["quant"], srow["threads"])
        lo, hi = srow["tokens_per_s_ratio_ci"]
        t = Table(title=f"{srow['model']} {srow['quant']}, {srow['threads']} thread(s): {srow['ab_switch']} "
                        f"{'on' if srow['switch_on'] else 'off'} against its default, {srow['rounds']} rounds: "
                        f"tokens/s x{srow['tokens_per_s_ratio']:.3f} [{lo:.3f}, {hi:.3f}] (unprofiled "
                        f"x{srow['tokens_per_s_ratio_unprofiled']:.3f})")
        for c in ("op", "format", "time, switched / default", "95% interval"):
            t.add_column(c, justify="left" if c in ("op", "format") else "right", no_wrap=True)
        for r in ab:
            if (r["model"], r["quant"], r["threads"]) == key and r["op"] != "step":
                t.add_row(r["op"], r["format"], f"{r['ms_ratio']:.3f}",
                          f"[{r['ms_ratio_ci'][0]:.3f}, {r['ms_ratio_ci'][1]:.3f}]")
        console.print(t)


def plot_rows(rows: list[dict], path: str | Path) -> None:
    """Left: each configuration's step split into the products (by op), attention and the glue (share of the
    step). Right: how fast each product streams inside the step (fraction of the read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("kind") != "ab"]
    steps = [r for r in rows if r["op"] == "step"]
    keys = [_config(r) for r in steps]
    names = [f"{m} {q} {t}t" + ("" if on is None else f" {steps[0]['ab_switch']} {'on' if on else 'off'}")
             for m, q, t, on in keys]
    groups = [g for g in PRODUCTS if any(r["op"] == g for r in rows)] + ["attention", "glue"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 1.2 + 0.55 * len(keys)))
    left = [0.0] * len(keys)
    cmap = plt.get_cmap("tab20")
    for gi, g in enumerate(groups):
        widths = []
        for key in keys:
            ops = [r for r in rows if _config(r) == key and r["op"] != "step"]
            if g == "glue":
                w = sum(r["share"] for r in ops if r["op"] not in PRODUCTS and r["op"] != "attention")
            else:
                w = sum(r["share"] for r in ops if r["op"] == g)
            widths.append(w)
        ax1.barh(names, widths, left=left, label=g, color=cmap(gi))
        left = [a + b for a, b in zip(left, widths)]
    ax1.set_xlabel("share of a decode step")
    ax1.set_xlim(0, 1)
    ax1.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    for i, s in enumerate(steps):
        ax1.text(1.0, i, f" {s['tokens_per_s']:.0f} tok/s, bw {s['effective_bw_fraction']:.2f}", va="center",
                 fontsize=7)
    prods = sorted({(r["op"], r["format"]) for r in rows if r["op"] in PRODUCTS},
                   key=lambda p: (PRODUCTS.index(p[0]), p[1]))
    width = 0.8 / max(1, len(keys))
    for ki, key in enumerate(keys):
        vals = []
        for op, fmt in prods:
            hit = [r for r in rows if _config(r) == key and (r["op"], r["format"]) == (op, fmt)]
            vals.append(hit[0].get("fraction_of_read", 0.0) if hit else 0.0)
        ax2.bar([i + ki * width for i in range(len(prods))], vals, width=width, label=names[ki])
    ax2.axhline(0.88, color="k", lw=0.8, ls="--")
    ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(prods))])
    ax2.set_xticklabels([f"{o} {f}" for o, f in prods], fontsize=7, rotation=40, ha="right")
    ax2.set_ylabel("GB/s inside the step / plain read")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def model_packages(models: list[str], quants: list[str]) -> list[tuple[str, str, Path]]:
    """(model, quant, package) for benchmarks/engine.py --formats' GGUFs (engine_formats.format_packages)."""
    from engine import _smollm2_path
    from engine_formats import format_packages

    bad = sorted(set(models) - {"smollm2-135m", "bluelm-v-3b"})
    if bad:
        raise SystemExit(f"--models: unknown {', '.join(bad)} (known: smollm2-135m, bluelm-v-3b)")
    return [(m, q, pkg) for m, q, _, pkg in format_packages(_smollm2_path(), models, quants)]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m", help="smollm2-135m and/or bluelm-v-3b")
    ap.add_argument("--quants", default="q4_0,q4_k_m", help="q4_0, q4_k_m, q8_0 (SmolLM2 only)")
    ap.add_argument("--packages", nargs="*", default=[], help="packages to profile instead of --models")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--depth", type=int, default=16, help="prompt tokens before the timed steps")
    ap.add_argument("--activations", default="int8", choices=["int8", "int16"])
    ap.add_argument("--kv-cache", default="f16", choices=["int8", "f16", "f32"])
    ap.add_argument("--ab", choices=AB_SWITCHES, help="also run every round with this runtime switch set the other way "
                    "and compare (rows of kind 'ab')")
    ap.add_argument("--json")
    ap.add_argument("--plot", help="PNG: the step's shares and the products' stream rates")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.packages:
        todo = [(Path(p).name, "package", Path(p)) for p in args.packages]
    else:
        todo = model_packages(args.models.split(","), args.quants.split(","))

    from tqdm import tqdm

    import bluelm_v

    rows = []
    with tqdm(total=len(todo) * len(threads) * args.rounds, desc="decode profile", unit="round") as bar:
        for model, quant, pkg in todo:
            for t in threads:
                bluelm_v.set_num_threads(t)
                res = profile_package(str(pkg), t, args.rounds, args.steps, args.depth, progress=bar.update,
                                      activations=args.activations, kv_cache=args.kv_cache, switch=args.ab)
                label = {"model": model, "quant": quant, "threads": t, "activations": args.activations,
                         "kv_cache": args.kv_cache}
                if args.ab:
                    label["ab_switch"] = args.ab
                    rows += profile_rows({**label, "switch_on": res["switch_default"]}, res)
                    rows += profile_rows({**label, "switch_on": not res["switch_default"]},
                                         {**res, **res["switched"]})
                    rows += ab_rows(label, res)
                else:
                    rows += profile_rows(label, res)
    print_rows(rows)
    write_json(rows, args.json)
    if args.plot:
        plot_rows(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
