"""Conversations on the native engine (SmolLM2-135M-Instruct): a system turn and earlier turns formatted by the
model's chat template in C++ (checked against transformers' rendering of the GGUF's template), the KV entries of a
conversation's shared prefix kept between turns, and `bluelm-v run --system` / `--interactive` fed through stdin."""
import json
import subprocess
import sys

import pytest

from bluelm_v.engine import Engine
from bluelm_v.export import package

SYSTEM = "You are a geography teacher. Answer in one short sentence."
TURNS = [{"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "The capital of France is Paris."},
         {"role": "user", "content": "And the capital of Germany?"}]


@pytest.fixture(scope="module")
def smol_pkg(smollm2_gguf, tmp_path_factory):
    return package(smollm2_gguf, tmp_path_factory.mktemp("smol-chat"))


@pytest.fixture(scope="module")
def hf_tok(smollm2_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


def hf_chat_ids(tok, messages: list[dict]) -> list[int]:
    """transformers' token ids of a conversation + the generation prompt, from the GGUF's own chat template."""
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.fixture(scope="module")
def hf_ids(hf_tok):
    return hf_chat_ids(hf_tok, [{"role": "system", "content": SYSTEM}, *TURNS])


def greedy_from_ids(eng: Engine, ids: list[int], n: int) -> list[int]:
    s = eng.session()
    logits = s.prefill(ids)
    out = []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = s.decode(out[-1])
    return out


def test_system_and_two_turns_are_prompted_as_the_hf_template_renders_them(smol_pkg, hf_ids):
    eng = Engine(smol_pkg)
    r = eng.session().generate(TURNS[2]["content"], system=SYSTEM, history=TURNS[:2], max_new_tokens=12)
    assert r.timing.prompt_tokens == len(hf_ids) and r.timing.reused_tokens == 0
    # The same ids prefilled by hand give the same greedy answer, token for token (up to an early end of sequence).
    assert r.tokens == greedy_from_ids(eng, hf_ids, 12)[:len(r.tokens)]
    assert "Berlin" in r.text, r.text


def test_history_turns_are_checked(smol_pkg):
    s = Engine(smol_pkg).session()
    with pytest.raises(ValueError, match="history turn 0 has role 'robot'"):
        s.generate("hi", history=[("robot", "beep")], max_new_tokens=1)
    with pytest.raises(ValueError, match="need chat"):
        s.generate("hi", system="x", chat=False, max_new_tokens=1)


def test_next_turn_reuses_the_kv_cache_of_the_conversation(smol_pkg):
    eng = Engine(smol_pkg)
    s = eng.session()
    first = s.generate(TURNS[0]["content"], system=SYSTEM, max_new_tokens=24)
    history = [TURNS[0], {"role": "assistant", "content": first.text}]
    second = s.generate(TURNS[2]["content"], system=SYSTEM, history=history, max_new_tokens=16)
    fresh = eng.session().generate(TURNS[2]["content"], system=SYSTEM, history=history, max_new_tokens=16)
    # The whole first exchange stays in the cache: only the new turn (and the re-tokenized end of the answer) is
    # prefilled, and the answer is the one a fresh session gives.
    assert second.timing.reused_tokens >= first.timing.prompt_tokens + len(first.tokens) - 2
    assert second.timing.reused_tokens + second.timing.prompt_tokens == fresh.timing.prompt_tokens
    assert fresh.timing.reused_tokens == 0
    assert second.tokens == fresh.tokens, (second.text, fresh.text)
    # reset() and the low-level calls forget the kept prefix.
    s.reset()
    assert s.generate(TURNS[0]["content"], system=SYSTEM, max_new_tokens=2).timing.reused_tokens == 0
    s.prefill([1, 2, 3])
    assert s.generate(TURNS[0]["content"], system=SYSTEM, max_new_tokens=2).timing.reused_tokens == 0


def run_cli(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bluelm_v", "run", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_run_system_replaces_the_default_system_turn(smol_pkg, hf_tok):
    r = run_cli(["--model", str(smol_pkg), "--system", SYSTEM, "--prompt", TURNS[0]["content"],
                 "--max-new-tokens", "12", "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["system"] == SYSTEM and out["activations"] == "int16" and out["kv_cache"] == "f16"
    want = hf_chat_ids(hf_tok, [{"role": "system", "content": SYSTEM}, TURNS[0]])
    default = hf_chat_ids(hf_tok, [TURNS[0]])  # the template's own default system turn
    assert out["timing"]["prompt_tokens"] == len(want) != len(default)
    assert "Paris" in out["text"]


def test_interactive_chat_keeps_the_conversation_and_resets(smol_pkg):
    stdin = "What is the capital of France?\nAnd of Germany?\n/reset\nAnd of Germany?\n/exit\nnot read\n"
    r = run_cli(["--model", str(smol_pkg), "-i", "--system", SYSTEM, "--max-new-tokens", "16"], stdin)
    assert r.returncode == 0, r.stderr
    answers = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(answers) == 3 and "Paris" in answers[0] and "Berlin" in answers[1], r.stdout
    kept = [int(line.split("kept ")[1].split()[0]) for line in r.stderr.splitlines() if "kept " in line]
    assert len(kept) == 3 and kept[1] > 20 and kept[2] == 0, r.stderr  # turn 2 reuses turn 1; /reset forgot it
    assert "conversation cleared" in r.stderr
    # the end of input ends the chat as /exit does
    r = run_cli(["--model", str(smol_pkg), "-i", "--max-new-tokens", "4"], "Hello\n")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_run_needs_a_question_unless_interactive(smol_pkg):
    r = run_cli(["--model", str(smol_pkg)])
    assert r.returncode == 1 and "--interactive" in r.stderr
