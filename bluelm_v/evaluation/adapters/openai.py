"""``openai:URL#MODEL``: any OpenAI-compatible chat endpoint; images go as base64 data URLs in message order, and a
message without images as plain text content (what text-only servers such as llama.cpp's take).
``URL#MODEL?images=drop`` sends the text alone: a blind baseline of a text-only model on an image benchmark, which
every result of the run says.
The key is the ``api_key`` option (``eval`` passes the one ``--api-key-env`` names, else ``$OPENAI_API_KEY``;
see ``bluelm_v.evaluation.keys``); without one, no Authorization header is sent (a local server)."""
from __future__ import annotations

from typing import Any

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError
from bluelm_v.evaluation.openai_http import ChatClient, image_part

_MIME = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
         "bmp": "image/bmp"}


def chat_content(message: list[dict]) -> list[dict]:
    """VLMEvalKit message parts -> OpenAI content parts (text, image_url)."""
    from bluelm_v.image import probe

    content = []
    for part in message:
        if part["type"] == "text":
            content.append({"type": "text", "text": str(part["value"])})
        elif part["type"] == "image":
            data = part["value"]
            if not isinstance(data, (bytes, bytearray)):
                raise AdapterError("the openai adapter needs encoded image bytes in the message")
            fmt = probe(bytes(data))[0].lower()
            content.append(image_part(bytes(data), _MIME.get(fmt, f"image/{fmt}")))
        else:
            raise AdapterError(f"unknown message part type {part['type']!r}")
    return content


class OpenAIAdapter(ModelAdapter):
    kind = "openai"
    concurrent = True  # urllib opens one connection per request: threads share nothing but the settings

    def __init__(self, target: str, *, timeout: float = 120.0, retries: int = 3, api_key: str | None = None,
                 extra_body: dict | None = None, system_prompt: str | None = None, **options):
        super().__init__(target, **options)
        url, model = self.split_target(target)
        model, _, query = model.partition("?")
        self.drop_images = False
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if (key, value) != ("images", "drop"):
                raise AdapterError(f"openai spec option {item!r} unknown (only images=drop)")
            self.drop_images = True
        self.url, self.model, self.system_prompt = url, model, system_prompt
        try:
            self.client = ChatClient(url, model, api_key=api_key, timeout=timeout, retries=retries,
                                     extra_body=extra_body)
        except ValueError as exc:
            raise AdapterError(str(exc)) from None

    @staticmethod
    def split_target(target: str) -> tuple[str, str]:
        url, sep, model = target.partition("#")
        if not sep or not model:
            raise AdapterError(f"openai model spec needs URL#MODEL, got {target!r}")
        return url, model

    @classmethod
    def endpoint_for(cls, target: str) -> str | None:
        return cls.split_target(target)[0]

    @property
    def takes_images(self) -> bool:
        return True  # a served model's vision is unknown until asked; images=drop is the user's explicit choice

    def check(self, datasets: list[str] | None = None) -> None:
        try:
            self.client.probe()
        except ValueError as exc:
            raise AdapterError(f"model endpoint: {exc}") from None

    def weights(self, dataset: str | None = None) -> str:
        blind = "; images dropped: a blind, text-only baseline" if self.drop_images else ""
        return f"served by {self.url} as {self.model!r} (not inspected){blind}"

    @property
    def name(self) -> str:
        return safe_name(self.model)

    def describe(self) -> dict:
        return {**super().describe(), "url": self.url, "model": self.model, "timeout_s": self.client.timeout,
                "extra_body": self.client.extra_body, "system_prompt": self.system_prompt, "drop_images": self.drop_images}

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        if self.drop_images:
            message = [part for part in message if part["type"] != "image"]
        content = chat_content(message)
        if all(part["type"] == "text" for part in content):
            content = "".join(part["text"] for part in content)
        messages = [{"role": "user", "content": content}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.client.chat(messages, temperature=self.temperature, max_tokens=self.max_new_tokens)
