"""Images in, normalized ViT tiles out (C++ over libpng, libjpeg-turbo and libwebp; see csrc/image).

``load_image`` decodes JPEG/PNG/WebP bytes, files, base64 / data URLs, PIL images and arrays to an RGB uint8
array [H, W, 3], refusing corrupt, truncated or oversized input with ``FormatError`` / ``LimitError`` (both
ValueErrors). ``preprocess`` plans the grid (bluelm_v.dynres), resizes with Pillow's bicubic arithmetic
(bit-exact), cuts row-major tiles plus the thumbnail and normalizes with SigLIP's mean and std.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from bluelm_v import _core
from bluelm_v.dynres import Plan, make_params, plan as make_plan

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb error threshold
DEFAULT_MAX_BYTES = 512 << 20

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, "PIL.Image.Image"]  # noqa: F821


def decode_base64(text: Union[str, bytes]) -> bytes:
    """Strict base64 (padding optional, whitespace ignored, ``data:...;base64,`` prefix accepted)."""
    return _core.base64_decode(text)


def encode_base64(data: bytes) -> str:
    return _core.base64_encode(data)


def probe(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header, after checking the file is whole."""
    return tuple(_core.probe_image(data))


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """RGB uint8 array [H, W, 3] from a path, encoded bytes, a ``data:`` URL, a PIL image or an array."""
    if isinstance(src, np.ndarray):
        return _check_array(src, max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _core.decode_image(bytes(src) if isinstance(src, memoryview) else src, max_pixels, max_bytes)
    if isinstance(src, str) and src.startswith("data:"):
        return _core.decode_image(decode_base64(src), max_pixels, max_bytes)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise _core.LimitError(f"image file {path} has {size} bytes, over max_bytes={max_bytes}")
        try:
            return _core.decode_image(path.read_bytes(), max_pixels, max_bytes)
        except ValueError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(src, Image.Image):
        if src.width * src.height > max_pixels:
            raise _core.LimitError(f"PIL image of {src.width}x{src.height} exceeds max_pixels={max_pixels}")
        return np.asarray(src.convert("RGB"))
    raise TypeError(f"cannot load an image from {type(src).__name__}")


def load_image_base64(text: Union[str, bytes], **limits) -> np.ndarray:
    """RGB array from base64 text (the image column of VLMEvalKit's TSVs)."""
    return load_image(decode_base64(text), **limits)


def _check_array(a: np.ndarray, max_pixels: int) -> np.ndarray:
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"image array must have shape [height, width, 3], got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image array is empty: shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {a.dtype}")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise _core.LimitError(f"image of {a.shape[1]}x{a.shape[0]} exceeds max_pixels={max_pixels}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.strides[2] != 1 or a.strides[1] != 3:
        a = np.ascontiguousarray(a)
    return a


def resize_bicubic(image: np.ndarray, size: tuple[int, int], threads: int = 1) -> np.ndarray:
    """Pillow-exact bicubic resize of an RGB uint8 array to ``size`` = (width, height)."""
    image = _check_array(image, 1 << 62)
    return _core.resize_bicubic(image, int(size[0]), int(size[1]), threads)


@dataclass
class Preprocessed:
    pixels: np.ndarray  # [patches, 3, tile, tile] float32, normalized
    plan: Plan


def preprocess(src: ImageSource, scheme: str = "bluelm", *, mean=SIGLIP_MEAN, std=SIGLIP_STD, threads: int = 1,
               max_bytes: int = DEFAULT_MAX_BYTES, **params) -> Preprocessed:
    """Tiles of one image for the ViT: local tiles row-major, plus the thumbnail (first for llava_next, else
    last), each [3, tile, tile], normalized as (x/255 - mean) / std."""
    max_pixels = params.get("max_pixels") or DEFAULT_MAX_PIXELS
    rgb = load_image(src, max_pixels=max_pixels, max_bytes=max_bytes)
    p = make_params(scheme, **params)
    pixels, _ = _core.tile_image(rgb, p, tuple(float(x) for x in mean), tuple(float(x) for x in std), threads)
    return Preprocessed(pixels=pixels, plan=make_plan(rgb.shape[1], rgb.shape[0], scheme, **params))
