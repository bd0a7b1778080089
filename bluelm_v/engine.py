"""The native engine from Python (docs/engine.md): ``Engine(path)`` over a model package written by
``bluelm_v.export.package``.

    engine = Engine("pkg/")
    result = engine.chat("photo.jpg", "What is in the picture?")      # text, tokens, finish_reason, timing
    for piece in engine.stream("photo.jpg", "Describe it."): print(piece, end="")

    s = engine.session()
    s.submit_image("photo.jpg")      # returns at once; decoding, tiling and the ViT run in the background
    ...                              # (the user is still typing)
    s.generate("What is in it?")     # prefills the text before the image, waits only for the image

Everything runs in C++ (csrc/runtime) with the GIL released; this module only converts arguments.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from bluelm_v import _core

ImageInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, "PIL.Image.Image"]  # noqa: F821
IMAGE_TOKEN_ID = -200


@dataclass(frozen=True)
class Timing:
    """One request's timing in the paper's terms (seconds unless named otherwise)."""

    init_s: float
    preprocess_s: float
    vit_s: float
    image_wait_s: float
    prefill_s: float
    ttft_s: float
    decode_s: float
    prompt_tokens: int
    image_tokens: int
    tiles: int
    new_tokens: int
    chunk: int
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    peak_rss_mb: float
    reused_tokens: int = 0  # prompt positions kept in the KV cache from the session's previous turn (not prefilled)

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("init (load)", f"{self.init_s:.3f} s"),
            ("preprocessing", f"{self.preprocess_s:.3f} s ({self.tiles} tiles)"),
            ("ViT + projector", f"{self.vit_s:.3f} s ({self.image_tokens} image tokens)"),
            ("waiting for images", f"{self.image_wait_s:.3f} s"),
            ("LLM prefill", f"{self.prefill_s:.3f} s ({self.prompt_tokens} tokens, chunk {self.chunk}, "
                            f"{self.prefill_tokens_per_s:.1f} tok/s"
                            + (f"; {self.reused_tokens} kept from the last turn)" if self.reused_tokens else ")")),
            ("time to first token", f"{self.ttft_s:.3f} s"),
            ("decode", f"{self.decode_tokens_per_s:.1f} tok/s ({self.new_tokens} tokens)"),
            ("peak resident memory", f"{self.peak_rss_mb:.0f} MB"),
        ]

    def table(self) -> str:
        return "\n".join(f"{k:<22} {v}" for k, v in self.rows())

    def to_frame(self):
        """The timing as a one-row pandas DataFrame (seconds, tokens, tokens/s): runs concatenate into a table."""
        import dataclasses

        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(self)])


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish_reason: str  # eos | stop | length | cancelled
    timing: Timing = field(repr=False)


def _result(d: dict) -> Result:
    return Result(d["text"], list(d["tokens"]), d["finish_reason"], Timing(**d["timing"]))


class Session:
    """One conversation turn at a time over an Engine: submit images, then generate (see the module doc)."""

    def __init__(self, native: "_core.EngineSession", engine: "Engine"):
        self._s = native
        self.engine = engine

    def submit_image(self, image: ImageInput) -> None:
        """Queue an image (path, encoded bytes, data URL, PIL image or RGB uint8 array [H, W, 3]); returns at once.
        The header is checked now (bad files raise here); decoding and encoding run in the background. A family
        whose own tiling is not in C++ (Idefics3's LANCZOS splitting) is tiled here first, in the caller's thread."""
        own = self.engine._own_tiling
        if own is not None:
            from bluelm_v.image import load_image

            fam, model = own
            tiles, grid, global_tile = fam.engine_tiles(load_image(image), model)
            self.submit_tiles(tiles, grid=grid, global_tile=bool(global_tile))
            return
        if isinstance(image, np.ndarray):
            self._s.submit_rgb(np.ascontiguousarray(image))
            return
        if isinstance(image, str) and image.startswith("data:"):
            from bluelm_v.image import decode_base64

            self._s.submit_image(decode_base64(image))
            return
        if isinstance(image, (bytes, bytearray, memoryview)):
            self._s.submit_image(bytes(image))
            return
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path}")
            try:
                self._s.submit_image(path.read_bytes())
            except ValueError as exc:
                raise type(exc)(f"{path}: {exc}") from None
            return
        from bluelm_v.image import load_image

        self._s.submit_rgb(np.ascontiguousarray(load_image(image)))

    def submit_tiles(self, tiles: np.ndarray, grid: tuple[int, int] = (1, 1),
                     image_hw: tuple[int, int] = (1, 1), global_tile: Optional[bool] = None) -> None:
        """Queue one image as tiles already normalized, float32 [P, 3, S, S] (a model family's own preprocessing,
        e.g. its HF processor's pixel_values); returns at once. For the anyres_unpad layout, ``grid`` (m across,
        n down; the base image first, then the m*n tiles) and the image's (height, width) place the rows. For the
        tiles layout, ``grid`` and ``global_tile`` (the whole image as the last tile; None: when P == m*n + 1) are
        what a per-tile image block (Idefics3's row/column markers) needs for generate()."""
        (m, n), (h, w) = grid, image_hw
        g = -1 if global_tile is None else int(bool(global_tile))
        self._s.submit_tiles(np.ascontiguousarray(tiles, dtype=np.float32), int(m), int(n), int(w), int(h), g)

    @property
    def pending_images(self) -> int:
        return self._s.pending_images

    def generate(self, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop: Sequence[str] = (), chat: bool = True,
                 on_text: Optional[Callable[[str], Optional[bool]]] = None, system: str = "",
                 history: Sequence[Union[Mapping[str, str], tuple[str, str]]] = ()) -> Result:
        """Answer ``prompt`` about the submitted images; ``on_text`` gets each piece (return False to stop).
        ``system`` is a system turn and ``history`` the conversation's earlier turns ({"role": "user" |
        "assistant", "content": text} or (role, content)), formatted by the package's chat template before the
        prompt. The KV entries of the prefix shared with the session's previous turn are reused (Timing's
        ``reused_tokens``), so a chat that passes its history back prefills only the new turn."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        _check_text(prompt, "prompt")
        _check_text(system, "system")
        turns = []
        for i, m in enumerate(history):
            role, content = (m["role"], m["content"]) if isinstance(m, Mapping) else m
            _check_text(content, f"history turn {i}")
            turns.append((str(role), content))
        for s in stop:
            if isinstance(s, str):  # other types are refused by the binding with a TypeError
                _check_text(s, "stop string")
        return _result(self._s.generate(prompt, int(max_new_tokens), float(temperature), int(top_k), float(top_p),
                                        int(seed), list(stop), bool(chat), on_text, system, turns))

    def prefill(self, ids: Sequence[int], chunk: Optional[int] = None, all_logits: bool = False) -> np.ndarray:
        """Low level: prompt ids (``IMAGE_TOKEN_ID`` runs for submitted images) -> logits [V] of the last position
        ([T, V] with all_logits), continuing after what the cache holds."""
        return self._s.prefill([int(i) for i in ids], int(chunk or self.engine.chunk), bool(all_logits))

    def decode(self, token: int) -> np.ndarray:
        """Low level: one token after prefill -> next-token logits [V]."""
        return self._s.decode(int(token))

    def start_profile(self) -> None:
        """Time every op of the decode steps that follow (``decode`` and ``generate``'s steps; prefill is not
        timed) until ``stop_profile()``. The timing itself costs two clock reads per op (~15 per layer)."""
        self._s.start_profile()

    def stop_profile(self) -> DecodeProfile:
        """What the decode steps since ``start_profile()`` took, op by op (``DecodeProfile``)."""
        p = self._s.stop_profile()
        return DecodeProfile(steps=int(p["steps"]), seconds=float(p["seconds"]), ops=tuple(p["ops"]))

    def reset(self) -> None:
        self._s.reset()

    @property
    def cache_length(self) -> int:
        return self._s.cache_length


# The ops of a decode step that are products (they read weights and carry their format), in the order a step runs
# them; DecodeProfile rows with any other op name read no weights.
PRODUCT_OPS = ("qkv", "q", "k", "v", "o", "gate_up", "gate", "up", "down", "head")


@dataclass(frozen=True)
class DecodeProfile:
    """Where a session's decode steps spent their time, op by op (``Session.start_profile`` ... ``stop_profile``).

    ``steps`` decode steps took ``seconds`` of wall time in the engine (token embedding to logits). ``ops`` holds one
    dict per (op, weight format): ``op`` (qkv | q | k | v | o | gate_up | gate | up | down | head | attention |
    rms_norm | rope_kv_store | residual | swiglu), ``format`` ("" for ops without weights), ``calls``,
    ``seconds`` and ``bytes`` (what the calls read: a product's weights, attention's KV cache entries). A parallel op
    is timed on the calling thread from its start to its last worker's end, so the ops and ``other`` (embedding,
    the time between ops) add up to ``seconds``."""

    steps: int
    seconds: float
    ops: tuple

    def frame(self, read_gbps: Optional[float] = None):
        """A pandas DataFrame, one row per (op, format) and a last row ``other``: ``calls_per_step``,
        ``ms_per_step``, ``share`` (of the step's time), ``mb_per_step``, ``gbps`` (bytes over time, for the ops
        that read weights or the cache) and, given a plain read's GB/s with the same threads,
        ``fraction_of_read``."""
        import pandas as pd

        if self.steps < 1:
            raise ValueError("the profile holds no decode step")
        n, rows = self.steps, []
        for o in self.ops:
            rows.append({"op": o["op"], "format": o["format"], "calls_per_step": o["calls"] / n,
                         "ms_per_step": 1e3 * o["seconds"] / n, "mb_per_step": o["bytes"] / n / 1e6,
                         "seconds": o["seconds"], "bytes": o["bytes"]})
        other = self.seconds - sum(o["seconds"] for o in self.ops)
        rows.append({"op": "other", "format": "", "calls_per_step": 1.0, "ms_per_step": 1e3 * other / n,
                     "mb_per_step": 0.0, "seconds": other, "bytes": 0})
        df = pd.DataFrame(rows)
        df["share"] = df["seconds"] / self.seconds
        df["gbps"] = [b / s / 1e9 if b and s > 0 else float("nan") for b, s in zip(df["bytes"], df["seconds"])]
        if read_gbps:
            df["fraction_of_read"] = df["gbps"] / float(read_gbps)
        return df.drop(columns=["seconds", "bytes"])

    def summary(self, read_gbps: Optional[float] = None) -> dict:
        """Per step: ``ms``, ``weight_mb`` (the products' weights), ``products_ms`` and ``products_gbps`` (those
        bytes over the products' time alone), ``kv_mb``, ``attention_ms``, ``glue_ms`` (everything else);
        with a read's GB/s, ``effective_bw_fraction`` ((weights + KV) per step over the step's time, against the
        read) and ``products_fraction_of_read``."""
        n = self.steps
        if n < 1:
            raise ValueError("the profile holds no decode step")
        prod = [o for o in self.ops if o["op"] in PRODUCT_OPS]
        att = [o for o in self.ops if o["op"] == "attention"]
        w_bytes, w_s = sum(o["bytes"] for o in prod), sum(o["seconds"] for o in prod)
        kv_bytes, kv_s = sum(o["bytes"] for o in att), sum(o["seconds"] for o in att)
        out = {"steps": n, "ms": 1e3 * self.seconds / n, "weight_mb": w_bytes / n / 1e6,
               "products_ms": 1e3 * w_s / n, "products_gbps": w_bytes / w_s / 1e9 if w_s > 0 else float("nan"),
               "kv_mb": kv_bytes / n / 1e6, "attention_ms": 1e3 * kv_s / n,
               "glue_ms": 1e3 * (self.seconds - w_s - kv_s) / n}
        if read_gbps:
            out["effective_bw_fraction"] = (w_bytes + kv_bytes) / self.seconds / 1e9 / float(read_gbps)
            out["products_fraction_of_read"] = out["products_gbps"] / float(read_gbps)
        return out


class Engine:
    """A loaded model package. Options default to the package's deploy section (chunk 128, tile batch 4, f16 KV
    cache, int16 activations unless the package says otherwise); ``context`` is the KV capacity per session (default
    min(max_context, 4096)); ``kv_cache`` is ``int8``, ``f16`` or ``f32``; ``activations`` is the precision of the
    activations in the quantized products: ``int8`` (one int8 pass per group, like llama.cpp) or ``int16`` (two int8
    passes, the second on the residual: ~127x smaller activation error, the weights still streamed once).
    docs/engine.md has the measured agreement and speed of each. ``dynres`` replaces the package's image tiling by
    one of the schemes, with the keys of the manifest's ``model.dynres`` (``{"scheme": "bluelm", "alpha": 0.2}``,
    ``{"scheme": "internvl", "max_num": 6}``; what ``--scheme/--alpha/--grid`` give)."""

    def __init__(self, path: Union[str, os.PathLike], *, threads: Optional[int] = None, chunk: Optional[int] = None,
                 tile_batch: Optional[int] = None, kv_cache: Optional[str] = None, context: Optional[int] = None,
                 release_vit: bool = True, activations: Optional[str] = None,
                 dynres: Optional[dict] = None):
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"{path} is not a model package (no manifest.json); write one with "
                                    "`bluelm-v package` or bluelm_v.export.package")
        for name, v in (("threads", threads), ("chunk", chunk), ("tile_batch", tile_batch), ("context", context)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.path = path
        if dynres is not None and not isinstance(dynres, dict):
            raise TypeError(f"dynres must be a dict of tiling parameters (scheme, alpha, ...), got {type(dynres).__name__}")
        self.dynres = dict(dynres) if dynres else None
        self._e = _core.Engine(str(path), int(threads or 0), int(chunk or 0), int(tile_batch or 0), kv_cache or "",
                               int(context or 0), bool(release_vit), str(activations or ""),
                               json.dumps(dynres) if dynres else "")
        self._own_tiling = None if dynres else _own_tiling(path)  # after the C++ checks of the manifest

    # ---- properties ---------------------------------------------------------------------------------------
    @property
    def chunk(self) -> int:
        return self._e.chunk

    @property
    def tile_batch(self) -> int:
        return self._e.tile_batch

    @property
    def context(self) -> int:
        return self._e.context

    @property
    def kv_cache(self) -> str:
        return self._e.kv_cache

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one position takes over all layers (keys, values and int8 scales; docs/engine.md): the
        cache of a session holds ``context`` of them."""
        return self._e.kv_bytes_per_token

    @property
    def activations(self) -> str:
        return self._e.activations

    @property
    def multimodal(self) -> bool:
        return self._e.multimodal

    @property
    def init_s(self) -> float:
        return self._e.init_s

    @property
    def vit_resident(self) -> bool:
        return self._e.vit_resident

    @property
    def stacked_products(self) -> int:
        """How many of the LLM's products run stacked: Q/K/V as one and gate/up as one per layer (2 per layer when the
        weights allow it: quantized, one format, whole 8-row panels; BLUELM_STACK=0 at load turns it off)."""
        return self._e.llm_stacked_products

    def image_tokens(self, width: int, height: int) -> int:
        """Image positions of one image of width x height with the tiling in use."""
        if self._own_tiling is not None:
            fam, model = self._own_tiling
            return fam.engine_patches(int(width), int(height), model) * self._e.image_tokens_per_tile
        return self._e.image_tokens(int(width), int(height))

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Normalized tiles float32 [P, 3, S, S] -> the ViT and projector's embeddings [P, tokens_per_tile, d], tile
        by tile (before any image layout): what the reference's ``encode_tiles`` gives."""
        return self._e.encode_tiles(np.ascontiguousarray(tiles, dtype=np.float32))

    # ---- use ----------------------------------------------------------------------------------------------
    def session(self) -> Session:
        return Session(self._e.session(), self)

    def chat(self, image: Union[None, ImageInput, Sequence[ImageInput]], prompt: str, **kwargs) -> Result:
        """One question about zero, one or several images (see Session.generate for the keyword arguments)."""
        s = self.session()
        for img in _images(image):
            s.submit_image(img)
        return s.generate(prompt, **kwargs)

    def generate(self, prompt: str, images: Union[None, ImageInput, Sequence[ImageInput]] = None,
                 **kwargs) -> Result:
        """``prompt`` about ``images`` in a fresh session: chat with the arguments the other way round. Each image
        takes the package's prompt layout (its ``model.image_block``: BlueLM-V's run of positions, InternVL's
        ``<img>`` ... ``</img>``, Idefics3's row/column markers and global image, LLaVA-OneVision's anyres rows)."""
        return self.chat(images, prompt, **kwargs)

    def stream(self, image: Union[None, ImageInput, Sequence[ImageInput]], prompt: str, **kwargs) -> "TextStream":
        """As chat, but an iterator of text pieces; ``.result`` holds the Result once it is exhausted."""
        return TextStream(self, image, prompt, kwargs)


