"""Device profiles (configs/devices/*.json): the numbers the latency model runs on, each with its source.

A profile gives memory and storage bandwidth, the peak throughput of the CPU and (optionally) the NPU per compute
precision, and the efficiency factors of the model (docs/simulator.md). Every number is a ``Sourced``: a tag of
docs/sources.md ("B2", "N1", "P", "D" for derived), "measured" (with what and when), "fitted" (on which
cells) or "assumed". A profile may take its efficiency factors from another with ``efficiency_from`` (the
Dimensity 9400 and Snapdragon profiles reuse the factors fitted on the Dimensity 9300).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from bluelm_v.config import ConfigError, Sourced, list_configs, load

# Units a profile may use, and their factor to SI (ops/s, bytes/s, bytes, seconds, plain fractions).
UNITS = {
    "TOPS": 1e12, "TFLOPS": 1e12, "GOPS": 1e9, "GFLOPS": 1e9, "GB/s": 1e9, "GB": 1e9, "s": 1.0, "ms": 1e-3,
    "fraction": 1.0,
}
PRECISIONS = ("int8", "int16", "fp16", "fp32")
# Where a number comes from: a tag of docs/sources.md, or one of these words.
SOURCE_WORDS = ("measured", "fitted", "assumed")


def si(q: Sourced) -> float:
    """The value of a sourced number in SI units."""
    return q.value * UNITS[q.unit]


def _check_sourced(q: Sourced, where: str, units: tuple[str, ...]) -> None:
    if q.unit not in units:
        raise ConfigError(f"{where}: unit {q.unit!r} is not one of {', '.join(units)}")
    if not q.value > 0:
        raise ConfigError(f"{where}: value must be positive, got {q.value}")
    if not q.source.strip():
        raise ConfigError(f"{where}: empty source (give a tag of docs/sources.md, or measured / fitted / assumed)")
    first = q.source.split()[0].strip("[],;")
    if first in ("fitted", "measured") and not q.note.strip():
        raise ConfigError(f"{where}: a {first} number must say in its note what it was {first} on")


@dataclass(frozen=True)
class Processor:
    """A compute unit: its peak throughput per compute precision."""

    name: str
    peak: dict[str, Sourced]  # "int8" / "int16" / "fp16" / "fp32" -> ops/s (multiply-add = 2 ops)
    description: str = ""

    def __post_init__(self):
        if not self.peak:
            raise ValueError(f"processor {self.name}: no peak throughput given")
        for k, q in self.peak.items():
            if k not in PRECISIONS:
                raise ValueError(f"processor {self.name}: unknown precision {k!r} (expected {', '.join(PRECISIONS)})")
            _check_sourced(q, f"{self.name}.peak.{k}", ("TOPS", "TFLOPS", "GOPS", "GFLOPS"))

    def rate(self, precision: str) -> float:
        """Peak ops/s at ``precision``."""
        if precision not in self.peak:
            raise ValueError(f"processor {self.name} has no {precision} throughput in its profile "
                             f"(has {', '.join(self.peak)})")
        return si(self.peak[precision])


@dataclass(frozen=True)
class Efficiency:
    """The model's efficiency factors (fractions of a peak) and fixed costs per call (seconds)."""

    npu_vit: Optional[Sourced] = None  # ViT and projector matmuls: fraction of the NPU peak at their precision
    npu_llm: Optional[Sourced] = None  # LLM linear layers: fraction of the NPU peak at their precision
    npu_attention: Optional[Sourced] = None  # activation x activation matmuls (QK^T, PV) on the NPU
    npu_memory: Optional[Sourced] = None  # fraction of the DRAM bandwidth the NPU streams weights/KV at
    npu_vit_call: Optional[Sourced] = None  # fixed cost of one ViT graph call
    npu_llm_call: Optional[Sourced] = None  # fixed cost of one LLM graph call (prefill chunk or decode step)
    cpu_conv: Optional[Sourced] = None  # patch-embedding Conv2D and tile preprocessing on the CPU
    cpu_gemm: Optional[Sourced] = None  # matmuls of a CPU runtime (llama.cpp-like)
    cpu_memory: Optional[Sourced] = None  # fraction of the DRAM bandwidth the CPU streams at
    cpu_call: Optional[Sourced] = None  # fixed cost of one CPU graph call (one micro-batch)

    NPU_FIELDS = ("npu_vit", "npu_llm", "npu_attention", "npu_memory", "npu_vit_call", "npu_llm_call")
    CPU_FIELDS = ("cpu_conv", "cpu_gemm", "cpu_memory", "cpu_call")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            q = getattr(self, f.name)
            if q is None:
                continue
            if f.name.endswith("_call"):
                _check_sourced(q, f"efficiency.{f.name}", ("s", "ms"))
            else:
                _check_sourced(q, f"efficiency.{f.name}", ("fraction",))
                if q.value > 1:
                    raise ValueError(f"efficiency.{f.name}: a fraction of the peak cannot exceed 1, got {q.value}")

    def get(self, name: str) -> float:
        q = getattr(self, name)
        if q is None:
            raise ValueError(f"efficiency factor {name} is not in the device profile")
        return si(q)


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    dram_bandwidth: Sourced  # bytes/s, the DRAM's peak
    storage_read: Sourced  # bytes/s, sequential read of the weights at start-up
    cpu: Processor
    npu: Optional[Processor] = None
    efficiency: Efficiency = field(default_factory=Efficiency)
    efficiency_from: Optional[str] = None  # take the factors this profile leaves out from that profile
    dram_capacity: Optional[Sourced] = None
    measured: dict[str, str] = field(default_factory=dict)  # for measured profiles: what, when, by which script
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        _check_sourced(self.dram_bandwidth, "dram_bandwidth", ("GB/s",))
        _check_sourced(self.storage_read, "storage_read", ("GB/s",))
        if self.dram_capacity is not None:
            _check_sourced(self.dram_capacity, "dram_capacity", ("GB",))

    @property
    def has_npu(self) -> bool:
        return self.npu is not None

    def processor(self, where: str) -> Processor:
        if where == "cpu":
            return self.cpu
        if where == "npu":
            if self.npu is None:
                raise ValueError(f"device {self.name} has no NPU; place the component on the cpu")
            return self.npu
        raise ValueError(f"unknown processor {where!r}: expected cpu or npu")

    def bandwidth(self, where: str) -> float:
        """Usable DRAM bandwidth (bytes/s) of the CPU or the NPU: the peak times the fitted efficiency."""
        return si(self.dram_bandwidth) * self.efficiency.get(f"{where}_memory")


