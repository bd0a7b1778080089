"""The reference model on the real SmolLM2-135M-Instruct GGUF against HF transformers' LlamaForCausalLM loaded from
the same file (transformers dequantizes the GGUF itself, offline). Both run float32 on the same dequantized
weights, so logits agree to rounding (measured max |diff| in docs/models.md; the test allows 2e-3 on logits of
magnitude ~20) and the greedy continuation is identical."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bluelm_v.models.llm import prefill  # noqa: E402
from bluelm_v.models.reference import load_model  # noqa: E402


@pytest.fixture(scope="module")
def hf_model(smollm2_gguf):
    return transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name,
                                                             torch_dtype=torch.float32).eval()


def test_reference_matches_transformers_on_smollm2(smollm2_gguf, hf_model):
    ref = load_model(smollm2_gguf)
    ids = ref.tokenizer.encode("<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n")
    with torch.no_grad():
        want = hf_model(torch.tensor([ids])).logits[0]
        got = prefill(ref.llm, ref.llm.new_cache(1, len(ids)), tokens=torch.tensor([ids]), chunk=7, all_logits=True)[0]
        assert (got - want).abs().max().item() <= 2e-3
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
        from bluelm_v.models.llm import decode_step

        cache = ref.llm.new_cache(1, len(ids) + 16)
        logits = prefill(ref.llm, cache, tokens=torch.tensor([ids]))
        mine = []
        for _ in range(len(out)):
            mine.append(int(logits[0].argmax()))
            logits = decode_step(ref.llm, cache, torch.tensor([mine[-1]]))
    assert mine == out
