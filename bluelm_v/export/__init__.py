"""Export paths: the native engine's model package (``package``) and, for NPU toolchains, static graphs."""
from bluelm_v.export.package import package

__all__ = ["package"]
