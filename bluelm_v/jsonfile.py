"""Reading JSON files that may be hostile (checkpoint config.json, tokenizer_config.json): a regular file (a FIFO
would block the read forever), at most ``max_bytes``, UTF-8, nested at most ``MAX_DEPTH`` deep (checked by a scan
before ``json.loads`` recurses: 100,000 nested brackets are a RecursionError otherwise). Errors are
``FormatError`` / ``LimitError`` naming the file, as the C++ package reader's (csrc/model/guard.h)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Union

from bluelm_v import FormatError, LimitError

MAX_DEPTH = 64
MAX_BYTES = 64 << 20


def check_depth(text: str, where: str, max_depth: int = MAX_DEPTH) -> None:
    """LimitError when brackets outside strings nest deeper than ``max_depth``."""
    depth, in_string, escaped = 0, False, False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                raise LimitError(f"{where}: JSON nested deeper than {max_depth} levels (at character {i})")
        elif c in "]}" and depth:
            depth -= 1


def read_json(path: Union[str, os.PathLike], max_bytes: int = MAX_BYTES) -> Any:
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise LimitError(f"{path}: {st.st_size} bytes exceeds the limit of {max_bytes}")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: malformed JSON (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    check_depth(text, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: malformed JSON ({exc})") from None


__all__ = ["MAX_DEPTH", "check_depth", "read_json"]
