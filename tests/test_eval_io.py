"""File readers of the evaluation harness against damaged input, the judge on the command line, and the light
import (no torch)."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from bluelm_v.cli import main
from bluelm_v.evaluation.data import load_dataset, read_tsv
from bluelm_v.evaluation.errors import DataError
from bluelm_v.evaluation.store import PredictionLog, merge_logs, read_log
from eval_helpers import FakeOpenAI, png_base64, prompt_text, write_replay, write_tsv


def test_import_does_not_load_torch():
    code = ("import sys, bluelm_v.evaluation, bluelm_v.evaluation.runner, bluelm_v.commands.eval; "
            "from bluelm_v.evaluation.scorers import load_all; load_all(); "
            "import bluelm_v.evaluation.adapters.replay, bluelm_v.evaluation.adapters.openai; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_read_log_never_crashes_on_garbage(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("log") / "x.jsonl"
    good = b'{"index": 1, "status": "ok", "prediction": "A"}\n'
    path.write_bytes(good + blob)
    entries, size = read_log(path)
    assert entries[0]["index"] == 1 and len(good) <= size <= len(good) + len(blob)
    with PredictionLog(path) as log:  # reopening cuts a damaged tail and appends cleanly
        log.append({"index": 2, "status": "ok", "prediction": "B"})
    entries, size = read_log(path)
    assert entries[-1]["index"] == 2 and size == path.stat().st_size


def test_merge_prefers_success(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with PredictionLog(a) as log:
        log.append({"index": 1, "status": "ok", "prediction": "x"})
    with PredictionLog(b) as log:
        log.append({"index": 1, "status": "failed", "kind": "model", "reason": "late"})
    assert merge_logs([a, b])[1]["status"] == "ok"
    with pytest.raises(ValueError):
        PredictionLog(tmp_path / "c.jsonl").append({"index": 1, "prediction": float("nan")})


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b"", b"index\tquestion\n1\tq\textra\tcols\n"])
def test_bad_tsv_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError):
        load_dataset("TextVQA", path)


def test_image_references_and_multi_image_rows(tmp_path):
    big = png_base64(5)
    rows = [{"index": 1, "question": "q <image 1> <image 2>", "A": "a", "B": "b", "answer": "A",
             "image": str([big, png_base64(6)])},
            {"index": 2, "question": "q", "A": "a", "B": "b", "answer": "A", "image": "3"},
            {"index": 3, "question": "q", "A": "a", "B": "b", "answer": "A", "image": big},
            {"index": 4, "question": "q", "A": "a", "B": "b", "answer": "A", "image": None}]
    ds = load_dataset("MMMU", write_tsv(tmp_path / "m.tsv", rows))
    assert len(ds) == 3 and ds.dropped == 1
    r = ds.rows()
    assert len(ds.image_bytes(r[0])) == 2 and ds.image_bytes(r[1]) == ds.image_bytes(r[2])
    frame = read_tsv(tmp_path / "m.tsv")
    assert list(frame["index"]) == [1, 2, 3, 4]


def test_eval_with_judge_on_the_command_line(tmp_path):
    rows = [{"index": i + 1, "question": f"q{i}", "answer": "cat", "category": "rec,ocr,know,gen,spat,math",
             "image": png_base64(i)} for i in range(3)]
    path = write_tsv(tmp_path / "mmvet.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMVet.tsv", {1: "a cat", 2: "dog", 3: "cat"})
    work = tmp_path / "out"
    # Unscored (no judge) is reported and exits 1, with the predictions kept for the judged rerun below.
    assert main(["eval", "--model", f"replay:{folder}", "--data", f"MMVet={path}", "--work-dir", str(work),
                 "--no-progress"]) == 1
    (run,) = [p for p in work.glob("*/*") if p.is_dir()]
    entry = json.loads((run / "status.json").read_text())["datasets"]["MMVet"]
    assert entry["state"] == "unscored" and "judge" in entry["reason"]

    def grade(body):
        return "1.0" if "| cat | a cat |" in prompt_text(body) or "| cat | cat |" in prompt_text(body) else "0.0"

    with FakeOpenAI(grade, model_ids=("grader",)) as server:
        spec = f"{server.url}#grader"
        assert main(["eval", "--model", f"replay:{folder}", "--data", f"MMVet={path}", "--work-dir", str(work),
                     "--no-progress", "--judge", spec]) == 0
        assert len(server.requests) == 3  # predictions were reused: only the judge ran
    status = json.loads((run / "status.json").read_text())
    entry = status["datasets"]["MMVet"]
    assert status["judge"] == f"openai:{spec}" and entry["judge"] == f"openai:{spec}"
    assert entry["metrics"]["capability"]["Overall"]["acc"] == pytest.approx(200 / 3)
    assert entry["computed_this_invocation"] == 0
