"""Ablations over the simulator: the relaxation alpha of the resolution scheme, and the prefill chunk size."""
