"""Results a researcher can publish: failed and missing samples scored as VLMEvalKit scores them, whole MMBench
circular groups under --limit, judges that cannot fail silently (and are cached), one key per endpoint, every input
checked before the first sample, names that stay inside --work-dir, an xlsx export that cannot lose the scores,
report rows that describe themselves; and the HTTP client under a 500-then-success, a timeout and a malformed
reply. Each test is one finding of the issue, made from its reproduction."""
import json
from pathlib import Path

import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation import prediction_as_scored
from bluelm_v.evaluation.errors import EndpointError
from bluelm_v.evaluation.matching import FAIL_MSG
from bluelm_v.evaluation.openai_http import ChatClient
from eval_helpers import FakeOpenAI, mcq_rows, png_base64, prompt_text, vqa_rows, write_replay, write_tsv

CAPS = ["rec", "ocr", "know", "gen", "spat", "math"]


def run_dir_of(work: Path) -> Path:
    (d,) = [p for p in work.glob("*/*") if p.is_dir()]
    return d


def status_of(work: Path) -> dict:
    return json.loads((run_dir_of(work) / "status.json").read_text())


def eval_args(model: str, data: str, work: Path, *extra: str) -> list[str]:
    return ["eval", "--model", model, "--data", data, "--work-dir", str(work), "--no-progress", *extra]


def mmbench_rows(groups: int, rotations_after_mains: bool = True) -> list[dict]:
    """``groups`` questions with 4 circular rotations each (index g + k * 1e6), main rows first in the file."""
    options = ["cat", "dog", "horse", "bird"]
    rows = []
    for k in range(4):
        for g in range(1, groups + 1):
            rotated = options[k:] + options[:k]
            gold = "ABCD"[(g - 1 - k) % 4]  # the answer letter moves with its text
            rows.append({"index": g + k * 1_000_000, "question": f"Which animal is number {g}?",
                         **dict(zip("ABCD", rotated)), "answer": gold, "category": "c", "l2-category": "coarse_perception",
                         "split": "dev", "image": png_base64(g)})
    return rows if rotations_after_mains else sorted(rows, key=lambda r: r["index"] % 1_000_000)


def mmvet_rows(n: int, caps=CAPS) -> list[dict]:
    return [{"index": i + 1, "question": f"What is shown? ({i})", "answer": "a cat",
             "category": ",".join(caps) if i == 0 else caps[i % len(caps)], "image": png_base64(400 + i)}
            for i in range(n)]


# ---- the headline is VLMEvalKit's number ----------------------------------------------------------------------

def test_replay_with_3_of_12_answers_scores_25_not_100(tmp_path, capsys):
    rows = mcq_rows(12)
    path = write_tsv(tmp_path / "mmstar.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMStar.tsv", {r["index"]: r["answer"] for r in rows[:3]})
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMStar={path}", work)) == 0
    entry = status_of(work)["datasets"]["MMStar"]
    assert entry["metrics"]["none"]["Overall"] == pytest.approx(3 / 12)
    assert entry["metrics_ok_only"]["none"]["Overall"] == 1.0
    assert entry["counts"]["ok"] == 3 and entry["counts"]["failed"] == 9
    assert "| 25.00 | 100.00 |" in capsys.readouterr().out
    predictions = (run_dir_of(work) / "replay-replay_MMStar.tsv").read_text()
    assert predictions.count(FAIL_MSG) == 9  # as VLMEvalKit writes its own prediction file