def _own_tiling(path: Path):
    """(family module, manifest model object) for a package whose family tiles images in Python (its family file's
    ``engine_tiles`` / ``engine_patches``: Idefics3's Pillow LANCZOS splitting, which csrc/image does not have), or
    None when the C++ tiler does the package's tiling."""
    from bluelm_v.jsonfile import read_json

    model = read_json(path / "manifest.json").get("model")
    fam = model.get("family", "bluelm_v") if isinstance(model, dict) else "bluelm_v"
    if fam == "bluelm_v" or not model.get("vision"):
        return None
    from bluelm_v.models.families import FAMILIES, family

    module = family(fam) if fam in FAMILIES else None
    return (module, model) if module is not None and hasattr(module, "engine_tiles") else None


def _check_text(text: str, name: str) -> None:
    """A str with a lone surrogate has no UTF-8 form (pybind11 would fail with "Unable to cast"): refuse it as the
    tokenizer does (docs/reliability.md), naming the argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnicodeEncodeError("utf-8", text, exc.start, exc.end,
                                 f"{name} holds a lone surrogate, which is not Unicode text") from None


def _images(image) -> list:
    if image is None:
        return []
    if isinstance(image, (list, tuple)):
        return list(image)
    return [image]


class TextStream:
    """Iterator of text pieces produced by a background generate(); closing it early cancels generation."""

    _END = object()

    def __init__(self, engine: Engine, image, prompt: str, kwargs: dict):
        if "on_text" in kwargs:
            raise TypeError("stream() delivers the text itself; do not pass on_text")
        self._q: "queue.Queue" = queue.Queue()
        self._cancel = threading.Event()
        self.result: Optional[Result] = None
        self._error: Optional[BaseException] = None
        session = engine.session()
        for img in _images(image):
            session.submit_image(img)  # bad images fail here, in the caller's thread

        def on_text(piece: str) -> bool:
            self._q.put(piece)
            return not self._cancel.is_set()

        def run() -> None:
            try:
                self.result = session.generate(prompt, on_text=on_text, **kwargs)
            except BaseException as exc:  # handed to the consumer
                self._error = exc
            finally:
                self._q.put(self._END)

        self._thread = threading.Thread(target=run, name="bluelm-engine-stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        item = self._q.get()
        if item is self._END:
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self) -> None:
        self._cancel.set()
        while self._q.get() is not self._END:
            pass
        self._thread.join()


__all__ = ["Engine", "IMAGE_TOKEN_ID", "Result", "Session", "TextStream", "Timing"]
