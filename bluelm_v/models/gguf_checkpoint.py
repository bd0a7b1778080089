"""GGUF checkpoints (llama and qwen2 architectures): hyper-parameters, tensors (dequantized or as raw blocks), tokenizer.

Reading is done by the ``gguf`` package; this module checks the file before and after (magic, version, every
tensor's byte range inside the file, shapes against the hyper-parameters) and turns any failure into
``bluelm_v.FormatError`` naming the file and the problem.

Layouts the engine and packager rely on:

- GGUF shapes are written innermost first (``ne0 = in_features``); ``RawTensor.shape`` is torch order
  ``(rows = out_features, cols = in_features)``. Quantized blocks run along a row, so every row is a whole
  number of blocks and rows can be reordered without re-quantizing.
- llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` for its RoPE, which rotates adjacent pairs
  (2i, 2i+1) of a head; HF rotates (i, i + hd/2). Within each head, GGUF row 2i is HF row i and GGUF row 2i+1 is
  HF row i + hd/2. ``raw(..., hf_layout=True)`` and ``dequantize(..., hf_layout=True)`` undo it (on whole rows,
  so it also works on raw quantized blocks). Qwen2 files are not permuted: llama.cpp runs that architecture with
  the rotate-half ("NEOX") RoPE, HF's own layout, and its converter writes the rows as they are.
- Qwen2 adds ``blk.{i}.attn_{q,k,v}.bias`` (HF ``self_attn.{q,k,v}_proj.bias``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bluelm_v import FormatError
from bluelm_v.models.config import LLMConfig, ModelConfig

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
SUPPORTED_ARCHS = ("llama", "qwen2")
ROPE_PERMUTED = ("llama",)  # architectures whose attn_q / attn_k rows llama.cpp's converter permutes
QKV_BIAS = ("qwen2",)  # architectures with biases on Q/K/V
MAX_CONTEXT = 1 << 20  # RoPE tables are allocated for the whole context
# GGUF metadata value types: fixed sizes of the scalars, and the two variable-length ones.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# Block formats carried into packages byte for byte: bytes per block and the byte offsets of its fp16 scale (d)
# and minimum (m), which must be finite (the facts of csrc/quant's FormatInfo.fp16_at; Q6_K's d ends its block).
_BLOCK_SCALES = {"Q4_0": (18, (0,)), "Q4_1": (20, (0, 2)), "Q5_0": (22, (0,)), "Q5_1": (24, (0, 2)),
                 "Q8_0": (34, (0,)), "Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}
_LAYER_TENSORS = {  # GGUF name (blk.{i}.) -> HF name (model.layers.{i}.)
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass
class RawTensor:
    """One tensor exactly as stored: ``data`` is uint8 [rows, row_bytes] for block formats (Q4_0: 18 bytes per
    32 weights, Q4_1: 20, Q8_0: 34; see ``gguf.GGML_QUANT_SIZES``) and the plain array for F32/F16/BF16."""

    name: str  # GGUF name
    qtype: str  # "Q4_1", "F32", ... (gguf.GGMLQuantizationType names)
    shape: tuple[int, ...]  # torch order: (rows, cols) for matrices
    data: np.ndarray
    hf_layout: bool  # rows of attn_q/attn_k reordered to HF's RoPE layout

    @property
    def block_size(self) -> int:
        import gguf

        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.qtype]][0]


def permute_rows_to_hf(a: np.ndarray, heads: int) -> np.ndarray:
    """a: [heads * hd, ...] rows in GGUF's interleaved RoPE order -> HF's half-split order (same shape)."""
    rows = a.shape[0]
    if rows % (2 * heads):
        raise FormatError(f"cannot undo the RoPE row permutation: {rows} rows for {heads} heads")
    hd = rows // heads
    return a.reshape(heads, hd // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def permute_rows_to_gguf(a: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of ``permute_rows_to_hf``: HF rows [heads * hd, ...] -> GGUF's interleaved order."""
    rows = a.shape[0]
    if rows % (2 * heads):
        raise FormatError(f"cannot apply the RoPE row permutation: {rows} rows for {heads} heads")
    hd = rows // heads
    return a.reshape(heads, 2, hd // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


class GGUFCheckpoint:
    """An opened GGUF file. ``metadata`` holds every key/value; tensors are memory-mapped, not read up front."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.file_size = self.path.stat().st_size
        self._check_header()
        import gguf

        try:
            self._reader = gguf.GGUFReader(self.path, "r")
        except Exception as exc:  # the reader fails with ValueError, IndexError, KeyError, struct.error, ...
            raise FormatError(f"{self.path}: corrupt or truncated GGUF file ({type(exc).__name__}: {exc})") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._check_tensor_extents()
        self.metadata = self._read_metadata()
        self.arch = self.metadata.get("general.architecture")

    # ---- checks ---------------------------------------------------------------------------------------------
    def _check_header(self) -> None:
        with open(self.path, "rb") as f:
            head = f.read(24)
        if len(head) < 24:
            raise FormatError(f"{self.path}: {len(head)} bytes is too short for a GGUF header")
        if head[:4] != GGUF_MAGIC:
            raise FormatError(f"{self.path}: not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})")
        version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
        if version not in SUPPORTED_VERSIONS:
            raise FormatError(f"{self.path}: GGUF version {version} is not supported (expected {SUPPORTED_VERSIONS})")
        # Each tensor info and each key/value takes well over 8 bytes: counts beyond that are lies.
        if n_tensors > self.file_size // 8 or n_kv > self.file_size // 8:
            raise FormatError(f"{self.path}: header claims {n_tensors} tensors and {n_kv} keys, impossible in "
                              f"{self.file_size} bytes (truncated or corrupt)")
        self._check_metadata_lengths(n_kv)

    def _check_metadata_lengths(self, n_kv: int) -> None:
        """Walk the key/value section and refuse any string or array length that runs past the end of the file,
        before the gguf package builds Python objects from those lengths (a flipped array count would otherwise
        make it loop, and allocate, for billions of elements)."""
        import mmap

        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            end, pos = len(buf), 24

            def take(fmt: str) -> int:
                nonlocal pos
                size = struct.calcsize(fmt)
                if pos + size > end:
                    raise FormatError(f"{self.path}: metadata runs past the end of the file at byte {pos} "
                                      "(truncated or corrupt)")
                (value,) = struct.unpack_from(fmt, buf, pos)
                pos += size
                return value

            def skip(n: int, what: str) -> None:
                nonlocal pos
                if n > end - pos:
                    raise FormatError(f"{self.path}: {what} of {n} bytes at byte {pos} runs past the end of the "
                                      f"file ({end} bytes; truncated or corrupt)")
                pos += n

            def value(vtype: int, depth: int) -> None:
                if vtype in _SCALAR_SIZES:
                    skip(_SCALAR_SIZES[vtype], "a value")
                elif vtype == _GGUF_STRING:
                    skip(take("<Q"), "a string")
                elif vtype == _GGUF_ARRAY and depth < 4:
                    etype, count = take("<I"), take("<Q")
                    smallest = _SCALAR_SIZES.get(etype, 8 if etype == _GGUF_STRING else 12)
                    if etype not in _SCALAR_SIZES and etype not in (_GGUF_STRING, _GGUF_ARRAY):
                        raise FormatError(f"{self.path}: unknown array element type {etype} at byte {pos}")
                    if count * smallest > end - pos:
                        raise FormatError(f"{self.path}: array of {count} elements at byte {pos} cannot fit in the "
                                          f"{end - pos} bytes left (truncated or corrupt)")
                    for _ in range(count):
                        value(etype, depth + 1)
                else:
                    raise FormatError(f"{self.path}: unknown metadata value type {vtype} at byte {pos}")

            for _ in range(n_kv):
                skip(take("<Q"), "a key")
                value(take("<I"), 0)

    def _check_tensor_extents(self) -> None:
        """Every tensor is whole blocks, starts at an offset aligned as ``general.alignment`` says (32 when absent)
        inside the data section, ends inside the file and shares no byte with another tensor. The gguf package adds
        offsets in uint64, so 2^64 - 32 wraps to 32 bytes before the data section: offsets are re-read here as
        Python ints from the tensor info itself."""
        import gguf

        data_start, align = int(self._reader.data_offset), int(self._reader.alignment)
        extents = []
        for t in self._reader.tensors:
            block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
            if len(t.shape) == 0:
                raise FormatError(f"{self.path}: tensor {t.name} has no dimensions")
            n = int(np.prod([int(d) for d in t.shape]))
            if n % block or int(t.shape[0]) % block:
                raise FormatError(f"{self.path}: tensor {t.name} of shape {list(t.shape)} is not whole blocks of {block}")
            expected = n // block * size
            offset = int(t.field.parts[-1][0])  # relative to the data section, as stored
            if offset % align:
                raise FormatError(f"{self.path}: tensor {t.name} offset {offset} is not a multiple of the file's "
                                  f"alignment {align}")
            start = data_start + offset
            end = start + expected
            if (int(t.data_offset) != start or int(t.n_bytes) != expected or t.data.nbytes != expected
                    or end > self.file_size):
                raise FormatError(f"{self.path}: tensor {t.name} offset {offset} needs bytes {start}..{end} but the "
                                  f"file has {self.file_size} (truncated or corrupt)")
            extents.append((start, end, t.name))
        extents.sort()
        for (_, end_a, a), (start_b, _, b) in zip(extents, extents[1:]):
            if start_b < end_a:
                raise FormatError(f"{self.path}: tensor {b} starts at byte {start_b}, inside tensor {a} (which ends at "
                                  f"{end_a}): tensors must not overlap")

    def _read_metadata(self) -> dict[str, Any]:
        import gguf

        meta = {}
        for key, field in self._reader.fields.items():
            try:
                value = field.contents()
            except Exception as exc:
                raise FormatError(f"{self.path}: unreadable metadata value {key!r} ({exc})") from None
            if field.types == [gguf.GGUFValueType.FLOAT32]:
                # The shortest decimal that rounds to this float32 is what the converter wrote (1e-05, not
                # 9.999999747378752e-06).
                value = float(str(np.float32(value)))
            meta[key] = value
        return meta

    # ---- hyper-parameters -----------------------------------------------------------------------------------
    def _hp(self, key: str, default: Any = None, required: bool = True) -> Any:
        full = key.format(arch=self.arch)
        if full in self.metadata:
            return self.metadata[full]
        if required and default is None:
            raise FormatError(f"{self.path}: missing hyper-parameter {full!r}")
        return default

    def _int_hp(self, key: str, default: Optional[int] = None, limit: Optional[int] = None) -> int:
        """A positive integer hyper-parameter, at most ``limit`` (default: the largest tensor dimension in the
        file, since every size of the model is the side of some tensor), checked before anything is sized by it."""
        full = key.format(arch=self.arch)
        raw = self._hp(key, default, required=default is None)
        if isinstance(raw, (bool, float, str, list)) or not isinstance(raw, (int, np.integer)):
            raise FormatError(f"{self.path}: hyper-parameter {full!r} is {raw!r}, expected an integer")
        value = int(raw)
        if limit is None:
            limit = max((int(d) for t in self._reader.tensors for d in t.shape), default=0)
        if not 0 < value <= limit:
            raise FormatError(f"{self.path}: hyper-parameter {full!r} = {value} is outside 1..{limit} "
                              "(corrupt file or a model this reader does not support)")
        return value

    def llm_config(self) -> LLMConfig:
        """The LLM's shape from the metadata, checked against the tensors present."""
        try:
            return self._llm_config()
        except FormatError:
            raise
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:  # wrong type or out of range
            raise FormatError(f"{self.path}: malformed hyper-parameters ({exc})") from None

    def _llm_config(self) -> LLMConfig:
        import gguf

        if self.arch not in SUPPORTED_ARCHS:
            raise FormatError(f"{self.path}: architecture {self.arch!r} is not supported (expected {SUPPORTED_ARCHS})")
        K = gguf.Keys
        scaling = self._hp(K.Rope.SCALING_TYPE, "none", required=False)
        if scaling != "none" or "rope_freqs.weight" in self._tensors:
            raise FormatError(f"{self.path}: RoPE scaling ({scaling}) is not supported by the reference model")
        hidden = self._int_hp(K.LLM.EMBEDDING_LENGTH)
        heads = self._int_hp(K.Attention.HEAD_COUNT)
        head_dim = self._int_hp(K.Attention.KEY_LENGTH, hidden // heads)
        rope_dim = self._int_hp(K.Rope.DIMENSION_COUNT, head_dim)
        if rope_dim != head_dim:
            raise FormatError(f"{self.path}: partial RoPE ({rope_dim} of {head_dim} dims) is not supported")
        embd = self._tensors.get("token_embd.weight")
        if embd is None:
            raise FormatError(f"{self.path}: missing tensor 'token_embd.weight'")
        vocab = self._int_hp(K.LLM.VOCAB_SIZE, int(embd.shape[1]))
        eos = [int(self.metadata[k]) for k in (K.Tokenizer.EOS_ID, K.Tokenizer.EOT_ID) if k in self.metadata]
        bos = self.metadata.get(K.Tokenizer.BOS_ID)
        cfg = LLMConfig(
            hidden=hidden, intermediate=self._int_hp(K.LLM.FEED_FORWARD_LENGTH),
            layers=self._int_hp(K.LLM.BLOCK_COUNT, limit=len(self._tensors) // len(_LAYER_TENSORS)), heads=heads,
            kv_heads=self._int_hp(K.Attention.HEAD_COUNT_KV, heads), vocab=vocab,
            max_context=self._int_hp(K.LLM.CONTEXT_LENGTH, limit=MAX_CONTEXT),
            head_dim=None if head_dim * heads == hidden else head_dim,
            rope_theta=float(self._hp(K.Rope.FREQ_BASE, 10000.0, required=False)),
            rms_norm_eps=float(self._hp(K.Attention.LAYERNORM_RMS_EPS)),
            tie_embeddings="output.weight" not in self._tensors,
            bos_token_id=None if bos is None else int(bos), eos_token_ids=tuple(dict.fromkeys(eos)),
            arch=self.arch, qkv_bias=self.arch in QKV_BIAS,
        )
        if not 0 < cfg.max_context <= MAX_CONTEXT or not cfg.rope_theta > 0 or not cfg.rms_norm_eps > 0:
            raise FormatError(f"{self.path}: implausible hyper-parameters (context {cfg.max_context}, rope theta "
                              f"{cfg.rope_theta}, eps {cfg.rms_norm_eps})")
        self._check_shapes(cfg)
        return cfg

    def _check_shapes(self, cfg: LLMConfig) -> None:
        """Every tensor the config implies is present with that shape, so nothing is allocated on the word of
        the metadata alone."""
        d, q, kv, f = cfg.hidden, cfg.heads * cfg.dim_head, cfg.kv_dim, cfg.intermediate
        per_layer = {"attn_norm": (d,), "attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, q),
                     "ffn_norm": (d,), "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
        expected = {"token_embd.weight": (cfg.vocab, d), "output_norm.weight": (d,)}
        if not cfg.tie_embeddings:
            expected["output.weight"] = (cfg.vocab, d)
        for i in range(cfg.layers):
            expected.update({f"blk.{i}.{n}.weight": shape for n, shape in per_layer.items()})
            if cfg.qkv_bias:
                expected.update({f"blk.{i}.attn_q.bias": (q,), f"blk.{i}.attn_k.bias": (kv,),
                                 f"blk.{i}.attn_v.bias": (kv,)})
        missing = [n for n in expected if n not in self._tensors]
        if missing:
            raise FormatError(f"{self.path}: missing tensors {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        for name, shape in expected.items():
            got = tuple(int(x) for x in reversed(self._tensors[name].shape.tolist()))
            if got != shape:
                raise FormatError(f"{self.path}: tensor {name} has shape {list(got)}, the config needs {list(shape)}")

    def model_config(self) -> ModelConfig:
        """A text-only ModelConfig named after the file."""
        name = str(self.metadata.get("general.name") or self.path.stem)
        return ModelConfig(name=name, description=f"text-only LLM from {self.path.name}", llm=self.llm_config(),
                           sources={"llm": f"GGUF metadata of {self.path}"})

    # ---- tensors --------------------------------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def hf_names(self, cfg: Optional[LLMConfig] = None) -> dict[str, str]:
        """HF name -> GGUF name for every tensor the reference model needs."""
        cfg = cfg or self.llm_config()
        names = {f"{hf}.weight": f"{g}.weight" for g, hf in _GLOBAL_TENSORS.items()}
        if cfg.tie_embeddings:
            del names["lm_head.weight"]
        for i in range(cfg.layers):
            names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for g, hf in _LAYER_TENSORS.items()})
            if cfg.qkv_bias:
                names.update({f"model.layers.{i}.self_attn.{x}_proj.bias": f"blk.{i}.attn_{x}.bias" for x in "qkv"})
        return names

    def _rope_heads(self, name: str) -> Optional[int]:
        if self.arch not in ROPE_PERMUTED:
            return None
        if name.endswith(".attn_q.weight"):
            return int(self._hp("{arch}.attention.head_count"))
        if name.endswith(".attn_k.weight"):
            heads = int(self._hp("{arch}.attention.head_count"))
            return int(self._hp("{arch}.attention.head_count_kv", heads, required=False))
        return None

    def raw(self, name: str, hf_layout: bool = True) -> RawTensor:
        """The stored bytes of tensor ``name`` (GGUF name), rows in HF order unless ``hf_layout=False``."""
        t = self._tensors.get(name)
        if t is None:
            raise FormatError(f"{self.path}: missing tensor {name!r}")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        data = np.asarray(t.data)
        if data.shape[0] != shape[0] and len(shape) > 1:
            raise FormatError(f"{self.path}: tensor {name} has {data.shape[0]} stored rows for shape {shape}")
        qtype = t.tensor_type.name
        if qtype in _BLOCK_SCALES:
            self._check_scales(name, qtype, data)
        heads = self._rope_heads(name) if hf_layout else None
        if heads is not None:
            data = permute_rows_to_hf(data, heads)
        return RawTensor(name=name, qtype=qtype, shape=shape, data=data, hf_layout=heads is not None)

    def _check_scales(self, name: str, qtype: str, data: np.ndarray) -> None:
        """Every fp16 scale (and Q4_1 minimum) of a block tensor is finite: one NaN scale is carried into a package
        byte for byte and the engine then emits token 0 forever."""
        block_bytes, fields = _BLOCK_SCALES[qtype]
        blocks = np.ascontiguousarray(data).reshape(-1, block_bytes)
        for at in fields:
            bits = blocks[:, at:at + 2].copy().view("<u2").reshape(-1)
            bad = np.flatnonzero((bits & 0x7C00) == 0x7C00)  # every exponent bit set: infinity or NaN
            if bad.size:
                what = "scale" if at == fields[0] else "minimum"
                raise FormatError(f"{self.path}: tensor {name} ({qtype}) block {int(bad[0])} has a non-finite fp16 "
                                  f"{what} ({bad.size} such blocks): every scale must be finite")

    def dequantize(self, name: str, hf_layout: bool = True) -> np.ndarray:
        """Tensor ``name`` as float32 in torch order ([out, in] for matrices), via ``gguf.quants``."""
        import gguf

        raw = self.raw(name, hf_layout)
        try:
            values = gguf.quants.dequantize(raw.data, gguf.GGMLQuantizationType[raw.qtype])
        except NotImplementedError:
            raise FormatError(f"{self.path}: tensor {name} has type {raw.qtype}, which gguf cannot dequantize") from None
        values = np.asarray(values, dtype=np.float32).reshape(raw.shape)
        bad = np.flatnonzero(~np.isfinite(values.reshape(-1)))
        if bad.size:
            raise FormatError(f"{self.path}: tensor {name} ({raw.qtype}) holds {bad.size} non-finite values, the first "
                              f"at index {int(bad[0])}: every value must be finite")
        return values if values.flags.writeable and values.flags.c_contiguous else values.copy()

    def hf_state_dict(self, cfg: Optional[LLMConfig] = None,
                      progress: bool = False) -> dict[str, "torch.Tensor"]:  # noqa: F821
        """Every tensor the reference needs, dequantized to float32 torch tensors under HF names (``progress``: a
        bar per tensor)."""
        import torch
        from tqdm import tqdm

        names = self.hf_names(cfg)
        missing = [g for g in names.values() if g not in self._tensors]
        if missing:
            raise FormatError(f"{self.path}: missing tensors {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return {hf: torch.from_numpy(self.dequantize(g))
                for hf, g in tqdm(names.items(), desc=f"dequantizing {self.path.name}", unit="tensor", leave=False,
                                    disable=not progress)}

    def tokenizer(self):
        from bluelm_v.models.tokenizer import Tokenizer

        try:
            return Tokenizer.from_gguf_metadata(self.metadata, source=str(self.path))
        except FormatError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:  # metadata values of the wrong type
            raise FormatError(f"{self.path}: malformed tokenizer metadata ({exc})") from None


__all__ = ["GGUFCheckpoint", "RawTensor", "permute_rows_to_gguf", "permute_rows_to_hf"]
