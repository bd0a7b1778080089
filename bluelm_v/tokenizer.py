"""Tokenizers in C++ (csrc/tokenizer; docs/tokenizer.md): byte-level BPE and the test models' byte tokenizer.

``from_gguf(path)`` builds the tokenizer a GGUF file describes (SmolLM2-135M-Instruct: byte-level BPE with the
``smollm`` pre-tokenizer), ``from_hf(tok)`` the one an HF ``tokenizers.Tokenizer`` describes, and
``byte_tokenizer(vocab)`` the byte tokenizer of the randomly initialised ``tiny`` models. All return
``bluelm_v._core.Tokenizer`` (``encode``, ``decode``, ``decode_bytes``, ``token_to_piece``, ``to_bytes`` /
``save`` / ``Tokenizer.load``). ``hf_from_gguf(path)`` builds the HF ``tokenizers`` equivalent of a GGUF tokenizer,
the reference the tests and the benchmark compare against.

Chat prompts: the engine cannot run Jinja, so ``chat_format_from_template(template)`` reduces a ChatML-family
template to a ``ChatFormat`` (prefixes and suffixes, checked by rendering the template with jinja2), which
``format_chat`` (C++) applies; ``chat_format_to_dict`` gives the JSON a model package stores.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from bluelm_v import _core

if TYPE_CHECKING:  # optional dependencies, imported where used
    import tokenizers

Tokenizer = _core.Tokenizer
StreamDecoder = _core.StreamDecoder
ChatFormat = _core.ChatFormat

# GGUF token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The byte tokenizer of the test models (docs/tokenizer.md): ids 0..7 control tokens, byte b is id 8 + b,
# ids from 264 up to the model's vocabulary are reserved control tokens "<|reserved_N|>".
BYTE_SPECIALS = ("<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<image>", "<|reserved_6|>",
                 "<|reserved_7|>")
BYTE_OFFSET = 8
BYTE_MIN_VOCAB = BYTE_OFFSET + 256

# tokenizer.ggml.pre values whose pre-tokenizer is implemented (and checked against HF `tokenizers`).
GGUF_PRE_TOKENIZERS = {"smollm": "smollm", "gpt2": "gpt2"}


@dataclass
class TokenizerSpec:
    """What a tokenizer is made of, as a model package stores it (lists of plain values)."""

    model: str  # "byte_level_bpe" or "bytes"
    pre: str  # "smollm", "gpt2" or "none"
    tokens: list[str]
    types: list[int]  # GGUF token types, one per token
    merges: list[tuple[str, str]]
    bos_id: int = -1
    eos_id: int = -1
    pad_id: int = -1
    unk_id: int = -1
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = field(default=None, repr=False)

    def build(self) -> "_core.Tokenizer":
        return _core.Tokenizer(self.model, self.pre, self.tokens, self.types, self.merges, self.bos_id,
                               self.eos_id, self.pad_id, self.unk_id, self.add_bos, self.add_eos)


def byte_tokenizer(vocab_size: int = BYTE_MIN_VOCAB) -> "_core.Tokenizer":
    """The byte tokenizer of the test models (``tiny``: vocab 512); it adds <bos> (id 1) when encoding."""
    return _core.Tokenizer.bytes(vocab_size)


def load(path: str | os.PathLike) -> "_core.Tokenizer":
    """A tokenizer file written by ``Tokenizer.save`` (FormatError when it is corrupt)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return _core.Tokenizer.load(os.fspath(path))


