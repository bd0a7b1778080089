"""Model packages made on demand: ``bluelm-v run --model file.gguf`` (or an HF folder, or a config name) works
without a separate ``bluelm-v package`` step, as llama.cpp's tools take a GGUF directly.

``cached_package(source)`` returns ``source`` itself when it is a package folder; otherwise the package made from
it, kept under ``$BLUELM_CACHE`` (default ``~/.cache/bluelm-v``) ``/packages/<stem>-<quant>-<key>``, where the key
covers the source's resolved path, size and modification time (every file of a folder), the quantization and the
code that writes packages (``writer_digest``: the installed bluelm_v.export and bluelm_v.models sources), so an
edited checkpoint, or an upgraded bluelm-v whose packages carry new fields, is packaged again. A package is written into a temporary folder and renamed into place whole, so
an interrupted packaging never leaves a half package in the cache.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Union

from bluelm_v._paths import resolve_model_spec


def cache_root() -> Path:
    return Path(os.environ.get("BLUELM_CACHE") or Path.home() / ".cache" / "bluelm-v")


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


WRITER_PACKAGES = ("export", "models")  # subpackages of bluelm_v whose code decides what a package holds


@lru_cache(maxsize=None)
def writer_digest(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """sha256 over the sources of the code that writes packages (``WRITER_PACKAGES`` under ``root``): a package
    made by other code (an older bluelm-v, say, without a field the engine now needs) is not reused."""
    h = hashlib.sha256()
    for sub in WRITER_PACKAGES:
        for f in sorted((root / sub).rglob("*.py")):
            h.update(f"{f.relative_to(root)}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def source_key(source: str, quant: str, vit_quant: str) -> str:
    """What identifies the package a source makes: its files' paths, sizes and mtimes, the quantization, the
    default deployed precision (a package records it, so new defaults make a new package) and the writer's code."""
    from bluelm_v.models.config import DeployConfig

    h = hashlib.sha256(f"{quant}\0{vit_quant}\0{DeployConfig()}\0{writer_digest()}\0".encode())
    path = Path(source)
    if path.exists():
        files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    else:
        h.update(f"config:{source}".encode())  # a shipped config name: seeded random weights
    return h.hexdigest()[:12]


def cached_package(source: Union[str, os.PathLike], quant: str = "q4_0", vit_quant: str = "q8_0",
                   progress: bool = False) -> Path:
    """A package folder for ``source`` (a package, a .gguf file, an HF folder, a config name or the
    ``smollm2-135m-gguf`` alias), made once and reused (see the module doc)."""
    from bluelm_v.export.package import package

    spec = resolve_model_spec(str(source))
    path = Path(spec)
    if is_package(path):
        return path
    stem = path.stem if path.exists() else spec
    out = cache_root() / "packages" / f"{''.join(c if c.isalnum() or c in '-_.' else '-' for c in stem)[:60]}-" \
                                      f"{quant}-{source_key(spec, quant, vit_quant)}"
    if is_package(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        random = not path.exists()
        if progress:
            import sys

            print(f"packaging {spec} ({quant}) into {out} (once; later runs reuse it)", file=sys.stderr)
        package(spec, tmp, quant=quant, vit_quant=vit_quant, random=random, progress=progress)
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_package(out):  # another process won the race with a whole package: use it
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = ["cache_root", "cached_package", "is_package", "source_key", "writer_digest"]
