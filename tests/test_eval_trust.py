"""Runs you can trust (the evaluation findings of the hostile-files review): empty and header-only TSVs, a
prediction with a lone surrogate, replay files of the wrong shape found before any inference, a second writer on
one run folder, answers never reused from an edited replay or data file, "reusing N of M" on resume, an all-failed
or unscored run exiting non-zero, a model that cannot take images, image paths that stay in the data folder."""
import json
from pathlib import Path

import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation.adapters import ADAPTERS, ModelAdapter
from bluelm_v.evaluation.store import RunLock, read_log
from bluelm_v.evaluation.runner import write_json_atomic
from eval_helpers import FakeOpenAI, png_base64, vqa_rows, write_replay, write_tsv


def run_dirs(work: Path) -> list[Path]:
    return sorted(p for p in work.glob("*/*") if p.is_dir())


def args(model: str, data: str, work: Path, *extra: str) -> list[str]:
    return ["eval", "--model", model, "--data", data, "--work-dir", str(work), "--no-progress", *extra]


@pytest.fixture()
def replay(tmp_path):
    folder = tmp_path / "replay"
    folder.mkdir()
    return folder


class Echo(ModelAdapter):
    """A test adapter: answers a fixed text, optionally refusing images."""

    kind = "echo"
    answer = "stop"
    images = True

    @property
    def takes_images(self) -> bool:
        return self.images

    def generate(self, message, *, dataset, index):
        return self.answer


@pytest.fixture()
def echo(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "echo", f"{__name__}:Echo")
    monkeypatch.setattr(Echo, "answer", "stop")  # tests change these; monkeypatch puts them back
    monkeypatch.setattr(Echo, "images", True)
    return Echo


def test_header_only_tsv_is_a_clear_error(tmp_path, replay, capsys):
    path = tmp_path / "t.tsv"
    path.write_text("index\tquestion\tanswer\timage\n")
    write_replay(replay / "m_TextVQA_VAL.tsv", {1: "x"})
    assert main(args(f"replay:{replay}", f"TextVQA={path}", tmp_path / "o")) == 1
    assert "TextVQA_VAL: no sample to run" in capsys.readouterr().err


