"""The pre-tokenizer's Unicode tables against HF `tokenizers`, on every code point, and the committed header
against its generator (tools/gen_unicode_tables.py)."""
import functools
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from bluelm_v import _core

tokenizers = pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parent.parent

# Rust's char::is_numeric (HF's Digits step) already knows Unicode 17.0, Oniguruma (the ByteLevel regex) and
# our tables are at 16.0: these 13 code points, numbers new in 17.0, are the only ones HF's two steps disagree on.
DIGITS_STEP_UNICODE_17 = {*range(0x11DE0, 0x11DEA), 0x16FF4, 0x16FF5, 0x16FF6}


@functools.lru_cache(maxsize=None)
def byte_of_char() -> dict[str, int]:
    """GPT-2's byte alphabet backwards (transformers' copy, independent of ours)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def hf_pieces(pre_tokenizer, text: str) -> list[bytes]:
    back = byte_of_char()
    return [bytes(back[c] for c in piece) for piece, _ in pre_tokenizer.pre_tokenize_str(text)]


def probe(cp: int) -> str:
    """Text whose pre-tokenization tells letter, number, whitespace and other apart for the character."""
    c = chr(cp)
    return "a" + c + "?" + c + c + "a "


@pytest.mark.slow
@pytest.mark.parametrize("pre", ["gpt2", "smollm"])
def test_every_code_point_is_cut_as_hf_does(pre):
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf = byte_level if pre == "gpt2" else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    differ = []
    for i in range(0, len(cps), 8192):
        chunk = cps[i:i + 8192]
        text = "".join(probe(c) for c in chunk)
        if hf_pieces(hf, text) != _core.pretokenize(text, pre):
            differ += [c for c in chunk if hf_pieces(hf, probe(c)) != _core.pretokenize(probe(c), pre)]
    allowed = DIGITS_STEP_UNICODE_17 if pre == "smollm" else set()
    unexpected = sorted(set(differ) - allowed)
    assert not unexpected, (f"{len(unexpected)} code points classed unlike tokenizers {tokenizers.__version__} "
                            f"(tables: Unicode {_core.unicode_version}): {[hex(c) for c in unexpected[:20]]}")


def test_classes_match_unicodedata_on_assigned_characters():
    """Python 3.11's unicodedata (Unicode 14.0) and our 16.0 tables agree wherever 14.0 assigns a character."""
    classes = _core.unicode_char_classes(0x110000)
    code = {"L": 1, "N": 2}
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        if cat in ("Cn", "Cs"):
            continue
        white = cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85
        want = 3 if white else code.get(cat[0], 0)
        assert classes[cp] == want, hex(cp)
    assert _core.unicode_version == "16.0.0"


def test_committed_tables_are_the_generator_output():
    ud2 = pytest.importorskip("unicodedata2")
    if ud2.unidata_version != _core.unicode_version:
        pytest.skip(f"unicodedata2 has Unicode {ud2.unidata_version}; the tables were made with {_core.unicode_version}")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_unicode_tables.py"), "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