def spec_from_gguf(path: str | os.PathLike) -> TokenizerSpec:
    """The tokenizer metadata of a GGUF file (llama.cpp's keys), checked; FormatError (a ValueError) names the file
    and the key. The file is opened through ``GGUFCheckpoint``, so every check of the model loader (header, metadata
    lengths, tensor extents, overlaps, alignment) runs here too."""
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    meta = GGUFCheckpoint(path).metadata

    def get(key: str, kind: type, default: Any = None) -> Any:
        value = meta.get(key, default)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if value is not default and not ok:
            raise _core.FormatError(f"{path}: {key} is {_short(value)}, expected {kind.__name__}")
        return value

    def str_list(key: str) -> list[str] | None:
        value = get(key, list)
        if value is not None and not all(isinstance(v, str) for v in value):
            raise _core.FormatError(f"{path}: {key} must be a list of strings")
        return value

    model = get("tokenizer.ggml.model", str)
    if model != "gpt2":
        raise _core.FormatError(f"{path}: tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported")
    pre = get("tokenizer.ggml.pre", str, "default")
    if pre not in GGUF_PRE_TOKENIZERS:
        raise _core.FormatError(f"{path}: tokenizer.ggml.pre {pre!r} is not supported "
                                f"(supported: {', '.join(GGUF_PRE_TOKENIZERS)})")
    tokens, merges = str_list("tokenizer.ggml.tokens"), str_list("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise _core.FormatError(f"{path}: tokenizer.ggml.tokens or tokenizer.ggml.merges is missing")
    types = get("tokenizer.ggml.token_type", list) or [NORMAL] * len(tokens)
    if len(types) != len(tokens) or not all(isinstance(t, int) and not isinstance(t, bool) for t in types):
        raise _core.FormatError(f"{path}: tokenizer.ggml.token_type must hold one integer per token "
                                f"({len(types)} for {len(tokens)} tokens)")
    if get("tokenizer.ggml.add_space_prefix", bool, False):
        raise _core.FormatError(f"{path}: tokenizer.ggml.add_space_prefix is not supported for byte-level BPE")

    def token_id(key: str) -> int:
        value = get(key, int, -1)
        if not -1 <= value < len(tokens):
            raise _core.FormatError(f"{path}: {key} = {value} is not a token id (vocabulary of {len(tokens)})")
        return value

    try:
        split = [_split_merge(m, i) for i, m in enumerate(merges)]
    except _core.FormatError as exc:
        raise _core.FormatError(f"{path}: tokenizer.ggml.merges: {exc}") from None
    template = get("tokenizer.chat_template", str)
    return TokenizerSpec(
        model="byte_level_bpe", pre=GGUF_PRE_TOKENIZERS[pre], tokens=list(tokens), types=[int(t) for t in types],
        merges=split, bos_id=token_id("tokenizer.ggml.bos_token_id"), eos_id=token_id("tokenizer.ggml.eos_token_id"),
        pad_id=token_id("tokenizer.ggml.padding_token_id"), unk_id=token_id("tokenizer.ggml.unknown_token_id"),
        add_bos=get("tokenizer.ggml.add_bos_token", bool, False),
        add_eos=get("tokenizer.ggml.add_eos_token", bool, False),
        chat_template=template,
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_merge(merge: str | Sequence[str], index: int) -> tuple[str, str]:
    if isinstance(merge, str):
        parts = merge.split(" ")
    else:
        parts = list(merge)
    if len(parts) != 2 or not all(parts):
        raise _core.FormatError(f"merge {index} ({merge!r}) is not two tokens")
    return parts[0], parts[1]


def from_gguf(path: str | os.PathLike) -> "_core.Tokenizer":
    """The C++ tokenizer of a GGUF file (e.g. ``bluelm_v._paths.smollm2_gguf()``); FormatError names the file."""
    spec = spec_from_gguf(path)
    try:
        return spec.build()
    except ValueError as exc:  # merges naming unknown tokens, token types out of range, ...
        raise _core.FormatError(f"{path}: tokenizer metadata: {exc}") from None


def hf_from_gguf(path_or_spec: str | os.PathLike | TokenizerSpec) -> "tokenizers.Tokenizer":
    """HF ``tokenizers`` built from the same vocabulary and merges, with HF's own pre-tokenizer for the GGUF
    ``pre`` value (smollm: Digits(individual_digits) then ByteLevel) and the ByteLevel decoder: the reference."""
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    spec = path_or_spec if isinstance(path_or_spec, TokenizerSpec) else spec_from_gguf(path_or_spec)
    tok = HFTokenizer(models.BPE({t: i for i, t in enumerate(spec.tokens)}, list(spec.merges)))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if spec.pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(spec.tokens, spec.types) if k == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, k in zip(spec.tokens, spec.types) if k == USER_DEFINED])
    return tok


