"""Checkpoint loaders: HF safetensors and GGUF files written here, round trips, and bad files giving clear errors."""
import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from bluelm_v import FormatError  # noqa: E402
from bluelm_v.models import load_model_config  # noqa: E402
from bluelm_v.models.checkpoint import (load_llm_safetensors, load_siglip_safetensors,  # noqa: E402
                                        load_vlm_safetensors, random_model, save_safetensors)
from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint, permute_rows_to_gguf, permute_rows_to_hf  # noqa: E402
from bluelm_v.models.reference import load_model, save_pretrained  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode as byte_to_unicode  # noqa: E402

TINY = load_model_config("tiny")
Q = gguf.GGMLQuantizationType


# ---- a GGUF writer for tests (llama.cpp's conventions: ne order, q/k rows permuted) ---------------------------
def tiny_vocab(n):
    table = byte_to_unicode()
    tokens = [table[b] for b in range(256)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * 256 + [3, 3, 3]
    merges = []
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    for a in letters:
        for b in letters:
            if len(tokens) == n:
                return tokens, types, merges
            tokens.append(a + b)
            types.append(1)
            merges.append(f"{a} {b}")
    raise AssertionError("vocabulary too large for this helper")


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def add_test_tokenizer(w, tokens, types, merges, template=CHATML):
    """SmolLM2's tokenizer keys (gpt2 BPE, bos 257, eos 258, no added BOS) over a test vocabulary."""
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    w.add_add_bos_token(False)
    w.add_chat_template(template)


def write_gguf(path, lm_state, cfg, qtypes=None, skip=(), extra_kv=None, shape_override=None):
    """lm_state: HF-named float tensors of a LlamaForCausalLM; qtypes: GGUF name -> quant type (default F32)."""
    qtypes = qtypes or {}
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("test-llama")
    w.add_block_count(cfg.layers)
    w.add_context_length(cfg.max_context)
    w.add_embedding_length(cfg.hidden)
    w.add_feed_forward_length(cfg.intermediate)
    w.add_head_count(cfg.heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.dim_head)
    add_test_tokenizer(w, *tiny_vocab(cfg.vocab))
    for k, v in (extra_kv or {}).items():
        w.add_string(k, v)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for hf_name, t in lm_state.items():
        if hf_name.startswith("model.layers."):
            i, rest = hf_name[len("model.layers."):].split(".", 1)
            name = f"blk.{i}.{layer[rest.removesuffix('.weight')]}.weight"
        else:
            name = names[hf_name]
        if name in skip:
            continue
        a = t.detach().numpy().astype(np.float32)
        if name.endswith("attn_q.weight"):
            a = permute_rows_to_gguf(a, cfg.heads)
        elif name.endswith("attn_k.weight"):
            a = permute_rows_to_gguf(a, cfg.kv_heads)
        if shape_override and name in shape_override:
            a = a[: shape_override[name]]
        qt = qtypes.get(name, Q.F32)
        if qt == Q.F32:
            w.add_tensor(name, np.ascontiguousarray(a))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_lm():
    return random_model(dataclasses.replace(TINY, vision=None, projector=None), seed=5, std=0.1)


@pytest.fixture
def gguf_f32(tmp_path, tiny_lm):
    return write_gguf(tmp_path / "tiny.gguf", tiny_lm.state_dict(), TINY.llm)


# ---- GGUF ---------------------------------------------------------------------------------------------------
def test_rope_row_permutation_round_trip():
    a = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of head_dim 8
    g = permute_rows_to_gguf(a, 2)
    assert g[:, 0].tolist()[:8] == [0, 12, 3, 15, 6, 18, 9, 21]  # HF rows 0, 4, 1, 5, ... of head 0 (x3 cols)
    assert np.array_equal(permute_rows_to_hf(g, 2), a)


def test_gguf_f32_loads_exactly(gguf_f32, tiny_lm):
    loaded = load_model(gguf_f32)
    assert loaded.config.llm == dataclasses.replace(TINY.llm, bos_token_id=257, eos_token_ids=(258,))
    ref = tiny_lm.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k  # q/k permutation undone exactly
    tokens = torch.randint(0, TINY.llm.vocab, (1, 20))
    torch.testing.assert_close(loaded.model(loaded.model.embed(tokens)), tiny_lm(tiny_lm.embed(tokens)), rtol=0, atol=0)


@pytest.mark.parametrize("qt", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16])
def test_gguf_quantized_tensors_and_raw_blocks(tmp_path, tiny_lm, qt):
    state = tiny_lm.state_dict()
    qtypes = {f"blk.{i}.{n}.weight": qt for i in range(TINY.llm.layers) for n in ("attn_q", "attn_k", "ffn_down")}
    qtypes["token_embd.weight"] = qt
    path = write_gguf(tmp_path / "q.gguf", state, TINY.llm, qtypes)
    ck = GGUFCheckpoint(path)
    w = state["model.layers.1.self_attn.k_proj.weight"].numpy()
    # Quantization is per row, so undoing the row permutation commutes with it: the loaded weights equal the
    # HF-layout weights quantized directly.
    expect = gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt).astype(np.float32)
    assert np.array_equal(ck.dequantize("blk.1.attn_k.weight"), expect)
    raw = ck.raw("blk.1.attn_k.weight")
    assert raw.qtype == qt.name and raw.shape == (TINY.llm.kv_dim, TINY.llm.hidden) and raw.hf_layout
    block, size = gguf.GGML_QUANT_SIZES[qt]
    if qt == Q.F16:  # plain formats come as their own dtype
        assert raw.data.dtype == np.float16 and raw.data.shape == raw.shape and block == 1
    else:  # block formats as bytes, whole blocks per row
        assert raw.data.dtype == np.uint8 and raw.data.shape == (TINY.llm.kv_dim, TINY.llm.hidden // block * size)
    assert raw.block_size == block
    assert np.array_equal(raw.data, gguf.quants.quantize(w, qt).reshape(raw.data.shape))  # the stored blocks
    stored = ck.raw("blk.1.attn_k.weight", hf_layout=False)
    assert not stored.hf_layout and np.array_equal(permute_rows_to_hf(stored.data, TINY.llm.kv_heads), raw.data)
    loaded = load_model(path)
    torch.testing.assert_close(loaded.model.model.layers[1].self_attn.k_proj.weight, torch.from_numpy(expect))


def test_gguf_tokenizer_and_template(gguf_f32):
    tok = GGUFCheckpoint(gguf_f32).tokenizer()
    ids = tok.encode("<|im_start|>user\nthe 42<|im_end|>")
    assert ids[0] == 257 and ids[-1] == 258
    assert tok.decode(ids) == "<|im_start|>user\nthe 42<|im_end|>"
    assert tok.token_to_id("th") is not None and tok.token_to_id("th") in tok.encode("th")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")
    assert tok.eos_ids == (258,) and tok.bos_id == 257


def corrupt(path, data):
    path.write_bytes(data)
    return path


def test_gguf_bad_files(tmp_path, gguf_f32, tiny_lm):
    good = gguf_f32.read_bytes()
    with pytest.raises(FormatError, match="not a GGUF file"):
        GGUFCheckpoint(corrupt(tmp_path / "magic.gguf", b"GGML" + good[4:]))
    with pytest.raises(FormatError, match="too short"):
        GGUFCheckpoint(corrupt(tmp_path / "tiny-header.gguf", good[:10]))
    with pytest.raises(FormatError, match="version 99"):
        GGUFCheckpoint(corrupt(tmp_path / "v99.gguf", good[:4] + (99).to_bytes(4, "little") + good[8:]))
    with pytest.raises(FormatError, match="impossible"):
        GGUFCheckpoint(corrupt(tmp_path / "count.gguf", good[:8] + (1 << 60).to_bytes(8, "little") + good[16:]))
    for cut in (len(good) - 100, len(good) // 2, 4000, 100):
        with pytest.raises(FormatError, match="truncated|corrupt"):
            load_model(corrupt(tmp_path / f"cut{cut}.gguf", good[:cut]))
    with pytest.raises(FileNotFoundError):
        GGUFCheckpoint(tmp_path / "absent.gguf")


def test_gguf_missing_and_misshapen_tensors(tmp_path, tiny_lm):
    state = tiny_lm.state_dict()
    path = write_gguf(tmp_path / "missing.gguf", state, TINY.llm, skip={"blk.1.ffn_up.weight"})
    with pytest.raises(FormatError, match="missing tensors blk.1.ffn_up.weight"):
        load_model(path)
    path = write_gguf(tmp_path / "shape.gguf", state, TINY.llm, shape_override={"blk.0.ffn_gate.weight": 100})
    with pytest.raises(FormatError, match=r"blk.0.ffn_gate.weight has shape \[100, 64\], the config needs \[160, 64\]"):
        load_model(path)
    path = write_gguf(tmp_path / "arch.gguf", state, TINY.llm, extra_kv={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(FormatError, match="RoPE scaling"):
        load_model(path)


# ---- safetensors --------------------------------------------------------------------------------------------
def test_safetensors_llm_round_trip_and_tied_head(tmp_path, tiny_lm):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_lm.state_dict().items()}
    save_file({**state, "lm_head.weight": state["model.embed_tokens.weight"].clone()}, str(tmp_path / "m.safetensors"))
    lm = load_llm_safetensors([tmp_path / "m.safetensors"], TINY.llm)  # tied: lm_head ignored
    assert all(torch.equal(lm.state_dict()[k], state[k]) for k in state)


def test_safetensors_siglip_hub_names(tmp_path):
    """The hub's SiglipModel files: vision_model.* prefix, text tower and pooling head present but skipped."""
    from safetensors.torch import save_file

    vt = random_model(TINY, seed=3).vision_tower
    state = {"vision_model." + k: v.contiguous() for k, v in vt.state_dict().items()}
    state["vision_model.head.probe"] = torch.zeros(1, 1, TINY.vision.hidden)
    state["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 4)
    state["logit_scale"] = torch.zeros(1)
    save_file(state, str(tmp_path / "siglip.safetensors"))
    got = load_siglip_safetensors([tmp_path / "siglip.safetensors"], TINY.vision)
    assert all(torch.equal(got.state_dict()[k], v) for k, v in vt.state_dict().items())


def test_vlm_save_pretrained_round_trip(tmp_path):
    loaded = load_model("tiny", seed=4)
    folder = save_pretrained(loaded, tmp_path / "tiny-ckpt")
    assert json.loads((folder / "config.json").read_text())["llm"]["vocab"] == 512
    again = load_model(folder)
    a, b = loaded.model.state_dict(), again.model.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert again.tokenizer.encode("héllo <|im_end|>") == loaded.tokenizer.encode("héllo <|im_end|>")
    assert again.tokenizer.eos_ids == loaded.tokenizer.eos_ids


def test_vlm_names_accept_the_llava_vision_prefix(tmp_path):
    from safetensors.torch import save_file

    vlm = random_model(TINY, seed=6)
    state = {}
    for k, v in vlm.state_dict().items():
        if k.startswith("vision_tower."):
            k = "vision_tower.vision_model." + k[len("vision_tower."):]
        state[k] = v.contiguous()
    save_file(state, str(tmp_path / "vlm.safetensors"))
    got = load_vlm_safetensors([tmp_path / "vlm.safetensors"], TINY)
    assert all(torch.equal(got.state_dict()[k], v) for k, v in vlm.state_dict().items())


def test_safetensors_bad_files(tmp_path):
    loaded = load_model("tiny", seed=4)
    folder = save_pretrained(loaded, tmp_path / "ok")
    data = (folder / "model.safetensors").read_bytes()
    for name, blob in [("trunc", data[: len(data) // 2]), ("header", data[:6]), ("garbage", b"\xff" * 64),
                       ("hugelen", (1 << 62).to_bytes(8, "little") + data[8:])]:
        (folder / "model.safetensors").write_bytes(blob)
        with pytest.raises(FormatError, match="corrupt or truncated safetensors"):
            load_model(folder)
    # A tensor missing, one of the wrong shape, one unknown.
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items()}
    missing = {k: v for k, v in state.items() if k != "mm_projector.linear_2.weight"}
    save_file(missing, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match="missing tensors mm_projector.linear_2.weight"):
        load_model(folder)
    save_file({**state, "mm_projector.linear_2.weight": torch.zeros(3, 3)}, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match=r"mm_projector.linear_2.weight has shape \[3, 3\]"):
        load_model(folder)
    save_file({**state, "mm_projector.extra": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match="unexpected tensors mm_projector.extra"):
        load_model(folder)
    save_file({**state, "mm_projector.linear_2.bias": torch.zeros(64, dtype=torch.int32)}, str(folder / "model.safetensors"))
    with pytest.raises(FormatError, match="dtype torch.int32"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="malformed JSON"):
        load_model(folder)


def test_save_safetensors_helper(tmp_path):
    vt = random_model(TINY, seed=1).vision_tower
    save_safetensors(vt, tmp_path / "v.safetensors")
    got = load_siglip_safetensors([tmp_path / "v.safetensors"], TINY.vision)
    assert all(torch.equal(got.state_dict()[k], v) for k, v in vt.state_dict().items())


def _load_all(path):
    ck = GGUFCheckpoint(path)
    ck.llm_config()
    ck.tokenizer()


def _fuzz_in_child(good_path, header_end, max_examples, queue):
    """Runs in a child process whose address space is capped at 4 GiB, so an unbounded allocation is a
    MemoryError reported as a failure (with the flips) instead of an OOM kill of the test run."""
    import resource
    import traceback

    from hypothesis import given, settings, strategies as st

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    good = good_path.read_bytes()
    target = good_path.with_name("fuzz.gguf")

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True)
    @given(st.lists(st.tuples(st.integers(0, header_end - 1), st.integers(0, 255)), min_size=1, max_size=4))
    def run(flips):
        data = bytearray(good)
        for pos, value in flips:
            data[pos] = value
        target.write_bytes(bytes(data))
        try:
            _load_all(target)
        except FormatError:
            pass
        except BaseException as exc:  # MemoryError, ZeroDivisionError, ...: report the bytes that did it
            raise AssertionError(f"flips {flips}: {type(exc).__name__}: {exc}") from exc

    try:
        run()
        queue.put("ok")
    except BaseException:
        queue.put(traceback.format_exc(limit=-6)[-3000:])


def test_gguf_reader_survives_random_corruption(tmp_path, gguf_f32):
    """Byte flips anywhere in the header and metadata give a loaded file or FormatError, nothing else, and never
    an allocation beyond 4 GiB (issue 4: a flipped block count sized a dict of billions of tensor names)."""
    import multiprocessing

    header_end = GGUFCheckpoint(gguf_f32)._reader.tensors[0].data_offset
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fuzz_in_child, args=(gguf_f32, header_end, 250, queue))
    child.start()
    child.join(300)
    if child.is_alive():
        child.kill()
        pytest.fail("the fuzz child hung for 300 s")
    assert child.exitcode == 0, f"the fuzz child died with exit code {child.exitcode}"
    assert queue.get(timeout=5) == "ok"


def _flipped(tmp_path, gguf_f32, flips):
    data = bytearray(gguf_f32.read_bytes())
    for pos, value in flips:
        data[pos] = value
    path = tmp_path / "flipped.gguf"
    path.write_bytes(bytes(data))
    return path


def _kv_value_offset(path, key):
    """Byte offset of the value of metadata ``key`` (for regression tests that flip it)."""
    reader = GGUFCheckpoint(path)._reader
    field = reader.fields[key]
    return int(field.offset) + sum(int(p.nbytes) for p in field.parts[:-1])


@pytest.mark.parametrize("key, value, match", [
    # The fuzz finds: byte 142/143 of the tiny file, the high bytes of llama.block_count (OOM: a dict of 2^60
    # expected tensor names was built), and byte 342 (llama.attention.head_count_kv = 0: ZeroDivisionError).
    ("llama.block_count", 1 << 56, r"'llama.block_count' = 72057594037927936 is outside 1..\d+"),
    ("llama.attention.head_count_kv", 0, r"'llama.attention.head_count_kv' = 0 is outside"),
    ("llama.attention.head_count", 0, r"'llama.attention.head_count' = 0 is outside"),
    ("llama.context_length", 1 << 40, r"'llama.context_length' = 1099511627776 is outside 1..1048576"),
    ("llama.embedding_length", 1 << 33, r"'llama.embedding_length' = 8589934592 is outside"),
    ("llama.feed_forward_length", 1 << 33, r"'llama.feed_forward_length' = 8589934592 is outside"),
])
def test_gguf_implausible_hyperparameters_refused_before_allocation(tmp_path, gguf_f32, key, value, match):
    reader = GGUFCheckpoint(gguf_f32)._reader
    size = reader.fields[key].parts[-1].nbytes
    if value >= 1 << (8 * size):
        value = (1 << (8 * size)) - 1  # the widest the stored type holds (still far beyond the file)
        match = match.split(" = ")[0] + " = " + str(value) + " is outside"
    pos = _kv_value_offset(gguf_f32, key)
    path = _flipped(tmp_path, gguf_f32, list(zip(range(pos, pos + size), value.to_bytes(size, "little"))))
    with pytest.raises(FormatError, match=match):
        GGUFCheckpoint(path).llm_config()


def test_gguf_fuzz_regressions(tmp_path, gguf_f32):
    """The exact flips the fuzz found, on the tiny file these tests write."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for flips in ([(142, 142)], [(143, 143)], [(342, 0)]):
        path = _flipped(tmp_path, gguf_f32, flips)
        queue = ctx.Queue()
        child = ctx.Process(target=_load_in_capped_child, args=(path, queue))
        child.start()
        child.join(120)
        assert child.exitcode == 0, f"flips {flips}: the loader child died with exit code {child.exitcode}"
        result = queue.get(timeout=5)
        assert result.startswith("FormatError") and "hyper-parameter" in result, f"flips {flips}: {result}"


def _load_in_capped_child(path, queue):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a regression is a MemoryError, not an OOM kill
    try:
        _load_all(path)
        queue.put("loaded")
    except BaseException as exc:
        queue.put(f"{type(exc).__name__}: {exc}")
