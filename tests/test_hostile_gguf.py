"""Issue 19, GGUF: tensor-info damage that passed every loader (offsets overlapping, unaligned, wrapping around
2^64; a type changed so that two tensors overlap), a NaN fp16 scale carried into a package, and the tokenizer entry
points that bypassed GGUFCheckpoint's checks. Each case is made as it was reproduced, and every entry point must
refuse it with a FormatError naming the file and the tensor or key."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from test_checkpoints import TINY, tiny_lm, write_gguf  # noqa: E402,F401  (tiny_lm is a fixture)

from bluelm_v import FormatError  # noqa: E402
from bluelm_v import tokenizer as T  # noqa: E402
from bluelm_v.export import package  # noqa: E402
from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402

Q = gguf.GGMLQuantizationType


def entry_points(path, tmp_path):
    """Every way a GGUF file is read: (name, call)."""
    return [
        ("GGUFCheckpoint", lambda: GGUFCheckpoint(path)),
        ("tokenizer.spec_from_gguf", lambda: T.spec_from_gguf(path)),
        ("tokenizer.from_gguf", lambda: T.from_gguf(path)),
        ("load_model", lambda: load_model(path)),
        ("package", lambda: package(path, tmp_path / "pkg")),
    ]


def assert_refused(path, tmp_path, pattern):
    for name, call in entry_points(path, tmp_path):
        with pytest.raises(FormatError, match=pattern) as info:
            call()
        assert str(path) in str(info.value), f"{name}: the error does not name the file: {info.value}"


@pytest.fixture
def q4_1_file(tmp_path, tiny_lm):
    """The tiny LLM with its matrices in Q4_1 (as the SmolLM2 file), norms in F32."""
    state = tiny_lm.state_dict()
    qtypes = {}
    for i in range(TINY.llm.layers):
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            qtypes[f"blk.{i}.{n}.weight"] = Q.Q4_1
    qtypes["token_embd.weight"] = Q.Q4_1
    return write_gguf(tmp_path / "q4_1.gguf", state, TINY.llm, qtypes=qtypes)


def info_positions(path, name):
    """Byte positions of tensor ``name``'s type and offset fields in its tensor info."""
    t = next(t for t in GGUFCheckpoint(path)._reader.tensors if t.name == name)
    sizes = [int(p.nbytes) for p in t.field.parts]
    base = int(t.field.offset)
    return base + sum(sizes[:4]), base + sum(sizes[:5])


def rewrite(path, out, edits):
    data = bytearray(path.read_bytes())
    for pos, raw in edits:
        data[pos:pos + len(raw)] = raw
    out.write_bytes(bytes(data))
    return out


def relative_offset(path, name):
    t = next(t for t in GGUFCheckpoint(path)._reader.tensors if t.name == name)
    return int(t.field.parts[-1][0])


def test_the_clean_file_loads_through_every_entry_point(q4_1_file, tmp_path):
    for name, call in entry_points(q4_1_file, tmp_path):
        assert call() is not None, name


def test_tensor_offset_overlapping_another_is_refused(q4_1_file, tmp_path):
    _, pos = info_positions(q4_1_file, "blk.0.ffn_up.weight")
    other = relative_offset(q4_1_file, "blk.0.ffn_gate.weight")  # same type and shape
    path = rewrite(q4_1_file, tmp_path / "overlap.gguf", [(pos, other.to_bytes(8, "little"))])
    assert_refused(path, tmp_path, "tensors must not overlap")


def test_unaligned_tensor_offset_is_refused(q4_1_file, tmp_path):
    name = GGUFCheckpoint(q4_1_file)._reader.tensors[-1].name
    _, pos = info_positions(q4_1_file, name)
    path = rewrite(q4_1_file, tmp_path / "unaligned.gguf",
                   [(pos, (relative_offset(q4_1_file, name) - 16).to_bytes(8, "little"))])
    assert_refused(path, tmp_path, f"tensor {name} offset \\d+ is not a multiple of the file's alignment 32")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the gguf package's uint64 addition
def test_tensor_offset_wrapping_around_2_64_is_refused(q4_1_file, tmp_path):
    # 2^64 - 32 landed 32 bytes before the data section (uint64 addition in the gguf package).
    name = GGUFCheckpoint(q4_1_file)._reader.tensors[1].name
    _, pos = info_positions(q4_1_file, name)
    path = rewrite(q4_1_file, tmp_path / "wrap.gguf", [(pos, (2**64 - 32).to_bytes(8, "little"))])
    assert_refused(path, tmp_path, f"tensor {name} offset 18446744073709551584 needs bytes")


def test_tensor_with_no_dimensions_is_refused(q4_1_file, tmp_path):
    # Found by `make fuzz` (tests/test_fuzz_readers.py): eight zero bytes over a tensor's n_dims (and the low half of
    # its first dimension) left it with an empty shape, and the extent check raised IndexError on shape[0].
    t = next(t for t in GGUFCheckpoint(q4_1_file)._reader.tensors if t.name == "output_norm.weight")
    sizes = [int(p.nbytes) for p in t.field.parts]
    n_dims_pos = int(t.field.offset) + sizes[0] + sizes[1]
    path = rewrite(q4_1_file, tmp_path / "no_dims.gguf", [(n_dims_pos, bytes(8))])
    assert_refused(path, tmp_path, "tensor output_norm.weight has no dimensions")


