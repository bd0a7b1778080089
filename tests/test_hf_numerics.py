"""The reference's SigLIP and LLaMA against HF transformers (SiglipVisionModel, LlamaForCausalLM) built from small
random configs here, weights copied by name.

Tolerance: float32 on both sides, different kernels (HF uses SDPA attention), so agreement is to rounding:
ATOL = 1e-4 on outputs of magnitude ~3-5 (measured max |diff|: SigLIP 8e-7, LLaMA logits 2-3e-6).
"""
import dataclasses

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bluelm_v.models.checkpoint import (assign_state, build, canonical_llm_names,  # noqa: E402
                                        canonical_siglip_names, llm_config_from_hf)
from bluelm_v.models.config import VisionConfig  # noqa: E402
from bluelm_v.models.llm import LlamaForCausalLM, prefill  # noqa: E402
from bluelm_v.models.vision import SiglipVisionTower  # noqa: E402

ATOL = 1e-4


def spread_weights(model, seed):
    """Re-draw HF's tiny initial weights wider (and norms away from 1) so the comparison exercises every term."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def hf_siglip(select_layer=-1):
    cfg = transformers.SiglipVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                                          num_attention_heads=4, image_size=42, patch_size=14, layer_norm_eps=1e-6,
                                          hidden_act="gelu_pytorch_tanh")
    hf = spread_weights(transformers.SiglipVisionModel(cfg).eval(), seed=0)
    ours_cfg = VisionConfig(image_size=42, patch_size=14, hidden=48, intermediate=96, layers=3, heads=4,
                            select_layer=select_layer)
    ours = assign_state(build(lambda: SiglipVisionTower(ours_cfg)), canonical_siglip_names(hf.state_dict()),
                        where="hf")
    return hf, ours


def test_siglip_matches_hf():
    hf, ours = hf_siglip()
    pixels = torch.randn(3, 3, 42, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=pixels).last_hidden_state
        got = ours(pixels)
    assert got.shape == ref.shape == (3, 9, 48)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)


def test_siglip_select_layer_matches_hf_hidden_states():
    hf, ours = hf_siglip(select_layer=-2)
    pixels = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        got = ours(pixels)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)


def hf_llama(**overrides):
    kw = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=300, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=True, rope_theta=500000.0)
    kw.update(overrides)
    cfg = transformers.LlamaConfig(**kw)
    hf = spread_weights(transformers.LlamaForCausalLM(cfg).eval(), seed=2)
    ours_cfg = llm_config_from_hf(cfg.to_dict(), "hf config")
    ours = assign_state(build(lambda: LlamaForCausalLM(ours_cfg)), canonical_llm_names(hf.state_dict(), ours_cfg),
                        where="hf")
    return hf, ours


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False}, {"head_dim": 24, "num_key_value_heads": 1}],
                         ids=["tied-gqa", "untied", "head_dim-mqa"])
def test_llama_matches_hf(overrides):
    hf, ours = hf_llama(**overrides)
    assert ours.cfg.rope_theta == 500000.0 and ours.cfg.tie_embeddings == hf.config.tie_word_embeddings
    tokens = torch.randint(0, 300, (2, 50), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(input_ids=tokens).logits
        got = ours(ours.embed(tokens))
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    chunked = prefill(ours, ours.new_cache(2, 50), tokens=tokens, chunk=16, all_logits=True)
    torch.testing.assert_close(chunked, ref, rtol=0, atol=ATOL)


def test_llama_greedy_matches_hf_generate():
    hf, ours = hf_llama()
    prompt = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)[0, 12:]
    cache = ours.new_cache(1, 32)
    logits = prefill(ours, cache, tokens=prompt, chunk=5)
    got = []
    for _ in range(20):
        got.append(int(logits[0].argmax()))
        logits = ours(ours.embed(torch.tensor([[got[-1]]])), cache, logits="last")
    assert got == ref.tolist()


def test_hf_config_translation_refuses_what_the_reference_lacks():
    from bluelm_v import FormatError

    base = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                    num_attention_heads=4, vocab_size=100).to_dict()
    assert llm_config_from_hf(base, "x").kv_heads == 4
    with pytest.raises(FormatError, match="model_type"):
        llm_config_from_hf({**base, "model_type": "mistral"}, "x")
    with pytest.raises(FormatError, match="RoPE scaling"):
        llm_config_from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 8.0}}, "x")
    with pytest.raises(FormatError, match="missing field 'hidden_size'"):
        llm_config_from_hf({k: v for k, v in base.items() if k != "hidden_size"}, "x")
    assert dataclasses.asdict(llm_config_from_hf(base, "x"))["rms_norm_eps"] == base["rms_norm_eps"]
