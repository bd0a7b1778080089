"""Benchmark TSVs in VLMEvalKit's LMUData layout: finding, checking, loading, and per-row images.

Where a dataset file is looked for: an explicit path (``NAME=PATH`` on the command line), else
``<root>/<NAME>.tsv`` where root is ``--data-root``, ``$LMUData`` (if it exists) or ``~/LMUData``. Files found
under the official name are MD5-checked against VLMEvalKit's sums; an explicit path is not (its MD5 is recorded).

Loading follows VLMEvalKit's ``ImageBaseDataset``: pandas type inference with pandas 1.5.3's NA strings, rows
without an image dropped, ``index`` as str then int if all are integers, an ``image`` cell of at most 64
characters naming another row whose image it shares, list literals for multi-image rows (``image`` and
``image_path``). Images are decoded per row when the row is run, so one bad row (bad base64, a missing file, a
truncated image) fails alone with its reason.
"""
from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bluelm_v.evaluation.benchmarks import Benchmark, get_benchmark
from bluelm_v.evaluation.errors import DataError
from bluelm_v.evaluation.roundtrip import NA_STRINGS, is_missing
from bluelm_v.evaluation.scorers import get_scorer

IMAGE_REF_MAX = 64  # VLMEvalKit: an image cell this short names another row's index


def lmu_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("LMUData")
    if env and Path(env).exists():
        return Path(env)
    return Path.home() / "LMUData"


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def parse_data_arg(item: str) -> tuple[str, Path | None]:
    """``NAME`` or ``NAME=PATH``."""
    name, sep, path = item.partition("=")
    name = name.strip()
    if not name:
        raise DataError(f"empty dataset name in {item!r}")
    return name, (Path(path).expanduser() if sep else None)


def locate(bench: Benchmark, path: Path | None, root: Path) -> tuple[Path, bool]:
    """(file, is_official_location)."""
    if path is not None:
        if not path.is_file():
            raise DataError(f"{bench.name}: dataset file not found: {path}")
        return path, False
    candidates = [root / f"{bench.name}.tsv"]
    if bench.url:
        candidates.append(root / bench.url.rsplit("/", 1)[-1])  # VLMEvalKit's legacy file name
    for c in candidates:
        if c.is_file():
            return c, True
    raise DataError(f"{bench.name}: {candidates[0]} not found (LMUData root {root}); download it with "
                    f"`bluelm-v data fetch {bench.name}` or give NAME=PATH")


def read_tsv(path: Path) -> pd.DataFrame:
    """A VLMEvalKit TSV with its type inference and pandas 1.5.3's NA strings; object columns, NaN = empty."""
    try:
        frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=sorted(NA_STRINGS), low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable TSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return frame.astype(object)


def _list_cell(value: Any) -> list[str]:
    """VLMEvalKit's ``toliststr``: '[...]' -> the list's items as str; a plain string -> [it]."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value)
    if len(text) > 1 and text[0] == "[" and text[-1] == "]":
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(f"image cell looks like a list but is not a list literal: {text[:60]!r}") from None
        if not isinstance(items, (list, tuple)):
            raise DataError(f"image cell {text[:60]!r} is not a list")
        return [str(v) for v in items]
    return [text]


@dataclass
class Dataset:
    bench: Benchmark
    path: Path
    frame: pd.DataFrame  # dataset fields; 'image' (str or list of str) / 'image_path' kept for image lookup
    md5: str
    md5_ok: bool | None  # None: no official checksum applies (explicit path or unknown)
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def circular(self) -> bool:
        return get_scorer(self.bench.scorer).name == "mmbench_circular"

    def limit_positions(self, limit: int | None) -> list[int]:
        """Row positions that ``--limit`` keeps: the first ``limit`` rows, or for a circular benchmark (MMBench)
        the first ``limit`` questions with every one of their rotations, wherever they sit in the file, so the
        circular check is never dropped by cutting a group."""
        n = len(self.frame)
        if limit is None or limit >= n and not self.circular:
            return list(range(n))
        if not self.circular:
            return list(range(limit))
        groups = self.group_keys()
        chosen = set(list(dict.fromkeys(groups))[:limit])
        return [i for i, g in enumerate(groups) if g in chosen]

    def group_keys(self) -> list:
        """Each row's circular group: its ``g_index`` column, else index mod 1e6 (VLMEvalKit's rotation stride)."""
        from bluelm_v.evaluation.scorers.circular import ROTATION_STRIDE

        if "g_index" in self.frame.columns:
            return [str(v) for v in self.frame["g_index"]]
        return [i % ROTATION_STRIDE if isinstance(i, int) else i for i in self.frame["index"]]

    def limit_note(self, limit: int | None) -> str | None:
        if limit is None:
            return None
        kept = len(self.limit_positions(limit))
        if self.circular:
            groups = len(set(self.group_keys()))
            return (f"--limit {limit}: the first {min(limit, groups)} of {groups} circular question groups, whole "
                    f"({kept} of {len(self.frame)} rows, every rotation of each kept question)")
        return f"--limit {limit}: the first {kept} of {len(self.frame)} rows"

    def rows(self, limit: int | None = None) -> list[dict]:
        frame = self.frame if limit is None else self.frame.iloc[self.limit_positions(limit)]
        return frame.to_dict("records")

    @staticmethod
    def fields(row: dict) -> dict:
        """The row without its image cells (what the prediction file keeps)."""
        return {k: v for k, v in row.items() if k not in ("image", "_image_ref")}

    def image_bytes(self, row: dict) -> list[bytes]:
        """The row's images as encoded bytes, checked to be whole images (raises DataError / FormatError)."""
        from bluelm_v.image import decode_base64, probe

        out = []
        if "image" in row and not is_missing(row["image"]):
            for i, text in enumerate(_list_cell(row["image"])):
                try:
                    data = decode_base64(text)
                except ValueError as exc:
                    raise DataError(f"image {i}: bad base64 ({exc})") from None
                out.append(data)
        elif "image_path" in row and not is_missing(row["image_path"]):
            folder = self.path.parent.resolve()
            for p in _list_cell(row["image_path"]):
                if Path(p).is_absolute():
                    raise DataError(f"image_path {p!r} is absolute; image paths are relative to the data folder "
                                    f"{folder}")
                tried = [folder / "images" / self.bench.name / p, folder / p]
                path = next((t for t in tried if t.is_file()), tried[0])
                # A cell cannot reach outside the data folder, by '..' or through a link.
                if not path.resolve().is_relative_to(folder):
                    raise DataError(f"image_path {p!r} leads outside the data folder {folder}")
                if not path.is_file():
                    raise DataError(f"image file not found: {p}")
                out.append(path.read_bytes())
        else:
            raise DataError("row has no image")
        for i, data in enumerate(out):
            try:
                probe(data)
            except ValueError as exc:
                raise DataError(f"image {i}: not a usable image ({exc})") from None
        return out


