"""Shapes of every reference module, and the 2x2 down-sampler against a plain statement of its rule."""
import math

import pytest

torch = pytest.importorskip("torch")

from bluelm_v.models import load_model_config  # noqa: E402
from bluelm_v.models.checkpoint import init_random, build, random_model  # noqa: E402
from bluelm_v.models.llm import LlamaForCausalLM, causal_mask  # noqa: E402
from bluelm_v.models.projector import Projector, downsample  # noqa: E402
from bluelm_v.models.vision import SiglipVisionTower  # noqa: E402
from bluelm_v.models.vlm import IMAGE_TOKEN_ID, BlueLMV  # noqa: E402

TINY = load_model_config("tiny")


def downsample_by_rule(x, grid, merge=2):
    """The rule spelled out with loops: pad odd sides with zeros at the bottom/right; cell (r, c) concatenates
    x(m*r + dy, m*c + dx) for dy, dx row-major; cells row-major."""
    b, _, c = x.shape
    side = math.ceil(grid / merge)
    out = torch.zeros(b, side * side, merge * merge * c)
    for r in range(side):
        for col in range(side):
            pieces = []
            for dy in range(merge):
                for dx in range(merge):
                    y, xx = merge * r + dy, merge * col + dx
                    pieces.append(x[:, y * grid + xx] if y < grid and xx < grid else torch.zeros(b, c))
            out[:, r * side + col] = torch.cat(pieces, dim=-1)
    return out


@pytest.mark.parametrize("grid, merge", [(27, 2), (5, 2), (4, 2), (1, 2), (7, 3)])
def test_downsample_matches_the_rule(grid, merge):
    x = torch.randn(2, grid * grid, 3)
    got = downsample(x, grid, merge)
    side = math.ceil(grid / merge)
    assert got.shape == (2, side * side, merge * merge * 3)
    torch.testing.assert_close(got, downsample_by_rule(x, grid, merge), rtol=0, atol=0)


def test_downsample_27_to_14_and_the_padding_is_zero():
    x = torch.arange(729 * 2, dtype=torch.float32).reshape(1, 729, 2) + 1  # no zeros in the input
    y = downsample(x, 27)
    assert y.shape == (1, 196, 8)
    # Cell (0, 0) is x(0,0), x(0,1), x(1,0), x(1,1).
    assert y[0, 0].tolist() == [*x[0, 0].tolist(), *x[0, 1].tolist(), *x[0, 27].tolist(), *x[0, 28].tolist()]
    # Cell (0, 13) on the right edge: x(0,26), pad, x(1,26), pad.
    assert y[0, 13].tolist() == [*x[0, 26].tolist(), 0, 0, *x[0, 53].tolist(), 0, 0]
    # The bottom-right cell holds x(26,26) and three zero pads.
    assert y[0, 195].tolist() == [*x[0, 728].tolist(), 0, 0, 0, 0, 0, 0]


def test_downsample_column_major_is_the_transposed_cell_order():
    x = torch.randn(1, 25, 4)
    row = downsample(x, 5).view(1, 3, 3, 16)
    col = downsample(x, 5, order="column_major").view(1, 3, 3, 16)
    torch.testing.assert_close(col, row.transpose(1, 2), rtol=0, atol=0)


def test_downsample_rejects_a_wrong_token_count():
    with pytest.raises(ValueError, match="5x5 = 25 tokens"):
        downsample(torch.zeros(1, 24, 4), 5)
    with pytest.raises(ValueError, match="order"):
        downsample(torch.zeros(1, 25, 4), 5, order="diagonal")


