"""Dynamic image resolution: BlueLM-V-3B's relaxed aspect-ratio matching beside LLaVA-NeXT and InternVL.

``plan(width, height, scheme="bluelm", **params)`` chooses the grid of 384x384 tiles for one image size;
``plan_batch`` does the same for arrays of sizes (millions per second, for ablations). The rules are
implemented in C++ (csrc/dynres) exactly as docs/dynamic-resolution.md states them; ``plan(500, 102)`` is the
paper's method with its defaults (4x4 grid in descending order, alpha = 0.1, clause (2) with "<" as printed).

Parameters (all optional; each scheme has its own defaults):
    candidates  list of (m, n) grids in enumeration order (m tiles across, n down)
    alpha       relaxation of Algorithm 1 (bluelm)
    clause2     "<" as printed in the paper, or "<=" (with which alpha = 0 equals LLaVA-NeXT)
    min_num, max_num   InternVL's tile-count bounds, used when candidates is not given
    thumbnail   "always" (LLaVA-NeXT), "if_multi" (InternVL, BlueLM), "never"
    layout      "fit_pad" (keep aspect, centre, black padding) or "stretch" (InternVL)
    tile        tile side in pixels (384); vit_patch (14) gives floor(tile/14)^2 = 729 tokens per tile
    max_pixels  sizes with more pixels are refused (LimitError)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from bluelm_v import _core

SCHEMES = ("bluelm", "llava_next", "internvl")
PARAM_NAMES = (
    "candidates", "alpha", "clause2", "min_num", "max_num", "thumbnail", "layout", "tile", "vit_patch",
    "max_pixels",
)


@dataclass(frozen=True)
class Plan:
    """How one image is cut. Fields match the records of tests/data/dynres-vectors.json."""

    width: int
    height: int
    scheme: str
    grid: tuple[int, int]  # (m, n): m tiles across the width, n down the height
    canvas: tuple[int, int]  # (W, H) = (tile*m, tile*n)
    content: tuple[int, int]  # (w, h) the image is resized to inside the canvas
    offset: tuple[int, int]  # where the content sits on the canvas
    local_patches: int  # m*n
    patches: int  # local tiles plus the thumbnail where the policy adds one
    tokens_vit: int  # patches * 729
    tokens_ds: int  # patches * 196 after the 2x2 down-sampler
    fallback: bool  # Algorithm 1 returned nothing (every R_e = 0); the smallest canvas was used
    thumbnail_first: bool  # LLaVA-NeXT places its base image before the tiles

    @property
    def upscale(self) -> float:
        """Linear scale of the content against the original (> 1: the image was enlarged)."""
        return math.sqrt(self.content[0] * self.content[1] / (self.width * self.height))

    @property
    def wasted_area(self) -> float:
        """Fraction of the canvas that is padding, not image."""
        return 1.0 - self.content[0] * self.content[1] / (self.canvas[0] * self.canvas[1])

    @property
    def area_ratio(self) -> float:
        """Canvas area over original image area (the paper's "4x" and "25x")."""
        return self.canvas[0] * self.canvas[1] / (self.width * self.height)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(upscale=self.upscale, wasted_area=self.wasted_area, area_ratio=self.area_ratio)
        return d


def make_params(scheme: str = "bluelm", **params) -> "_core.DynresParams":
    """Native parameter object for a scheme, defaults overridden by ``params`` (validated)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise TypeError(f"unknown dynamic-resolution parameter(s) {', '.join(unknown)}; known: {', '.join(PARAM_NAMES)}")
    p = _core.DynresParams(scheme)
    for name, value in params.items():
        if value is None:
            continue
        if name == "candidates":
            value = _as_candidates(value)
        elif name == "alpha":
            value = float(value)
        try:
            setattr(p, name, value)
        except TypeError as exc:
            raise TypeError(f"dynamic-resolution parameter {name}={value!r}: {exc}") from None
    p.validate()
    return p


def _as_candidates(value: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    out = []
    for i, c in enumerate(value):
        if len(c) != 2:
            raise ValueError(f"candidate {i} must be a pair (m, n), got {c!r}")
        m, n = c
        if int(m) != m or int(n) != n:
            raise ValueError(f"candidate {i} must hold integers, got {c!r}")
        out.append((int(m), int(n)))
    if not out:
        raise ValueError("candidates is empty")
    return out


def _check_size(width, height) -> tuple[int, int]:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            if isinstance(v, float) and v.is_integer():
                continue
            raise TypeError(f"{name} must be an integer number of pixels, got {v!r}")
    return int(width), int(height)


def plan(width: int, height: int, scheme: str = "bluelm", **params) -> Plan:
    """The tiling plan for an image of ``width`` x ``height`` pixels under ``scheme``."""
    width, height = _check_size(width, height)
    p = make_params(scheme, **params)
    r = _core.plan(width, height, p)
    return Plan(
        width=width, height=height, scheme=scheme, grid=tuple(r.grid), canvas=tuple(r.canvas),
        content=tuple(r.content), offset=tuple(r.offset), local_patches=r.local_patches, patches=r.patches,
        tokens_vit=r.tokens_vit, tokens_ds=r.tokens_ds, fallback=r.fallback, thumbnail_first=r.thumbnail_first,
    )


def plan_batch(widths, heights, scheme: str = "bluelm", threads: int = 0, **params) -> dict[str, np.ndarray]:
    """Plans for arrays of sizes: a dict of int64 arrays (grid_m, grid_n, canvas_w, canvas_h, content_w,
    content_h, local_patches, patches, tokens_vit, tokens_ds) and a bool array ``fallback``."""
    w = np.asarray(widths)
    h = np.asarray(heights)
    if w.shape != h.shape or w.ndim != 1:
        raise ValueError(f"widths and heights must be 1-D arrays of one length, got shapes {w.shape} and {h.shape}")
    for name, a in (("widths", w), ("heights", h)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.floor(a))):
                raise TypeError(f"{name} must hold integer pixel counts")
    p = make_params(scheme, **params)
    return _core.plan_batch(w.astype(np.int64, copy=False), h.astype(np.int64, copy=False), p, threads)


def default_candidates(scheme: str = "bluelm", **params) -> list[tuple[int, int]]:
    """The candidate grids a scheme enumerates, in order, with these parameters."""
    return [tuple(c) for c in make_params(scheme, **params).candidates]


def square_grid(k: int, descending: bool = False) -> list[tuple[int, int]]:
    """(1,1)..(k,k), m outer and n inner, ascending (LLaVA-OneVision) or its reverse (Algorithm 1)."""
    if k < 1:
        raise ValueError(f"grid side {k} must be >= 1")
    grid = [(m, n) for m in range(1, k + 1) for n in range(1, k + 1)]
    return grid[::-1] if descending else grid


def grid_params(scheme: str, k: int) -> dict:
    """Parameters restricting a scheme to a k x k grid, as the golden vectors' ``paper3x3`` (k=3) and ``bluelm4x4``
    (k=4): the square grid in the scheme's order for bluelm and llava_next, max_num = k*k for internvl."""
    if scheme == "internvl":
        return {"max_num": k * k}
    if scheme in ("bluelm", "llava_next"):
        return {"candidates": square_grid(k, descending=scheme == "bluelm")}
    raise ValueError(f"unknown scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")


@dataclass(frozen=True)
class Preset:
    """A named setting of configs/suites/dynres-presets.json."""

    scheme: str
    layout: str
    thumbnail: str
    note: str = ""
    grid: int | None = None
    candidates: list[tuple[int, int]] | None = None
    alpha: float | None = None
    clause2: str | None = None
    min_num: int | None = None
    max_num: int | None = None

    def params(self) -> dict:
        out: dict = {"layout": self.layout, "thumbnail": self.thumbnail}
        if self.grid is not None:
            out.update(grid_params(self.scheme, self.grid))
        for name in ("candidates", "alpha", "clause2", "min_num", "max_num"):
            v = getattr(self, name)
            if v is not None:
                out[name] = list(v) if name == "candidates" else v
        return out


@dataclass(frozen=True)
class _PresetSuite:
    name: str
    description: str
    presets: dict[str, Preset]


def presets() -> dict[str, Preset]:
    """The named scheme settings (``paper3x3/bluelm_relaxed@0.1``, ``native/internvl_max6``, ...)."""
    from bluelm_v.config import load

    return load("suites", "dynres-presets", _PresetSuite).presets


def plan_preset(width: int, height: int, name: str) -> Plan:
    """``plan`` with a named preset."""
    table = presets()
    if name not in table:
        raise ValueError(f"unknown dynamic-resolution preset {name!r}; known: {', '.join(table)}")
    p = table[name]
    return plan(width, height, p.scheme, **p.params())