def list_devices() -> list[str]:
    return list_configs("devices")


def load_device(device: Union[str, Path, Device]) -> Device:
    """A device profile by name (``dimensity-9300``), path or object, with inherited factors filled in and the
    factors the model needs checked."""
    if isinstance(device, Device):
        return device
    if not isinstance(device, (str, Path)):
        raise TypeError(f"device must be a profile name, a path or a Device, got {type(device).__name__}")
    dev = load("devices", device, Device)
    seen = {dev.name}
    eff = dev.efficiency
    parent_name = dev.efficiency_from
    while parent_name:
        if parent_name in seen:
            raise ConfigError(f"device {dev.name}: efficiency_from makes a cycle through {parent_name}")
        seen.add(parent_name)
        parent = load("devices", parent_name, Device)
        eff = dataclasses.replace(eff, **{
            f.name: getattr(parent.efficiency, f.name)
            for f in dataclasses.fields(Efficiency) if getattr(eff, f.name) is None
            and getattr(parent.efficiency, f.name) is not None
        })
        parent_name = parent.efficiency_from
    needed = Efficiency.CPU_FIELDS + (Efficiency.NPU_FIELDS if dev.npu is not None else ())
    missing = [n for n in needed if getattr(eff, n) is None]
    if missing:
        raise ConfigError(f"device {dev.name}: efficiency factor(s) {', '.join(missing)} missing")
    return dataclasses.replace(dev, efficiency=eff)


__all__ = ["Device", "Efficiency", "PRECISIONS", "Processor", "UNITS", "list_devices", "load_device", "si"]
