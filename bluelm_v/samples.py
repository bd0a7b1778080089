"""Synthetic sample images (deterministic, made on the fly, nothing downloaded): the five kinds of picture the
paper's resolution schemes disagree on. Used by the demo, the tests and the ablations."""
from __future__ import annotations

import io

import numpy as np

# name -> (width, height, what it stands for)
SAMPLES = {
    "document": (1240, 1754, "A4 page scanned at 150 dpi"),
    "receipt": (576, 1800, "thermal receipt, 80 mm paper"),
    "banner": (500, 102, "web banner (the paper's Fig. 9B size)"),
    "chart": (394, 390, "small chart (the paper's Fig. 3A size)"),
    "screenshot": (1080, 2400, "phone screenshot, 20:9"),
    "photo": (2016, 1512, "4:3 camera photo"),
}


def make_sample(name: str, seed: int = 0) -> np.ndarray:
    """RGB uint8 array [H, W, 3] of the named kind."""
    from PIL import Image, ImageDraw

    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}: expected one of {', '.join(SAMPLES)}")
    w, h, _ = SAMPLES[name]
    rng = np.random.default_rng(seed)
    if name == "photo":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        sky = np.stack([110 + 60 * yy / h, 150 + 50 * yy / h, 230 - 40 * yy / h], axis=-1)
        ground = np.stack([60 + 30 * np.sin(xx / 90.0), 120 + 20 * np.cos(yy / 70.0), 50 + 0 * xx], axis=-1)
        horizon = h * 0.55 + 40 * np.sin(xx / 300.0)
        arr = np.where((yy > horizon)[..., None], ground, sky)
        arr += rng.normal(0, 6, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        d.ellipse([w * 0.7, h * 0.1, w * 0.8, h * 0.1 + w * 0.1], fill=(250, 230, 120))
        return np.asarray(img)
    bg = {"document": (252, 252, 248), "receipt": (245, 243, 236), "banner": (20, 60, 140), "screenshot": (255, 255, 255),
          "chart": (255, 255, 255)}[name]
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    ink = (20, 20, 20)
    if name == "document":
        d.rectangle([100, 100, w - 100, 180], fill=(30, 30, 90))
        y = 230
        while y < h - 120:
            width = int(rng.integers(w // 2, w - 200))
            d.rectangle([100, y, 100 + width, y + 14], fill=(90, 90, 90))
            y += 34 if rng.random() > 0.1 else 70
    elif name == "receipt":
        y = 60
        while y < h - 60:
            d.rectangle([40, y, 40 + int(rng.integers(120, 300)), y + 12], fill=ink)
            d.rectangle([w - 140, y, w - 40, y + 12], fill=ink)
            y += 30
    elif name == "banner":
        d.rectangle([10, 10, 90, 92], fill=(250, 200, 40))
        for i in range(3):
            d.rectangle([110 + i * 130, 35, 220 + i * 130, 65], fill=(240, 240, 240))
    elif name == "chart":
        d.line([40, 20, 40, 350, 380, 350], fill=ink, width=3)
        for i in range(8):
            top = int(rng.integers(60, 330))
            d.rectangle([55 + i * 40, top, 85 + i * 40, 348], fill=(40 + 25 * i, 110, 200 - 15 * i))
    elif name == "screenshot":
        d.rectangle([0, 0, w, 120], fill=(30, 30, 30))
        for row in range(8):
            y = 180 + row * 270
            d.rounded_rectangle([40, y, w - 40, y + 220], radius=30, fill=(235, 238, 245))
            d.ellipse([70, y + 40, 210, y + 180], fill=tuple(int(c) for c in rng.integers(60, 220, 3)))
            d.rectangle([250, y + 60, w - 120, y + 84], fill=(60, 60, 60))
            d.rectangle([250, y + 120, w - 300, y + 140], fill=(140, 140, 140))
    return np.asarray(img)


def sample_bytes(name: str, fmt: str = "PNG", seed: int = 0) -> bytes:
    """The sample encoded as PNG, JPEG or WEBP bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(make_sample(name, seed)).save(buf, format=fmt)
    return buf.getvalue()
