"""The physical latency model: each graph call costs its per-call overhead plus, for each of its operations, the
larger of compute time (FLOPs at the processor's peak for the precision times a fitted efficiency) and memory
time (bytes streamed from DRAM at the usable bandwidth). Equations and factors: docs/simulator.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from bluelm_v.sim.devices import Device, si
from bluelm_v.sim.workload import Deployment, Workload, weight_bytes


@dataclass(frozen=True)
class OpCost:
    name: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class Call:
    """One graph call (or one CPU stage): its overhead and its operations."""

    kind: str  # preprocess, conv, vit, prefill, decode
    processor: str
    overhead_s: float
    ops: tuple[OpCost, ...]
    rows: int = 0  # tiles or tokens computed, padding included
    real_rows: int = 0  # tiles or tokens that are real

    @property
    def seconds(self) -> float:
        return self.overhead_s + sum(op.seconds for op in self.ops)

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes for op in self.ops)


@dataclass(frozen=True)
class Event:
    stage: str
    processor: str
    start_s: float
    end_s: float


@dataclass
class EncodeResult:
    calls: list[tuple[Call, Call]]  # (CPU conv, ViT call) per tile group
    preprocess: Call
    makespan_s: float
    serial_s: float
    events: list[Event] = field(default_factory=list)

    @property
    def conv_s(self) -> float:
        return sum(c.seconds for c, _ in self.calls)

    @property
    def vit_s(self) -> float:
        return sum(v.seconds for _, v in self.calls)

    @property
    def hidden_s(self) -> float:
        return self.serial_s - self.makespan_s


@dataclass
class PrefillResult:
    calls: list[Call]
    tokens: int
    capacity: int  # KV slots of the graph used (static), or the final context (dynamic)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    @property
    def padded_tokens(self) -> int:
        return sum(c.rows - c.real_rows for c in self.calls)


def roofline(name: str, flops: float, nbytes: float, rate: float, bandwidth: float) -> OpCost:
    return OpCost(name, flops, nbytes, flops / rate if flops else 0.0, nbytes / bandwidth if nbytes else 0.0)


class CostModel:
    """Costs of one workload under one deployment on one device."""

    def __init__(self, work: Workload, device: Device, deploy: Deployment):
        self.work, self.device, self.deploy = work, device, deploy
        eff = device.efficiency
        self._eff = eff
        self._dram = si(device.dram_bandwidth)

    # --- processor parameters ---
    def _rates(self, where: str, part: str) -> tuple[float, float, float, float]:
        """(linear rate, attention rate, bandwidth, call overhead) of ``part`` ("vit" or "llm") on ``where``."""
        proc = self.device.processor(where)
        dep, eff = self.deploy, self._eff
        lin_prec = dep.vit_compute if part == "vit" else dep.llm_compute
        att_prec = dep.vit_compute if part == "vit" else dep.attention_compute
        if where == "npu":
            lin = proc.rate(lin_prec) * eff.get("npu_vit" if part == "vit" else "npu_llm")
            att = proc.rate(att_prec) * eff.get("npu_attention")
            call = eff.get("npu_vit_call" if part == "vit" else "npu_llm_call")
        else:
            lin = proc.rate(lin_prec) * eff.get("cpu_gemm")
            att = proc.rate(att_prec) * eff.get("cpu_gemm")
            call = eff.get("cpu_call")
        return lin, att, self.device.bandwidth(where), call

    # --- vision ---
    def preprocess(self, src_pixels: float, canvas_pixels: float, tiles: int) -> Call:
        """Resize to the canvas and the thumbnail (bicubic, two passes of 4 taps), cut and normalize to fp32."""
        w, dep = self.work, self.deploy
        tile_px = w.tile * w.tile
        flops = (canvas_pixels + tile_px) * 3 * 16 + tiles * 3 * tile_px * 2
        nbytes = src_pixels * 3 + 2 * canvas_pixels * 3 + tile_px * 3 + tiles * 3 * tile_px * 4
        rate = self.device.cpu.rate(dep.conv_compute) * self._eff.get("cpu_conv")
        return Call("preprocess", "cpu", 0.0, (roofline("resize", flops, nbytes, rate, self.device.bandwidth("cpu")),),
                    tiles, tiles)

    def conv_call(self, tiles: int) -> Call:
        """Patch-embedding Conv2D of ``tiles`` tiles on the CPU (fp32 pixels in, 16-bit tokens out)."""
        w = self.work
        nbytes = tiles * (3 * w.tile * w.tile * 4 + w.vit_tokens * w.vit_hidden * 2)
        rate = self.device.cpu.rate(self.deploy.conv_compute) * self._eff.get("cpu_conv")
        op = roofline("conv2d", w.conv_flops * tiles, nbytes, rate, self.device.bandwidth("cpu"))
        return Call("conv", "cpu", 0.0, (op,), tiles, tiles)

    def vit_call(self, batch: int, real: int) -> Call:
        """One ViT graph call on a batch of ``batch`` tiles (``real`` of them real, the rest padding), with the
        down-sampler and projector fused in: the weights stream once per call."""
        w, dep = self.work, self.deploy
        lin, att, bw, call = self._rates(dep.vit_on, "vit")
        ops = (
            roofline("linear", w.vit_linear_flops(batch) + w.projector_flops(batch), w.vit_weight_bytes(dep.vit_weights),
                     lin, bw),
            roofline("attention", w.vit_attention_flops(batch), 0.0, att, bw),
        )
        return Call("vit", dep.vit_on, call, ops, batch, real)

    def tile_calls(self, tiles: int) -> list[tuple[int, int]]:
        """(real tiles, compiled batch) per ViT call. Full batches of B; the remainder r either pads one more
        B-tile call or runs r calls of the 1-tile graph ("auto": whichever the model says is faster, which gives
        the paper's 4+4+1 for 9 tiles)."""
        b = self.deploy.tile_batch
        full, r = divmod(tiles, b)
        calls = [(b, b)] * full
        if r:
            pad, single = [(r, b)], [(1, 1)] * r
            mode = self.deploy.remainder
            if mode == "auto":
                cost = lambda cs: sum(self.vit_call(bb, rr).seconds for rr, bb in cs)  # noqa: E731
                mode = "pad" if cost(pad) <= cost(single) else "single"
            calls += pad if mode == "pad" else single
        return calls

    def encode(self, tiles: int, src_pixels: float, canvas_pixels: float) -> EncodeResult:
        """The CPU/NPU pipeline: Conv2D of tile group i+1 on the CPU runs while the NPU runs the ViT of group i."""
        dep = self.deploy
        pre = self.preprocess(src_pixels, canvas_pixels, tiles)
        events = [Event("preprocess", "cpu", 0.0, pre.seconds)]
        cpu_t, vit_free = pre.seconds, 0.0
        overlap = dep.pipeline and dep.vit_on != "cpu"
        calls = []
        for i, (real, batch) in enumerate(self.tile_calls(tiles)):
            conv, vit = self.conv_call(real), self.vit_call(batch, real)
            events.append(Event(f"conv{i}", "cpu", cpu_t, cpu_t + conv.seconds))
            cpu_t += conv.seconds
            start = max(cpu_t, vit_free)
            vit_free = start + vit.seconds
            events.append(Event(f"vit{i}", dep.vit_on, start, vit_free))
            if not overlap:  # one processor, or no pipelining: the next Conv2D waits for this ViT call
                cpu_t = vit_free
            calls.append((conv, vit))
        makespan = max(cpu_t, vit_free)
        serial = pre.seconds + sum(c.seconds + v.seconds for c, v in calls)
        return EncodeResult(calls, pre, makespan, serial, events)

    # --- language model ---
    def llm_call(self, kind: str, rows: int, real: int, span: float, head: bool) -> Call:
        """One LLM graph call: ``rows`` query tokens (``real`` of them real) against ``span`` KV slots."""
        w, dep = self.work, self.deploy
        lin, att, bw, call = self._rates(dep.llm_on, "llm")
        kv = w.kv_bytes_per_token(dep.kv_cache)
        ops = [
            roofline("linear", w.llm_linear_flops(rows), weight_bytes(w.llm_linear_params, dep.llm_weights), lin, bw),
            roofline("attention", w.attention_flops(rows, span), kv * (span + rows), att, bw),
        ]
        if head:  # logits of the last real token only
            ops.append(roofline("head", w.head_flops(1), weight_bytes(w.head_params, dep.head_weights or dep.llm_weights),
                                lin, bw))
        return Call(kind, dep.llm_on, call, tuple(ops), rows, real)

    def prefill(self, tokens: int) -> PrefillResult:
        """Chunked prefill. Static graphs: ceil(N/t) calls of exactly t rows (the last chunk padded), each
        attending the whole KV buffer of the graph's capacity C plus its own t keys (mask [t, C+t]). Dynamic
        (CPU runtimes): the last chunk is short and chunk k attends the k*t keys before it plus its own."""
        if tokens < 1:
            raise ValueError(f"prompt must have at least 1 token, got {tokens}")
        if tokens > self.work.context:
            raise ValueError(f"prompt of {tokens} tokens exceeds the model's context of {self.work.context}")
        t, calls = self.deploy.chunk, []
        n = math.ceil(tokens / t)
        if self.deploy.attention == "static":
            cap = self.deploy.capacity_for(tokens)
            for k in range(n):
                real = min(t, tokens - k * t)
                calls.append(self.llm_call("prefill", t, real, cap + t, head=k == n - 1))
            return PrefillResult(calls, tokens, cap)
        for k in range(n):
            real = min(t, tokens - k * t)
            calls.append(self.llm_call("prefill", real, real, k * t + real, head=k == n - 1))
        return PrefillResult(calls, tokens, tokens)

    def decode_step(self, capacity: int, context: int) -> Call:
        """One decode token: static graphs attend the whole buffer of ``capacity`` slots, dynamic ones the
        ``context`` tokens so far."""
        span = capacity if self.deploy.attention == "static" else context
        return self.llm_call("decode", 1, 1, span + 1, head=True)

    # --- start-up and memory ---
    def weight_bytes(self) -> tuple[float, float]:
        """(vision + projector, language model) bytes as stored."""
        w, dep = self.work, self.deploy
        vit = w.vit_weight_bytes(dep.vit_weights) if w.multimodal else 0.0
        return vit, w.llm_weight_bytes(dep.llm_weights, dep.head_weights)

    def init_seconds(self) -> float:
        """Loading both models from storage (the paper loads ViT and LLM together at start-up)."""
        return sum(self.weight_bytes()) / si(self.device.storage_read)

    def memory(self, tiles: int, prefill: PrefillResult, new_tokens: int = 0) -> dict[str, float]:
        """Bytes resident in each phase: encoding (both models, ViT activations, the tiles) and the LLM phase
        (LLM weights, the KV cache, one chunk's activations; the ViT freed if the deployment frees it)."""
        w, dep = self.work, self.deploy
        vit_w, llm_w = self.weight_bytes()
        kv = w.kv_bytes_per_token(dep.kv_cache)
        slots = prefill.capacity if dep.attention == "static" else prefill.tokens + new_tokens
        encode = vit_w + llm_w
        if tiles:
            encode += w.vit_activation_bytes(min(dep.tile_batch, max(tiles, 1))) + tiles * 3 * w.tile * w.tile * 2
        llm = llm_w + (0.0 if dep.free_vit_after_encode else vit_w) + kv * slots
        llm += w.llm_activation_bytes(dep.chunk, slots + dep.chunk)
        return {"encode": encode, "llm": llm}


__all__ = ["Call", "CostModel", "EncodeResult", "Event", "OpCost", "PrefillResult", "roofline"]
