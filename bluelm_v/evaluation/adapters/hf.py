"""``hf:PATH``: a transformers image-text-to-text model saved locally (``AutoProcessor`` +
``AutoModelForImageTextToText``), greedy decoding unless a temperature is given.

The message becomes one user turn of the processor's chat template with the images and texts in message order.
Nothing is downloaded: the model is loaded with ``local_files_only=True``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError


def to_pil(value):
    from PIL import Image

    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(bytes(value))).convert("RGB")
    if isinstance(value, (str, Path)):
        return Image.open(value).convert("RGB")
    import numpy as np

    if isinstance(value, np.ndarray):
        return Image.fromarray(value).convert("RGB")
    raise AdapterError(f"cannot turn {type(value).__name__} into an image")


class HFAdapter(ModelAdapter):
    kind = "hf"

    def __init__(self, target: str, *, device: str = "cpu", **options):
        super().__init__(target, **options)
        path = Path(target).expanduser()
        if not path.is_dir():
            raise AdapterError(f"hf model folder not found: {path}")
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise AdapterError(f"the hf adapter needs torch and transformers ({exc})") from None
        self.torch = torch
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise AdapterError(f"cannot load a transformers image-text-to-text model from {path}: {exc}") from None
        self.device, self.path = device, path

    @property
    def name(self) -> str:
        return safe_name(f"hf-{self.path.name}")

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "architecture": type(self.model).__name__}

    def weights(self, dataset: str | None = None) -> str:
        from bluelm_v.evaluation.provenance import fingerprint

        files = [p for p in self.path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")]
        return f"hf folder {self.path.name}; " + fingerprint(files)

    @staticmethod
    def conversation(message: list[dict]) -> list[dict]:
        content = []
        for part in message:
            if part["type"] == "image":
                content.append({"type": "image", "image": to_pil(part["value"])})
            else:
                content.append({"type": "text", "text": str(part["value"])})
        return [{"role": "user", "content": content}]

    def _generate(self, conversations: list[list[dict]]) -> list[str]:
        """One ``generate`` over several conversations, left-padded so every prompt ends where generation starts
        (the attention mask hides the padding); greedy unless a temperature is given."""
        tokenizer = getattr(self.processor, "tokenizer", None)
        if len(conversations) > 1 and tokenizer is not None:
            tokenizer.padding_side = "left"
        inputs = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt",
                                                    padding=len(conversations) > 1).to(self.device)
        sample = self.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": self.max_new_tokens}
        if sample:
            kwargs["temperature"] = self.temperature
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        start = inputs["input_ids"].shape[1]
        return [self.processor.decode(row[start:], skip_special_tokens=True) for row in out]  # [batch, generated]

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        return self._generate([self.conversation(message)])[0]

    def generate_batch(self, messages: list[list[dict]], *, dataset: str, indices: list) -> list[str]:
        return self._generate([self.conversation(m) for m in messages])
