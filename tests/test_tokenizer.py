"""The C++ tokenizer without the SmolLM2 file: the byte tokenizer's documented layout, a byte-level BPE trained
here with HF `tokenizers` (our encode must equal HF's), the binary format against hostile files, chat formats."""
import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from bluelm_v import FormatError, LimitError, tokenizer as T

tokenizers = pytest.importorskip("tokenizers")


# The byte tokenizer ------------------------------------------------------------------------------------------

def reference_byte_encode(text: bytes, vocab: int = 512, add_bos: bool = True) -> list[int]:
    """docs/tokenizer.md's rule in plain Python (what the PyTorch reference implements)."""
    specials = list(enumerate(T.BYTE_SPECIALS)) + [(k, f"<|reserved_{k}|>") for k in range(T.BYTE_MIN_VOCAB, vocab)]
    ids, i = ([1] if add_bos else []), 0
    while i < len(text):
        for k, special in specials:
            if text.startswith(special.encode(), i):
                ids.append(k)
                i += len(special)
                break
        else:
            ids.append(T.BYTE_OFFSET + text[i])
            i += 1
    return ids


def test_byte_tokenizer_layout():
    tok = T.byte_tokenizer(512)
    assert (tok.n_vocab, tok.pad_id, tok.bos_id, tok.eos_id, tok.add_bos) == (512, 0, 1, 2, True)
    assert [tok.token_text(i) for i in range(8)] == list(T.BYTE_SPECIALS)
    assert tok.token_to_piece(T.BYTE_OFFSET + 0x41) == b"A" and tok.token_text(T.BYTE_OFFSET + 0x41) == "<0x41>"
    assert tok.token_text(511) == "<|reserved_511|>" and tok.token_type(511) == T.CONTROL
    assert tok.encode("<|im_start|>user\nhi<|im_end|>", add_special=False) == \
        [3] + [T.BYTE_OFFSET + b for b in b"user\nhi"] + [4]
    assert tok.decode([1, T.BYTE_OFFSET + 0x68, 2], skip_special=True) == "h"
    with pytest.raises(ValueError, match="vocab_size"):
        T.byte_tokenizer(100)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([512])
    with pytest.raises(TypeError, match="integers"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match="integers"):
        tok.decode([2 ** 40])
    with pytest.raises(TypeError, match="str or bytes"):
        tok.encode(123)


@given(st.lists(st.sampled_from([b"<image>", b"<eos>", b"<|im_end|>", b"<", b"|", b"\xff", b"\xe4\xbd\xa0",
                                 b"<|reserved_300|>", b"<|reserved_6|>", b"<|reserved_26"]) |
                st.binary(max_size=8), max_size=12).map(b"".join) | st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_byte_tokenizer_equals_reference_rule(data):
    tok = T.byte_tokenizer(512)
    assert tok.encode(data) == reference_byte_encode(data)
    assert tok.decode_bytes(tok.encode(data, add_special=False)) == data


# A byte-level BPE trained here ------------------------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we're late, aren't we?",
    "def main(argv):\n    for i in range(10):\n        print(f'{i:03d}')\n    return 0\n",
    "Numbers: 1234567, 3.14159, 2^31-1 = 2147483647; money $1,000,000.",
    "中文分词测试，日本語のテキスト、한국어 문장, العربية, ελληνικά, русский текст. 😀🚀",
    "   spaces   and\ttabs\n\n\nnewlines  \r\n end",
] * 20


@pytest.fixture(scope="module")
def trained():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(CORPUS, trainer)
    hf.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    return hf, T.from_hf(hf, eos_token="<|endoftext|>")


def test_trained_bpe_equals_hf(trained):
    hf, ours = trained
    assert ours.pre_tokenizer == "smollm" and ours.n_vocab == hf.get_vocab_size()
    assert ours.token_type(hf.token_to_id("<|im_start|>")) == T.CONTROL
    assert ours.token_type(hf.token_to_id("<tool>")) == T.USER_DEFINED
    texts = CORPUS[:5] + ["<|im_start|>user\nx<tool>y<|im_end|>", "a  1", "", " ", "\n\n"]
    for text in texts:
        assert ours.encode(text) == hf.encode(text).ids, text
        assert ours.decode(ours.encode(text)) == text