def from_hf(tok: "tokenizers.Tokenizer", *, bos_token: str | None = None, eos_token: str | None = None,
            pad_token: str | None = None, add_bos: bool = False) -> "_core.Tokenizer":
    """The C++ tokenizer for an HF byte-level BPE ``tokenizers.Tokenizer`` (ValueError for anything else)."""
    j = json.loads(tok.to_str())
    m = j.get("model") or {}
    if m.get("type") != "BPE":
        raise ValueError(f"only BPE models are supported, not {m.get('type')!r}")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges"):
        if m.get(key):  # None, "", False and 0 all mean "off"
            raise ValueError(f"BPE option {key}={m.get(key)!r} is not supported")
    if j.get("normalizer") is not None:
        raise ValueError("tokenizers with a normalizer are not supported")
    if (j.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("only the ByteLevel decoder is supported")
    pre = _hf_pre_tokenizer(j.get("pre_tokenizer"))
    vocab: dict[str, int] = dict(m["vocab"])
    special: dict[int, bool] = {}
    for a in j.get("added_tokens", []):
        vocab.setdefault(a["content"], a["id"])
        special[a["id"]] = bool(a["special"])
    n = max(vocab.values()) + 1
    tokens: list[str | None] = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    if any(t is None for t in tokens):
        raise ValueError("token ids are not contiguous")
    types = [NORMAL] * n
    for i, is_special in special.items():
        types[i] = CONTROL if is_special else USER_DEFINED

    def id_of(t: str | None) -> int:
        if t is None:
            return -1
        if t not in vocab:
            raise ValueError(f"token {t!r} is not in the vocabulary")
        return vocab[t]

    return TokenizerSpec("byte_level_bpe", pre, tokens, types,
                         [_split_merge(x, i) for i, x in enumerate(m.get("merges", []))],
                         bos_id=id_of(bos_token), eos_id=id_of(eos_token), pad_id=id_of(pad_token),
                         add_bos=add_bos).build()


def _hf_pre_tokenizer(p: Mapping | None) -> str:
    def is_byte_level(x: Mapping) -> bool:
        return x.get("type") == "ByteLevel" and x.get("use_regex", True) and not x.get("add_prefix_space", False)

    if p and is_byte_level(p):
        return "gpt2"
    if p and p.get("type") == "Sequence":
        seq = p.get("pretokenizers", [])
        if (len(seq) == 2 and seq[0].get("type") == "Digits" and seq[0].get("individual_digits")
                and is_byte_level(seq[1])):
            return "smollm"
    raise ValueError(f"pre-tokenizer {json.dumps(p)} is not supported (ByteLevel, or Digits + ByteLevel)")


# Chat templates ---------------------------------------------------------------------------------------------

_ROLE = "zq_role_zq"
_CONTENT = ("\u2063c0\u2063", "\u2063c1\u2063", "\u2063c2\u2063")


def render_template(template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool,
                    **extra: Any) -> str:
    """A chat template rendered with jinja2 as transformers does (sandbox, trim_blocks, lstrip_blocks). Templates come
    from model files, so any failure of the template itself is a ValueError saying so, and ``*`` / ``**`` that would
    build more than ``_TEMPLATE_MAX_ITEMS`` characters or items are refused before they allocate."""
    import jinja2

    try:
        return _template_env().from_string(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **extra)
    except ValueError:
        raise
    except (jinja2.TemplateError, TypeError, AttributeError, KeyError, IndexError, ArithmeticError, RecursionError,
            MemoryError) as exc:
        raise ValueError(f"chat template cannot be rendered ({type(exc).__name__}: {_short(str(exc))})") from None


_TEMPLATE_MAX_ITEMS = 1 << 20


def _template_env():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    sized = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                    if sized and len(seq) * n > _TEMPLATE_MAX_ITEMS:
                        raise ValueError(f"chat template builds a sequence of {len(seq)} x {n} items")
            if operator == "**" and isinstance(right, int) and abs(right) > 1024:
                raise ValueError(f"chat template raises to the power {right}")
            return super().call_binop(context, operator, left, right)

    return Bounded(trim_blocks=True, lstrip_blocks=True)


def _messages(pairs: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def chat_format_from_template(template: str, **extra: Any) -> "_core.ChatFormat":
    """Reduce a ChatML-family Jinja template to a ChatFormat by rendering probe conversations, then check that
    format_chat reproduces the template on further conversations (ValueError when it cannot)."""
    def render(pairs, gen=False):
        return render_template(template, _messages(pairs), gen, **extra)

    prologue = render([])
    gen_full = render([], True)
    if not gen_full.startswith(prologue):
        raise ValueError("template: the generation prompt does not follow the prologue")
    two = render([("system", _CONTENT[0]), (_ROLE, _CONTENT[1])])
    if not two.startswith(prologue) or two.count(_CONTENT[0]) != 1 or two.count(_CONTENT[1]) != 1:
        raise ValueError("template does not render each message's content once")
    sys_prefix, rest = two[len(prologue):].split(_CONTENT[0])
    between, suffix = rest.split(_CONTENT[1])
    if not between.startswith(suffix):
        raise ValueError("template: the system and user turns do not share a suffix")
    role_prefix = between[len(suffix):]
    if _ROLE not in role_prefix or role_prefix.replace(_ROLE, "system") != sys_prefix:
        raise ValueError("template: turns are not '<prefix with role><content><suffix>'")
    fmt = _core.ChatFormat()
    fmt.prologue = prologue
    fmt.turn_prefix = role_prefix.replace(_ROLE, "{role}")
    fmt.turn_suffix = suffix
    fmt.generation_prompt = gen_full[len(prologue):]
    user_only = render([("user", _CONTENT[2])])[len(prologue):]
    plain_user = fmt.turn_prefix.replace("{role}", "user") + _CONTENT[2] + suffix
    if user_only != plain_user:
        head = user_only[: len(user_only) - len(plain_user)]
        if not user_only.endswith(plain_user) or not head.startswith(sys_prefix) or not head.endswith(suffix):
            raise ValueError("template: what precedes a lone user turn is not a system turn")
        fmt.has_default_system = True
        fmt.default_system = head[len(sys_prefix): len(head) - len(suffix)]
    _check_chat_format(fmt, render)
    return fmt


def _check_chat_format(fmt: "_core.ChatFormat", render) -> None:
    probes = [
        [], [("user", "Hi")], [("system", "S"), ("user", "Q")], [("user", "a"), ("assistant", "b"), ("user", "c")],
        [("assistant", "first")], [("user", "multi\nline <b>")],
    ]
    for pairs in probes:
        for gen in (False, True):
            want = render(pairs, gen)
            got = _core.format_chat(fmt, pairs, gen)
            if got != want:
                raise ValueError(f"template is not of the supported ChatML family: for {pairs} it renders "
                                 f"{want!r}, the derived format gives {got!r}")


def format_chat(fmt: "_core.ChatFormat", messages: Iterable[Mapping[str, str] | tuple[str, str]],
                add_generation_prompt: bool = True) -> str:
    """The prompt text for a conversation ([{"role", "content"}] or [(role, content)])."""
    pairs = [(m["role"], m["content"]) if isinstance(m, Mapping) else tuple(m) for m in messages]
    return _core.format_chat(fmt, pairs, add_generation_prompt)


_CHAT_FIELDS = ("prologue", "turn_prefix", "turn_suffix", "has_default_system", "default_system",
                "generation_prompt")


def chat_format_to_dict(fmt: "_core.ChatFormat") -> dict:
    """The JSON object a model package's manifest stores under "chat" (docs/tokenizer.md)."""
    return {k: getattr(fmt, k) for k in _CHAT_FIELDS}


def chat_format_from_dict(d: Mapping[str, Any]) -> "_core.ChatFormat":
    unknown = sorted(set(d) - set(_CHAT_FIELDS))
    if unknown:
        raise ValueError(f"unknown chat format field(s): {', '.join(unknown)}")
    fmt = _core.ChatFormat()
    for k, v in d.items():
        if not isinstance(v, bool if k == "has_default_system" else str):
            raise TypeError(f"chat format field {k!r} has the wrong type {type(v).__name__}")
        setattr(fmt, k, v)
    return fmt
