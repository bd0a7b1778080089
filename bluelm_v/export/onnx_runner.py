"""Run exported graphs with ONNX Runtime the way a device runtime would (docs/export.md): the KV cache lives here,
prompts go through the prefill graph chunk by chunk (the last chunk padded), then the decode graph token by token.

ONNX Runtime may fuse DequantizeLinear + MatMul into MatMulNBits with accuracy level 4 (int8 activations) at its
higher optimization levels; this project measured an error of 0.149 from that on toy
graphs (onnxruntime 1.30.0), so every session pins
``session.qdq_matmulnbits_accuracy_level = 0`` (float activations), which is what the reference comparison needs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

IMAGE_TOKEN_ID = -200


class OnnxModel:
    mask_value = -np.inf  # hidden keys in the additive mask (a QNN graph takes a finite value instead)

    def __init__(self, folder: Union[str, Path], threads: Optional[int] = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        mpath = self.folder / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{self.folder} has no manifest.json (write one with `bluelm-v export`)")
        try:
            self.manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{mpath}: malformed JSON ({exc})") from None
        if self.manifest.get("format") != "bluelm-v-onnx" or self.manifest.get("format_version") != 1:
            raise ValueError(f"{mpath}: not a bluelm-v ONNX export of format version 1")
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
        g = self.manifest["graphs"]
        self.sessions = {name: ort.InferenceSession(str(self.folder / g[name]["file"]), opts,
                                                    providers=["CPUExecutionProvider"]) for name in g}
        llm = self.manifest["llm"]
        self.chunk, self.past = llm["chunk"], llm["past"]
        self.layers, self.kv_heads, self.head_dim = llm["layers"], llm["kv_heads"], llm["head_dim"]
        e = self.manifest["embeddings"]
        vocab, d = e["shape"]
        path = self.folder / e["file"]
        if path.stat().st_size != vocab * d * 4:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {vocab * d * 4} for {e['shape']}")
        self.embeddings = np.fromfile(path, dtype=np.float32).reshape(vocab, d)
        self.prefix: Optional[tuple] = None  # (token, keys, values) held at position 0 by reset (set_prefix)
        self.reset()

    # ---- KV cache ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        shape = (self.layers, self.kv_heads, self.past, self.head_dim)
        self.keys = np.zeros(shape, np.float32)
        self.values = np.zeros(shape, np.float32)
        self.length = 0
        if self.prefix is not None:
            _, self.keys[:, :, 0], self.values[:, :, 0] = self.prefix
            self.length = 1

    def set_prefix(self, token: Optional[int], keys: Optional[np.ndarray] = None,
                   values: Optional[np.ndarray] = None) -> None:
        """Start every prompt from a cache holding ``token`` at position 0 (keys / values [layers, kv_heads,
        head_dim], computed beforehand: ``prefix_cache``); prompts then begin with that token, which the graphs never
        see (``after_prefix``). None removes it."""
        if token is None:
            self.prefix = None
        else:
            want = (self.layers, self.kv_heads, self.head_dim)
            for name, a in (("keys", keys), ("values", values)):
                if not isinstance(a, np.ndarray) or a.shape != want or not np.isfinite(a).all():
                    raise ValueError(f"the prefix's {name} must be finite, of shape {list(want)}")
            self.prefix = (int(token), keys.astype(np.float32), values.astype(np.float32))
        self.reset()

    def prefix_cache(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values [layers, kv_heads, head_dim] that ``token`` writes at position 0 (this model's
        graphs, an empty cache)."""
        held, self.prefix = self.prefix, None
        try:
            self.reset()
            self.prefill(self.embed([int(token)]))
            return self.keys[:, :, 0].copy(), self.values[:, :, 0].copy()
        finally:
            self.prefix = held
            self.reset()

    def after_prefix(self, ids: Sequence[int]) -> list[int]:
        """The prompt's ids after its first token when a prefix holds that token (ValueError if the prompt starts
        with another), else all of them."""
        ids = [int(i) for i in ids]
        if self.prefix is None:
            return ids
        if len(ids) < 2 or ids[0] != self.prefix[0]:
            raise ValueError(f"this export keeps the first token {self.prefix[0]} out of its graphs (its cache is "
                             f"computed beforehand): a prompt must start with it and go on; this one is "
                             f"{ids[:4]}{'...' if len(ids) > 4 else ''}")
        return ids[1:]

    def _step(self, graph: str, embeds: np.ndarray, valid: int) -> np.ndarray:
        """embeds [t, d] padded to the graph's t; the first `valid` rows are real. Returns logits [valid, V]."""
        t = embeds.shape[0]
        start = self.length
        if start + valid > self.past:
            raise ValueError(f"the prompt needs {start + valid} positions; this export holds {self.past} "
                             f"(max_context - chunk)")
        pos = (start + np.arange(t, dtype=np.int64))[None]
        mask = np.full((1, 1, t, self.past + t), self.mask_value, np.float32)
        mask[0, 0, :, :start] = 0.0
        mask[0, 0, :, self.past:] = np.triu(np.full((t, t), self.mask_value, np.float32), 1)
        logits, nk, nv = self.sessions[graph].run(None, {
            "inputs_embeds": embeds[None].astype(np.float32), "position_ids": pos, "attention_mask": mask,
            "past_keys": self.keys, "past_values": self.values})
        self.keys[:, :, start:start + valid] = nk[:, :, :valid]
        self.values[:, :, start:start + valid] = nv[:, :, :valid]
        self.length = start + valid
        return logits[0, :valid]

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        """embeds [T, d] -> logits [T, V], chunk by chunk through the prefill graph. The last chunk is padded with
        copies of its last row: padded rows come after the real ones (which never attend to them) and are
        dropped, but in a quantized graph they share the tensors' calibrated ranges, and all-zero rows are not
        a token (SmolLM2 writes up to 1.6e4 into their residual stream, against ~100 for a real token)."""
        out = []
        for s in range(0, embeds.shape[0], self.chunk):
            part = embeds[s:s + self.chunk]
            valid = part.shape[0]
            if valid < self.chunk:
                part = np.concatenate([part, np.repeat(part[-1:], self.chunk - valid, axis=0)])
            out.append(self._step("llm_prefill", part, valid))
        return np.concatenate(out)

    def decode(self, token: int) -> np.ndarray:
        """One token through the decode graph -> logits [V]."""
        return self._step("llm_decode", self.embeddings[int(token)][None], 1)[0]

    # ---- inputs -----------------------------------------------------------------------------------------------
    def embed(self, ids: Sequence[int], image_embeds: Optional[np.ndarray] = None) -> np.ndarray:
        """ids with IMAGE_TOKEN_ID runs; image_embeds [M, d] for them -> [T, d]."""
        ids = np.asarray(ids, dtype=np.int64)
        is_img = ids == IMAGE_TOKEN_ID
        out = self.embeddings[np.where(is_img, 0, ids)].copy()
        n = int(is_img.sum())
        if n:
            if image_embeds is None or image_embeds.shape[0] != n:
                raise ValueError(f"{n} image positions need as many image embedding rows")
            out[is_img] = image_embeds
        return out

    def encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """tiles [P, 3, S, S] -> image embeddings [P, tokens_per_tile, d] in batches of the graph's B (padded)."""
        if "vit" not in self.sessions:
            raise ValueError("this export is text-only")
        b = self.manifest["vision"]["tile_batch"]
        out = []
        for s in range(0, tiles.shape[0], b):
            part = tiles[s:s + b].astype(np.float32)
            n = part.shape[0]
            if n < b:
                part = np.concatenate([part, np.zeros((b - n, *part.shape[1:]), np.float32)])
            feats = self.sessions["vit"].run(None, {"pixel_values": part})[0]
            out.append(self.sessions["projector"].run(None, {"features": feats})[0][:n])
        return np.concatenate(out)

    def greedy(self, ids: Sequence[int], max_new_tokens: int, eos: Sequence[int] = (),
               image_embeds: Optional[np.ndarray] = None) -> list[int]:
        t0 = time.perf_counter()
        self.reset()
        logits = self.prefill(self.embed(self.after_prefix(ids), image_embeds))[-1]
        self.first_token_s = time.perf_counter() - t0  # prefill of the whole prompt: its part of the TTFT
        out = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in eos or len(out) == max_new_tokens:
                break
            logits = self.decode(tok)
        return out


__all__ = ["OnnxModel"]
