"""A small client for OpenAI-compatible ``/chat/completions`` endpoints (standard library only).

Used by the ``openai`` model adapter and by ``OpenAIJudge``; one client serves many threads (``eval --api-nproc``).
Connection errors, resets mid-body, timeouts, HTTP 429 and 5xx are retried with exponential back-off and full
jitter; 429 and 503 wait at least what ``Retry-After`` asks. Anything else, or a reply without
``choices[0].message.content``, raises ``EndpointError`` (a ValueError) naming the endpoint and the problem, with
the server's own message (``{"error": {"message": ...}}``, or the start of an HTML proxy page) where it sent one.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from bluelm_v.evaluation.errors import EndpointError

MAX_REPLY_BYTES = 64 << 20  # a reply larger than this is refused instead of read into memory
MAX_ERROR_BYTES = 64 << 10
MAX_RETRY_AFTER = 300.0  # seconds; a server asking for longer is treated as down
RESERVED_BODY_KEYS = ("model", "messages")

_TRANSIENT = (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError, http.client.HTTPException)


def server_message(raw: bytes) -> str:
    """What the server said about an error: OpenAI's ``{"error": {"message"}}`` (or ``{"error": "..."}``,
    ``{"detail": ...}``), else the first 200 characters of the body with its whitespace folded."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
    return " ".join(text.split())[:200]


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 30.0,
                 extra_body: dict | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL {base_url!r} must start with http:// or https://")
        if timeout <= 0:
            raise EndpointError(f"request timeout must be positive, got {timeout}")
        extra = dict(extra_body or {})
        reserved = [k for k in RESERVED_BODY_KEYS if k in extra]
        if reserved:
            raise EndpointError(f"extra body fields {reserved} are set by bluelm-v itself; remove them")
        self.base = base_url.rstrip("/")
        self.url = self.base + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff, self.max_backoff = max(0, int(retries)), backoff, max_backoff
        self.extra_body = extra

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _pause(self, attempt: int, asked: float | None) -> float:
        """Exponential back-off with full jitter; at least what the server asked for."""
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        wait = random.uniform(0.0, base)
        return max(wait, asked) if asked is not None else wait

    def chat(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int | None = None) -> str:
        body: dict[str, Any] = {**self.extra_body, "model": self.model, "messages": messages,
                                "temperature": float(temperature)}
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens)
        data = json.dumps(body).encode("utf-8")
        last, asked = "no attempt", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._pause(attempt, asked))
            asked = None
            request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    raw = resp.read(MAX_REPLY_BYTES + 1)
                    announced = resp.headers.get("Content-Length")
                    if announced and announced.isdigit() and len(raw) < int(announced) <= MAX_REPLY_BYTES:
                        raise http.client.IncompleteRead(raw, int(announced) - len(raw))  # closed mid-body
            except urllib.error.HTTPError as exc:
                said = server_message(exc.read(MAX_ERROR_BYTES)) if exc.fp is not None else ""
                last = f"HTTP {exc.code} {exc.reason}" + (f": {said}" if said else "")
                if exc.code in (429, 503):
                    asked = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                    if asked is not None and asked > MAX_RETRY_AFTER:
                        raise EndpointError(f"{self.url}: {last} (Retry-After {asked:.0f} s)") from None
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise EndpointError(f"{self.url}: {last}") from None
            except _TRANSIENT as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            if len(raw) > MAX_REPLY_BYTES:
                raise EndpointError(f"{self.url}: reply larger than {MAX_REPLY_BYTES} bytes")
            return self._content(raw)
        raise EndpointError(f"{self.url}: no answer after {self.retries + 1} attempts ({last})")

    def probe(self, timeout: float = 10.0) -> list[str]:
        """Before any sample is spent: ``GET {base}/models`` with the same key must list this client's model.
        Returns the served ids. A refused connection, a timeout, a rejected key (401/403), an answer that is not
        an OpenAI model list, or a list without the model raises ``EndpointError``."""
        request = urllib.request.Request(self.base + "/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=min(timeout, self.timeout)) as resp:
                raw = resp.read(MAX_ERROR_BYTES * 16)
        except urllib.error.HTTPError as exc:
            said = server_message(exc.read(MAX_ERROR_BYTES)) if exc.fp is not None else ""
            if exc.code in (401, 403):
                raise EndpointError(f"{self.base}: the key was rejected (HTTP {exc.code}{': ' + said if said else ''})"
                                    ) from None
            raise EndpointError(f"{self.base}: not an OpenAI-compatible endpoint (GET /models answered HTTP "
                                f"{exc.code}{': ' + said if said else ''})") from None
        except _TRANSIENT as exc:
            raise EndpointError(f"{self.base}: cannot reach the endpoint "
                                f"({type(exc).__name__}: {getattr(exc, 'reason', exc)})") from None
        try:
            listed = json.loads(raw.decode("utf-8"))["data"]
            served = [str(m["id"]) for m in listed]
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError):
            raise EndpointError(f"{self.base}: not an OpenAI-compatible endpoint (GET /models did not answer a "
                                f"model list: {server_message(raw)!r})") from None
        if self.model not in served:
            shown = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
            raise EndpointError(f"{self.base}: model {self.model!r} is not served there; it serves: {shown or 'none'}")
        return served

    def _content(self, raw: bytes) -> str:
        try:
            reply = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise EndpointError(f"{self.url}: reply is not JSON ({type(exc).__name__}; it starts "
                                f"{server_message(raw)[:80]!r})") from None
        if isinstance(reply, dict) and "choices" not in reply and "error" in reply:
            raise EndpointError(f"{self.url}: the server answered an error: {server_message(raw)}")
        try:
            content = reply["choices"][0]["message"]["content"]
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


__all__ = ["ChatClient", "image_part", "retry_after", "server_message"]
