"""``qnn:DIR``: a ``bluelm-v export --target qnn`` folder, every graph run from its compiled context binary on
onnxruntime-qnn's HTP emulator (bluelm_v.export.qnn_runner), greedy."""
from __future__ import annotations

from typing import Any

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError


class QnnAdapter(ModelAdapter):
    kind = "qnn"

    def __init__(self, target: str, **options):
        super().__init__(target, **options)
        try:
            from bluelm_v.export.qnn_runner import QnnVLM

            self.model = QnnVLM(target)
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise AdapterError(f"qnn:{target}: {exc}") from None

    @property
    def name(self) -> str:
        return safe_name("qnn-" + self.target.rstrip("/").rsplit("/", 1)[-1])

    @property
    def takes_images(self) -> bool:
        return self.model.loaded.config.multimodal

    def why_no_images(self) -> str:
        return f"{self.target} was exported from a text-only model"

    def check(self, datasets: list[str] | None = None) -> None:
        if self.temperature > 0:
            raise AdapterError("qnn: the compiled graphs are run greedily; use --temperature 0")

    def identity(self) -> str | None:
        from pathlib import Path

        from bluelm_v.evaluation.provenance import fingerprint

        return fingerprint([p for p in Path(self.target).glob("*_ctx*") if p.is_file()]
                           + [Path(self.target) / "export_report.json"])

    def sample_timing(self) -> dict | None:
        return self.model.last_timing

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        return self.model.generate(message, max_new_tokens=self.max_new_tokens)
