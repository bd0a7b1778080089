"""Model adapters: what answers the prompts. A spec is ``KIND:TARGET``:

  * ``replay:PATH`` - an existing predictions file (VLMEvalKit's xlsx/tsv/json/jsonl, or our own), or a folder of
    ``*_<DATASET>.<ext>`` files; ``replay:PATH?delay=SECONDS`` waits before each answer (for tests);
  * ``openai:URL#MODEL`` - any OpenAI-compatible chat endpoint, images sent as data URLs;
  * ``hf:PATH`` - a transformers image-text-to-text model saved locally;
  * ``torch:SPEC`` - the project's PyTorch reference model (``bluelm_v.models.reference.load_vlm``);
  * ``native:PACKAGE`` - the C++ engine over a model package (``bluelm_v.engine``).

The registry is open: other modules add themselves with ``register_adapter``.
Adapters answer ``generate(message, dataset=..., index=...) -> str`` where ``message`` is VLMEvalKit's list of
``{"type": "image" | "text", "value": ...}`` parts, image values being encoded image bytes.
"""
from __future__ import annotations

import importlib
from typing import Any

from bluelm_v.evaluation.errors import AdapterError

ADAPTERS: dict[str, str] = {
    "replay": "bluelm_v.evaluation.adapters.replay:ReplayAdapter",
    "openai": "bluelm_v.evaluation.adapters.openai:OpenAIAdapter",
    "hf": "bluelm_v.evaluation.adapters.hf:HFAdapter",
    "torch": "bluelm_v.evaluation.adapters.torch_ref:TorchAdapter",
    "native": "bluelm_v.evaluation.adapters.native:NativeAdapter",
}


class ModelAdapter:
    """Base class. ``name`` names output files; ``describe()`` goes into status.json. ``concurrent``: ``generate``
    may be called from several threads at once (``eval --api-nproc``); an adapter that batches has
    ``generate_batch(messages, dataset=, indices=) -> list[str]`` (``eval --batch-size``)."""

    kind = "base"
    concurrent = False
    takes_dynres = False  # can put one of our tiling schemes in place of the model's own (eval --scheme)

    def __init__(self, target: str, *, max_new_tokens: int = 512, temperature: float = 0.0, batch_size: int = 1,
                 dynres: dict | None = None):
        self.target, self.max_new_tokens, self.temperature = target, max_new_tokens, temperature
        self.batch_size = batch_size
        if dynres and not self.takes_dynres:
            raise AdapterError(f"--scheme/--alpha/--grid replace the image tiling of torch: and native: models; a "
                               f"{self.kind}: model tiles images its own way")
        self.dynres = dict(dynres) if dynres else None

    @classmethod
    def endpoint_for(cls, target: str) -> str | None:
        """The HTTP endpoint a spec's target talks to (None for local models): keys are matched to it."""
        return None

    def check(self, datasets: list[str] | None = None) -> None:
        """Raise ``AdapterError`` if the model cannot answer ``datasets`` at all (called before any sample runs)."""

    @property
    def takes_images(self) -> bool:
        return True

    def why_no_images(self) -> str:
        return "it has no vision encoder"

    def identity(self) -> str | None:
        """A fingerprint of the files that answer (None for a served model): part of the run id, so an edited
        file starts a new run instead of silently reusing old answers."""
        return None

    def weights(self, dataset: str | None = None) -> str:
        """What answers, for the report's provenance column: random weights, a checkpoint's fingerprint, ..."""
        return "unknown"

    @property
    def name(self) -> str:
        return safe_name(f"{self.kind}-{self.target}")

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.kind, "target": self.target, "max_new_tokens": self.max_new_tokens,
               "temperature": self.temperature}
        if self.dynres:
            out["dynres"] = self.dynres
        return out

    def sample_timing(self) -> dict | None:
        """After ``generate``: the last request's measured ``ttft_s`` (request start to first token, images
        included), ``prompt_tokens`` and ``image_tokens``, for adapters that measure them (torch:, native:)."""
        return None

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return "-".join(p for p in keep.split("-") if p)[:80] or "model"


def register_adapter(kind: str, target: str) -> None:
    """Add an adapter kind (``"module:Class"``)."""
    ADAPTERS[kind] = target


def split_spec(spec: str) -> tuple[str, str]:
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise AdapterError(f"model spec {spec!r} must look like KIND:TARGET with KIND one of {', '.join(ADAPTERS)}")
    if kind not in ADAPTERS:
        raise AdapterError(f"unknown model kind {kind!r}; known: {', '.join(ADAPTERS)}")
    return kind, target


def adapter_class(kind: str) -> type:
    module, _, cls = ADAPTERS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def endpoint_of(spec: str) -> str | None:
    """The model spec's HTTP endpoint, without building the adapter (nothing heavy is loaded)."""
    kind, target = split_spec(spec)
    return adapter_class(kind).endpoint_for(target)


def make_adapter(spec: str, **options) -> ModelAdapter:
    kind, target = split_spec(spec)
    return adapter_class(kind)(target, **options)


__all__ = ["ADAPTERS", "ModelAdapter", "adapter_class", "endpoint_of", "make_adapter", "register_adapter", "safe_name",
           "split_spec"]