@given(st.text(max_size=80))
@settings(max_examples=400, deadline=None)
def test_trained_bpe_equals_hf_on_random_unicode(trained, text):
    hf, ours = trained
    ids = ours.encode(text)
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False) == text


def test_parse_special_off_equals_hf_encode_special_tokens(trained):
    hf, ours = trained
    text = "<|im_start|>a<tool>b<|im_end|>"
    hf.encode_special_tokens = True
    try:
        assert ours.encode(text, parse_special=False) == hf.encode(text).ids
    finally:
        hf.encode_special_tokens = False
    assert len(ours.encode(text, parse_special=False)) > len(ours.encode(text))


def test_from_hf_refuses_what_it_does_not_implement():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    hf = Tokenizer(models.BPE({"a": 0}, []))
    hf.decoder = decoders.ByteLevel()
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="pre-tokenizer"):
        T.from_hf(hf)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    with pytest.raises(ValueError, match="pre-tokenizer"):
        T.from_hf(hf)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.normalizer = normalizers.NFC()
    with pytest.raises(ValueError, match="normalizer"):
        T.from_hf(hf)
    with pytest.raises(ValueError, match="BPE"):
        T.from_hf(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))


# The tokenizer file ----------------------------------------------------------------------------------------

HEADER = 40  # bytes before the first token record (csrc/tokenizer/serialize.cpp)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_file_roundtrip(trained, tmp_path):
    _, ours = trained
    path = tmp_path / "tok.bin"
    ours.save(str(path))
    back = T.load(path)
    assert back.to_bytes() == ours.to_bytes() == path.read_bytes()
    assert back.encode(CORPUS[3]) == ours.encode(CORPUS[3]) and back.eos_id == ours.eos_id
    assert zlib.crc32(path.read_bytes()[:-4]) == struct.unpack("<I", path.read_bytes()[-4:])[0]
    with pytest.raises(FileNotFoundError):
        T.load(tmp_path / "missing.bin")


