"""``replay:PATH``: answers from an existing predictions file, keyed by ``index``.

Reads VLMEvalKit's prediction files (``<model>_<dataset>.xlsx`` via openpyxl, ``.tsv``, ``.csv``, ``.json``,
``.jsonl``) and our own (``.tsv``/``.jsonl``). ``PATH`` may be a folder: the file for dataset D is the one whose
stem ends with ``_D``. An index the file does not hold is a failed sample (``SampleError``), recorded and counted.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bluelm_v.evaluation.adapters import ModelAdapter, safe_name
from bluelm_v.evaluation.errors import AdapterError, SampleError
from bluelm_v.evaluation.roundtrip import NA_STRINGS, is_missing

EXTENSIONS = (".xlsx", ".tsv", ".csv", ".jsonl", ".json")


def read_predictions(path: Path) -> dict[str, Any]:
    """{str(index): prediction} of one predictions file; anything unreadable is an ``AdapterError`` naming it."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise AdapterError(f"replay file {path} is not a regular file")
    try:
        if suffix == ".xlsx":
            try:
                frame = pd.read_excel(path, engine="openpyxl")
            except ImportError:
                raise AdapterError("reading .xlsx needs openpyxl (pip install bluelm-v[eval])") from None
        elif suffix in (".tsv", ".csv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False,
                                na_values=sorted(NA_STRINGS), dtype=object)
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            frame = pd.DataFrame.from_records(_records(rows, path))
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                data = [{"index": k, "prediction": v} for k, v in data.items()]
            frame = pd.DataFrame.from_records(_records(data, path))
        else:
            raise AdapterError(f"replay file {path} has unknown type {suffix!r}; use one of {', '.join(EXTENSIONS)}")
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parsers' own errors (zlib.error, XML ParseError, ...) vary by format
        raise AdapterError(f"replay file {path} is unreadable: {type(exc).__name__}: {str(exc)[:200]}") from None
    for col in ("index", "prediction"):
        if col not in frame.columns:
            raise AdapterError(f"replay file {path} has no {col!r} column (columns: {', '.join(map(str, frame.columns))})")
    out = {}
    for idx, pred in zip(frame["index"], frame["prediction"]):
        if is_missing(idx):
            raise AdapterError(f"replay file {path} has a row with an empty 'index'")
        key = str(int(idx)) if isinstance(idx, float) and idx.is_integer() else str(idx)
        out[key] = None if is_missing(pred) else pred
    return out


def _records(data: Any, path: Path) -> list[dict]:
    """A JSON predictions file must be a list of objects (or one object of index -> prediction)."""
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        kind = type(data).__name__ if not isinstance(data, list) else "a list with non-object items"
        raise AdapterError(f"replay file {path} holds {kind}; expected a list of {{index, prediction}} objects "
                           "or one object of index -> prediction")
    return data


class ReplayAdapter(ModelAdapter):
    kind = "replay"

    def __init__(self, target: str, **options):
        path_text, _, query = target.partition("?")
        super().__init__(path_text, **options)
        self.delay = 0.0
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if key != "delay":
                raise AdapterError(f"replay spec option {key!r} unknown (only delay=SECONDS)")
            try:
                self.delay = float(value)
            except ValueError:
                raise AdapterError(f"replay delay {value!r} is not a number") from None
        self.path = Path(path_text).expanduser()
        if not self.path.exists():
            raise AdapterError(f"replay file or folder not found: {self.path}")
        self._cache: dict[str, dict[str, Any]] = {}

    @property
    def name(self) -> str:
        return safe_name(f"replay-{self.path.stem if self.path.is_file() else self.path.name}")

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "delay": self.delay}

    def check(self, datasets: list[str] | None = None) -> None:
        """Read every dataset's predictions file now: a wrong file is an input error before any sample."""
        for dataset in datasets or []:
            if dataset not in self._cache:
                self._cache[dataset] = read_predictions(self._file_for(dataset))

    def identity(self) -> str | None:
        from bluelm_v.evaluation.provenance import fingerprint

        files = [self.path] if self.path.is_file() else sorted(
            p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        return fingerprint(files)

    def weights(self, dataset: str | None = None) -> str:
        from bluelm_v.evaluation.provenance import fingerprint

        try:
            path = self._file_for(dataset) if dataset else self.path
            return f"predictions {path.name}, " + fingerprint([path] if path.is_file() else [])
        except (AdapterError, OSError) as exc:
            return f"predictions file unreadable ({exc})"

    def _file_for(self, dataset: str) -> Path:
        if self.path.is_file():
            return self.path
        found = sorted(p for p in self.path.iterdir()
                       if p.suffix.lower() in EXTENSIONS and p.stem.endswith(f"_{dataset}"))
        if not found:
            raise AdapterError(f"no predictions file for {dataset} in {self.path} (expected *_{dataset}.tsv, .xlsx, ...)")
        return found[0]

    def generate(self, message: list[dict], *, dataset: str, index: Any) -> str:
        if dataset not in self._cache:
            self._cache[dataset] = read_predictions(self._file_for(dataset))
        table = self._cache[dataset]
        if self.delay:
            time.sleep(self.delay)
        key = str(index)
        if key not in table:
            raise SampleError(f"replay file has no prediction for index {index!r}")
        pred = table[key]
        return "" if pred is None else (pred if isinstance(pred, str) else str(pred))
