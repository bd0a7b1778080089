"""Export paths: the native engine's model package (``package``) and, for NPU toolchains, static graphs."""
from bluelm_v.export.package import package


def export_onnx(*args, **kwargs):
    """Static-shape ONNX graphs for NPU toolchains (bluelm_v.export.onnx_export; needs torch and onnx)."""
    from bluelm_v.export.onnx_export import export_onnx as run

    return run(*args, **kwargs)


__all__ = ["export_onnx", "package"]
