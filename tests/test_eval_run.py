"""``bluelm-v eval`` end to end on small TSVs the tests make (MCQ, VQA, OCRBench and DocVQA shapes): replay and
openai adapters, bad rows, kill -9 and resume, 2-process torchrun, data fetch."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation import score
from bluelm_v.evaluation.store import read_log
from eval_helpers import (FakeOpenAI, docvqa_rows, mcq_rows, ocrbench_rows, png_base64, prompt_text, vqa_rows,
                          write_replay, write_tsv)

VENV_BIN = Path(sys.executable).parent


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    paths = {"MMStar": write_tsv(d / "mmstar.tsv", mcq_rows()), "TextVQA_VAL": write_tsv(d / "textvqa.tsv", vqa_rows()),
             "OCRBench": write_tsv(d / "ocrbench.tsv", ocrbench_rows()),
             "DocVQA_VAL": write_tsv(d / "docvqa.tsv", docvqa_rows())}
    return paths


def data_arg(paths: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in paths.items())


def run_dir_of(work: Path) -> Path:
    (d,) = [p for p in work.glob("*/*") if p.is_dir()]
    return d


def replay_answers(tmp_path: Path) -> Path:
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMStar.tsv", {i + 1: "ABCD"[i % 3] for i in range(8)})
    write_replay(folder / "m_TextVQA_VAL.tsv", {i + 1: ["stop", "Stop.", "go"][i % 3] for i in range(6)})
    write_replay(folder / "m_OCRBench.tsv", {i + 1: ["STOP sign", "x"][i % 2] for i in range(8)})
    write_replay(folder / "m_DocVQA_VAL.tsv", {i + 1: ["$1,234.00", "1,234"][i % 2] for i in range(5)})
    return folder


def expected_metrics(paths: dict, folder: Path) -> dict:
    """What score() gives on the same predictions, straight from the tables (no runner involved)."""
    import pandas as pd

    out = {}
    for name, path in paths.items():
        rows = pd.read_csv(path, sep="\t").drop(columns=["image"])
        preds = pd.read_csv(next(folder.glob(f"*_{name}.tsv")), sep="\t", keep_default_na=False)
        rows["prediction"] = [preds.set_index("index")["prediction"].get(i) for i in rows["index"]]
        out[name] = score(name, rows.to_dict("records")).metrics
    return out


def test_eval_replay_end_to_end(tmp_path, data, capsys):
    folder = replay_answers(tmp_path)
    work = tmp_path / "out"
    assert main(["eval", "--model", f"replay:{folder}", "--data", data_arg(data), "--work-dir", str(work),
                 "--no-progress", "--export-xlsx"]) == 0
    out = capsys.readouterr().out
    assert "| MMStar (`MMStar`)" in out and "rule-based, not comparable to judged numbers" in out
    run = run_dir_of(work)
    status = json.loads((run / "status.json").read_text())
    expected = expected_metrics(data, folder)
    for name in data:
        entry = status["datasets"][name]
        assert entry["state"] == "scored" and entry["metrics"] == expected[name]
        assert entry["prompt"]["version"] and entry["scorer_version"] == "1"
        for suffix in (".tsv", ".jsonl", "_score.json", "_acc.csv", "_records.jsonl", ".xlsx"):
            assert (run / f"replay-replay_{name}{suffix}").is_file()
    assert status["argv"][:2] == ["bluelm-v", "eval"] and status["versions"]["pandas"]
    assert status["datasets"]["MMStar"]["prompt"]["example"][1]["value"].startswith("Question: Which animal")
    assert "| OCRBench (`OCRBench`) |" in (run / "report.md").read_text()


def test_eval_openai_adapter_end_to_end(tmp_path, data):
    def reply(body):
        text = prompt_text(body)
        images = [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
        assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
        if "Options:" in text:
            return "B"
        return "stop" if "written" in text else "$1,234.00"

    work = tmp_path / "out"
    with FakeOpenAI(reply, model_ids=("tiny-vlm",)) as server:
        assert main(["eval", "--model", f"openai:{server.url}#tiny-vlm", "--data", data_arg(data), "--work-dir",
                     str(work), "--no-progress", "--max-new-tokens", "16"]) == 0
        assert len(server.requests) == 8 + 6 + 8 + 5
        assert server.requests[0]["model"] == "tiny-vlm" and server.requests[0]["max_tokens"] == 16
        first = prompt_text(server.requests[0])
        assert first.endswith("Please select the correct answer from the options above. \n")
    status = json.loads((run_dir_of(work) / "status.json").read_text())
    assert status["datasets"]["MMStar"]["metrics"]["none"]["Overall"] == pytest.approx(2 / 8)
    assert status["datasets"]["TextVQA_VAL"]["metrics"]["Overall"] == 100.0
    assert status["datasets"]["OCRBench"]["metrics"]["Final Score"] == 8
    assert status["datasets"]["DocVQA_VAL"]["metrics"]["Overall"] == 100.0
    assert status["model_name"] == "tiny-vlm"


def test_bad_rows_are_recorded_and_counted(tmp_path):
    rows = vqa_rows(4)
    rows[1]["image"] = "not base64 at all!!"
    rows[2]["image"] = png_base64(1)[:-40]  # truncated image
    path = write_tsv(tmp_path / "t.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_TextVQA_VAL.tsv", {1: "stop", 2: "stop", 3: "stop", 4: "stop"})
    work = tmp_path / "out"
    assert main(["eval", "--model", f"replay:{folder}", "--data", f"TextVQA={path}", "--work-dir", str(work),
                 "--no-progress"]) == 0
    run = run_dir_of(work)
    entry = json.loads((run / "status.json").read_text())["datasets"]["TextVQA_VAL"]
    assert entry["counts"]["ok"] == 2 and entry["counts"]["failed"] == 2
    # The two bad rows count as wrong in the headline (VLMEvalKit's failure text as their prediction); the two
    # answered rows alone are the 'ok only' figure.
    assert entry["counts"]["failed_by_kind"] == {"data": 2} and entry["metrics"]["Overall"] == 50.0
    assert entry["metrics_ok_only"]["Overall"] == 100.0
    log, _ = read_log(run / "replay-replay_TextVQA_VAL.rank0.log.jsonl")
    reasons = {e["index"]: e.get("reason") for e in log}
    assert "base64" in reasons[2] and "image" in reasons[3]
    report = (run / "report.md").read_text()
    assert "| 50.00 | 100.00 |" in report and "2 of 4 sample(s) failed or have no prediction" in report


def test_missing_columns_and_bad_specs(tmp_path, capsys):
    path = write_tsv(tmp_path / "t.tsv", [{"index": 1, "question": "q", "image": png_base64(0)}])
    folder = tmp_path / "r"
    folder.mkdir()
    assert main(["eval", "--model", f"replay:{folder}", "--data", f"TextVQA={path}", "--work-dir",
                 str(tmp_path / "o"), "--no-progress"]) == 1
    assert "lacks column(s) answer" in capsys.readouterr().err
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))  # a good file: the model spec is what fails now
    for spec, message in [("native:x", "not a model package"), ("nope", "KIND:TARGET"), ("openai:http://x", "URL#MODEL"),
                          (f"replay:{tmp_path}/none.tsv", "not found")]:
        assert main(["eval", "--model", spec, "--data", f"TextVQA={path}", "--work-dir", str(tmp_path / "o"),
                     "--no-progress"]) == 1
        assert message in capsys.readouterr().err
    assert main(["eval", "--model", f"replay:{folder}", "--data", "TextVQA", "--data-root", str(tmp_path),
                 "--work-dir", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "bluelm-v data fetch TextVQA_VAL" in capsys.readouterr().err


def test_model_errors_stop_the_run_and_are_retried(tmp_path, data):
    work = tmp_path / "out"
    args = ["eval", "--data", f"TextVQA={data['TextVQA_VAL']}", "--work-dir", str(work), "--no-progress",
            "--max-model-errors", "2"]
    with FakeOpenAI(lambda body: "stop", fail_first=1000) as server:
        assert main(["--version"]) == 0
        spec = f"openai:{server.url}#m"
        assert main(["eval", "--model", spec, *args[1:]]) == 1  # endpoint down: stops after 2 failures
    with FakeOpenAI(lambda body: "stop") as server2:
        # Same run id needs the same spec: use --run-id to point the new port at the old run.
        run = run_dir_of(work)
        assert main(["eval", "--model", f"openai:{server2.url}#m", "--run-id", run.name, "--model-name",
                     run.parent.name, *args[1:]]) == 0
        assert len(server2.requests) == 6  # the two failed samples are tried again, with the other four
    status = json.loads((run / "status.json").read_text())
    assert status["datasets"]["TextVQA_VAL"]["counts"]["ok"] == 6


def _eval_cmd(folder: Path, data: dict, work: Path, delay: float) -> list[str]:
    return [str(VENV_BIN / "bluelm-v"), "eval", "--model", f"replay:{folder}?delay={delay}", "--data",
            data_arg(data), "--work-dir", str(work), "--no-progress"]


def _ok_entries(run: Path) -> list[dict]:
    entries = []
    for log in run.glob("*.log.jsonl"):
        entries += read_log(log)[0]
    return entries


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_recomputes_nothing(tmp_path, data):
    folder = replay_answers(tmp_path)
    work = tmp_path / "out"
    cmd = _eval_cmd(folder, data, work, delay=0.15)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            runs = [p for p in work.glob("*/*") if p.is_dir()]
            if runs and len(_ok_entries(runs[0])) >= 10:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    run = run_dir_of(work)
    before = {(e["index"], p.name) for p in run.glob("*.log.jsonl") for e in read_log(p)[0]}
    assert 10 <= len(before) < 27
    # A torn last line, as a kill in the middle of a write would leave.
    with open(next(run.glob("*MMStar*.log.jsonl")), "ab") as f:
        f.write(b'{"index": 99, "status": "o')
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    after = [(e["index"], p.name) for p in run.glob("*.log.jsonl") for e in read_log(p)[0]]
    assert len(after) == len(set(after)) == 27  # every sample exactly once: nothing lost, nothing recomputed
    assert before <= set(after)
    status = json.loads((run / "status.json").read_text())
    assert sum(d["computed_this_invocation"] for d in status["datasets"].values()) == 27 - len(before)
    assert status["invocations"] == 2
    assert {n: d["metrics"] for n, d in status["datasets"].items()} == expected_metrics(data, folder)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, data):
    folder = replay_answers(tmp_path)
    work = tmp_path / "out"
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "bluelm_v.evaluation",
           "--model", f"replay:{folder}", "--data", data_arg(data), "--work-dir", str(work), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = run_dir_of(work)
    for name in data:
        logs = sorted(run.glob(f"*_{name}.rank*.log.jsonl"))
        assert [p.name.split(".")[-3] for p in logs] == ["rank0", "rank1"]
        idx0 = {e["index"] for e in read_log(logs[0])[0]}
        idx1 = {e["index"] for e in read_log(logs[1])[0]}
        assert idx0 and idx1 and not idx0 & idx1
    status = json.loads((run / "status.json").read_text())
    assert status["world_size"] == 2
    assert {n: d["metrics"] for n, d in status["datasets"].items()} == expected_metrics(data, folder)


def test_data_fetch_checksum_from_file_url(tmp_path, capsys):
    src = write_tsv(tmp_path / "src.tsv", vqa_rows(2))
    from bluelm_v.evaluation.data import md5_of

    good = md5_of(src)
    root = tmp_path / "lmu"
    assert main(["data", "fetch", "TextVQA", "--url", src.as_uri(), "--md5", good, "--data-root", str(root),
                 "--no-progress"]) == 0
    assert (root / "TextVQA_VAL.tsv").read_bytes() == src.read_bytes()
    assert main(["data", "fetch", "DocVQA", "--url", src.as_uri(), "--md5", "0" * 32, "--data-root", str(root),
                 "--no-progress"]) == 1
    assert "does not match" in capsys.readouterr().err and not list(root.glob("DocVQA*"))
    assert main(["data", "fetch", "TextVQA", "DocVQA", "--url", src.as_uri(), "--data-root", str(root)]) == 1
    assert "exactly one NAME" in capsys.readouterr().err
    # The official name under the LMUData root is MD5-checked when loaded (our file is not the official one).
    assert main(["eval", "--model", "replay:" + str(src), "--data", "TextVQA", "--data-root", str(root),
                 "--work-dir", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "expected b233b31f551bbf4056f2f955da3a92cd" in capsys.readouterr().err
    assert main(["data", "list", "--data-root", str(root)]) == 0
    assert "MD5 mismatch" in capsys.readouterr().out
