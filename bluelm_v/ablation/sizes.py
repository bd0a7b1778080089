"""Image-size distributions for the ablations: a seeded built-in mixture, a folder of images (headers only),
a sizes file (CSV or JSON), or the base64 images of a VLMEvalKit benchmark TSV."""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# The built-in mixture: kind -> share of the images.
MIXTURE = {"photo": 0.35, "document": 0.20, "screenshot": 0.20, "receipt": 0.10, "banner": 0.15}
PHONE_SCREENS = [(1080, 2400), (1170, 2532), (1179, 2556), (1290, 2796), (1440, 3200), (720, 1600), (750, 1334),
                 (828, 1792), (1242, 2688), (1080, 2340)]
DESKTOP_SCREENS = [(1920, 1080), (2560, 1440), (1366, 768), (1440, 900), (2880, 1800), (1280, 800)]
PAPERS_MM = [(210, 297), (216, 279), (216, 356)]  # A4, Letter, Legal
DPIS = ([72, 96, 100, 150, 200, 300], [0.15, 0.2, 0.1, 0.25, 0.15, 0.15])
BANNERS = [(728, 90), (468, 60), (970, 250), (1200, 300), (320, 50), (300, 100), (1500, 500)]


@dataclass
class SizeSet:
    """Sizes of a set of images: widths and heights in pixels, and the kind of each when known."""

    widths: np.ndarray  # [n] int64
    heights: np.ndarray  # [n] int64
    kinds: np.ndarray  # [n] str ("" when unknown)
    source: str

    def __post_init__(self):
        self.widths = np.asarray(self.widths, dtype=np.int64)
        self.heights = np.asarray(self.heights, dtype=np.int64)
        self.kinds = np.asarray(self.kinds if len(self.kinds) else [""] * len(self.widths), dtype=str)
        if not (self.widths.shape == self.heights.shape == self.kinds.shape) or self.widths.ndim != 1:
            raise ValueError("widths, heights and kinds must be 1-D arrays of one length")
        if len(self.widths) == 0:
            raise ValueError(f"no image sizes in {self.source}")
        if (self.widths < 1).any() or (self.heights < 1).any():
            raise ValueError(f"image sizes must be positive ({self.source})")

    def __len__(self) -> int:
        return len(self.widths)


