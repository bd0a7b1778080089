"""Properties of the physical latency model (not its fit: see test_sim_reproduce.py)."""
import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from bluelm_v import dynres
from bluelm_v.config import Sourced
from bluelm_v.sim import load_device, simulate
from bluelm_v.sim.model import CostModel
from bluelm_v.sim.simulate import resolve_model
from bluelm_v.sim.workload import deployment_for, minicpm_slices

D9300 = "dimensity-9300"
DEVICES = ("dimensity-9300", "dimensity-9400", "snapdragon-8-gen-3", "this-cpu")


def cost_model(device=D9300, **overrides):
    cfg, work = resolve_model("bluelm-v-3b")
    dev = load_device(device)
    return CostModel(work, dev, deployment_for(cfg, dev.has_npu, **overrides))


def test_workload_counts_match_the_papers_sizes():
    _, w = resolve_model("bluelm-v-3b")
    assert 2.6e9 < w.llm_linear_params + w.head_params < 2.8e9  # "2.7B"
    assert 0.40e9 < w.vit_block_params + w.vit_other_params < 0.42e9  # "400M"
    tile_tflop = (w.vit_linear_flops(1) + w.vit_attention_flops(1)) / 1e12
    assert 0.64 < tile_tflop < 0.69  # SigLIP so400m [H4]: about 0.67 TFLOP per tile
    assert w.image_tokens_per_tile == 196 and w.vit_tokens == 729


def test_table5_pipeline_is_4_4_1_with_conv_hidden_behind_the_npu():
    b = simulate("bluelm-v-3b", D9300, (768, 1536), 2048)
    assert b.tiles == 9 and b.tile_calls == [(4, 4), (4, 4), (1, 1)]
    assert b.encode_s == pytest.approx(2.06, rel=0.02) and b.pipeline_hidden_s == pytest.approx(0.2, rel=0.05)
    # explicit overlap: the second Conv2D group ends before the first ViT call does
    ev = {e["stage"]: e for e in b.events}
    assert ev["conv1"]["end_s"] < ev["vit0"]["end_s"] and ev["vit1"]["start_s"] == pytest.approx(ev["vit0"]["end_s"])
    serial = simulate("bluelm-v-3b", D9300, (768, 1536), 2048, pipeline=False)
    assert serial.encode_s == pytest.approx(b.encode_s + b.pipeline_hidden_s, rel=1e-9)
    assert serial.pipeline_hidden_s == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_more_tiles_are_never_faster(device):
    prev = None
    for tiles in range(1, 18):
        b = simulate("bluelm-v-3b", device, tiles)
        if prev is not None:
            assert b.vit_s >= prev.vit_s - 1e-12 and b.encode_s >= prev.encode_s - 1e-12
            assert b.ttft_s >= prev.ttft_s - 1e-12 and b.peak_memory_bytes >= prev.peak_memory_bytes
        prev = b


def test_remainder_policy_auto_is_the_cheaper_of_pad_and_single():
    for tiles in range(1, 14):
        auto, pad, single = (simulate("bluelm-v-3b", D9300, tiles, remainder=r).vit_s for r in ("auto", "pad", "single"))
        assert auto == pytest.approx(min(pad, single))
    three = simulate("bluelm-v-3b", D9300, 3)
    assert three.tile_calls == [(3, 4)]  # one padded batch beats three 1-tile calls
    assert simulate("bluelm-v-3b", D9300, 3, remainder="single").tile_calls == [(1, 1)] * 3


def test_batch_sizes_reproduce_fig7_shape():
    """Fig. 7: 9 tiles in batches of 1, 2, 4, 6: latency falls, then rises, with 4 fastest."""
    t = {b: simulate("bluelm-v-3b", D9300, 9, batch=b).vit_s for b in (1, 2, 4, 6)}
    assert t[1] > t[2] > t[4] < t[6]


def test_last_chunk_is_padded_and_larger_chunks_pad_more():
    one = simulate("bluelm-v-3b", D9300, None, 128)
    two = simulate("bluelm-v-3b", D9300, None, 129)
    assert (one.chunks, two.chunks, two.padded_tokens) == (1, 2, 127)
    assert two.prefill_s == pytest.approx(2 * one.prefill_s, rel=0.05)  # a whole chunk for one token
    short = {t: simulate("bluelm-v-3b", D9300, None, 100, chunk=t) for t in (128, 512, 2048)}
    assert short[128].prefill_s < short[512].prefill_s < short[2048].prefill_s
    assert short[2048].padded_tokens == 1948
    dynamic = simulate("bluelm-v-3b", D9300, None, 100, chunk=2048, attention="dynamic")
    assert dynamic.padded_tokens == 0 and dynamic.prefill_s < short[2048].prefill_s


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4095))
def test_prefill_is_monotone_in_prompt_length(n):
    a = simulate("bluelm-v-3b", D9300, None, n)
    b = simulate("bluelm-v-3b", D9300, None, n + 1)
    assert b.prefill_s >= a.prefill_s - 1e-12


def test_prompt_over_the_2048_graph_moves_to_the_4096_graph():
    a = simulate("bluelm-v-3b", D9300, None, 2048)
    b = simulate("bluelm-v-3b", D9300, None, 2049)
    assert (a.kv_capacity, b.kv_capacity) == (2048, 4096)
    assert b.prefill_s / b.chunks > 1.3 * a.prefill_s / a.chunks  # attention spans twice the slots
    assert b.peak_memory_bytes > a.peak_memory_bytes
    with pytest.raises(ValueError, match="exceeds"):
        simulate("bluelm-v-3b", D9300, None, 5000)


