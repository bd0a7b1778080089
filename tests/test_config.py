"""The typed config loader and the shipped configs."""
import dataclasses
import json
from typing import Literal, Optional

import pytest

from bluelm_v.config import ConfigError, Sourced, from_dict, list_configs, load, load_raw
from bluelm_v._paths import configs_dir


@dataclasses.dataclass
class Inner:
    name: str
    size: int
    ratio: float = 1.0


@dataclasses.dataclass
class Outer:
    name: str
    kind: Literal["a", "b"]
    inner: Inner
    items: list[Inner]
    table: dict[str, Sourced]
    pair: tuple[int, int]
    maybe: Optional[int] = None


GOOD = {
    "name": "x", "kind": "a", "inner": {"name": "i", "size": 3}, "items": [{"name": "j", "size": 1, "ratio": 2}],
    "table": {"bw": {"value": 76.8, "source": "B2", "unit": "GB/s"}}, "pair": [1, 2],
}


def test_from_dict_builds_nested_types():
    o = from_dict(Outer, GOOD)
    assert o.inner.size == 3 and o.items[0].ratio == 2.0 and o.table["bw"].value == 76.8 and o.pair == (1, 2)
    assert o.maybe is None


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"inner": {"name": "i"}}, "missing required field 'size'"),
        ({"inner": {"name": "i", "size": "3"}}, "expected an integer"),
        ({"inner": {"name": "i", "size": True}}, "expected an integer"),
        ({"extra": 1}, "unknown field"),
        ({"kind": "c"}, "is not one of"),
        ({"items": {"name": "j"}}, "expected a list"),
        ({"pair": [1]}, "expected 2 items"),
        ({"table": {"bw": {"value": "fast", "source": "B2"}}}, "expected a number"),
    ],
)
def test_from_dict_names_the_bad_field(patch, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, {**GOOD, **patch}, where="f.json")


def test_malformed_and_versionless_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,,}')
    with pytest.raises(ConfigError, match="malformed JSON at line 1"):
        load_raw("models", bad)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 99}))
    with pytest.raises(ConfigError, match="version 99"):
        load_raw("models", old)
    with pytest.raises(ConfigError, match="unknown suite config"):
        load_raw("suites", "no-such-suite")
    with pytest.raises(ValueError, match="config kind"):
        list_configs("widgets")


def test_configs_ship_with_the_package():
    assert (configs_dir() / "suites" / "dynres-presets.json").is_file()
    assert "dynres-presets" in list_configs("suites")
    for kind in ("models", "devices", "suites"):
        for name in list_configs(kind):
            assert load_raw(kind, name)["version"] == 1


def test_load_typed(tmp_path):
    p = tmp_path / "o.json"
    p.write_text(json.dumps({"version": 1, **GOOD}))
    assert load("models", p, Outer).name == "x"


def test_shipped_model_configs():
    from bluelm_v.models import load_model_config

    big = load_model_config("bluelm-v-3b")
    assert 2.6e9 < big.llm.param_count() < 2.8e9  # the paper's "2.7B"
    assert big.vision.tokens_per_tile == 729 and big.image_tokens_per_tile() == 196
    assert big.deploy.chunk == 128 and big.deploy.tile_batch == 4
    tiny = load_model_config("tiny")
    assert tiny.vision.grid % 2 == 1  # odd ViT grid: the down-sampler's zero padding is exercised
    smol = load_model_config("smollm2-135m")
    assert not smol.multimodal and smol.llm.kv_heads == 3
    with pytest.raises(ValueError, match="no vision tower"):
        smol.image_tokens_per_tile()


def test_model_config_rejects_inconsistent_shapes(tmp_path):
    from bluelm_v.models import load_model_config

    raw = load_raw("models", "tiny")
    raw["llm"]["kv_heads"] = 3  # 4 heads are not a multiple of 3 KV heads
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="kv_heads"):
        load_model_config(p)