def resolve_image_refs(frame: pd.DataFrame) -> pd.DataFrame:
    """Short image cells name the row whose image they reuse (VLMEvalKit saves space this way)."""
    images = dict(zip(frame["index"].astype(str), frame["image"]))
    out = []
    for value in frame["image"]:
        if isinstance(value, str) and 0 < len(value) <= IMAGE_REF_MAX:
            target = images.get(value)
            # A broken reference fails its row at run time (as bad base64) instead of the whole dataset.
            value = target if isinstance(target, str) and len(target) > IMAGE_REF_MAX else value
        out.append(value)
    frame = frame.copy()
    frame["image"] = out
    return frame


def normalise_indices(values: list) -> list:
    text = [str(v) for v in values]
    if all(t.lstrip("+-").isdigit() for t in text):
        return [int(t) for t in text]
    return text


@dataclass(frozen=True)
class Resolved:
    """A dataset file found, MD5-checked and its header checked, not yet loaded."""

    bench: Benchmark
    path: Path
    md5: str
    md5_ok: bool | None
    has_images: bool = True


def check_columns(bench: Benchmark, file: Path, columns) -> None:
    required = {"index", "question"} | {c for c in get_scorer(bench.scorer).required if c != "prediction"}
    if bench.family == "MMBench" or not bench.has_answers:
        required.discard("answer")
    missing = sorted(required - set(columns))
    if missing:
        raise DataError(f"{bench.name}: {file} lacks column(s) {', '.join(missing)}")
    if "image" not in columns and "image_path" not in columns:
        raise DataError(f"{bench.name}: {file} has neither an 'image' nor an 'image_path' column")


def resolve_dataset(name: str, path: Path | None = None, *, root: str | os.PathLike | None = None,
                    check_md5: bool = True) -> Resolved:
    """Find the file, check its MD5 and its header's columns: everything ``eval`` checks before the first sample."""
    bench = get_benchmark(name)
    file, official = locate(bench, path, lmu_root(root))
    digest = md5_of(file)
    md5_ok = (digest == bench.md5) if (official and bench.md5) else None
    if md5_ok is False and check_md5:
        raise DataError(f"{bench.name}: {file} has MD5 {digest}, expected {bench.md5} (re-download it with "
                        f"`bluelm-v data fetch {bench.name}`, or pass --no-md5 to use it anyway)")
    try:
        header = pd.read_csv(file, sep="\t", nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{file}: not a readable TSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    check_columns(bench, file, header.columns)
    return Resolved(bench, file, digest, md5_ok, "image" in header.columns or "image_path" in header.columns)


def load_dataset(name: str, path: Path | None = None, *, root: str | os.PathLike | None = None,
                 check_md5: bool = True, resolved: Resolved | None = None) -> Dataset:
    if resolved is None:
        resolved = resolve_dataset(name, path, root=root, check_md5=check_md5)
    bench, file, digest, md5_ok = resolved.bench, resolved.path, resolved.md5, resolved.md5_ok
    frame = read_tsv(file)
    check_columns(bench, file, frame.columns)
    notes, dropped = [], 0
    if "image" in frame.columns:
        keep = pd.Series([not is_missing(v) for v in frame["image"]], index=frame.index, dtype=bool)
        dropped = len(frame) - int(keep.sum())
        frame = frame.loc[keep].reset_index(drop=True)  # a boolean mask (an empty list would select columns)
        if dropped:
            notes.append(f"{dropped} row(s) without an image dropped (VLMEvalKit drops them too)")
        frame["image"] = [str(v) for v in frame["image"]]
    bad_index = [i for i, v in enumerate(frame["index"]) if is_missing(v)]
    if bad_index:
        raise DataError(f"{bench.name}: {file} row(s) {bad_index[:5]} have an empty index")
    frame["index"] = normalise_indices(list(frame["index"]))
    if frame["index"].duplicated().any():
        dup = frame["index"][frame["index"].duplicated()].iloc[0]
        raise DataError(f"{bench.name}: {file} repeats index {dup!r}")
    if "image" in frame.columns:
        frame = resolve_image_refs(frame)
    return Dataset(bench, file, frame, digest, md5_ok, dropped, notes)


__all__ = ["Dataset", "Resolved", "check_columns", "load_dataset", "lmu_root", "locate", "md5_of", "parse_data_arg",
           "read_tsv", "resolve_dataset"]