def test_two_of_eight_server_failures_count_as_wrong(tmp_path):
    rows = mcq_rows(8)
    path = write_tsv(tmp_path / "mmstar.tsv", rows)
    asked = []

    def reply(body):
        text = prompt_text(body)
        number = int(text.split("number ")[1].split("?")[0])
        asked.append(number)
        if number in (0, 1):  # two questions the server cannot answer: a 200 without choices, never retried
            return b'{"error": {"message": "model overloaded"}}'
        return "A" if number % 2 == 0 else rows[number]["answer"]  # odd numbers right, even ones only if A

    work = tmp_path / "out"
    with FakeOpenAI(reply) as server:
        assert main(eval_args(f"openai:{server.url}#m", f"MMStar={path}", work)) == 0
    entry = status_of(work)["datasets"]["MMStar"]
    right = sum(1 for i in range(2, 8) if ("A" if i % 2 == 0 else rows[i]["answer"]) == rows[i]["answer"])
    assert entry["counts"]["failed"] == 2
    assert entry["metrics"]["none"]["Overall"] == pytest.approx(right / 8)
    assert entry["metrics_ok_only"]["none"]["Overall"] == pytest.approx(right / 6)


def test_mmbench_group_with_a_missing_rotation_fails(tmp_path):
    rows = mmbench_rows(2)
    path = write_tsv(tmp_path / "mmb.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    answers = {r["index"]: r["answer"] for r in rows if r["index"] != 2_000_001}  # rotation 2 of question 1 absent
    write_replay(folder / "m_MMBench_DEV_EN_V11.tsv", answers)
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMBench_DEV_EN_V11={path}", work)) == 0
    entry = status_of(work)["datasets"]["MMBench_DEV_EN_V11"]
    assert entry["metrics"]["dev"]["Overall"] == 0.5  # question 1's group fails, question 2's passes
    assert entry["metrics_ok_only"]["dev"]["Overall"] == 1.0
    groups = {json.loads(line)["index"] for line in (run_dir_of(work) / "replay-replay_MMBench_DEV_EN_V11_records.jsonl")
              .read_text().splitlines()}
    assert 2_000_001 in groups  # the missing rotation was scored, as its failure text


@pytest.mark.parametrize("interleaved", [False, True])
def test_limit_takes_whole_circular_groups(tmp_path, interleaved):
    rows = mmbench_rows(3, rotations_after_mains=not interleaved)
    path = write_tsv(tmp_path / "mmb.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    answers = {r["index"]: r["answer"] for r in rows}
    answers[1_000_001] = "Z"  # question 1 rotation 1 wrong
    answers[3_000_002] = "Z"  # question 2 rotation 3 wrong
    write_replay(folder / "m_MMBench_DEV_EN_V11.tsv", answers)
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMBench_DEV_EN_V11={path}", work, "--limit", "2")) == 0
    entry = status_of(work)["datasets"]["MMBench_DEV_EN_V11"]
    assert entry["counts"]["rows"] == 8  # 2 questions x 4 rotations, wherever the rotations sit in the file
    assert entry["metrics"]["dev"]["Overall"] == 0.0  # both kept groups fail, as on the full file
    assert "the first 2 of 3 circular question groups, whole (8 of 12 rows" in entry["limit_note"]
    assert entry["limit_note"] in (run_dir_of(work) / "report.md").read_text()


# ---- judges that cannot fail silently ------------------------------------------------------------------------

def _mmvet_setup(tmp_path, n=6, caps=CAPS):
    rows = mmvet_rows(n, caps)
    path = write_tsv(tmp_path / "mmvet.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMVet.tsv", {r["index"]: "a cat" for r in rows})
    return path, folder


def test_judge_answering_A_to_every_grade_is_judge_failed(tmp_path, capsys):
    path, folder = _mmvet_setup(tmp_path)
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "A") as judge:
        assert main(eval_args(f"replay:{folder}", f"MMVet={path}", work, "--judge", f"{judge.url}#j")) == 1
        assert len(judge.requests) == 6 * 5  # five tries per sample, every reply unreadable
    captured = capsys.readouterr()
    entry = status_of(work)["datasets"]["MMVet"]
    assert entry["state"] == "judge failed" and "metrics" not in entry
    assert entry["judge_stats"] == {"replies": 30, "unparsed": 30, "examples": ["A", "A", "A"]}
    assert "judge failed: 30 of 30 judge replies could not be read" in captured.err
    report = (run_dir_of(work) / "report.md").read_text()
    assert "| judge failed: 30 of 30" in report and "'A'; 'A'; 'A'" in report


def test_judge_replies_are_cached_so_a_rerun_pays_nothing(tmp_path):
    path, folder = _mmvet_setup(tmp_path)
    work = tmp_path / "out"
    args = eval_args(f"replay:{folder}", f"MMVet={path}", work, "--judge", "")
    with FakeOpenAI(lambda body: "0.5") as judge:
        args[-1] = f"{judge.url}#j"
        assert main(args) == 0
        first = len(judge.requests)
        assert main(args) == 0
        assert len(judge.requests) == first == 6
    entry = status_of(work)["datasets"]["MMVet"]
    assert entry["state"] == "scored" and entry["metrics"]["capability"]["Overall"]["acc"] == 50.0
    assert entry["judge_calls"] == {"asked": 0, "cached": 6}
    assert len((run_dir_of(work) / "judge_cache.jsonl").read_text().splitlines()) == 6


def test_mmvet_subset_without_a_capability_never_calls_the_judge(tmp_path, capsys):
    path, folder = _mmvet_setup(tmp_path, n=5, caps=["rec", "ocr"])
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "1.0") as judge:
        assert main(eval_args(f"replay:{folder}", f"MMVet={path}", work, "--judge", f"{judge.url}#j")) == 1
        assert judge.requests == []
    entry = status_of(work)["datasets"]["MMVet"]
    assert entry["state"] == "scoring failed" and "'know'" in entry["reason"]
    assert "nothing was sent to the judge" in capsys.readouterr().err


