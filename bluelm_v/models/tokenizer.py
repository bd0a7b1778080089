"""The reference model's view of the project tokenizer (bluelm_v.tokenizer, C++; docs/tokenizer.md).

A thin adapter: ``Tokenizer`` holds a ``bluelm_v._core.Tokenizer`` plus what a model adds around it (the
end-of-generation ids and the Jinja chat template), so there is one tokenizer implementation in the project.

- ``Tokenizer.byte_level(vocab)``: the byte tokenizer of the randomly initialised models (``tiny``): ids 0..7
  ``<pad> <bos> <eos> <|im_start|> <|im_end|> <image> ...``, byte b is id 8 + b; ChatML template.
- ``Tokenizer.from_gguf_metadata(meta)``: the byte-level BPE tokenizer of GGUF key/values (already decoded).
- ``Tokenizer.from_dir(folder)``: ``tokenizer.bin`` (our format, as ``save`` writes it) or an HF
  ``tokenizer.json``, with ``tokenizer_config.json`` (chat template, bos/eos tokens, add_bos).

Images are marked by ``IMAGE_MARKER`` in rendered prompts; the caller splits the prompt there and puts each
image's run of embedding positions in its place (bluelm_v/models/reference.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from bluelm_v import FormatError
from bluelm_v import tokenizer as T

IMAGE_MARKER = "<image>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NATIVE_FILE, CONFIG_FILE = "tokenizer.bin", "tokenizer_config.json"


def _template_file(folder: Path) -> Optional[str]:
    """The chat template transformers >= 4.43 writes beside the tokenizer (``chat_template.jinja``) or with a
    processor (``chat_template.json``)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    path = folder / "chat_template.json"
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: malformed JSON ({exc})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("chat_template"), str):
            raise FormatError(f"{path}: field chat_template must be a string")
        return raw["chat_template"]
    return None


