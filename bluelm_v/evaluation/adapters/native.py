"""``native:PACKAGE``: the C++ engine (bluelm_v.engine) over a model package folder.

Each message's images are submitted to a fresh session (encoded in the background, in order) and its text parts
joined into the user turn, so the prompt is ``<image>\\n`` per image followed by the text, as the reference model
builds it for VLMEvalKit's usual image-then-question messages. ``PACKAGE?threads=N&chunk=T&kv_cache=int8``
passes engine options.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError

_INT_OPTIONS = ("threads", "chunk", "tile_batch", "context")


class NativeAdapter(ModelAdapter):
    kind = "native"
    takes_dynres = True

    def __init__(self, target: str, **options):
        super().__init__(target, **options)
        from bluelm_v.engine import Engine

        path, _, query = target.partition("?")
        opts: dict[str, Any] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k in _INT_OPTIONS:
                try:
                    opts[k] = int(v)
                except ValueError:
                    raise AdapterError(f"native adapter option {k}={v!r} is not an integer") from None
            elif k == "kv_cache":
                opts[k] = v
            else:
                raise AdapterError(f"unknown native adapter option {k!r}; known: {', '.join((*_INT_OPTIONS, 'kv_cache'))}")
        self.path = path
        try:
            self.engine = Engine(path, dynres=self.dynres, **opts)
        except FileNotFoundError as exc:
            raise AdapterError(str(exc)) from None

    @property
    def name(self) -> str:
        return safe_name(f"native-{self.path.rstrip('/').rsplit('/', 1)[-1]}")

    @property
    def takes_images(self) -> bool:
        return bool(self.engine.multimodal)

    def why_no_images(self) -> str:
        return f"the package {self.path} holds a text-only model"

    def identity(self) -> str | None:
        from pathlib import Path

        from bluelm_v.evaluation.provenance import fingerprint

        folder = Path(self.path)
        return fingerprint([p for p in (folder / "manifest.json", folder / "weights.bin") if p.is_file()])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chunk": self.engine.chunk, "kv_cache": self.engine.kv_cache,
                "tile_batch": self.engine.tile_batch}

    def weights(self, dataset: str | None = None) -> str:
        import json
        from pathlib import Path

        from bluelm_v.evaluation.provenance import fingerprint

        folder = Path(self.path)
        try:
            source = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("source", "?")
            return f"package from {source}; " + fingerprint([folder / "manifest.json", folder / "weights.bin"])
        except (OSError, ValueError, AttributeError) as exc:
            return f"package {folder} (unreadable: {exc})"

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        import time

        self._timing = None
        start = time.perf_counter()
        s = self.engine.session()
        texts = []
        for i, item in enumerate(message):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "image":
                s.submit_image(item["value"])
            elif kind == "text":
                texts.append(item["value"])
            else:
                raise AdapterError(f"{dataset} row {index}: message part {i} is not an image or text part")
        asked = time.perf_counter()
        result = s.generate("".join(texts), max_new_tokens=self.max_new_tokens, temperature=self.temperature)
        t = result.timing
        # The images were submitted (and began encoding) before generate(): the wait until then counts too.
        self._timing = {"ttft_s": round(asked - start + t.ttft_s, 6), "prompt_tokens": int(t.prompt_tokens),
                        "image_tokens": int(t.image_tokens)}
        return result.text

    def sample_timing(self) -> dict | None:
        return getattr(self, "_timing", None)
