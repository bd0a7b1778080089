"""A whole request served from ``export_qnn``'s compiled graphs on the HTP emulator (docs/export.md): image tiles
-> ViT batches -> projector -> chunked prefill -> greedy decode, every graph its context binary with quantized
I/O. ``bluelm-v eval --model qnn:DIR`` answers with it, so an evaluation shows what the NPU quantization does to
answers.

The message is turned into token ids and tiles by the reference's own ``ReferenceVLM.prepare`` (chat template,
dynamic resolution, image-token runs), loaded from the export's source; the model's numbers all come from the
compiled graphs and the float embedding table, as on a phone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import numpy as np

from bluelm_v.export.onnx_runner import OnnxModel
from bluelm_v.export.qnn_llm import MASK_VALUE, QuantizedSession


class QnnModel(OnnxModel):
    """``OnnxModel`` over ``export_qnn``'s folder: the float export's manifest and embeddings, every graph run from
    its compiled context (``export_report.json``) on the HTP emulator."""

    mask_value = MASK_VALUE

    def __init__(self, folder: Union[str, Path]):
        folder = Path(folder)
        path = folder / "export_report.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no export_report.json (write one with `bluelm-v export "
                                    "--target qnn`)")
        try:
            self.report = json.loads(path.read_text(encoding="utf-8"))
            graphs = self.report["graphs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an export report ({exc})") from None
        super().__init__(folder / "float")
        for name in self.sessions:
            r = graphs.get(name) if isinstance(graphs, dict) else None
            if not isinstance(r, dict) or "context" not in r or "io_quantization" not in r:
                raise ValueError(f"{path}: graphs.{name} has no compiled context")
            self.sessions[name] = QuantizedSession(folder / r["context"], r["io_quantization"])


class QnnVLM:
    """``generate(message, max_new_tokens) -> str`` served by a ``QnnModel`` (greedy)."""

    def __init__(self, folder: Union[str, Path]):
        from bluelm_v.models.reference import ReferenceVLM, load_model

        self.model = QnnModel(folder)
        spec = self.model.report.get("spec")
        if not spec:
            raise ValueError(f"{folder}/export_report.json: exported from a model in memory (no spec), so its "
                             "tokenizer and preprocessing cannot be reloaded; export it by name or path")
        loaded = load_model(spec)
        if loaded.config.multimodal and loaded.config.family != "bluelm_v":
            raise ValueError(f"{folder}: the QNN runner lays out images of the bluelm_v family only, "
                             f"not {loaded.config.family}")
        self.reference = ReferenceVLM(loaded)
        self.loaded = loaded

    def generate(self, message: Any, max_new_tokens: int = 64) -> str:
        ids, images = self.reference.prepare(message)
        image_embeds = None
        if images:
            image_embeds = np.concatenate([self.model.encode_tiles(tiles.numpy()) for tiles, _ in images])
            image_embeds = image_embeds.reshape(-1, image_embeds.shape[-1])
        out = self.model.greedy(ids, max_new_tokens, eos=self.loaded.eos_ids, image_embeds=image_embeds)
        if out and out[-1] in self.loaded.eos_ids:
            out = out[:-1]
        return self.loaded.tokenizer.decode(out)


__all__ = ["QnnModel", "QnnVLM"]
