"""The durable prediction log: one append-only JSON line per finished sample, fsync'd before the next starts.

Each rank writes its own file, so lines never interleave. After ``kill -9`` at any moment the file holds every
sample that finished, plus at most one partial last line, which ``open_log`` cuts off before appending again.
Entries: ``{"index", "status": "ok" | "failed", "prediction", "reason", "kind", "seconds", "rank", "data"}``
(``data``: the content id of the dataset file the sample was computed from); a failed
entry of kind ``"data"`` (bad row) or ``"sample"`` (the adapter refuses this sample for good) is final; kind
``"model"`` (an error that may pass: a timeout, a crashed server) is tried again by the next run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

FINAL_FAILURES = ("data", "sample")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_log(path: Path) -> tuple[list[dict], int]:
    """Complete entries of one log and the byte length of its complete part (a torn last line is ignored)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    entries, good = [], 0
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            break
        line = data[start:end]
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            entry = None
        if isinstance(entry, dict) and "index" in entry and entry.get("status") in ("ok", "failed"):
            entries.append(entry)
            good = end + 1
        else:
            # A damaged line can only be the last one written before a crash; nothing after it is trusted.
            break
        start = end + 1
    return entries, good


class PredictionLog:
    """Append-only, fsync-per-entry JSONL writer for one rank."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        _, good = read_log(path)
        self._f = open(path, "ab")
        if self._f.tell() != good:  # cut a torn tail so the next line starts clean
            self._f.truncate(good)
            self._f.seek(good)
            os.fsync(self._f.fileno())
        if not existed:
            fsync_dir(path.parent)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
        self._f.write(line)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_logs(paths: Iterable[Path], data: str | None = None) -> dict[Any, dict]:
    """Latest entry per index over all ranks' logs; an ``ok`` entry always wins over a failure. With ``data``
    (the dataset file's content id), entries computed on another version of the file are not reused."""
    merged: dict[Any, dict] = {}
    for path in paths:
        entries, _ = read_log(path)
        for e in entries:
            if data is not None and e.get("data") != data:
                continue
            key = e["index"]
            if merged.get(key, {}).get("status") == "ok" and e["status"] != "ok":
                continue
            merged[key] = e
    return merged


def is_done(entry: dict | None) -> bool:
    """Finished for good: predicted, or failed in a way another try cannot fix."""
    return entry is not None and (entry["status"] == "ok" or entry.get("kind") in FINAL_FAILURES)


class RunLock:
    """An exclusive lock on a run folder for one rank (``flock`` on ``.lock.rank{r}``, released when the process
    ends, even by ``kill -9``): a second process on the same run would compute and log every sample twice. The
    holder's pid is written in the file so the error can name it."""

    def __init__(self, path: Path):
        import fcntl

        self.path = path
        self._f = open(path, "a+")
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.seek(0)
            holder = self._f.read().strip() or "unknown"
            self._f.close()
            from bluelm_v.evaluation.errors import EvaluationError

            raise EvaluationError(f"run folder {path.parent} is in use by process {holder} ({path.name}); wait for "
                                  "it to finish, or give another --run-id") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(str(os.getpid()))
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            self._f.close()


__all__ = ["FINAL_FAILURES", "PredictionLog", "RunLock", "fsync_dir", "is_done", "merge_logs", "read_log"]
