"""A small client for OpenAI-compatible ``/chat/completions`` endpoints (standard library only).

Used by the ``openai`` model adapter and by ``OpenAIJudge``. Connection errors, timeouts, HTTP 429 and 5xx are
retried with exponential back-off; anything else, or a reply without ``choices[0].message.content``, raises
``EndpointError`` (a ValueError) naming the endpoint and the problem.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from bluelm_v.evaluation.errors import EndpointError

MAX_REPLY_BYTES = 64 << 20  # a reply larger than this is refused instead of read into memory


class ChatClient:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5):
        if not base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL {base_url!r} must start with http:// or https://")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff = max(0, int(retries)), backoff

    def chat(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int | None = None) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": float(temperature)}
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens)
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    raw = resp.read(MAX_REPLY_BYTES + 1)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise EndpointError(f"{self.url}: {last}") from None
            except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            if len(raw) > MAX_REPLY_BYTES:
                raise EndpointError(f"{self.url}: reply larger than {MAX_REPLY_BYTES} bytes")
            return self._content(raw)
        raise EndpointError(f"{self.url}: no answer after {self.retries + 1} attempts ({last})")

    def probe(self, timeout: float = 10.0) -> None:
        """Check, before any sample is spent, that the endpoint answers: ``GET {base}/models`` with the same key.
        A refused connection, a timeout or a rejected key (HTTP 401/403) raises ``EndpointError``; any other
        answer, even 404 from a server without that route, shows the server is there."""
        base = self.url[: -len("/chat/completions")]
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(base + "/models", headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=min(timeout, self.timeout)) as resp:
                resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise EndpointError(f"{base}: the key was rejected (HTTP {exc.code} {exc.reason})") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError) as exc:
            raise EndpointError(f"{base}: cannot reach the endpoint "
                                f"({type(exc).__name__}: {getattr(exc, 'reason', exc)})") from None

    def _content(self, raw: bytes) -> str:
        try:
            reply = json.loads(raw.decode("utf-8"))
            content = reply["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EndpointError(f"{self.url}: reply is not JSON ({exc})") from None
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: reply has no choices[0].message.content") from None
        if content is None:
            return ""
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise EndpointError(f"{self.url}: message content is {type(content).__name__}, not text")
        return content


def image_part(data: bytes, mime: str) -> dict:
    """An ``image_url`` content part holding the image as a base64 data URL."""
    from bluelm_v.image import encode_base64

    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encode_base64(data)}"}}


__all__ = ["ChatClient", "image_part"]