def test_hostile_files_give_clear_errors(trained):
    hf, ours = trained
    good = ours.to_bytes()
    body = good[:-4]
    for n in (0, 7, HEADER, HEADER + 3, len(good) // 2, len(good) - 1):
        with pytest.raises(FormatError, match="truncated|checksum|unexpected|fit"):
            T.Tokenizer.from_bytes(good[:n])
    with pytest.raises(FormatError, match="magic"):
        T.Tokenizer.from_bytes(b"GGUF" + good[4:])
    with pytest.raises(FormatError, match="version"):
        T.Tokenizer.from_bytes(with_crc(body[:8] + struct.pack("<I", 99) + body[12:]))
    # A token claiming 4 GiB, and a count of 4 G tokens: refused before anything is allocated.
    with pytest.raises(FormatError, match="claims 4294967295 bytes"):
        T.Tokenizer.from_bytes(with_crc(body[:HEADER + 1] + b"\xff\xff\xff\xff" + body[HEADER + 5:]))
    with pytest.raises(FormatError, match="cannot fit"):
        T.Tokenizer.from_bytes(with_crc(body[:32] + b"\xff\xff\xff\xff" + body[36:]))
    # A merge naming a token past the vocabulary, and one whose result is not a token.
    n_tokens, n_merges = struct.unpack("<II", body[32:40])
    assert n_merges > 0
    first_merge = len(body) - 8 * n_merges
    with pytest.raises(FormatError, match="merge 0 refers to token 999999"):
        T.Tokenizer.from_bytes(with_crc(body[:first_merge] + struct.pack("<II", 999999, 0) + body[first_merge + 8:]))
    nul = ours.token_to_id("\u0100")  # byte 0x00 in GPT-2's alphabet; "\u0100\u0100" is no token
    with pytest.raises(FormatError, match="makes .* not in the vocabulary"):
        T.Tokenizer.from_bytes(with_crc(body[:first_merge] + struct.pack("<II", nul, nul) + body[first_merge + 8:]))
    # A flipped byte in a token's text is caught by the checksum.
    flipped = bytearray(good)
    flipped[HEADER + 5] ^= 0x01
    with pytest.raises(FormatError, match="checksum|UTF-8|twice"):
        T.Tokenizer.from_bytes(bytes(flipped))


def test_spec_errors_name_the_problem():
    with pytest.raises(FormatError, match="'zz' 'q'.*not in the vocabulary"):
        T.TokenizerSpec("byte_level_bpe", "gpt2", ["a", "b"], [1, 1], [("zz", "q")]).build()
    with pytest.raises(FormatError, match="unknown type 9"):
        T.TokenizerSpec("byte_level_bpe", "gpt2", ["a"], [9], []).build()
    with pytest.raises(ValueError, match="unknown pre-tokenizer"):
        T.TokenizerSpec("byte_level_bpe", "llama3", ["a"], [1], []).build()
    with pytest.raises(FormatError, match="bos id 5 is outside"):
        T.TokenizerSpec("byte_level_bpe", "gpt2", ["a"], [1], [], bos_id=5).build()
    with pytest.raises(FormatError, match="byte vocabulary has no token for byte 0x0"):
        T.TokenizerSpec("bytes", "none", ["a"], [1], []).build()
    assert issubclass(LimitError, ValueError)


def test_stream_decoder_python():
    tok = T.byte_tokenizer()
    dec = T.StreamDecoder(tok)
    text = "é中😀"
    out = [dec.push(i) for i in tok.encode(text, add_special=False)]
    assert "".join(out) + dec.flush() == text
    assert out[0] == "" and out[1] == "é" and out[-1] == "😀"


# Chat formats ----------------------------------------------------------------------------------------------

def test_chat_format_dict_roundtrip_and_errors():
    fmt = T.chat_format_from_dict({"turn_prefix": "[{role}] ", "turn_suffix": "\n", "has_default_system": True,
                                   "default_system": "Be brief.", "generation_prompt": "[assistant] "})
    assert T.format_chat(fmt, [("user", "hi")]) == "[system] Be brief.\n[user] hi\n[assistant] "
    assert T.chat_format_from_dict(T.chat_format_to_dict(fmt)).default_system == "Be brief."
    with pytest.raises(ValueError, match="unknown chat format field"):
        T.chat_format_from_dict({"bos": "<s>"})
    with pytest.raises(TypeError, match="has_default_system"):
        T.chat_format_from_dict({"has_default_system": "yes"})


def test_chat_format_from_template_refuses_other_families():
    llama2 = "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}" \
             "{{ m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(ValueError, match="template"):
        T.chat_format_from_template(llama2)
    plain = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}" \
            "{% if add_generation_prompt %}<assistant>{% endif %}"
    fmt = T.chat_format_from_template(plain)
    assert (fmt.turn_prefix, fmt.turn_suffix, fmt.has_default_system) == ("<{role}>", "</s>", False)


def test_lone_surrogate_is_a_clear_unicode_error(trained):
    """Issue 19: a str holding a lone surrogate (json.loads gives one for "\\ud800") raised pybind's "Unable to cast
    Python instance of type <class 'str'> to C++ type '?'". It is not Unicode text: refused with a UnicodeEncodeError
    (a ValueError) naming the argument and position; bytes with the surrogate's encoding go through as bytes."""
    text = json_loads('"ab\\ud800c"')
    for tok in (trained[1], T.byte_tokenizer()):
        with pytest.raises(UnicodeEncodeError, match="text holds a lone surrogate") as info:
            tok.encode(text)
        assert isinstance(info.value, ValueError) and (info.value.start, info.value.end) == (2, 3)
        raw = text.encode("utf-8", "surrogatepass")
        assert tok.decode(tok.encode(raw, add_special=False)) == raw.decode("utf-8", "replace")
        assert tok.encode(text.encode("utf-8", "replace")) == tok.encode("ab?c")


def json_loads(s):
    import json

    return json.loads(s)