def test_decode_is_bandwidth_bound():
    dev = load_device(D9300)
    b = simulate("bluelm-v-3b", dev, None, 2048)
    step = next(c for c in b.components if c.name == "decode_step")
    assert step.bound == "memory" and step.memory_s > 10 * step.compute_s
    fast_mem = dataclasses.replace(dev, dram_bandwidth=Sourced(2 * dev.dram_bandwidth.value, "assumed", "GB/s"))
    fast_npu = dataclasses.replace(dev, npu=dataclasses.replace(dev.npu, peak={
        k: dataclasses.replace(q, value=2 * q.value) for k, q in dev.npu.peak.items()}))
    mem2 = simulate("bluelm-v-3b", fast_mem, None, 2048).decode_tokens_per_s
    npu2 = simulate("bluelm-v-3b", fast_npu, None, 2048).decode_tokens_per_s
    assert mem2 / b.decode_tokens_per_s > 1.8  # twice the bandwidth: nearly twice the speed
    assert npu2 / b.decode_tokens_per_s < 1.03  # twice the compute: no change
    # and prefill at t128 is compute-bound the other way round
    assert simulate("bluelm-v-3b", fast_npu, None, 2048).prefill_s < 0.6 * b.prefill_s


def test_precisions_change_bytes_and_rates():
    base = simulate("bluelm-v-3b", D9300, (768, 1536), 2048)
    int8_llm = simulate("bluelm-v-3b", D9300, (768, 1536), 2048, llm_weights="int8")
    assert int8_llm.decode_tokens_per_s < 0.65 * base.decode_tokens_per_s
    assert int8_llm.init_s > base.init_s and int8_llm.peak_memory_bytes > base.peak_memory_bytes
    fp16_vit = simulate("bluelm-v-3b", D9300, (768, 1536), 2048, vit_weights="fp16")
    assert fp16_vit.init_s > base.init_s and fp16_vit.prefill_s == pytest.approx(base.prefill_s)
    f16_kv = simulate("bluelm-v-3b", D9300, (768, 1536), 2048, kv_cache="f16")
    assert f16_kv.decode_tokens_per_s < base.decode_tokens_per_s
    int8_acts = simulate("bluelm-v-3b", D9300, (768, 1536), 2048, llm_compute="int8", attention_compute="int8")
    assert int8_acts.prefill_s < 0.6 * base.prefill_s  # twice the MAC rate of 16-bit activations
    with pytest.raises(ValueError, match="unknown weight precision"):
        simulate("bluelm-v-3b", D9300, 1, llm_weights="int3")
    with pytest.raises(ValueError, match="kv_cache"):
        simulate("bluelm-v-3b", D9300, 1, kv_cache="int2")


def test_cpu_only_device_runs_everything_on_the_cpu_without_overlap():
    b = simulate("bluelm-v-3b", "this-cpu", (768, 1536), 2048)
    assert b.deployment["vit_on"] == "cpu" and b.deployment["llm_on"] == "cpu"
    assert b.pipeline_hidden_s == pytest.approx(0.0, abs=1e-12) and b.padded_tokens == 0
    with pytest.raises(ValueError, match="has no NPU"):
        simulate("bluelm-v-3b", "this-cpu", 1, vit_on="npu")


def test_image_arguments_and_bad_input():
    plan = dynres.plan(1080, 2400)
    by_plan = simulate("bluelm-v-3b", D9300, plan)
    by_size = simulate("bluelm-v-3b", D9300, (1080, 2400))
    assert by_plan.tiles == by_size.tiles == 9 and by_plan.ttft_s == pytest.approx(by_size.ttft_s)
    assert by_size.prompt_tokens == 9 * 196 + 16 and by_size.grid == (2, 4)
    text = simulate("smollm2-135m", D9300, None, 100)
    assert text.tiles == 0 and text.encode_s == 0 and text.decode_tokens_per_s > 100
    with pytest.raises(ValueError, match="cannot hold"):
        simulate("bluelm-v-3b", D9300, (768, 1536), 100)
    with pytest.raises(ValueError, match="no vision tower"):
        simulate("smollm2-135m", D9300, (100, 100))
    with pytest.raises(ValueError, match="tile count"):
        simulate("bluelm-v-3b", D9300, 0)
    with pytest.raises(TypeError):
        simulate("bluelm-v-3b", D9300, "768x1536")
    with pytest.raises(TypeError):
        simulate(3.5, D9300, 1)
    with pytest.raises(ValueError, match="positive integer"):
        simulate("bluelm-v-3b", D9300, 1, chunk=0)


def test_minicpm_slicing_follows_the_spec():
    assert minicpm_slices(448, 448) == (1, 1)
    assert minicpm_slices(768, 1536) == (2, 3)  # 5.9 slices' worth of area, aspect 1:2 -> 2 x 3
    assert minicpm_slices(1344, 448) == (3, 1)
    with pytest.raises(ValueError):
        minicpm_slices(0, 10)


def test_breakdown_serializes():
    d = simulate("bluelm-v-3b", D9300, (768, 1536), 2048).to_dict()
    assert d["peak_memory_gb"] == pytest.approx(d["peak_memory_bytes"] / 1e9)
    assert {c["name"] for c in d["components"]} == {"preprocess", "conv2d", "vit+projector", "prefill", "decode_step"}