class Tokenizer:
    """Text <-> ids, streaming decode and chat formatting for one model (``core``: the C++ tokenizer)."""

    def __init__(self, core: "T.Tokenizer", *, eos_ids: Sequence[int] = (), chat_template: Optional[str] = None,
                 source: str = ""):
        self.core = core
        self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos_ids))
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.source = source

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def byte_level(cls, vocab: int) -> "Tokenizer":
        if vocab < T.BYTE_MIN_VOCAB:
            raise ValueError(f"the byte tokenizer needs a vocabulary of at least {T.BYTE_MIN_VOCAB}, got {vocab}")
        core = T.byte_tokenizer(vocab)
        im_end = T.BYTE_SPECIALS.index("<|im_end|>")
        return cls(core, eos_ids=(im_end, core.eos_id), chat_template=CHATML_TEMPLATE, source="byte tokenizer")

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any], source: str = "gguf") -> "Tokenizer":
        """From GGUF key/values (``tokenizer.ggml.*``, ``tokenizer.chat_template``); FormatError when unusable."""
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise FormatError(f"{source}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
        if not tokens or merges is None:
            raise FormatError(f"{source}: the GGUF file has no tokenizer.ggml.tokens / tokenizer.ggml.merges")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in T.GGUF_PRE_TOKENIZERS:
            raise FormatError(f"{source}: pre-tokenizer {pre!r} is not supported "
                              f"(known: {', '.join(T.GGUF_PRE_TOKENIZERS)})")
        types = meta.get("tokenizer.ggml.token_type") or [T.NORMAL] * len(tokens)
        if len(types) != len(tokens):
            raise FormatError(f"{source}: {len(types)} token types for {len(tokens)} tokens")
        eos = [int(meta[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
        for i in [meta.get("tokenizer.ggml.bos_token_id"), *eos]:
            if i is not None and not 0 <= int(i) < len(tokens):
                raise FormatError(f"{source}: special token id {i} is outside the vocabulary of {len(tokens)}")
        try:
            spec = T.TokenizerSpec(
                model="byte_level_bpe", pre=T.GGUF_PRE_TOKENIZERS[pre], tokens=list(tokens),
                types=[int(t) for t in types], merges=[T._split_merge(m, i) for i, m in enumerate(merges)],
                bos_id=int(meta.get("tokenizer.ggml.bos_token_id", -1)), eos_id=eos[0] if eos else -1,
                pad_id=int(meta.get("tokenizer.ggml.padding_token_id", -1)),
                unk_id=int(meta.get("tokenizer.ggml.unknown_token_id", -1)),
                add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)))
            core = spec.build()
        except FormatError:
            raise
        except (ValueError, TypeError, RuntimeError) as exc:
            raise FormatError(f"{source}: unusable BPE tokenizer ({exc})") from None
        return cls(core, eos_ids=eos, chat_template=meta.get("tokenizer.chat_template"), source=source)

    @classmethod
    def from_dir(cls, folder: Path) -> "Tokenizer":
        """``tokenizer.bin`` or HF ``tokenizer.json``, plus optional ``tokenizer_config.json``."""
        folder = Path(folder)
        conf_path = folder / CONFIG_FILE
        conf: dict = {}
        if conf_path.is_file():
            from bluelm_v.jsonfile import read_json

            conf = read_json(conf_path)
            if not isinstance(conf, dict):
                raise FormatError(f"{conf_path}: expected a JSON object")

        def content(value) -> Optional[str]:
            return value.get("content") if isinstance(value, dict) else value

        eos = conf.get("eos_token")
        eos_tokens = [content(e) for e in (eos if isinstance(eos, list) else [eos]) if content(e) is not None]
        if (folder / NATIVE_FILE).is_file():
            core = T.load(folder / NATIVE_FILE)  # FormatError when corrupt
        else:
            path = folder / "tokenizer.json"
            try:
                from tokenizers import Tokenizer as HFTokenizer

                hf = HFTokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception on malformed files
                raise FormatError(f"{path}: not a usable tokenizer.json ({exc})") from None
            try:
                core = T.from_hf(hf, bos_token=content(conf.get("bos_token")),
                                 eos_token=eos_tokens[0] if eos_tokens else None,
                                 add_bos=bool(conf.get("add_bos_token", False)))
            except ValueError as exc:
                raise FormatError(f"{path}: {exc}") from None
        eos_ids = []
        for t in eos_tokens:
            i = core.token_to_id(t)
            if i is None or i < 0:
                raise FormatError(f"{conf_path}: special token {t!r} is not in the vocabulary")
            eos_ids.append(i)
        if core.eos_id >= 0:
            eos_ids.append(core.eos_id)
        return cls(core, eos_ids=eos_ids, chat_template=conf.get("chat_template") or _template_file(folder),
                   source=str(folder))

    def save(self, folder: Path) -> None:
        """Write ``tokenizer.bin`` and ``tokenizer_config.json`` (read back by ``from_dir``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.core.save(str(folder / NATIVE_FILE))
        conf = {"eos_token": [self.core.token_text(i) for i in self.eos_ids], "chat_template": self.chat_template}
        (folder / CONFIG_FILE).write_text(json.dumps(conf, indent=1), encoding="utf-8")

    # ---- use ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.core.n_vocab

    @property
    def bos_id(self) -> Optional[int]:
        return None if self.core.bos_id < 0 else self.core.bos_id

    @property
    def add_bos(self) -> bool:
        return self.core.add_bos

    def encode(self, text: str, add_bos: Optional[bool] = None) -> list[int]:
        """Token ids of ``text``; special tokens written in it become their ids. ``add_bos`` defaults to the
        tokenizer's own setting (GGUF ``tokenizer.ggml.add_bos_token``; True for the byte tokenizer)."""
        ids = list(self.core.encode(text, add_special=False, parse_special=True))
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.core.decode(list(ids), skip_special=skip_special)

    def token_to_id(self, token: str) -> Optional[int]:
        found = self.core.token_to_id(token)
        return None if found is None or found < 0 else found

    def decode_stream(self, skip_special: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """Render ``[{"role": ..., "content": ...}, ...]`` with the model's Jinja chat template (sandboxed)."""
        from jinja2 import TemplateError

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        token = lambda i: "" if i is None else self.core.token_text(i)  # noqa: E731
        try:
            return T.render_template(self.chat_template, messages, add_generation_prompt,
                                     bos_token=token(self.bos_id),
                                     eos_token=token(self.eos_ids[0] if self.eos_ids else None),
                                     raise_exception=raise_exception)
        except TemplateError as exc:
            raise ValueError(f"chat template of {self.source or 'the tokenizer'} failed: {exc}") from None


class StreamDecoder:
    """Incremental detokenization: ``step(id)`` returns the new text (possibly "") once it forms whole UTF-8
    characters, so multi-byte characters split across tokens are never emitted half; ``flush()`` the rest."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self._stream = T.StreamDecoder(tokenizer.core, skip_special)

    def step(self, token: int) -> str:
        return self._stream.push(int(token))

    def flush(self) -> str:
        return self._stream.flush()


__all__ = ["CHATML_TEMPLATE", "IMAGE_MARKER", "StreamDecoder", "Tokenizer"]