def test_unreachable_judge_stops_before_any_sample(tmp_path, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "stop") as model:
        with FakeOpenAI(lambda body: "1") as dead:
            dead_url = dead.url
        assert main(eval_args(f"openai:{model.url}#m", f"TextVQA={path}", work, "--judge", f"{dead_url}#j")) == 1
        assert model.requests == []
    assert "cannot reach the endpoint" in capsys.readouterr().err and not work.exists()


# ---- one key per endpoint ------------------------------------------------------------------------------------

def test_model_key_never_goes_to_another_judge_host(tmp_path, monkeypatch, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(3))
    work = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-model-secret")
    with FakeOpenAI(lambda body: "stop") as model, FakeOpenAI(lambda body: "Yes") as judge:
        assert main(eval_args(f"openai:{model.url}#m", f"TextVQA={path}", work, "--judge", f"{judge.url}#j")) == 1
        assert "say which key goes where" in capsys.readouterr().err
        assert model.headers == [] and judge.headers == [] and not work.exists()


def test_each_key_goes_only_to_its_endpoint_and_is_written_nowhere(tmp_path, monkeypatch):
    rows = mcq_rows(4)
    path = write_tsv(tmp_path / "mmstar.tsv", rows)
    work = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-secret")
    monkeypatch.setenv("MODEL_KEY", "sk-model-secret")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-secret")
    with FakeOpenAI(lambda body: "I think it is a mammal", require_key="sk-model-secret") as model, \
            FakeOpenAI(lambda body: "A", require_key="sk-judge-secret") as judge:
        assert main(eval_args(f"openai:{model.url}#m", f"MMStar={path}", work, "--judge", f"{judge.url}#j",
                              "--api-key-env", "MODEL_KEY", "--judge-api-key-env", "JUDGE_KEY", "--export-xlsx")) == 0
        assert len(model.requests) == 4 and len(judge.requests) >= 4  # the rules read nothing: the judge decides
        assert {h.get("Authorization") for h in model.headers} == {"Bearer sk-model-secret"}
        assert {h.get("Authorization") for h in judge.headers} == {"Bearer sk-judge-secret"}
    status = status_of(work)
    assert status["keys"] == {"model_key_env": "MODEL_KEY", "judge_key_env": "JUDGE_KEY"}
    written = [p for p in work.rglob("*") if p.is_file()]
    assert len(written) >= 8
    for p in written:
        data = p.read_bytes()
        for secret in (b"sk-model-secret", b"sk-judge-secret", b"sk-fallback-secret"):
            assert secret not in data, (p, secret)