def test_tsv_whose_every_image_is_empty_is_a_clear_error(tmp_path, replay, capsys):
    rows = vqa_rows(3)
    for r in rows:
        r["image"] = ""
    path = write_tsv(tmp_path / "t.tsv", rows)
    write_replay(replay / "m_TextVQA_VAL.tsv", {1: "x"})
    assert main(args(f"replay:{replay}", f"TextVQA={path}", tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "no sample to run" in err and "Traceback" not in err


def test_a_lone_surrogate_prediction_is_kept_final_and_not_retried(tmp_path, echo):
    echo.answer = "st\ud800op"
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "o"
    assert main(args("echo:x", f"TextVQA={path}", work)) == 0
    (run,) = run_dirs(work)
    entries = read_log(next(run.glob("*.log.jsonl")))[0]
    assert [e["status"] for e in entries] == ["ok", "ok"] and entries[0]["prediction"] == "st\ufffdop"
    assert "U+FFFD" in entries[0]["note"]
    assert main(args("echo:x", f"TextVQA={path}", work)) == 0
    assert len(read_log(next(run.glob("*.log.jsonl")))[0]) == 2  # final: nothing asked again


@pytest.mark.parametrize("name,content,message", [
    ("m_TextVQA_VAL.json", '["a", "b"]', "non-object items"),
    ("m_TextVQA_VAL.json", '"just a string"', "holds str"),
    ("m_TextVQA_VAL.json", "[" * 100_000 + "]" * 100_000, "RecursionError"),
    ("m_TextVQA_VAL.xlsx", "not a zip file", "BadZipFile"),
    ("m_TextVQA_VAL.tsv", "prediction\nstop\n", "has no 'index' column"),
    ("m_TextVQA_VAL.jsonl", '{"index": 1, "prediction": "a"}\n7\n', "non-object items"),
])
def test_a_wrong_replay_file_is_an_input_error_before_inference(tmp_path, replay, capsys, name, content, message):
    (replay / name).write_text(content)
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "o"
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 1
    err = capsys.readouterr().err
    assert message in err and name in err and "Traceback" not in err
    assert not work.exists()  # found before any inference: nothing written


def test_a_second_writer_on_one_run_folder_is_refused(tmp_path, replay, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    write_replay(replay / "m_TextVQA_VAL.tsv", {1: "stop", 2: "stop"})
    work = tmp_path / "o"
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 0
    (run,) = run_dirs(work)
    holder = RunLock(run / ".lock.rank0")  # as another process running the same command would hold it
    try:
        import os

        assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 1
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    finally:
        holder.release()
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 0


def test_temp_files_are_unique_per_process(tmp_path, monkeypatch):
    seen = []
    real_replace = __import__("os").replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real_replace(src, dst)

    monkeypatch.setattr("os.replace", spy)
    write_json_atomic(tmp_path / "status.json", {"a": 1})
    import os

    assert seen == [f"status.json.{os.getpid()}.tmp"]


def test_an_edited_replay_file_is_never_silently_reused(tmp_path, replay, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    work = tmp_path / "o"
    write_replay(replay / "m_TextVQA_VAL.tsv", {1: "stop", 2: "stop", 3: "stop"})
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 0
    capsys.readouterr()
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 0
    assert "reusing 3 of 3 answers" in capsys.readouterr().err
    write_replay(replay / "m_TextVQA_VAL.tsv", {1: "go", 2: "go", 3: "go"})  # edited in place
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 0
    assert "reusing" not in capsys.readouterr().err
    runs = run_dirs(work)
    assert len(runs) == 2
    scores = sorted(json.loads((r / "status.json").read_text())["datasets"]["TextVQA_VAL"]["metrics"]["Overall"]
                    for r in runs)
    assert scores == [0.0, 100.0]


def test_an_edited_data_file_recomputes_its_samples(tmp_path, echo, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    work = tmp_path / "o"
    assert main(args("echo:x", f"TextVQA={path}", work)) == 0
    rows = vqa_rows(3)
    rows[0]["question"] = "A different question?"
    write_tsv(path, rows)
    capsys.readouterr()
    assert main(args("echo:x", f"TextVQA={path}", work)) == 0
    assert "reusing" not in capsys.readouterr().err
    (run,) = run_dirs(work)
    entries = read_log(next(run.glob("*.log.jsonl")))[0]
    assert len(entries) == 6 and len({e["data"] for e in entries}) == 2


def test_a_run_where_every_sample_failed_exits_non_zero(tmp_path, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    with FakeOpenAI(lambda body: b'{"error": {"message": "no vision here"}}') as server:
        assert main(args(f"openai:{server.url}#m", f"TextVQA={path}", tmp_path / "o", "--max-model-errors",
                         "10")) == 1
    err = capsys.readouterr().err
    assert "every one of its 3 samples failed (3 model)" in err


def test_a_model_that_cannot_take_images_is_refused_before_inference(tmp_path, echo, capsys):
    echo.images = False
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "o"
    assert main(args("echo:x", f"TextVQA={path}", work)) == 1
    assert "cannot take images" in capsys.readouterr().err and not work.exists()


def test_image_paths_stay_inside_the_data_folder(tmp_path, echo):
    data = tmp_path / "data"
    data.mkdir()
    import base64

    png = base64.b64decode(png_base64(1))
    (data / "ok.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    (data / "link.png").symlink_to(tmp_path / "secret.png")
    rows = [{"index": i + 1, "question": "q", "answer": str(["stop"] * 10), "image_path": p}
            for i, p in enumerate(["ok.png", "../secret.png", str(tmp_path / "secret.png"), "link.png"])]
    path = write_tsv(data / "t.tsv", rows)
    work = tmp_path / "o"
    assert main(args("echo:x", f"TextVQA={path}", work)) == 0
    (run,) = run_dirs(work)
    entries = {e["index"]: e for e in read_log(next(run.glob("*.log.jsonl")))[0]}
    assert entries[1]["status"] == "ok"
    assert "outside the data folder" in entries[2]["reason"] and entries[2]["kind"] == "data"
    assert "is absolute" in entries[3]["reason"]
    assert "outside the data folder" in entries[4]["reason"]


def test_an_xlsx_with_damaged_compressed_data_is_an_input_error(tmp_path, replay, capsys):
    """Found by the replay-file fuzzer: one flipped bit inside a zip member's deflate stream made openpyxl raise
    zlib.error, which escaped as a raw exception instead of an error naming the file."""
    import io

    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame({"index": [1, 2], "prediction": ["stop", "stop"]}).to_excel(buf, index=False, engine="xlsxwriter")
    data = bytearray(buf.getvalue())
    data[28] ^= 1  # inside the first member's compressed bytes
    (replay / "m_TextVQA_VAL.xlsx").write_bytes(bytes(data))
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "o"
    assert main(args(f"replay:{replay}", f"TextVQA={path}", work)) == 1
    err = capsys.readouterr().err
    assert "m_TextVQA_VAL.xlsx is unreadable" in err and "Traceback" not in err
    assert not work.exists()
