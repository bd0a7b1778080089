"""Evaluation at scale: requests in flight (--api-nproc) with the same answers as one at a time, kill -9 under 16
in flight, retries against a fault-injecting server (500, broken JSON, 429 with Retry-After, a reply past the
timeout, a reset mid-body, a wrong model name), rate limit, extra body and system prompt in the requests and the
run id, bad input refused before any sample, progress in status.json, and a two-node torchrun on one host."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation.errors import EndpointError
from bluelm_v.evaluation.openai_http import ChatClient
from bluelm_v.evaluation.store import read_log
from eval_helpers import FakeOpenAI, Fault, mcq_rows, prompt_text, vqa_rows, write_replay, write_tsv

VENV_BIN = Path(sys.executable).parent


def run_dirs(work: Path) -> list[Path]:
    return sorted(p for p in work.glob("*/*") if p.is_dir())


def status_of(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def answer_of(body: dict) -> str:
    """A deterministic answer per question: the letter of the question number, for MMStar-shaped prompts."""
    text = prompt_text(body)
    number = int(text.split("number ")[1].split("?")[0])
    return "ABCD"[(number * 7) % 4]


class InFlight:
    """Counts requests being answered at once (the server's view of --api-nproc). With ``gate``, the first
    ``gate`` requests are held until that many are in flight together (or 10 s pass), so a full window is seen
    however slowly a loaded machine builds the requests."""

    def __init__(self, delay: float, gate: int = 0):
        self.delay, self.gate, self.now, self.most, self.arrived = delay, gate, 0, 0, 0
        self.cond = threading.Condition()

    def __call__(self, body: dict) -> str:
        with self.cond:
            self.now += 1
            self.arrived += 1
            self.most = max(self.most, self.now)
            self.cond.notify_all()
            if self.arrived <= self.gate:
                self.cond.wait_for(lambda: self.most >= self.gate, timeout=10)
        time.sleep(self.delay)
        with self.cond:
            self.now -= 1
        return answer_of(body)


def test_api_nproc_keeps_n_requests_in_flight_with_the_same_answers(tmp_path):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(24))
    results = {}
    for n in (1, 4, 16):
        flight = InFlight(0.01, gate=n)
        work = tmp_path / f"out{n}"
        with FakeOpenAI(flight) as server:
            assert main(["eval", "--model", f"openai:{server.url}#m", "--data", f"MMStar={path}", "--work-dir",
                         str(work), "--no-progress", "--api-nproc", str(n)]) == 0
        assert flight.most == n  # the window is full and never wider
        (run,) = run_dirs(work)
        entries = read_log(next(run.glob("*.log.jsonl")))[0]
        assert sorted(e["index"] for e in entries) == list(range(1, 25))  # each sample once
        results[n] = ((run / "m_MMStar.tsv").read_text(), status_of(run)["datasets"]["MMStar"]["metrics"])
    assert results[1] == results[4] == results[16]


@pytest.mark.slow
def settled_count(requests: list, quiet: float = 0.5, limit: float = 15.0) -> int:
    """len(requests) once none has arrived for ``quiet`` seconds: requests a killed client had already written reach
    the server after the kill (later still on a loaded host), and would count as asked again."""
    n, since, end = len(requests), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end and time.monotonic() - since < quiet:
        time.sleep(0.02)
        if len(requests) != n:
            n, since = len(requests), time.monotonic()
    return n


def test_kill_9_with_16_in_flight_loses_nothing_and_logs_nothing_twice(tmp_path):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(80))
    work = tmp_path / "out"
    with FakeOpenAI(InFlight(0.1)) as server:
        cmd = [str(VENV_BIN / "bluelm-v"), "eval", "--model", f"openai:{server.url}#m", "--data", f"MMStar={path}",
               "--work-dir", str(work), "--no-progress", "--api-nproc", "16"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        try:
            while time.time() < deadline:
                logs = list(work.glob("*/*/*.log.jsonl"))
                if logs and len(read_log(logs[0])[0]) >= 20:
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        (run,) = run_dirs(work)
        before = {e["index"] for e in read_log(next(run.glob("*.log.jsonl")))[0]}
        assert 20 <= len(before) < 80
        asked_before = settled_count(server.requests)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"reusing {len(before)} of 80 answers" in done.stderr
        assert len(server.requests) - asked_before == 80 - len(before)  # only what was not logged is asked again
    entries = read_log(next(run.glob("*.log.jsonl")))[0]
    indices = [e["index"] for e in entries]
    assert len(indices) == len(set(indices)) == 80 and all(e["status"] == "ok" for e in entries)


# ---- retries and failures: a fault-injecting server ------------------------------------------------------------

class Script:
    """Replies in order from a list (then ``then`` for every further request); records arrival times."""

    def __init__(self, faults: list, then="fine"):
        self.faults, self.then, self.times, self.lock = list(faults), then, [], threading.Lock()

    def __call__(self, body: dict):
        with self.lock:
            self.times.append(time.monotonic())
            return self.faults.pop(0) if self.faults else self.then


def client(server, **kw) -> ChatClient:
    return ChatClient(server.url, "m", **{"retries": 3, "backoff": 0.01, **kw})


HI = [{"role": "user", "content": "hi"}]


def test_429_waits_at_least_retry_after():
    script = Script([Fault(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})])
    with FakeOpenAI(script) as server:
        assert client(server).chat(HI) == "fine"
    assert len(script.times) == 2 and script.times[1] - script.times[0] >= 0.95


def test_503_with_an_http_date_retry_after_then_success():
    from email.utils import formatdate

    script = Script([Fault(503, b"busy", {"Retry-After": formatdate(time.time() + 1, usegmt=True)})])
    with FakeOpenAI(script) as server:
        assert client(server).chat(HI) == "fine"
    assert len(script.times) == 2


def test_reset_mid_body_is_retried():
    whole = json.dumps({"choices": [{"message": {"content": "never seen"}}]}).encode()
    script = Script([Fault(200, whole, {"Content-Type": "application/json"}, truncate=True)])
    with FakeOpenAI(script) as server:
        assert client(server).chat(HI) == "fine"
    assert len(script.times) == 2


def test_broken_json_and_server_messages_are_named():
    with FakeOpenAI(Script([Fault(200, b'{"choices": [{"mess')])) as server:
        with pytest.raises(EndpointError, match="not JSON"):
            client(server).chat(HI)
    with FakeOpenAI(Script([Fault(400, b'{"error": {"message": "max_tokens is too large"}}')])) as server:
        with pytest.raises(EndpointError, match="HTTP 400 .*max_tokens is too large"):
            client(server).chat(HI)
    page = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 1000 + b"</body></html>"
    with FakeOpenAI(Script([Fault(502, page)] * 4)) as server:
        with pytest.raises(EndpointError, match="502 Bad Gateway") as err:
            client(server).chat(HI)
    assert len(str(err.value)) < 400  # the first 200 characters of the page, not the page


def test_a_reply_past_the_timeout_fails_the_sample_with_the_reason(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "out"
    with FakeOpenAI(Script([Fault(200, b"{}", delay=2.0)] * 8, then="stop")) as server:
        assert main(["eval", "--model", f"openai:{server.url}#m", "--data", f"TextVQA={path}", "--work-dir",
                     str(work), "--no-progress", "--timeout", "0.3", "--api-nproc", "2", "--max-model-errors",
                     "10"]) == 1  # every sample failed: exit 1
    (run,) = run_dirs(work)
    entries = read_log(next(run.glob("*.log.jsonl")))[0]
    assert len(entries) == 2 and all("timed out" in e["reason"] for e in entries)


def test_rate_limit_spaces_request_starts(tmp_path):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(6))
    script = Script([], then="A")
    with FakeOpenAI(script) as server:
        assert main(["eval", "--model", f"openai:{server.url}#m", "--data", f"MMStar={path}", "--work-dir",
                     str(tmp_path / "o"), "--no-progress", "--api-nproc", "4", "--rate-limit", "300"]) == 0
    gaps = [b - a for a, b in zip(script.times, script.times[1:])]
    assert len(gaps) == 5 and min(gaps) >= 0.18  # 300 per minute: one start every 0.2 s


def test_extra_body_and_system_prompt_reach_the_server_and_the_run_id(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "stop") as server:
        base = ["eval", "--model", f"openai:{server.url}#m", "--data", f"TextVQA={path}", "--work-dir", str(work),
                "--no-progress"]
        assert main(base + ["--extra-body", '{"top_k": 1, "repetition_penalty": 1.05}', "--system-prompt",
                            "Be brief."]) == 0
        first = server.requests[0]
        assert first["top_k"] == 1 and first["repetition_penalty"] == 1.05
        assert first["messages"][0] == {"role": "system", "content": "Be brief."}
        assert main(base) == 0  # other settings: another run, computed again
        assert "top_k" not in server.requests[-1] and server.requests[-1]["messages"][0]["role"] == "user"
    runs = run_dirs(work)
    assert len(runs) == 2
    recorded = [status_of(r)["requests"] for r in runs]
    assert {"extra_body": {"top_k": 1, "repetition_penalty": 1.05}, "system_prompt": "Be brief."}.items() <= \
        next(r for r in recorded if r["extra_body"]).items()


# ---- bad input: one line, non-zero, nothing written -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["refused", "wrong model", "not openai", "nproc 0", "nproc -2", "extra list",
                                  "extra broken", "extra reserved"])
def test_bad_input_fails_before_any_sample(tmp_path, capsys, case):
    path = write_tsv(tmp_path / "t.tsv", vqa_rows(2))
    work = tmp_path / "out"
    with FakeOpenAI(lambda body: "stop", model_ids=("served-a", "served-b")) as server:
        model, extra = f"openai:{server.url}#served-a", []
        if case == "refused":
            model = f"openai:http://127.0.0.1:{free_port()}/v1#m"
        elif case == "wrong model":
            model = f"openai:{server.url}#nope"
        elif case == "not openai":
            model = f"openai:{server.url}/not-here#served-a"
        elif case.startswith("nproc"):
            extra = ["--api-nproc", case.split()[1]]
        elif case == "extra list":
            extra = ["--extra-body", "[1, 2]"]
        elif case == "extra broken":
            extra = ["--extra-body", "{top_k: 1"]
        else:
            extra = ["--extra-body", '{"model": "other"}']
        assert main(["eval", "--model", model, "--data", f"TextVQA={path}", "--work-dir", str(work),
                     "--no-progress", *extra]) == 1
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not work.exists()
    expected = {"refused": "cannot reach the endpoint", "wrong model": "it serves: served-a, served-b",
                "not openai": "not an OpenAI-compatible endpoint", "nproc 0": "--api-nproc must be at least 1",
                "nproc -2": "--api-nproc must be at least 1", "extra list": "must be a JSON object, got list",
                "extra broken": "--extra-body is not JSON", "extra reserved": "set by bluelm-v itself"}[case]
    assert expected in err[0]


# ---- watching a long run ---------------------------------------------------------------------------------------

def test_status_json_shows_progress_while_the_run_goes(tmp_path):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(12))
    work = tmp_path / "out"
    seen = []
    with FakeOpenAI(InFlight(0.25)) as server:
        t = threading.Thread(target=main, args=(["eval", "--model", f"openai:{server.url}#m", "--data",
                                                  f"MMStar={path}", "--work-dir", str(work), "--no-progress",
                                                  "--api-nproc", "1"],))
        t.start()
        while t.is_alive():
            for status in work.glob("*/*/status.json"):
                try:
                    progress = json.loads(status.read_text()).get("progress")
                except json.JSONDecodeError:  # never: the file is replaced atomically
                    pytest.fail("status.json was read half-written")
                if progress:
                    seen.append(progress)
            time.sleep(0.05)
        t.join()
    middle = [p for p in seen if 0 < p["done"] < 12]
    assert middle and all(p["total"] == 12 and p["dataset"] == "MMStar" for p in middle)
    assert any(p["samples_per_s"] > 0 and p["eta_s"] is not None for p in middle)
    (run,) = run_dirs(work)
    assert "progress" not in status_of(run)  # a finished run carries its results, not a stale progress line


def test_at_most_n_messages_are_alive(tmp_path, monkeypatch):
    from bluelm_v.evaluation import inference

    alive, most, lock = [0], [0], threading.Lock()
    build, one = inference.SampleWork.build, inference.SampleWork.one

    def counting_build(self, row):
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        return build(self, row)

    def counting_one(self, row):
        try:
            return one(self, row)
        finally:
            with lock:
                alive[0] -= 1

    monkeypatch.setattr(inference.SampleWork, "build", counting_build)
    monkeypatch.setattr(inference.SampleWork, "one", counting_one)
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(30))
    with FakeOpenAI(InFlight(0.02, gate=3)) as server:
        assert main(["eval", "--model", f"openai:{server.url}#m", "--data", f"MMStar={path}", "--work-dir",
                     str(tmp_path / "o"), "--no-progress", "--api-nproc", "3"]) == 0
    assert most[0] == 3


# ---- two nodes on one host -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_two_nodes_share_one_work_dir(tmp_path):
    rows = mcq_rows(10)
    path = write_tsv(tmp_path / "mmstar.tsv", rows)
    folder = tmp_path / "replay"
    folder.mkdir()
    write_replay(folder / "m_MMStar.tsv", {r["index"]: "ABCD"[r["index"] % 4] for r in rows})
    work = tmp_path / "out"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(VENV_BIN / "torchrun"), "--nnodes", "2", "--node-rank", str(node),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "bluelm_v.evaluation", "--model", f"replay:{folder}", "--data", f"MMStar={path}",
                               "--work-dir", str(work), "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for node in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    (run,) = run_dirs(work)
    logs = sorted(run.glob("*.log.jsonl"))
    assert [p.name.split(".")[-3] for p in logs] == ["rank0", "rank1"]
    halves = [{e["index"] for e in read_log(p)[0]} for p in logs]
    assert halves[0] and halves[1] and not halves[0] & halves[1] and halves[0] | halves[1] == set(range(1, 11))
    status = status_of(run)
    assert status["world_size"] == 2 and status["datasets"]["MMStar"]["counts"]["ok"] == 10