def mixture_sizes(n: int = 5000, seed: int = 0, shares: Optional[dict[str, float]] = None) -> SizeSet:
    """``n`` sizes from the built-in mixture of document pages, receipts, screenshots, photos and banners."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    shares = dict(shares or MIXTURE)
    unknown = set(shares) - set(MIXTURE)
    if unknown or any(v < 0 for v in shares.values()) or not sum(shares.values()) > 0:
        raise ValueError(f"shares must be non-negative weights over {', '.join(MIXTURE)}")
    rng = np.random.default_rng(seed)
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=float)
    kinds = rng.choice(names, size=n, p=p / p.sum())
    w = np.empty(n, dtype=np.int64)
    h = np.empty(n, dtype=np.int64)
    for i, kind in enumerate(kinds):
        w[i], h[i] = _draw(kind, rng)
    return SizeSet(w, h, kinds, f"built-in mixture (n={n}, seed={seed})")


def _jitter(rng, x: float, rel: float) -> int:
    return max(1, int(round(x * (1 + rng.uniform(-rel, rel)))))


def _draw(kind: str, rng) -> tuple[int, int]:
    if kind == "photo":
        if rng.random() < 0.5:  # camera originals
            mp = rng.choice([2, 3, 5, 8, 12, 12, 12, 50]) * 1e6
        else:  # resized for the web or a chat app
            mp = math.exp(rng.uniform(math.log(0.1e6), math.log(2.5e6)))
        aspect = rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0], p=[0.5, 0.2, 0.2, 0.1])
        long_side = math.sqrt(mp * aspect)
        a, b = long_side, long_side / aspect
        return (int(a), int(b)) if rng.random() < 0.6 else (int(b), int(a))
    if kind == "document":
        pw, ph = PAPERS_MM[rng.choice(3, p=[0.6, 0.3, 0.1])]
        dpi = rng.choice(DPIS[0], p=DPIS[1])
        w, h = _jitter(rng, pw / 25.4 * dpi, 0.03), _jitter(rng, ph / 25.4 * dpi, 0.03)
        return (h, w) if rng.random() < 0.1 else (w, h)
    if kind == "screenshot":
        if rng.random() < 0.75:
            w, h = PHONE_SCREENS[rng.integers(len(PHONE_SCREENS))]
            if rng.random() < 0.2:  # cropped
                h = int(h * rng.uniform(0.4, 0.95))
            return (h, w) if rng.random() < 0.1 else (w, h)
        return DESKTOP_SCREENS[rng.integers(len(DESKTOP_SCREENS))]
    if kind == "receipt":
        if rng.random() < 0.4:  # scanned thermal paper, 203 dpi
            w = rng.choice([384, 576])
            return int(w), int(w * math.exp(rng.uniform(math.log(1.5), math.log(6.0))))
        w = int(rng.uniform(600, 1500))  # photographed
        return w, int(w * rng.uniform(1.8, 4.0))
    if kind == "banner":
        if rng.random() < 0.5:
            w, h = BANNERS[rng.integers(len(BANNERS))]
            return w, h
        w = int(rng.uniform(300, 1600))
        return w, max(1, int(w / rng.uniform(3.0, 10.0)))
    raise ValueError(f"unknown kind {kind!r}")


def sizes_from_images(folder: Path, progress: bool = False) -> SizeSet:
    """Sizes of the JPEG/PNG/WebP files under ``folder`` (recursively), read from their headers without decoding."""
    from tqdm import tqdm

    from bluelm_v.image import probe

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} files under {folder}")
    w, h = [], []
    for p in tqdm(files, desc="reading image headers", unit="img", disable=not progress):
        try:
            _, iw, ih = probe(p.read_bytes())
        except ValueError as exc:
            raise type(exc)(f"{p}: {exc}") from None
        w.append(iw)
        h.append(ih)
    return SizeSet(np.array(w), np.array(h), np.array([""] * len(w)), f"{len(files)} images under {folder}")


def _column(frame, names: Iterable[str], path: Path) -> str:
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for n in names:
        if n in lower:
            return lower[n]
    raise ValueError(f"{path}: no {' or '.join(names)} column (columns: {', '.join(map(str, frame.columns))})")


def _positive_ints(values, what: str, path: Path) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not float(v).is_integer() \
                or v < 1:
            raise ValueError(f"{path}: row {i}: {what} must be a positive whole number of pixels, got {v!r}")
        out[i] = int(v)
    return out


def sizes_from_file(path: Path) -> SizeSet:
    """Sizes from a CSV/TSV (columns width and height, or w and h; an optional kind column) or a JSON file
    (a list of [w, h] pairs or of {"width", "height"} objects, or an object with such a list under "sizes")."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sizes file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: malformed JSON: {exc}") from None
        if isinstance(data, dict):
            if "sizes" not in data:
                raise ValueError(f"{path}: expected a list of sizes or an object with a 'sizes' list")
            data = data["sizes"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of sizes")
        w, h, k = [], [], []
        for i, item in enumerate(data):
            if isinstance(item, dict):
                if "width" not in item or "height" not in item:
                    raise ValueError(f"{path}: item {i} lacks width or height")
                w.append(item["width"])
                h.append(item["height"])
                k.append(str(item.get("kind", "")))
            elif isinstance(item, list) and len(item) == 2:
                w.append(item[0])
                h.append(item[1])
                k.append("")
            else:
                raise ValueError(f"{path}: item {i} must be [width, height] or {{\"width\", \"height\"}}, got {item!r}")
        return SizeSet(_positive_ints(w, "width", path), _positive_ints(h, "height", path), np.array(k, dtype=str),
                       str(path))
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read as {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    wc, hc = _column(frame, ("width", "w"), path), _column(frame, ("height", "h"), path)
    has_kind = any(str(c).strip().lower() == "kind" for c in frame.columns)
    kinds = frame[_column(frame, ("kind",), path)].astype(str).to_numpy() if has_kind else np.array([""] * len(frame))
    return SizeSet(_positive_ints(frame[wc].tolist(), "width", path), _positive_ints(frame[hc].tolist(), "height", path),
                   kinds, str(path))


def _tsv_images(value: str) -> list[str]:
    """The base64 images of one TSV cell: one image, or a Python/JSON list of them (multi-image questions)."""
    v = value.strip()
    if v.startswith("["):
        try:
            items = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise ValueError("image cell starts with '[' but is not a list of base64 strings") from None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError("image cell is not a list of base64 strings")
        return items
    return [v]


def sizes_from_tsv(path: Path, progress: bool = False) -> SizeSet:
    """Sizes of the images of a VLMEvalKit benchmark TSV: the ``image`` column holds base64 (or a list of them);
    a short digit string instead refers to the row of that ``index`` that holds the image. One size per image
    per question, so shared images count once per question that shows them."""
    import pandas as pd
    from tqdm import tqdm

    from bluelm_v.image import decode_base64, probe

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark TSV not found: {path}")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read as a TSV: {exc}") from None
    if "image" not in frame.columns:
        raise ValueError(f"{path}: no 'image' column (columns: {', '.join(map(str, frame.columns))})")
    index = frame["index"].tolist() if "index" in frame.columns else [str(i) for i in range(len(frame))]
    by_index = dict(zip(index, frame["image"].tolist()))
    cache: dict[str, list[tuple[int, int]]] = {}

    def sizes_of(idx: str, value: str, depth: int = 0) -> list[tuple[int, int]]:
        if idx in cache:
            return cache[idx]
        if len(value) <= 64:  # a reference to the row holding the image
            if not value:
                raise ValueError(f"{path}: row index {idx}: empty image cell")
            if depth > 0 or value not in by_index or len(by_index[value]) <= 64:
                raise ValueError(f"{path}: row index {idx}: image cell {value!r} is neither base64 nor the index "
                                 "of a row holding an image")
            return sizes_of(value, by_index[value], depth + 1)
        out = []
        for b64 in _tsv_images(value):
            try:
                _, w, h = probe(decode_base64(b64))
            except ValueError as exc:
                raise ValueError(f"{path}: row index {idx}: {exc}") from None
            out.append((w, h))
        cache[idx] = out
        return out

    w, h = [], []
    for idx, value in tqdm(zip(index, frame["image"].tolist()), total=len(frame), desc="probing TSV images",
                           unit="row", disable=not progress):
        for iw, ih in sizes_of(idx, value):
            w.append(iw)
            h.append(ih)
    return SizeSet(np.array(w), np.array(h), np.array([""] * len(w)), f"{len(frame)} rows of {path}")


__all__ = ["MIXTURE", "SizeSet", "mixture_sizes", "sizes_from_file", "sizes_from_images", "sizes_from_tsv"]
