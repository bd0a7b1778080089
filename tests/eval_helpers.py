"""Test helpers for the evaluation harness: small VLMEvalKit-shaped TSVs and a local OpenAI-compatible server."""
from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bluelm_v.image import encode_base64


def png_base64(seed: int, size: int = 8) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return encode_base64(buf.getvalue())


def mcq_rows(n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({"index": i + 1, "question": f"Which animal is number {i}?", "A": "cat", "B": "dog",
                     "C": "horse", "D": "bird", "answer": "ABCD"[i % 4], "category": ["coarse", "fine"][i % 2],
                     "l2_category": "x", "image": png_base64(i)})
    return rows


def vqa_rows(n: int = 6) -> list[dict]:
    return [{"index": i + 1, "question": f"What is written? ({i})", "answer": str(["stop"] * 10),
             "image": png_base64(100 + i)} for i in range(n)]


def ocrbench_rows() -> list[dict]:
    cats = ["Regular Text Recognition", "Scene Text-centric VQA", "Doc-oriented VQA",
            "Handwritten Mathematical Expression Recognition"]
    return [{"index": i + 1, "question": "What is written in the image?", "answer": str(["stop", "halt"]),
             "category": cats[i % 4], "image": png_base64(200 + i)} for i in range(8)]


def docvqa_rows(n: int = 5) -> list[dict]:
    return [{"index": i + 1, "question": f"What is the total? ({i})", "answer": str(["$1,234.00", "1234"]),
             "image": png_base64(300 + i)} for i in range(n)]


def write_tsv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame.from_records(rows).to_csv(path, sep="\t", index=False)
    return path


def write_replay(path: Path, answers: dict) -> Path:
    """A VLMEvalKit-style predictions TSV (index, prediction)."""
    pd.DataFrame({"index": list(answers), "prediction": list(answers.values())}).to_csv(path, sep="\t", index=False)
    return path


class Fault:
    """What a ``FakeOpenAI`` reply function can return instead of text: an HTTP ``status`` with a raw ``body`` and
    ``headers``, after ``delay`` seconds; ``truncate`` announces the whole body but sends only its first bytes and
    closes the connection (a reset mid-body)."""

    def __init__(self, status: int = 200, body: bytes = b"", headers: dict | None = None, delay: float = 0.0,
                 truncate: bool = False):
        self.status, self.body, self.headers, self.delay, self.truncate = status, body, headers or {}, delay, truncate


class FakeOpenAI:
    """A threaded local ``/v1/chat/completions`` server. ``reply(body)`` returns the message text, or bytes sent as
    the raw body (a malformed reply); ``delay`` seconds per request; ``fail_first`` requests answer HTTP 500;
    ``require_key``: requests without ``Authorization: Bearer <key>`` get 401. ``GET /v1/models`` lists
    ``model_ids``. Requests (bodies), their headers and GET paths are recorded."""

    def __init__(self, reply, delay: float = 0.0, fail_first: int = 0, require_key: str | None = None,
                 model_ids: tuple = ("m", "j")):
        self.reply, self.delay, self.fail_first = reply, delay, fail_first
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.gets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                outer.headers.append(dict(self.headers.items()))
                if require_key is not None and self.headers.get("Authorization") != f"Bearer {require_key}":
                    self._send(401, b'{"error": {"message": "bad key"}}')
                    return False
                return True

            def do_GET(self):
                outer.gets.append(self.path)
                if not self._authorised():
                    return
                if self.path != "/v1/models":
                    self._send(404, b"{}")
                    return
                self._send(200, json.dumps({"object": "list", "data": [{"id": m} for m in model_ids]}).encode())

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                if not self._authorised():
                    return
                outer.requests.append(body)
                if outer.delay:
                    time.sleep(outer.delay)
                if len(outer.requests) <= outer.fail_first or self.path != "/v1/chat/completions":
                    self.send_response(500 if len(outer.requests) <= outer.fail_first else 404)
                    self.end_headers()
                    return
                answer = outer.reply(body)
                if isinstance(answer, Fault):
                    time.sleep(answer.delay)
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body[: len(answer.body) // 2] if answer.truncate else answer.body)
                    if answer.truncate:
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                    return
                if isinstance(answer, bytes):
                    self._send(200, answer)
                    return
                self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def prompt_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")
