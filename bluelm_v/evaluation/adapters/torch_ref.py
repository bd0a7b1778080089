"""``torch:SPEC``: the project's PyTorch reference model, ``bluelm_v.models.reference.load_vlm(spec)``.

The reference model takes VLMEvalKit messages directly (image values: path, encoded bytes or an RGB uint8
array) and answers ``generate(message, max_new_tokens=..., temperature=0.0) -> str``. torch is imported only when
this adapter is built.
"""
from __future__ import annotations

import importlib
from typing import Any

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError


def load_reference():
    try:
        module = importlib.import_module("bluelm_v.models.reference")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("bluelm_v.models.reference"):
            raise AdapterError("the torch adapter needs bluelm_v.models.reference (the PyTorch reference model), "
                               "which this installation does not have") from None
        raise
    if not hasattr(module, "load_vlm"):
        raise AdapterError("bluelm_v.models.reference has no load_vlm(spec)")
    return module.load_vlm


class TorchAdapter(ModelAdapter):
    kind = "torch"
    takes_dynres = True

    def __init__(self, target: str, **options):
        super().__init__(target, **options)
        self.model = load_reference()(target, dynres=self.dynres) if self.dynres else load_reference()(target)

    @property
    def name(self) -> str:
        return safe_name(f"torch-{target_stem(self.target)}")

    @property
    def takes_images(self) -> bool:
        loaded = getattr(self.model, "loaded", None)
        return getattr(loaded, "vlm", True) is not None

    def why_no_images(self) -> str:
        return f"{self.target} is a text-only model"

    def identity(self) -> str | None:
        from pathlib import Path

        from bluelm_v.evaluation.provenance import fingerprint

        path = Path(self.target).expanduser()
        if not path.exists():
            return None  # a config name: random weights from a fixed seed, named by the spec itself
        return fingerprint([p for p in (path.iterdir() if path.is_dir() else [path]) if p.is_file()])

    def weights(self, dataset: str | None = None) -> str:
        from pathlib import Path

        from bluelm_v.evaluation.provenance import fingerprint

        loaded = getattr(self.model, "loaded", None)
        source = getattr(loaded, "source", None) or self.target
        path = Path(self.target).expanduser()
        files = [p for p in (path.iterdir() if path.is_dir() else [path]) if p.is_file()] if path.exists() else []
        return f"{source}; " + fingerprint(files) if files else str(source)

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        out = self.model.generate(message, max_new_tokens=self.max_new_tokens, temperature=self.temperature)
        if not isinstance(out, str):
            raise AdapterError(f"reference model returned {type(out).__name__}, not str")
        return out

    def sample_timing(self) -> dict | None:
        t = getattr(self.model, "last_timing", None)
        if t is None:
            return None
        extra = getattr(t, "extra", {})
        return {"ttft_s": round(extra.get("preprocess_s", 0.0) + extra.get("vision_s", 0.0) + t.first_token_s, 6),
                "prompt_tokens": int(t.prompt_tokens), "image_tokens": int(getattr(self.model, "last_image_tokens", 0))}


    def check(self, datasets: list[str] | None = None) -> None:
        if self.batch_size > 1 and self.temperature > 0:
            raise AdapterError("--batch-size with torch: decodes greedily; use --temperature 0 or --batch-size 1")

    def generate_batch(self, messages: list[list[dict]], *, dataset: str, indices: list) -> list[str]:
        batch = getattr(self.model, "generate_batch", None)
        if batch is None:
            raise AdapterError("this reference model has no generate_batch; use --batch-size 1")
        return list(batch(messages, max_new_tokens=self.max_new_tokens))


def target_stem(target: str) -> str:
    return target.rstrip("/").rsplit("/", 1)[-1]
