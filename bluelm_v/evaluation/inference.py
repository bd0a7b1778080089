"""One rank's share of a dataset, run durably: samples one at a time, in a bounded window of requests in flight
(``--api-nproc``, for adapters that say they may be called concurrently), or in batches (``--batch-size``, for
adapters with ``generate_batch``).

Every result is appended to the durable log by the calling thread as it finishes (in completion order, one line
per sample, never twice), so ``kill -9`` loses only the requests in flight, which the next run computes. A sample's
message (and so its decoded image) is built only when it is submitted: at most ``nproc`` (or one batch of) images
are alive at once, whatever the dataset's size. ``--max-model-errors`` counts model errors in a row in completion
order and stops submitting when reached; what is in flight is still logged.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable

from bluelm_v.evaluation.errors import DataError, EvaluationError, SampleError


def message_for_record(message: list[dict]) -> list[dict]:
    """A message with image bytes replaced by short descriptions (for status.json)."""
    out = []
    for part in message:
        value = part["value"]
        if isinstance(value, (bytes, bytearray)):
            value = f"<image: {len(value)} bytes, sha1 {hashlib.sha1(value).hexdigest()[:12]}>"
        out.append({"type": part["type"], "value": value})
    return out


def clean_text(text: str) -> tuple[str, bool]:
    """A prediction as text that can be written anywhere (log, TSV, xlsx): lone surrogates, which no UTF-8 file
    can hold, become U+FFFD. Returns (text, whether anything was replaced)."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True


class RateLimiter:
    """At most ``rpm`` request starts per minute, spaced evenly, shared by every thread."""

    def __init__(self, rpm: float | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


class SampleWork:
    """Turns dataset rows into log entries: builds the message, asks the adapter, classifies what went wrong."""

    def __init__(self, adapter, builder, ds, rank: int, limiter: RateLimiter, data_id: str):
        self.adapter, self.builder, self.ds, self.rank = adapter, builder, ds, rank
        self.limiter, self.data_id = limiter, data_id
        self.example: list[dict] | None = None
        self._example_lock = threading.Lock()

    def entry(self, row: dict, **fields) -> dict:
        return {"index": row["index"], "rank": self.rank, "data": self.data_id, **fields}

    def build(self, row: dict) -> list[dict]:
        from bluelm_v.evaluation.data import Dataset

        message = self.builder.build(Dataset.fields(row), self.ds.image_bytes(row))
        with self._example_lock:
            if self.example is None:
                self.example = message_for_record(message)
        return message

    def ok(self, row: dict, prediction: Any, start: float, alone: bool = False) -> dict:
        text, cleaned = clean_text(str(prediction))
        entry = self.entry(row, status="ok", prediction=text, seconds=round(time.perf_counter() - start, 6))
        timing = getattr(self.adapter, "sample_timing", lambda: None)() if alone else None
        if timing:
            entry["timing"] = timing  # measured TTFT and token counts (ablate alpha --measure reads them)
        if cleaned:
            entry["note"] = "lone surrogates in the model's output replaced by U+FFFD"
        return entry

    def failed(self, row: dict, kind: str, exc: BaseException, start: float | None) -> dict:
        reason = str(exc) if kind != "model" else f"{type(exc).__name__}: {exc}"
        return self.entry(row, status="failed", kind=kind, reason=clean_text(reason)[0], prediction=None,
                          seconds=round(time.perf_counter() - start, 6) if start else 0.0)

    def one(self, row: dict) -> dict:
        """One sample, start to end; never raises (but for KeyboardInterrupt and the like)."""
        try:
            message = self.build(row)
        except (DataError, ValueError) as exc:
            return self.failed(row, "data", exc, None)
        self.limiter.wait()
        start = time.perf_counter()
        try:
            return self.ok(row, self.adapter.generate(message, dataset=self.ds.bench.name, index=row["index"]),
                           start, alone=not getattr(self.adapter, "concurrent", False))
        except SampleError as exc:
            return self.failed(row, "sample", exc, start)
        except Exception as exc:  # noqa: BLE001 - any model error is recorded, then retried next run
            return self.failed(row, "model", exc, start)

    def batch(self, rows: list[dict]) -> list[dict]:
        """Several samples through ``adapter.generate_batch``; rows whose message cannot be built fail alone."""
        out, ready, messages = {}, [], []
        for row in rows:
            try:
                messages.append(self.build(row))
                ready.append(row)
            except (DataError, ValueError) as exc:
                out[id(row)] = self.failed(row, "data", exc, None)
        if ready:
            self.limiter.wait()
            start = time.perf_counter()
            try:
                answers = self.adapter.generate_batch(messages, dataset=self.ds.bench.name,
                                                      indices=[r["index"] for r in ready])
                if len(answers) != len(ready):
                    raise EvaluationError(f"generate_batch returned {len(answers)} answers for {len(ready)} messages")
                for row, answer in zip(ready, answers):
                    out[id(row)] = self.ok(row, answer, start)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: each sample is retried next run
                for row in ready:
                    out[id(row)] = self.failed(row, "model", exc, start)
        return [out[id(row)] for row in rows]


class ErrorStreak:
    """Model errors in a row, in completion order; reset by any answer."""

    def __init__(self, limit: int, dataset: str):
        self.limit, self.dataset, self.count, self.last = limit, dataset, 0, ""

    def see(self, entry: dict) -> bool:
        """True when the streak has reached the limit."""
        if entry["status"] == "ok":
            self.count = 0
        elif entry.get("kind") == "model":
            self.count += 1
            self.last = entry.get("reason", "")
        return self.count >= self.limit

    def error(self) -> EvaluationError:
        return EvaluationError(f"{self.dataset}: the model failed {self.count} samples in a row (last: {self.last}); "
                               "finished samples are kept, run the same command again to resume")


def run_samples(todo: list[dict], work: SampleWork, append: Callable[[dict], None], *, nproc: int = 1,
                batch: int = 1, max_model_errors: int = 5) -> int:
    """Run ``todo``; ``append(entry)`` is called from this thread for every finished sample. Returns how many
    answered. Raises ``EvaluationError`` when ``max_model_errors`` model errors come in a row."""
    streak = ErrorStreak(max_model_errors, work.ds.bench.name)
    answered = 0

    def record(entry: dict) -> bool:
        nonlocal answered
        append(entry)
        answered += entry["status"] == "ok"
        return streak.see(entry)

    if batch > 1:
        for start in range(0, len(todo), batch):
            stop = False
            for entry in work.batch(todo[start:start + batch]):
                stop = record(entry) or stop
            if stop:
                raise streak.error()
        return answered
    if nproc <= 1:
        for row in todo:
            if record(work.one(row)):
                raise streak.error()
        return answered
    rows: Iterable[dict] = iter(todo)
    stop = False
    with ThreadPoolExecutor(max_workers=nproc, thread_name_prefix="eval") as pool:
        running: set[Future] = set()
        while True:
            while not stop and len(running) < nproc:
                row = next(rows, None)
                if row is None:
                    break
                running.add(pool.submit(work.one, row))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stop = record(future.result()) or stop
    if stop:
        raise streak.error()
    return answered


__all__ = ["ErrorStreak", "RateLimiter", "SampleWork", "clean_text", "message_for_record", "run_samples"]
