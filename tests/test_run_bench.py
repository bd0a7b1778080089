"""Commands people know from llama.cpp: bluelm-v run and bench take a GGUF (or a config name) directly, packaging it
once into the cache; bench prints llama-bench's pp/tg table (or JSON); run reads its prompt from a file."""
import json
from pathlib import Path

import pytest

from bluelm_v.cli import main
from bluelm_v.export import cached
from bluelm_v.export.cached import cached_package, is_package, source_key, writer_digest


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLUELM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cached_package_is_made_once_and_follows_its_source(cache, tmp_path):
    first = cached_package("tiny")
    assert is_package(first) and first.parent == cache / "packages"
    assert cached_package("tiny") == first  # reused
    assert cached_package(str(first)) == first  # a package is itself
    assert cached_package("tiny", quant="q8_0") != first
    assert not [p for p in first.parent.iterdir() if ".tmp" in p.name or p.name.startswith(first.name + ".")]


def test_cached_package_key_follows_the_package_writers_code(tmp_path, monkeypatch):
    """A package made by other writer code (an older bluelm-v without a field the engine now needs) is not reused:
    the key covers the sources of bluelm_v.export and bluelm_v.models."""
    root = tmp_path / "pkg"
    (root / "export").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "export" / "package.py").write_text("WRITES = 1\n")
    (root / "models" / "config.py").write_text("X = 1\n")
    before = writer_digest(root)
    (root / "export" / "package.py").write_text("WRITES = 2\n")
    writer_digest.cache_clear()
    assert writer_digest(root) != before
    key = source_key("tiny", "q4_0", "q8_0")
    monkeypatch.setattr(cached, "writer_digest", lambda: "another writer")
    assert source_key("tiny", "q4_0", "q8_0") != key
    writer_digest.cache_clear()


def test_run_takes_a_gguf_directly_and_a_prompt_file(cache, tmp_path, capsys):
    prompt = tmp_path / "q.txt"
    prompt.write_text("What is the capital of France?")
    assert main(["run", "--model", "smollm2-135m-gguf", "--file", str(prompt), "--max-new-tokens", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timing"]["new_tokens"] >= 1 and out["text"]
    assert len(list((cache / "packages").iterdir())) == 1
    # The JSON names what ran: the cached package of the GGUF and the engine's thread count.
    assert Path(out["model"]).parent == cache / "packages" and out["threads"] >= 1
    assert main(["run", "--model", "smollm2-135m-gguf", "--file", str(tmp_path / "none.txt")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_bench_prints_a_llama_bench_table_and_json(cache, capsys):
    assert main(["bench", "--model", "smollm2-135m-gguf", "-p", "32", "-n", "8", "-r", "2", "-t", "1",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| model | size | backend | threads | test | t/s |"
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert len(rows) == 2 and "| pp32 |" in rows[0] and "| tg8 |" in rows[1] and " q4_1 " in rows[0]
    assert main(["bench", "--model", "smollm2-135m-gguf", "-p", "16", "-n", "0", "-r", "3", "-t", "1,2", "--json",
                 "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["test"], r["threads"]) for r in data] == [("pp16", 1), ("pp16", 2)]
    assert all(r["tokens_per_s"] > 0 and len(r["samples_s"]) == 3 for r in data)
    assert main(["bench", "--model", "smollm2-135m-gguf", "-p", "8", "-n", "0", "-r", "1", "--json",
                 "--no-progress"]) == 0
    row, = json.loads(capsys.readouterr().out)
    assert isinstance(row["threads"], int) and row["threads"] >= 1  # the count that ran, not "all"
    assert Path(row["package"]).parent == cache / "packages"


@pytest.mark.parametrize("argv,message", [(["-p", "0", "-n", "0"], "nothing to measure"),
                                          (["-t", "0"], "positive integers"), (["-r", "0"], "at least 1"),
                                          (["-p", "-1"], "must be >= 0")])
def test_bench_bad_input(cache, capsys, argv, message):
    assert main(["bench", "--model", "tiny", *argv]) == 1
    assert message in capsys.readouterr().err