def test_a_named_key_variable_that_is_unset_is_an_error(tmp_path, monkeypatch, capsys):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with FakeOpenAI(lambda body: "stop") as model:
        assert main(eval_args(f"openai:{model.url}#m", f"TextVQA={path}", tmp_path / "o", "--api-key-env",
                              "NO_SUCH_KEY")) == 1
        assert model.requests == []
    assert "$NO_SUCH_KEY is not set" in capsys.readouterr().err


# ---- check first, then spend; names stay inside --work-dir ----------------------------------------------------

def test_a_missing_dataset_fails_before_any_sample(tmp_path, capsys):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(4))
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "A") as model:
        assert main(eval_args(f"openai:{model.url}#m", f"MMStar={path},OCRBench", work, "--data-root",
                              str(tmp_path / "empty"))) == 1
        assert model.requests == []
    assert "OCRBench.tsv not found" in capsys.readouterr().err and not work.exists()


@pytest.mark.parametrize("flag,value", [("--model-name", "../escaped"), ("--model-name", "a/b"),
                                        ("--run-id", ".."), ("--model-name", "/abs")])
def test_names_cannot_leave_the_work_dir(tmp_path, capsys, flag, value):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_TextVQA_VAL.tsv", {1: "stop", 2: "stop"})
    work = tmp_path / "work" / "out"
    assert main(eval_args(f"replay:{folder}", f"TextVQA={path}", work, flag, value)) == 1
    assert "must be a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["t.tsv", "replay", "m_TextVQA_VAL.tsv"])


# ---- an optional export never loses the scores ---------------------------------------------------------------

def test_xlsx_export_escapes_control_characters_as_xlsxwriter(tmp_path):
    import pandas as pd

    rows = mcq_rows(3)
    path = write_tsv(tmp_path / "mmstar.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    predictions = {1: "A\x1b[0m", 2: "B\r", 3: "_x0041_ C"}
    (folder / "m_MMStar.jsonl").write_text("".join(json.dumps({"index": k, "prediction": v}) + "\n"
                                                   for k, v in predictions.items()))
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMStar={path}", work, "--export-xlsx")) == 0
    back = pd.read_excel(run_dir_of(work) / "replay-replay_MMStar.xlsx", engine="openpyxl")
    assert list(back["prediction"]) == prediction_as_scored(list(predictions.values()))
    assert list(back["prediction"])[0] == "A_x001B_[0m"
    assert status_of(work)["datasets"]["MMStar"]["state"] == "scored"


def test_a_failed_export_keeps_scores_and_report(tmp_path, capsys):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(3))
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMStar.tsv", {1: "A", 2: "B", 3: "C"})
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMStar={path}", work)) == 0
    run = run_dir_of(work)
    (run / "replay-replay_MMStar.xlsx").mkdir()  # the export cannot write its file
    assert main(eval_args(f"replay:{folder}", f"MMStar={path}", work, "--export-xlsx")) == 1
    assert "--export-xlsx failed" in capsys.readouterr().err
    entry = status_of(work)["datasets"]["MMStar"]
    assert entry["state"] == "scored" and entry["metrics"]["none"]["Overall"] == 1.0
    assert (run / "replay-replay_MMStar_score.json").is_file() and "| MMStar" in (run / "report.md").read_text()


# ---- a report that describes each row ------------------------------------------------------------------------

def test_each_report_row_carries_its_own_limit_origin_and_weights(tmp_path):
    mmstar = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(6))
    textvqa = write_tsv(tmp_path / "textvqa.tsv", vqa_rows(3))
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMStar.tsv", {i: "A" for i in range(1, 7)})
    write_replay(folder / "m_TextVQA_VAL.tsv", {i: "stop" for i in range(1, 4)})
    work = tmp_path / "out"
    assert main(eval_args(f"replay:{folder}", f"MMStar={mmstar}", work, "--limit", "4")) == 0
    assert main(eval_args(f"replay:{folder}", f"TextVQA={textvqa}", work)) == 0
    report = (run_dir_of(work) / "report.md").read_text()
    (mmstar_row,) = [line for line in report.splitlines() if line.startswith("| MMStar")]
    (textvqa_row,) = [line for line in report.splitlines() if line.startswith("| TextVQA")]
    assert "| 4 / 0 / 0 / 4 | 4 |" in mmstar_row and "| 3 / 0 / 0 / 3 | none |" in textvqa_row
    assert "limit none" not in report
    for row, name in ((mmstar_row, "m_MMStar.tsv"), (textvqa_row, "m_TextVQA_VAL.tsv")):
        assert f"predictions {name}, sha256:" in row and "not the official file" in row
        assert f"`replay:{folder}`" in row


