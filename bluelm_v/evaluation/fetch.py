"""Download a benchmark TSV from VLMEvalKit's official location into the LMUData folder, with progress and MD5.

The file is written to ``<root>/<NAME>.tsv.part`` and renamed into place only after its MD5 matches the sum
VLMEvalKit checks (a mismatch deletes the partial file and raises ``DataError``). Tests never download: they
give a ``file://`` or localhost URL.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from bluelm_v.evaluation.benchmarks import get_benchmark
from bluelm_v.evaluation.data import lmu_root, md5_of
from bluelm_v.evaluation.errors import DataError

CHUNK = 1 << 20


def fetch(name: str, *, root: str | os.PathLike | None = None, url: str | None = None, md5: str | None = None,
          force: bool = False, progress: bool = False, timeout: float = 60.0) -> Path:
    bench = get_benchmark(name)
    url = url or bench.url
    if not url:
        raise DataError(f"{bench.name} has no download location; give --url")
    expected = md5 if md5 is not None else bench.md5
    target = lmu_root(root) / f"{bench.name}.tsv"
    if target.exists() and not force:
        if expected is None or md5_of(target) == expected:
            return target
        raise DataError(f"{target} exists with a wrong MD5; pass --force to download it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = resp.headers.get("Content-Length")
            bar = _bar(int(total) if total and total.isdigit() else None, bench.name, progress)
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
            bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from None
    got = digest.hexdigest()
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: MD5 {got} does not match the expected {expected}; nothing was kept")
    shutil.move(part, target)
    return target


def _bar(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled)


__all__ = ["fetch"]
