"""QNN: the ONNX export's ViT tile batch quantized to QDQ, compiled for Snapdragon 8 Gen 3's HTP by the
onnxruntime-qnn wheel, reloaded from its context binary and run on the HTP emulator against float ONNX Runtime;
what QNN does not take is refused unless allowed, and named."""
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn (the qnn extra) is not installed")

from bluelm_v.export.qnn import SOCS, compile_graph, vision_inputs  # noqa: E402


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory):
    from bluelm_v.export import export_onnx
    from bluelm_v.models.reference import load_model

    loaded = load_model("tiny")
    out = export_onnx(loaded, tmp_path_factory.mktemp("float"), chunk=1, tile_batch=2, max_context=2, quant="fp32",
                      progress=False)
    return loaded, out


def test_vit_compiles_wholly_for_sm8650_and_matches_float(tiny_graphs, tmp_path):
    loaded, out = tiny_graphs
    tiles = vision_inputs(loaded.config, 2)
    assert len(tiles) >= 4 and tiles[0].shape == (2, 3, loaded.config.vision.image_size, loaded.config.vision.image_size)
    report = compile_graph(out / "vit.onnx", tmp_path, "vit", soc="sm8650",
                           calibration=[{"pixel_values": t} for t in tiles[:2]],
                           checks=[{"pixel_values": t} for t in tiles[2:]])
    assert report["nodes"] > 100 and report["nodes_on_qnn"] == report["nodes"] and report["fallback_nodes"] == []
    assert report["htp_arch"] == "v75" and report["context_bytes"] > 0
    assert (tmp_path / "vit_ctx.onnx").is_file()
    assert set(report["io_quantization"]) == {"pixel_values", "features"}  # the graph's I/O is uint8 now
    assert report["cosine"] >= 0.99 and report["checked_inputs"] == len(tiles) - 2
    json.dumps(report)  # the report is plain JSON


def test_projector_fallback_is_refused_unless_allowed_and_named(tiny_graphs, tmp_path):
    import onnxruntime as ort

    loaded, out = tiny_graphs
    vit = ort.InferenceSession(str(out / "vit.onnx"), providers=["CPUExecutionProvider"])
    feats = [{"features": vit.run(None, {"pixel_values": t})[0]} for t in vision_inputs(loaded.config, 2)]
    with pytest.raises(RuntimeError, match="QNN did not take the whole graph for sm8650"):
        compile_graph(out / "projector.onnx", tmp_path, "projector", calibration=feats[:2])
    report = compile_graph(out / "projector.onnx", tmp_path / "allowed", "projector", calibration=feats[:2],
                           checks=feats[2:], allow_fallback=True)
    ops = {n["op"] for n in report["fallback_nodes"]}
    assert report["nodes_on_qnn"] < report["nodes"] and {"Reshape", "Transpose"} <= ops
    assert report["cosine"] >= 0.99  # the mixed HTP + CPU run is still right


def test_bad_requests(tiny_graphs, tmp_path):
    loaded, out = tiny_graphs
    with pytest.raises(ValueError, match="unknown SoC 'sm0000'"):
        compile_graph(out / "vit.onnx", tmp_path, "vit", soc="sm0000", calibration=[{}])
    with pytest.raises(ValueError, match="at least one calibration input"):
        compile_graph(out / "vit.onnx", tmp_path, "vit", calibration=[])
    with pytest.raises(ValueError, match="activations must be one of"):
        compile_graph(out / "vit.onnx", tmp_path, "vit", calibration=[{"x": np.zeros(1)}], activations="int4")
    assert set(SOCS) == {"sm8650", "sm8550", "sm8750"}