# ---- the HTTP client: 500 then success, a timeout, a malformed reply -----------------------------------------

def test_client_retries_a_500_then_succeeds():
    with FakeOpenAI(lambda body: "fine", fail_first=2) as server:
        client = ChatClient(server.url, "m", retries=3, backoff=0.01)
        assert client.chat([{"role": "user", "content": "hi"}]) == "fine"
        assert len(server.requests) == 3


def test_client_times_out_with_a_clear_error():
    with FakeOpenAI(lambda body: "late", delay=1.0) as server:
        client = ChatClient(server.url, "m", timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(EndpointError, match="no answer after 2 attempts.*[Tt]ime"):
            client.chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("raw,message", [(b"<html>proxy error</html>", "not JSON"),
                                         (b'{"choices": []}', "no choices"),
                                         (b'{"choices": [{"message": {"content": 7}}]}', "not text")])
def test_client_names_a_malformed_reply(raw, message):
    with FakeOpenAI(lambda body: raw) as server:
        with pytest.raises(EndpointError, match=message):
            ChatClient(server.url, "m", retries=0).chat([{"role": "user", "content": "hi"}])


# ---- the judge cache on its own ------------------------------------------------------------------------------

def test_judge_cache_replays_retries_in_order_and_skips_failed_calls(tmp_path):
    from bluelm_v.evaluation.judges import CachedJudge, ScriptedJudge

    path = tmp_path / "judge_cache.jsonl"
    inner = ScriptedJudge({1: ["x", None, "0.7"]})
    cached = CachedJudge(inner, path)
    assert [cached.ask("p", key=1) for _ in range(3)] == ["x", None, "0.7"]
    assert cached.calls == 3 and len(path.read_text().splitlines()) == 2  # the failed call is not kept
    again = CachedJudge(ScriptedJudge({1: ["fresh"]}), path)
    assert again.ask("p", key=1) == "x"  # occurrence 0
    assert again.ask("p", key=1) == "fresh"  # occurrence 1 failed before: asked again
    assert again.ask("p", key=1) == "0.7" and again.hits == 2 and again.calls == 1
    again.new_pass()
    assert again.ask("p", key=1) == "x"
    other = CachedJudge(ScriptedJudge({1: "y"}), path)
    assert other.ask("p", temperature=0.5, key=1) == "y"  # another temperature is another prompt


def test_judge_cache_survives_a_torn_last_line(tmp_path):
    from bluelm_v.evaluation.judges import CachedJudge, ScriptedJudge

    path = tmp_path / "judge_cache.jsonl"
    CachedJudge(ScriptedJudge({1: "a"}), path).ask("p", key=1)
    with open(path, "ab") as f:
        f.write(b'{"key": "torn')
    cached = CachedJudge(ScriptedJudge({1: "b"}), path)
    assert cached.ask("p", key=1) == "a" and cached.ask("q", key=1) == "b"
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["reply"] in ("a", "b") for line in lines)