@pytest.mark.parametrize("new_type", [Q.Q8_0, Q.F32])
def test_type_changed_so_tensors_overlap_is_refused(q4_1_file, tmp_path, new_type):
    type_pos, _ = info_positions(q4_1_file, "blk.0.attn_q.weight")
    path = rewrite(q4_1_file, tmp_path / "retyped.gguf", [(type_pos, int(new_type).to_bytes(4, "little"))])
    assert_refused(path, tmp_path, "tensors must not overlap")


def test_nan_fp16_scale_is_not_carried_into_a_package(q4_1_file, tmp_path):
    ck = GGUFCheckpoint(q4_1_file)
    t = next(t for t in ck._reader.tensors if t.name == "blk.1.ffn_down.weight")
    for at, what in ((0, "scale"), (2, "minimum")):
        pos = int(t.data_offset) + 20 * 5 + at  # block 5
        path = rewrite(q4_1_file, tmp_path / f"nan{at}.gguf", [(pos, (0x7E00).to_bytes(2, "little"))])
        with pytest.raises(FormatError, match=f"blk.1.ffn_down.weight \\(Q4_1\\) block 5 has a non-finite fp16 {what}"):
            package(path, tmp_path / "pkg")
        with pytest.raises(FormatError, match="non-finite"):
            load_model(path)  # dequantized for the reference model: the NaN values are refused there too


def test_non_finite_f32_value_is_refused(q4_1_file, tmp_path):
    t = next(t for t in GGUFCheckpoint(q4_1_file)._reader.tensors if t.name == "output_norm.weight")
    path = rewrite(q4_1_file, tmp_path / "inf.gguf", [(int(t.data_offset) + 8, np.float32(np.inf).tobytes())])
    pattern = "output_norm.weight \\(F32\\) holds 1 non-finite values, the first at index 2"
    with pytest.raises(FormatError, match=pattern):
        package(path, tmp_path / "pkg", quant="f32")


def _string_value_position(path, key, index=None):
    field = GGUFCheckpoint(path)._reader.fields[key]
    if index is None:
        return int(field.offset) + sum(int(p.nbytes) for p in field.parts[:-2])  # the string's length
    part = field.parts[field.data[index]]  # the string bytes of element `index`
    pos = int(field.offset) + sum(int(p.nbytes) for p in field.parts[:field.data[index]])
    return pos, int(part.nbytes)


@pytest.mark.parametrize("damage", ["token_utf8", "merge_shape", "token_type_kind", "eos_out_of_range",
                                    "template_length"])
def test_tokenizer_entry_points_name_the_file_and_key(q4_1_file, tmp_path, damage):
    """The tokenizer readers went straight to gguf.GGUFReader: raw IndexError / ValueError / UnicodeDecodeError."""
    reader = GGUFCheckpoint(q4_1_file)._reader
    if damage == "token_utf8":
        pos, n = _string_value_position(q4_1_file, "tokenizer.ggml.tokens", 300)
        edits, pattern = [(pos, b"\xff" * n)], "tokenizer.ggml.tokens"
    elif damage == "merge_shape":
        pos, n = _string_value_position(q4_1_file, "tokenizer.ggml.merges", 3)
        edits, pattern = [(pos, b"x" * n)], "tokenizer.ggml.merges: merge 3"
    elif damage == "token_type_kind":
        f = reader.fields["tokenizer.ggml.token_type"]
        pos = int(f.offset) + sum(int(p.nbytes) for p in f.parts[:2])  # the array's element type: int32 -> string
        edits, pattern = [(pos, (8).to_bytes(4, "little"))], "runs past the end of the file"
    elif damage == "eos_out_of_range":
        f = reader.fields["tokenizer.ggml.eos_token_id"]
        pos = int(f.offset) + sum(int(p.nbytes) for p in f.parts[:-1])
        edits = [(pos, (10**6).to_bytes(4, "little"))]
        pattern = "tokenizer.ggml.eos_token_id = 1000000 is not a token id"
    else:
        f = reader.fields["tokenizer.chat_template"]
        pos = int(f.offset) + sum(int(p.nbytes) for p in f.parts[:-2])
        edits, pattern = [(pos, (2**40).to_bytes(8, "little"))], "string"
    path = rewrite(q4_1_file, tmp_path / f"{damage}.gguf", edits)
    for name, call in (("spec_from_gguf", lambda: T.spec_from_gguf(path)), ("from_gguf", lambda: T.from_gguf(path))):
        with pytest.raises(FormatError, match=pattern) as info:
            call()
        assert str(path) in str(info.value), f"{name}: {info.value}"


def test_package_of_the_smollm2_file_is_unchanged(smollm2_gguf, tmp_path):
    """The checks refuse nothing real: SmolLM2's GGUF (Q4_1, 272 tensors) still passes every entry point."""
    spec = T.spec_from_gguf(smollm2_gguf)
    assert len(spec.tokens) == 49152 and spec.pre == "smollm"
    ck = GGUFCheckpoint(smollm2_gguf)
    for name in ck.tensor_names():
        ck.raw(name)
    assert json.dumps(ck.llm_config().vocab) == "49152"
