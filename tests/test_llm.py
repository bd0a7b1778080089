"""LLM behaviour: chunked prefill equals one-shot prefill; decode steps equal prefill; KV cache bookkeeping.

Tolerance: float32 throughout; chunking only changes matmul shapes (summation order), so logits agree to
ATOL = 1e-4 absolute. Measured on tiny with weights drawn at std 0.2 (logits up to ~7), 200 tokens: max |diff|
1.9e-5 (t=1), 6.0e-6 (t=16), 4.6e-6 (t=128), 0 (whole prompt); at std 0.02: under 5e-7.
"""
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from bluelm_v.models import load_model_config  # noqa: E402
from bluelm_v.models.checkpoint import build, init_random  # noqa: E402
from bluelm_v.models.generate import SamplingConfig, select_token  # noqa: E402
from bluelm_v.models.llm import LlamaForCausalLM, decode_step, prefill  # noqa: E402

ATOL = 1e-4
TINY = load_model_config("tiny").llm


@pytest.fixture(scope="module")
def lm():
    # std 0.2 spreads the logits (magnitude ~10) so that agreement is a strong check, not a flat distribution
    return init_random(build(lambda: LlamaForCausalLM(TINY)), seed=11, std=0.2).eval()


def greedy_after(lm, tokens, chunk, steps=6):
    cache = lm.new_cache(1, tokens.shape[1] + steps)
    logits = prefill(lm, cache, tokens=tokens, chunk=chunk)
    out = []
    for _ in range(steps):
        t = select_token(logits[0], SamplingConfig())
        out.append(t)
        logits = decode_step(lm, cache, torch.tensor([t]))
    return out


def one_shot_logits(lm, tokens):
    with torch.no_grad():
        return lm(lm.embed(tokens))  # no cache: plain causal attention over the whole prompt


@pytest.mark.parametrize("chunk", [1, 16, 128, None])
def test_chunked_prefill_equals_one_shot(lm, chunk):
    tokens = torch.randint(0, TINY.vocab, (1, 200), generator=torch.Generator().manual_seed(0))
    ref = one_shot_logits(lm, tokens)
    cache = lm.new_cache(1, 200)
    got = prefill(lm, cache, tokens=tokens, chunk=chunk, all_logits=True)
    assert got.shape == ref.shape and cache.length == 200
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    if chunk != 1:  # the last-position-only path (t=1 is the same code as decode, tested below)
        last = prefill(lm, lm.new_cache(1, 200), tokens=tokens, chunk=chunk)
        torch.testing.assert_close(last, ref[:, -1], rtol=0, atol=ATOL)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(prompt=st.lists(st.integers(0, TINY.vocab - 1), min_size=1, max_size=160),
       chunk=st.sampled_from([1, 16, 128, 0]))
def test_chunked_prefill_property(lm, prompt, chunk):
    tokens = torch.tensor([prompt])
    chunk = chunk or len(prompt)  # 0 stands for the whole prompt in one chunk
    ref = one_shot_logits(lm, tokens)
    got = prefill(lm, lm.new_cache(1, len(prompt)), tokens=tokens, chunk=chunk, all_logits=True)
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)
    assert greedy_after(lm, tokens, chunk) == greedy_after(lm, tokens, None)


def test_decode_steps_equal_prefill_logits(lm):
    tokens = torch.randint(0, TINY.vocab, (2, 20), generator=torch.Generator().manual_seed(1))
    ref = one_shot_logits(lm, tokens)
    cache = lm.new_cache(2, 20)
    prefill(lm, cache, tokens=tokens[:, :5])
    for i in range(5, 20):
        logits = decode_step(lm, cache, tokens[:, i])
        torch.testing.assert_close(logits, ref[:, i], rtol=0, atol=ATOL)


def test_embeddings_input_equals_tokens_input(lm):
    tokens = torch.randint(0, TINY.vocab, (1, 33))
    a = prefill(lm, lm.new_cache(), tokens=tokens, chunk=8)
    b = prefill(lm, lm.new_cache(), embeds=lm.embed(tokens), chunk=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cache_prefix_reuse(lm):
    tokens = torch.randint(0, TINY.vocab, (1, 40))
    cache = lm.new_cache(1, 40)
    prefill(lm, cache, tokens=tokens[:, :30])
    cache.truncate(20)  # keep the first 20 positions, continue with a different suffix
    got = prefill(lm, cache, tokens=tokens[:, 30:40], all_logits=True)
    ref = one_shot_logits(lm, torch.cat([tokens[:, :20], tokens[:, 30:40]], dim=1))[:, 20:]
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL)


def test_prefill_argument_errors(lm):
    with pytest.raises(ValueError, match="exactly one"):
        prefill(lm, lm.new_cache())
    with pytest.raises(ValueError, match="chunk must be positive"):
        prefill(lm, lm.new_cache(), tokens=torch.zeros(1, 3, dtype=torch.long), chunk=0)
    with pytest.raises(ValueError, match="context of 1024"):
        lm(lm.embed(torch.zeros(1, 1025, dtype=torch.long)))


def test_left_padded_batch_equals_each_sequence_alone(lm):
    """Batched generation (``pad``): each row's logits at its real positions equal the row run alone, and
    greedy batched answers equal GenerationStream's, for prompts of different lengths and a chunk shorter than
    them."""
    from bluelm_v.models.generate import GenerationStream, generate, generate_batch
    from bluelm_v.models.llm import padded_mask
    from bluelm_v.models.tokenizer import Tokenizer

    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, TINY.vocab, (1, n), generator=g) for n in (3, 17, 9, 1)]
    longest = 17
    pad = torch.tensor([longest - p.shape[1] for p in prompts])
    x = torch.cat([torch.nn.functional.pad(lm.embed(p), (0, 0, longest - p.shape[1], 0)) for p in prompts])
    with torch.no_grad():
        batched = lm(x, pad=pad)  # [B, T, V]
    for b, p in enumerate(prompts):
        alone = one_shot_logits(lm, p)[0]
        assert torch.allclose(batched[b, int(pad[b]):], alone, atol=ATOL)
    mask = padded_mask(0, 4, torch.tensor([2]))[0, 0]
    assert mask[0, 0] == 0 and mask[1, 1] == 0 and torch.isinf(mask[1, 0])  # a padding query sees only itself
    assert torch.isinf(mask[2, :2]).all() and (mask[2, 2:3] == 0).all()  # real queries never see padding
    tok = Tokenizer.byte_level(TINY.vocab)
    embeds = [lm.embed(p) for p in prompts]
    alone = [generate(GenerationStream(lm, tok, e, max_new_tokens=8, chunk=4)).tokens for e in embeds]
    answers = generate_batch(lm, tok, embeds, max_new_tokens=8, chunk=4)
    assert answers == [tok.decode(t, skip_special=True) for t in alone]
    assert len({tuple(t) for t in alone}) == len(prompts)  # the answers differ: the check is not vacuous
