"""Measure this machine for its device profile: DRAM bandwidth and fp32 GEMM (bluelm_v.sim.measure).

    python benchmarks/device_profile.py            # print the measurements beside the stored profile
    python benchmarks/device_profile.py --write    # store them in configs/devices/this-cpu.json

The machine is shared and noisy: numbers are the best of several runs, and the stored profile says when and on
which CPU they were taken.
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from bluelm_v.sim import load_device
from bluelm_v.sim.devices import si
from bluelm_v.sim.measure import measure_host, write_host_profile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="store the results in configs/devices/this-cpu.json")
    ap.add_argument("--quick", action="store_true", help="smaller buffers and fewer repeats")
    args = ap.parse_args(argv)
    console = Console()
    with console.status("measuring bandwidth and GEMM..."):
        r = measure_host(quick=args.quick)
    stored = load_device("this-cpu")
    t = Table(title=f"this-cpu: {r['cpu']}, {r['threads']} threads, {r['date']}")
    for col in ("quantity", "measured now", "stored profile", "ratio"):
        t.add_column(col, justify="right" if col != "quantity" else "left")
    rows = [("DRAM read (GB/s)", r["read_bandwidth"] / 1e9, si(stored.dram_bandwidth) / 1e9),
            ("DRAM copy, read+write (GB/s)", r["copy_bandwidth"] / 1e9, None),
            ("fp32 GEMM (GFLOP/s)", r["fp32_gemm"] / 1e9, stored.cpu.rate("fp32") / 1e9)]
    for name, now, old in rows:
        t.add_row(name, f"{now:.1f}", "-" if old is None else f"{old:.1f}", "-" if not old else f"{now / old:.2f}")
    console.print(t)
    if args.write:
        console.print(f"written: {write_host_profile(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