def test_vision_tower_shapes_and_select_layer():
    vt = init_random(build(lambda: SiglipVisionTower(TINY.vision)), seed=1)
    pixels = torch.randn(3, 3, 70, 70)
    out = vt(pixels)
    assert out.shape == (3, 25, TINY.vision.hidden)
    with pytest.raises(ValueError, match=r"tiles \[B, 3, 70, 70\]"):
        vt(torch.randn(1, 3, 64, 64))
    # select_layer -2: the first layer's output, without post_layernorm.
    import dataclasses

    cfg2 = dataclasses.replace(TINY.vision, select_layer=-2)
    vt2 = build(lambda: SiglipVisionTower(cfg2))
    vt2.load_state_dict(vt.state_dict())
    manual = vt.encoder.layers[0](vt.embeddings(pixels))
    torch.testing.assert_close(vt2(pixels), manual)


def test_projector_shapes():
    proj = init_random(build(lambda: Projector(TINY.projector, TINY.vision, TINY.llm.hidden)), seed=2)
    assert proj(torch.randn(2, 25, TINY.vision.hidden)).shape == (2, 9, TINY.llm.hidden)
    assert proj.norm.weight.shape == (4 * TINY.vision.hidden,)
    assert proj.linear_1.weight.shape == (TINY.llm.hidden, 4 * TINY.vision.hidden)


def test_llm_shapes_and_cache():
    lm = init_random(build(lambda: LlamaForCausalLM(TINY.llm)), seed=3)
    tokens = torch.randint(0, TINY.llm.vocab, (2, 7))
    assert lm(lm.embed(tokens)).shape == (2, 7, TINY.llm.vocab)
    cache = lm.new_cache(batch=2, capacity=10)
    assert cache.k.shape == (TINY.llm.layers, 2, TINY.llm.kv_heads, 10, TINY.llm.dim_head)
    assert lm(lm.embed(tokens), cache, logits="last").shape == (2, TINY.llm.vocab)
    assert cache.length == 7
    assert lm(lm.embed(tokens[:, :2]), cache, logits="none") is None and cache.length == 9
    with pytest.raises(ValueError, match="capacity 10"):
        lm(lm.embed(tokens[:, :2]), cache)
    cache.truncate(3)
    assert cache.length == 3
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(4)
    assert "lm_head.weight" not in dict(lm.named_parameters())  # tied embeddings


def test_causal_mask():
    m = causal_mask(2, 3)
    assert m.shape == (3, 5)
    assert torch.isinf(m).tolist() == [[False] * 3 + [True] * 2, [False] * 4 + [True], [False] * 5]


def test_vlm_shapes_and_image_splice():
    vlm = random_model(TINY, seed=0)
    assert isinstance(vlm, BlueLMV)
    tiles = torch.randn(5, 3, 70, 70)
    emb = vlm.encode_tiles(tiles, batch=2)  # batches 2 + 2 + 1
    assert emb.shape == (5, 9, TINY.llm.hidden)
    torch.testing.assert_close(emb, vlm.encode_tiles(tiles, batch=5), rtol=1e-5, atol=1e-6)
    ids = [1, 2] + [IMAGE_TOKEN_ID] * 45 + [3]
    x = vlm.embed_inputs(ids, emb.flatten(0, 1))
    assert x.shape == (1, 48, TINY.llm.hidden)
    torch.testing.assert_close(x[0, 2:47], emb.flatten(0, 1))
    torch.testing.assert_close(x[0, 47], vlm.language_model.model.embed_tokens.weight[3])
    with pytest.raises(ValueError, match="45 image placeholders but 9"):
        vlm.embed_inputs(ids, emb[0])
    with pytest.raises(ValueError, match="token ids must be in"):
        vlm.embed_inputs([TINY.llm.vocab])
    cache = vlm.language_model.new_cache()
    logits = vlm.prefill(cache, ids, tiles)
    assert logits.shape == (1, TINY.llm.vocab) and cache.length == 48


def test_random_init_is_seeded():
    a, b, c = (random_model(TINY, seed=s) for s in (7, 7, 8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["language_model.model.embed_tokens.weight"], sc["language_model.model.embed_tokens.weight"])
    assert torch.all(sa["vision_tower.post_layernorm.weight"] == 1)
