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
import time
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bluelm_v.export.onnx_runner import IMAGE_TOKEN_ID, OnnxModel
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
        if not isinstance(graphs, dict):
            raise ValueError(f"{path}: field graphs must be an object")
        super().__init__(folder / "float")
        checked = {name: _checked_graph(path, name, graphs.get(name)) for name in self.sessions}
        for name, (context, io) in checked.items():
            self.sessions[name] = QuantizedSession(context, io)
        prefix = graphs.get("llm_prefill", {}).get("prefix")
        if prefix is not None:
            self._load_prefix(path, prefix)

    def _load_prefix(self, path: Path, prefix: Any) -> None:
        """The first token's cache that the compiled graphs start from (``compile_llm``'s prefix)."""
        where = f"{path}: graphs.llm_prefill.prefix"
        if not isinstance(prefix, dict) or not isinstance(prefix.get("file"), str) \
                or isinstance(prefix.get("token"), bool) or not isinstance(prefix.get("token"), int):
            raise ValueError(f"{where} must be an object with an integer token and a file")
        file = path.parent / prefix["file"]
        if Path(prefix["file"]).name != prefix["file"] or not file.is_file():
            raise ValueError(f"{where}.file {prefix['file']!r} is not a file beside the report")
        if not 0 <= prefix["token"] < self.embeddings.shape[0]:
            raise ValueError(f"{where}.token {prefix['token']} is outside the vocabulary")
        try:
            with np.load(file, allow_pickle=False) as z:
                keys, values, token = z["keys"], z["values"], int(z["token"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{file}: not a prefix cache ({exc})") from None
        if token != prefix["token"]:
            raise ValueError(f"{file} holds token {token}, the report names {prefix['token']}")
        self.set_prefix(token, keys, values)


_INT_TYPES = ("uint8", "uint16", "int8", "int16")


def _checked_graph(path: Path, name: str, r: Any) -> tuple[Path, dict]:
    """(context file, io_quantization) of ``graphs.<name>`` in the report at ``path``, checked before ONNX Runtime
    sees them: a plain file name beside the report, and per tensor an integer dtype, a positive finite scale and a
    zero point that the dtype holds (ValueError naming the field)."""
    where = f"{path}: graphs.{name}"
    if not isinstance(r, dict) or not isinstance(r.get("context"), str) or not isinstance(r.get("io_quantization"),
                                                                                         dict):
        raise ValueError(f"{where} has no compiled context (fields context, io_quantization)")
    context = path.parent / r["context"]
    if Path(r["context"]).name != r["context"] or not context.is_file():
        raise ValueError(f"{where}.context {r['context']!r} is not a file beside the report")
    for tensor, q in r["io_quantization"].items():
        at = f"{where}.io_quantization.{tensor}"
        if not isinstance(q, dict) or q.get("dtype") not in _INT_TYPES:
            raise ValueError(f"{at}.dtype must be one of {', '.join(_INT_TYPES)}")
        scale, zp = q.get("scale"), q.get("zero_point")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"{at}.scale must be a positive finite number, got {scale!r}")
        info = np.iinfo(np.dtype(q["dtype"]))
        if isinstance(zp, bool) or not isinstance(zp, int) or not info.min <= zp <= info.max:
            raise ValueError(f"{at}.zero_point must be an integer in [{info.min}, {info.max}], got {zp!r}")
    return context, r["io_quantization"]


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
        self.last_timing: Optional[dict] = None

    def generate(self, message: Any, max_new_tokens: int = 64) -> str:
        """The greedy answer to one message; ``last_timing`` then holds its ``ttft_s`` (preprocessing, the compiled
        ViT and projector, prefill: on the emulator, not a phone's time), ``prompt_tokens`` and ``image_tokens``."""
        t0 = time.perf_counter()
        ids, images = self.reference.prepare(message)
        image_embeds = None
        if images:
            image_embeds = np.concatenate([self.model.encode_tiles(tiles.numpy()) for tiles, _ in images])
            image_embeds = image_embeds.reshape(-1, image_embeds.shape[-1])
        before_prefill = time.perf_counter() - t0
        out = self.model.greedy(ids, max_new_tokens, eos=self.loaded.eos_ids, image_embeds=image_embeds)
        self.last_timing = {"ttft_s": round(before_prefill + self.model.first_token_s, 6), "prompt_tokens": len(ids),
                            "image_tokens": sum(1 for i in ids if i == IMAGE_TOKEN_ID)}
        if out and out[-1] in self.loaded.eos_ids:
            out = out[:-1]
        return self.loaded.tokenizer.decode(out)


__all__ = ["QnnModel", "QnnVLM"]
