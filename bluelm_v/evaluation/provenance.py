"""Where a result comes from, for the report's per-dataset rows: a fingerprint of the files that answered.

``fingerprint(paths)`` hashes each file's name and size and its content: whole for files up to ``WHOLE_LIMIT``,
else its first and last ``SAMPLE`` bytes (a multi-gigabyte checkpoint is not read end to end for a report line),
and says which it did.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

WHOLE_LIMIT = 256 << 20
SAMPLE = 8 << 20


def fingerprint(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    sampled = False
    files = sorted(Path(p) for p in paths)
    for path in files:
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode("utf-8"))
        with open(path, "rb") as f:
            if size <= WHOLE_LIMIT:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            else:
                sampled = True
                h.update(f.read(SAMPLE))
                f.seek(size - SAMPLE)
                h.update(f.read(SAMPLE))
    how = "names, sizes, first and last 8 MiB of large files" if sampled else "content"
    return f"sha256:{h.hexdigest()[:16]} ({how}, {len(files)} file(s))"


__all__ = ["fingerprint"]
