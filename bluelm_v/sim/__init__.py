"""Device-latency simulator: what a change (alpha, tile count, chunk size, precision, model size) does to latency
on a phone, from a physical model fitted to the paper's measurements (docs/simulator.md).

    from bluelm_v.sim import simulate
    b = simulate("bluelm-v-3b", "dimensity-9300", (768, 1536), prompt_tokens=2048)
    b.encode_s, b.prefill_s, b.decode_tokens_per_s, b.peak_memory_gb
"""
from bluelm_v.sim.devices import Device, Efficiency, Processor, list_devices, load_device
from bluelm_v.sim.simulate import Breakdown, Component, simulate
from bluelm_v.sim.workload import Deployment, Workload, WorkloadSpec, workload_from_config

__all__ = [
    "Breakdown", "Component", "Deployment", "Device", "Efficiency", "Processor", "Workload", "WorkloadSpec",
    "list_devices", "load_device", "simulate", "workload_from_config",
]
