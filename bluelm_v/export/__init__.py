"""Export paths: the native engine's model package (``package``) and, for NPU toolchains, static graphs."""
from bluelm_v.export.package import package


def export_onnx(*args, **kwargs):
    """Static-shape ONNX graphs for NPU toolchains (bluelm_v.export.onnx_export; needs torch and onnx)."""
    from bluelm_v.export.onnx_export import export_onnx as run

    return run(*args, **kwargs)


def export_qnn(*args, **kwargs):
    """Every static graph compiled for a Snapdragon's HTP with onnxruntime-qnn (bluelm_v.export.qnn_llm)."""
    from bluelm_v.export.qnn_llm import export_qnn as run

    return run(*args, **kwargs)


def export_executorch(*args, **kwargs):
    """ExecuTorch .pte programs with the XNNPACK delegate (bluelm_v.export.executorch_export)."""
    from bluelm_v.export.executorch_export import export_executorch as run

    return run(*args, **kwargs)


__all__ = ["export_executorch", "export_onnx", "export_qnn", "package"]
