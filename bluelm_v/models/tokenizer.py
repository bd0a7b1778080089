"""Tokenizers for the reference model, all on the ``tokenizers`` library, plus chat templates (Jinja).

- ``Tokenizer.from_gguf_metadata``: the BPE tokenizer a GGUF file carries (``tokenizer.ggml.model == "gpt2"``:
  byte-level BPE from ``tokens`` and ``merges``; CONTROL tokens become special tokens) and its chat template.
- ``Tokenizer.byte_level(vocab)``: for randomly initialised models (``tiny``): ids 0..255 are the bytes,
  256 ``<|endoftext|>``, 257 ``<|im_start|>``, 258 ``<|im_end|>``; ChatML chat template.
- ``Tokenizer.from_dir``: ``tokenizer.json`` (+ ``tokenizer_config.json`` for the template and special ids),
  as ``save`` writes them and as HF checkpoints ship them.

Special tokens written in the text (``<|im_start|>`` ...) are matched as single tokens, as HF does when it
tokenizes a rendered chat template. Images are marked by ``IMAGE_MARKER`` in rendered prompts; the caller
replaces each marker by that image's run of embedding positions (see bluelm_v/models/vlm.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, pre_tokenizers
from tokenizers.decoders import DecodeStream

from bluelm_v import FormatError

IMAGE_MARKER = "<image>"
BYTE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 256, 257, 258 of the byte tokenizer
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GGUF_TOKEN_CONTROL, GGUF_TOKEN_USER_DEFINED = 3, 4  # gguf.TokenType values

# tokenizer.ggml.pre -> pre-tokenizer. "smollm" splits every digit off first, then GPT-2's byte-level regex.
_PRE_TOKENIZERS = {
    "default": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    ),
}


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (what byte-level BPE vocabularies
    are written in): printable Latin-1 bytes map to themselves, the rest to code points from 256 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """Text <-> ids, streaming decode and chat formatting for one model."""

    def __init__(self, backend: Backend, *, bos_id: Optional[int] = None, eos_ids: Sequence[int] = (),
                 add_bos: bool = False, chat_template: Optional[str] = None, source: str = ""):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.add_bos = add_bos
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.source = source

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def byte_level(cls, vocab: int) -> "Tokenizer":
        """Bytes as tokens (0..255) plus three special tokens; needs a model vocabulary of at least 259."""
        if vocab < 256 + len(BYTE_SPECIALS):
            raise ValueError(f"a byte-level tokenizer needs a vocabulary of at least {256 + len(BYTE_SPECIALS)}, got {vocab}")
        table = byte_to_unicode()
        backend = Backend(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BYTE_SPECIALS])
        return cls(backend, bos_id=None, eos_ids=(258, 256), add_bos=False, chat_template=CHATML_TEMPLATE,
                   source="byte-level")

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any], source: str = "gguf") -> "Tokenizer":
        """From GGUF key/values (``tokenizer.ggml.*`` and ``tokenizer.chat_template``), already decoded."""
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise FormatError(f"{source}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens = meta.get("tokenizer.ggml.tokens")
        merges = meta.get("tokenizer.ggml.merges")
        if not tokens or merges is None:
            raise FormatError(f"{source}: the GGUF file has no tokenizer.ggml.tokens / tokenizer.ggml.merges")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise FormatError(f"{source}: pre-tokenizer {pre!r} is not supported (known: {', '.join(_PRE_TOKENIZERS)})")
        types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        if len(types) != len(tokens):
            raise FormatError(f"{source}: {len(types)} token types for {len(tokens)} tokens")
        vocab = {t: i for i, t in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise FormatError(f"{source}: the token list has duplicates")
        pairs = []
        for m in merges:
            parts = m.split(" ")
            if len(parts) != 2:
                raise FormatError(f"{source}: malformed BPE merge {m!r}")
            pairs.append((parts[0], parts[1]))
        try:
            backend = Backend(models.BPE(vocab=vocab, merges=pairs))
        except Exception as exc:  # tokenizers raises a bare Exception for inconsistent vocab/merges
            raise FormatError(f"{source}: unusable BPE tokenizer ({exc})") from None
        backend.pre_tokenizer = _PRE_TOKENIZERS[pre]()
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == GGUF_TOKEN_CONTROL]
        )
        backend.add_tokens(
            [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == GGUF_TOKEN_USER_DEFINED]
        )
        eos = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
        for i in [meta.get("tokenizer.ggml.bos_token_id"), *eos]:
            if i is not None and not 0 <= int(i) < len(tokens):
                raise FormatError(f"{source}: special token id {i} is outside the vocabulary of {len(tokens)}")
        return cls(backend, bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_ids=tuple(dict.fromkeys(eos)),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                   chat_template=meta.get("tokenizer.chat_template"), source=source)

    @classmethod
    def from_dir(cls, folder: Path) -> "Tokenizer":
        """``tokenizer.json`` and optional ``tokenizer_config.json`` (chat_template, bos/eos tokens, add_bos)."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise FormatError(f"{path}: not a usable tokenizer.json ({exc})") from None
        conf_path = folder / "tokenizer_config.json"
        conf: dict = {}
        if conf_path.is_file():
            try:
                conf = json.loads(conf_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise FormatError(f"{conf_path}: malformed JSON ({exc})") from None

        def token_id(value) -> Optional[int]:
            if isinstance(value, dict):
                value = value.get("content")
            if value is None:
                return None
            found = backend.token_to_id(value)
            if found is None:
                raise FormatError(f"{conf_path}: special token {value!r} is not in the vocabulary")
            return found

        eos = conf.get("eos_token")
        eos_list = eos if isinstance(eos, list) else [eos]
        return cls(backend, bos_id=token_id(conf.get("bos_token")),
                   eos_ids=tuple(i for i in (token_id(e) for e in eos_list) if i is not None),
                   add_bos=bool(conf.get("add_bos_token", False)), chat_template=conf.get("chat_template"),
                   source=str(folder))

    def save(self, folder: Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (read back by ``from_dir``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        conf = {
            "bos_token": None if self.bos_id is None else self.backend.id_to_token(self.bos_id),
            "eos_token": [self.backend.id_to_token(i) for i in self.eos_ids],
            "add_bos_token": self.add_bos,
            "chat_template": self.chat_template,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(conf, indent=1), encoding="utf-8")

    # ---- use ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: Optional[bool] = None) -> list[int]:
        """Token ids of ``text``; special tokens written in it become their ids. ``add_bos`` defaults to the
        model's own setting (GGUF ``tokenizer.ggml.add_bos_token``)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.backend.token_to_id(token)

    def decode_stream(self, skip_special: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """Render ``[{"role": ..., "content": ...}, ...]`` with the model's Jinja chat template (sandboxed)."""
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        token = lambda i: None if i is None else self.backend.id_to_token(i)  # noqa: E731
        try:
            return env.from_string(self.chat_template).render(
                messages=list(messages), add_generation_prompt=add_generation_prompt,
                bos_token=token(self.bos_id) or "", eos_token=token(self.eos_ids[0] if self.eos_ids else None) or "",
            )
        except TemplateError as exc:
            raise ValueError(f"chat template of {self.source or 'the tokenizer'} failed: {exc}") from None


class StreamDecoder:
    """Incremental detokenization: ``step(id)`` returns the new text (possibly "") once it forms whole UTF-8
    characters, so multi-byte characters split across tokens are never emitted half."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self._backend = tokenizer.backend
        self._stream = DecodeStream(skip_special_tokens=skip_special)

    def step(self, token: int) -> str:
        return self._stream.step(self._backend, int(token)) or ""


__all__ = ["BYTE_SPECIALS", "CHATML_TEMPLATE", "IMAGE_MARKER", "StreamDecoder", "Tokenizer", "byte_to_unicode"]
