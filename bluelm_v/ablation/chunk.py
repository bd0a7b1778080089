"""The chunk-size ablation: simulated NPU prefill and decode per prefill chunk t for the paper's setting (a
2048-token input, KV cache 2048, Fig. 8), and where the optimum lies and why."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

PAPER_CHUNKS = (32, 128, 512, 2048)  # the values Fig. 8 compares
PAPER_BEST = 128
PAPER_T128 = {"prefill_s": 2.7, "decode_tokens_per_s": 24.4}  # Table 5 = Fig. 8's t128 point


@dataclass
class ChunkRow:
    chunk: int
    calls: int
    padded_tokens: int
    prefill_s: float
    per_call_ms: float
    overhead_s: float
    linear_s: float  # summed over calls: max(compute, weight streaming) of the linear layers
    linear_memory_bound: bool
    attention_s: float
    attention_flops: float
    decode_tokens_per_s: float
    # Attention over earlier chunks' keys: attention_s minus what the same chunks cost alone on an empty cache (their
    # own causal triangles): the part a measurement can isolate (bluelm_v.sim.measure.measure_cpu_prefill). Only
    # for dynamic attention (CPU runtimes); static NPU graphs attend their whole buffer whatever came before.
    attention_cross_s: Optional[float] = None
    measured_cpu_prefill_s: Optional[float] = None
    measured_cpu_attention_s: Optional[float] = None


@dataclass
class ChunkResult:
    model: str
    device: str
    prompt_tokens: int
    kv_capacity: int
    rows: list[ChunkRow]
    best_chunk: int
    best_among_paper: Optional[int]
    agrees_with_paper: Optional[bool]
    explanation: str
    runtime: str = "npu-static-graphs"  # "cpu" runtimes attend only the keys so far
    overhead_sensitivity: list[dict] = field(default_factory=list)
    # What the measured_cpu_prefill_s column ran (model, prompt tokens, threads): the simulated sweep's model and
    # prompt above need not be the measured ones (--measure-model, --measure-tokens).
    measured: Optional[dict] = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_frame(self):
        """One row per chunk size as a pandas DataFrame, indexed by chunk."""
        import pandas as pd

        return pd.DataFrame.from_records([asdict(r) for r in self.rows]).set_index("chunk")


def _op(calls, name: str) -> tuple[float, float, bool]:
    ops = [op for c in calls for op in c.ops if op.name == name]
    return (sum(op.seconds for op in ops), sum(op.flops for op in ops),
            sum(op.memory_s for op in ops) > sum(op.compute_s for op in ops))


def chunk_rows(chunks: list[int], model="bluelm-v-3b", device="dimensity-9300", prompt_tokens: int = 2048,
               kv_capacity: int = 2048, progress: bool = False) -> list[ChunkRow]:
    from tqdm import tqdm

    from bluelm_v.sim import load_device
    from bluelm_v.sim.model import CostModel
    from bluelm_v.sim.simulate import resolve_model
    from bluelm_v.sim.workload import deployment_for

    if not chunks or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in chunks):
        raise ValueError(f"chunk sizes must be positive integers, got {chunks}")
    if kv_capacity < prompt_tokens:
        raise ValueError(f"KV capacity {kv_capacity} cannot hold the {prompt_tokens}-token input")
    cfg, work = resolve_model(model)
    dev = load_device(device)
    rows = []
    for t in tqdm(sorted(set(chunks)), desc="chunk sizes", unit="chunk", disable=not progress):
        dep = deployment_for(cfg, dev.has_npu, chunk=t, kv_capacities=(kv_capacity,))
        cm = CostModel(work, dev, dep)
        pre = cm.prefill(prompt_tokens)
        lin, _, lin_mem = _op(pre.calls, "linear")
        att, att_flops, _ = _op(pre.calls, "attention")
        step = cm.decode_step(pre.capacity, prompt_tokens)
        cross = None
        if dep.attention == "dynamic":
            own = 0.0  # the chunks' own triangles: each chunk's length prefilled from an empty cache
            for n, count in ((t, prompt_tokens // t), (prompt_tokens % t, 1)):
                if n and count and n < prompt_tokens:
                    own += count * _op(cm.prefill(n).calls, "attention")[0]
            cross = att - own if t < prompt_tokens else 0.0
        rows.append(ChunkRow(
            chunk=t, calls=len(pre.calls), padded_tokens=pre.padded_tokens, prefill_s=pre.seconds,
            per_call_ms=1e3 * pre.seconds / len(pre.calls), overhead_s=sum(c.overhead_s for c in pre.calls),
            linear_s=lin, linear_memory_bound=lin_mem, attention_s=att, attention_flops=att_flops,
            decode_tokens_per_s=1.0 / step.seconds, attention_cross_s=cross,
        ))
    return rows


def explain(rows: list[ChunkRow], best: int, static: bool = True) -> str:
    """The mechanism behind the optimum, in the model's own numbers (``static``: NPU graphs with a fixed KV buffer;
    otherwise a dynamic-shape runtime)."""
    by = {r.chunk: r for r in rows}
    b = by[best]
    parts = [f"best t{best}: {b.prefill_s:.2f} s in {b.calls} calls"]
    smaller = [r for r in rows if r.chunk < best]
    larger = [r for r in rows if r.chunk > best]
    if smaller:
        s = smaller[-1]
        why = "the linear layers turn memory-bound (all LLM weights stream once per call)" if s.linear_memory_bound \
            else "compute is the same but"
        parts.append(f"at t{s.chunk} {why}: linear {s.linear_s:.2f} s vs {b.linear_s:.2f} s, per-call overhead "
                     f"{s.overhead_s:.2f} s vs {b.overhead_s:.2f} s -> {s.prefill_s:.2f} s")
    if larger:
        g = larger[0]
        why = ("the static graph's attention spans C + t slots (mask [t, C+t]) at the NPU's low attention efficiency"
               if static else "each chunk computes its whole causal triangle (keys up to the chunk's end)")
        parts.append(f"at t{g.chunk} {why}: attention {g.attention_s:.2f} s vs {b.attention_s:.2f} s"
                     + (f", padding {g.padded_tokens} tokens" if g.padded_tokens else "")
                     + f" -> {g.prefill_s:.2f} s")
    return "; ".join(parts)


def chunk_sweep(chunks: list[int], model="bluelm-v-3b", device="dimensity-9300", prompt_tokens: int = 2048,
                kv_capacity: int = 2048, measured: Optional[dict[int, float]] = None,
                progress: bool = False, measured_attention: Optional[dict[int, float]] = None) -> ChunkResult:
    rows = chunk_rows(chunks, model, device, prompt_tokens, kv_capacity, progress)
    if measured:
        for r in rows:
            r.measured_cpu_prefill_s = measured.get(r.chunk)
    if measured_attention:
        for r in rows:
            r.measured_cpu_attention_s = measured_attention.get(r.chunk)
    best = min(rows, key=lambda r: r.prefill_s).chunk
    paper = [r for r in rows if r.chunk in PAPER_CHUNKS]
    best_paper = min(paper, key=lambda r: r.prefill_s).chunk if paper else None
    agrees = None if best_paper is None or PAPER_BEST not in {r.chunk for r in rows} else best_paper == PAPER_BEST
    from bluelm_v.sim import load_device

    dev = load_device(device)
    return ChunkResult(rows=rows, model=str(getattr(model, "name", model)), device=dev.name,
                       prompt_tokens=prompt_tokens, kv_capacity=kv_capacity, best_chunk=best,
                       best_among_paper=best_paper, agrees_with_paper=agrees,
                       explanation=explain(rows, best, static=dev.has_npu),
                       runtime="npu-static-graphs" if dev.has_npu else "cpu")


def overhead_sensitivity(overheads_ms: list[float], chunks: list[int], progress: bool = False) -> list[dict]:
    """For each assumed LLM call overhead, re-fit the Dimensity 9300's factors on the paper's cells (the others
    absorb the change) and find the simulated optimum again: how much the t128 answer rests on that assumption."""
    import dataclasses

    from tqdm import tqdm

    from bluelm_v.config import Sourced
    from bluelm_v.sim import load_device
    from bluelm_v.sim.reproduce import fit, load_targets, with_factors

    targets = load_targets()
    out = []
    for ms in tqdm(overheads_ms, desc="re-fitting per call overhead", unit="fit", disable=not progress):
        if not ms >= 0:
            raise ValueError(f"call overhead must be >= 0 ms, got {ms}")
        base = load_device(targets.fit.device)
        fixed = dataclasses.replace(base, efficiency=dataclasses.replace(
            base.efficiency, npu_llm_call=Sourced(max(ms, 1e-6), "assumed", "ms", "sensitivity run")))
        result = fit(targets, base_device=fixed)
        dev = with_factors(fixed, result.values)
        rows = chunk_rows(chunks, device=dev, progress=False)
        best = min(rows, key=lambda r: r.prefill_s)
        out.append({"npu_llm_call_ms": ms, "fit_cost": result.cost, "npu_llm": result.values.get("npu_llm"),
                    "npu_memory": result.values.get("npu_memory"), "best_chunk": best.chunk,
                    "prefill_s": {r.chunk: round(r.prefill_s, 3) for r in rows}})
    return out


__all__ = ["ChunkResult", "ChunkRow", "PAPER_CHUNKS", "chunk_rows", "chunk_sweep", "explain", "overhead_sensitivity"]
