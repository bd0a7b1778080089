"""Model adapters: hf (a tiny randomly initialised transformers LLaVA saved to tmp), torch (the reference model's
``load_vlm`` interface), replay file formats, and the open registry."""
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation.adapters import ADAPTERS, ModelAdapter, make_adapter, register_adapter
from bluelm_v.evaluation.errors import AdapterError, SampleError
from bluelm_v.image import decode_base64
from eval_helpers import png_base64, vqa_rows, write_tsv

MESSAGE = [{"type": "image", "value": decode_base64(png_base64(1))}, {"type": "text", "value": "What is written?"}]


def save_tiny_llava(out: Path) -> Path:
    """A 2-layer LLaVA (CLIP vision + Llama text) with random weights and a word-level tokenizer, saved locally."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<s>", "</s>", "<image>", "<pad>", "USER:", "ASSISTANT:", "What", "is", "written?", "stop"]
    words += [chr(c) for c in range(33, 127)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>", pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ 'USER: ' if m['role'] == 'user' else 'ASSISTANT: ' }}{% for c in "
                "m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
                "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    image_proc = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    proc = transformers.LlavaProcessor(
        image_processor=image_proc(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}), tokenizer=fast,
        patch_size=14, vision_feature_select_strategy="default", chat_template=template, num_additional_image_tokens=1)
    torch.manual_seed(0)
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, image_size=28, patch_size=14,
                                                    projection_dim=16),
        text_config=transformers.LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=128),
        image_token_index=fast.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    model = transformers.LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def test_hf_adapter_generates_deterministically(tiny_llava):
    adapter = make_adapter(f"hf:{tiny_llava}", max_new_tokens=4)
    a = adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=1)
    b = adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=1)
    assert isinstance(a, str) and a == b
    assert adapter.describe()["architecture"] == "LlavaForConditionalGeneration"
    assert adapter.name == f"hf-{tiny_llava.name}"


def test_hf_adapter_end_to_end(tiny_llava, tmp_path):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    work = tmp_path / "out"
    assert main(["eval", "--model", f"hf:{tiny_llava}", "--data", f"TextVQA={path}", "--limit", "2",
                 "--max-new-tokens", "3", "--work-dir", str(work), "--no-progress"]) == 0
    (run,) = [p for p in work.glob("*/*") if p.is_dir()]
    entry = json.loads((run / "status.json").read_text())["datasets"]["TextVQA_VAL"]
    assert entry["state"] == "scored" and entry["counts"]["ok"] == 2 and entry["counts"]["rows"] == 2


def test_hf_adapter_refuses_missing_model(tmp_path):
    with pytest.raises(AdapterError, match="not found"):
        make_adapter(f"hf:{tmp_path / 'nothing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="cannot load"):
        make_adapter(f"hf:{tmp_path / 'empty'}")


def test_torch_adapter_uses_load_vlm_interface(monkeypatch):
    calls = []

    class FakeVLM:
        def generate(self, message, max_new_tokens=..., temperature=0.0):
            calls.append((message, max_new_tokens, temperature))
            return "stop"

    module = types.ModuleType("bluelm_v.models.reference")
    module.load_vlm = lambda spec: FakeVLM() if spec == "tiny" else None
    monkeypatch.setitem(sys.modules, "bluelm_v.models.reference", module)
    adapter = make_adapter("torch:tiny", max_new_tokens=7)
    assert adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=1) == "stop"
    message, max_new, temp = calls[0]
    assert message is MESSAGE and isinstance(message[0]["value"], bytes) and max_new == 7 and temp == 0.0
    assert adapter.name == "torch-tiny"


def test_torch_adapter_with_the_reference_model(tmp_path):
    try:
        import bluelm_v.models.reference as reference  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("bluelm_v.models.reference (the PyTorch reference model, branch `model`) is not merged yet")
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    assert main(["eval", "--model", "torch:tiny", "--data", f"TextVQA={path}", "--max-new-tokens", "4",
                 "--work-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    (report,) = (tmp_path / "out").glob("*/*/report.md")
    text = report.read_text()
    assert "tiny (random weights, seed 0)" in text  # the row's weights column
    assert "**random weights**: this number says nothing about a trained model" in text


def test_torch_adapter_without_reference_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "bluelm_v.models.reference", None)
    with pytest.raises((AdapterError, ImportError)):
        make_adapter("torch:tiny")


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "json", "xlsx"])
def test_replay_reads_vlmevalkit_formats(tmp_path, fmt):
    import pandas as pd

    frame = pd.DataFrame({"index": [1, 2, 3], "question": ["a", "b", "c"], "prediction": ["stop", "", "B"]})
    path = tmp_path / f"m_TextVQA_VAL.{fmt}"
    if fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    elif fmt == "json":
        path.write_text(json.dumps({"1": "stop", "2": "", "3": "B"}))
    else:
        pytest.importorskip("openpyxl")
        frame.to_excel(path, index=False, engine="openpyxl")
    adapter = make_adapter(f"replay:{path}")
    assert adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=1) == "stop"
    assert adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=2) == ""
    with pytest.raises(SampleError):
        adapter.generate(MESSAGE, dataset="TextVQA_VAL", index=4)


def test_replay_bad_files(tmp_path):
    bad = tmp_path / "p.tsv"
    bad.write_text("idx\tpred\n1\tA\n")
    with pytest.raises(AdapterError, match="'index' column"):
        make_adapter(f"replay:{bad}").generate(MESSAGE, dataset="X", index=1)
    with pytest.raises(AdapterError, match="delay"):
        make_adapter(f"replay:{bad}?delay=soon")


def test_registry_is_open():
    class Echo(ModelAdapter):
        kind = "echo"

        def generate(self, message, *, dataset, index):
            return message[-1]["value"]

    sys.modules["tests_echo_adapter"] = types.SimpleNamespace(Echo=Echo)
    register_adapter("echo", "tests_echo_adapter:Echo")
    try:
        assert make_adapter("echo:x").generate(MESSAGE, dataset="d", index=0) == "What is written?"
    finally:
        ADAPTERS.pop("echo")
        sys.modules.pop("tests_echo_adapter")


def test_hf_adapter_batches_equal_batch_one(tiny_llava):
    messages = [[{"type": "image", "value": decode_base64(png_base64(i))},
                 {"type": "text", "value": "What is written?" + " stop" * (i % 3)}] for i in range(5)]
    single = make_adapter(f"hf:{tiny_llava}", max_new_tokens=6)
    one_by_one = [single.generate(m, dataset="TextVQA_VAL", index=i) for i, m in enumerate(messages)]
    batched = make_adapter(f"hf:{tiny_llava}", max_new_tokens=6, batch_size=3)
    got = batched.generate_batch(messages[:3], dataset="TextVQA_VAL", indices=[0, 1, 2])
    got += batched.generate_batch(messages[3:], dataset="TextVQA_VAL", indices=[3, 4])
    assert got == one_by_one and len(set(one_by_one)) > 1  # prompts of different lengths, padded on the left


def test_eval_batch_size_gives_the_same_predictions(tiny_llava, tmp_path):
    rows = vqa_rows(5)
    for i, row in enumerate(rows):
        row["question"] = "What is" + " stop" * (i % 3)
    path = write_tsv(tmp_path / "t.tsv", rows)
    out = {}
    for batch in (1, 4):
        work = tmp_path / f"out{batch}"
        assert main(["eval", "--model", f"hf:{tiny_llava}", "--data", f"TextVQA={path}", "--max-new-tokens", "5",
                     "--work-dir", str(work), "--no-progress", "--batch-size", str(batch)]) == 0
        (tsv,) = work.glob("*/*/*_TextVQA_VAL.tsv")
        out[batch] = tsv.read_text()
    assert out[1] == out[4]
    assert main(["eval", "--model", f"replay:{tmp_path}", "--data", f"TextVQA={path}", "--work-dir",
                 str(tmp_path / "o"), "--no-progress", "--batch-size", "2"]) == 1


def test_torch_adapter_batches_through_eval(tmp_path):
    pytest.importorskip("torch")
    rows = vqa_rows(4)
    for i, row in enumerate(rows):
        row["question"] = "What is" + " written" * i
    path = write_tsv(tmp_path / "t.tsv", rows)
    out = {}
    for batch in (1, 3):
        work = tmp_path / f"out{batch}"
        assert main(["eval", "--model", "torch:tiny", "--data", f"TextVQA={path}", "--max-new-tokens", "4",
                     "--work-dir", str(work), "--no-progress", "--batch-size", str(batch)]) == 0
        (tsv,) = work.glob("*/*/*_TextVQA_VAL.tsv")
        out[batch] = tsv.read_text()
    assert out[1] == out[3]
    assert main(["eval", "--model", "torch:tiny", "--data", f"TextVQA={path}", "--work-dir", str(tmp_path / "t"),
                 "--no-progress", "--batch-size", "2", "--temperature", "0.5"]) == 1
    assert not (tmp_path / "t").exists()  # refused before any sample
