"""Hypothesis fuzzing of the Python file readers (issue 19 §2; docs/reliability.md): GGUF through every entry point
(GGUFCheckpoint with its config, tokenizer and tensors, tokenizer.spec_from_gguf, tokenizer.from_gguf),
safetensors checkpoints, and HF tokenizer.json / tokenizer_config.json with the chat-template reduction. Mutated
files must load or give FormatError / LimitError (ValueError for a chat template the engine cannot run), never any
other exception, a hang or an allocation over 2 GiB (the child's address space may grow by 2 GiB
past what its imports map).

`make test` runs a short derandomized pass of each target. `make fuzz` sets BLUELM_FUZZ_SECONDS: each target then
runs rounds of random examples until the budget is spent (the SmolLM2 GGUF seed too) and writes its execution count
to build-fuzz/python-fuzz.json."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from test_checkpoints import TINY, write_gguf  # noqa: E402

from bluelm_v import FormatError, LimitError  # noqa: E402

BUDGET_S = float(os.environ.get("BLUELM_FUZZ_SECONDS", "0"))
QUICK_EXAMPLES = 25
REPORT = Path(__file__).resolve().parent.parent / "build-fuzz" / "python-fuzz.json"
ALLOC_CAP = 2 << 30  # the bound: no input may make a reader allocate 2 GiB
INTERESTING_U64 = [0, 1, 31, 32, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 32, 2**64 - 1]


@st.composite
def mutations(draw, size: int, hot: tuple[int, int]):
    """A list of edits to a file of `size` bytes, most of them inside `hot` (the header and tables)."""
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        lo, hi = hot if draw(st.integers(0, 4)) else (0, size)
        pos = draw(st.integers(lo, max(lo, hi - 1)))
        op = draw(st.sampled_from(["flip", "byte", "u64", "cut", "insert"]))
        if op == "flip":
            edits.append(("flip", pos, 1 << draw(st.integers(0, 7))))
        elif op == "byte":
            edits.append(("byte", pos, draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 0x7E, 0x22, 0x5B]))))
        elif op == "u64":
            edits.append(("u64", pos, draw(st.sampled_from(INTERESTING_U64))))
        elif op == "cut":
            edits.append(("cut", pos, 0))
        else:
            edits.append(("insert", pos, draw(st.binary(min_size=1, max_size=8))))
    return edits


def apply(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for op, pos, arg in edits:
        pos = min(pos, len(out))
        if op == "flip" and pos < len(out):
            out[pos] ^= arg
        elif op == "byte" and pos < len(out):
            out[pos] = arg
        elif op == "u64":
            out[pos:pos + 8] = arg.to_bytes(8, "little")
        elif op == "cut":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = arg
    return bytes(out)


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _child(target, args, queue):
    import resource

    torch.set_num_threads(1)
    executions = [0]

    def counted(fn):
        def wrapped(arg):
            executions[0] += 1
            fn(arg)
        return wrapped

    try:
        strategy, body = target(*args)
        # Every library the target needs is imported by now: what is left of the address space is ALLOC_CAP, so
        # one input that makes a reader allocate more than 2 GiB fails as a MemoryError (a finding), not a swap storm.
        cap = _vm_size() + ALLOC_CAP
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        body = counted(body)
        if BUDGET_S <= 0:
            settings(max_examples=QUICK_EXAMPLES, derandomize=True, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(given(strategy)(body))()
        else:
            end = time.monotonic() + BUDGET_S
            while time.monotonic() < end:
                settings(max_examples=10, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))(given(strategy)(body))()
        queue.put(("ok", executions[0]))
    except BaseException:
        queue.put(("fail", traceback.format_exc(limit=-8)[-4000:]))


def run_target(name, target, *args):
    """Runs `target(*args)` -> (strategy, body) in a spawned child (a forked one deadlocks in torch's thread pool
    once the parent has used it) whose address space may grow by at most ALLOC_CAP past its imports."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(target, args, queue))
    child.start()
    child.join(BUDGET_S + 600)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{name}: the fuzz child hung")
    assert child.exitcode == 0, f"{name}: the fuzz child died with exit code {child.exitcode}"
    status, detail = queue.get(timeout=5)
    assert status == "ok", detail
    if BUDGET_S > 0:
        REPORT.parent.mkdir(exist_ok=True)
        report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
        report[name] = {"executions": detail, "seconds": BUDGET_S}
        REPORT.write_text(json.dumps(report, indent=1))


def refused_cleanly(call, what, allowed=(FormatError, LimitError)):
    try:
        call()
    except allowed:
        pass
    except BaseException as exc:
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc


# ---- GGUF -----------------------------------------------------------------------------------------------------
def _gguf_body(path: Path, seed: bytes, all_tensors: bool):
    from bluelm_v import tokenizer as T
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    def load():
        ck = GGUFCheckpoint(path)
        ck.llm_config()
        ck.tokenizer()
        for name in ck.tensor_names() if all_tensors else ck.tensor_names()[:3]:
            ck.raw(name)
            if all_tensors:
                ck.dequantize(name)

    def body(edits):
        path.write_bytes(apply(seed, edits))
        refused_cleanly(load, f"GGUFCheckpoint, edits {edits}")
        refused_cleanly(lambda: T.spec_from_gguf(path), f"tokenizer.spec_from_gguf, edits {edits}")
        refused_cleanly(lambda: T.from_gguf(path), f"tokenizer.from_gguf, edits {edits}")
    return body


def _tables_end(path) -> int:
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    return int(GGUFCheckpoint(path)._reader.data_offset)


@pytest.fixture(scope="module")
def tiny_q4_1_gguf(tmp_path_factory):
    import dataclasses

    from bluelm_v.models.checkpoint import random_model

    lm = random_model(dataclasses.replace(TINY, vision=None, projector=None), seed=5, std=0.1)
    Q = gguf.GGMLQuantizationType
    qtypes = {f"blk.{i}.{n}.weight": Q.Q4_1 for i in range(TINY.llm.layers)
              for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    return write_gguf(tmp_path_factory.mktemp("seed") / "tiny.gguf", lm.state_dict(), TINY.llm, qtypes=qtypes)


def gguf_target(seed_path, target, hot, all_tensors):
    seed = Path(seed_path).read_bytes()
    return mutations(len(seed), hot), _gguf_body(Path(target), seed, all_tensors)


def test_fuzz_gguf_entry_points(tiny_q4_1_gguf, tmp_path):
    hot = (0, _tables_end(tiny_q4_1_gguf))
    run_target("gguf (tiny Q4_1 seed)", gguf_target, tiny_q4_1_gguf, tmp_path / "fuzz.gguf", hot, True)


@pytest.mark.skipif(BUDGET_S <= 0, reason="the SmolLM2 seed is fuzzed by `make fuzz` only (3 s per example)")
def test_fuzz_gguf_smollm2_seed(smollm2_gguf):
    # The tensor-info table: after the metadata (whose walk is what takes the time) up to the data section.
    from bluelm_v.models.gguf_checkpoint import GGUFCheckpoint

    reader = GGUFCheckpoint(smollm2_gguf)._reader
    hot = (int(reader.tensors[0].field.offset), int(reader.data_offset))
    target = Path("/dev/shm") / f"bluelm-fuzz-{os.getpid()}.gguf"
    try:
        run_target("gguf (SmolLM2 seed, tensor table)", gguf_target, smollm2_gguf, target, hot, False)
    finally:
        target.unlink(missing_ok=True)


# ---- safetensors ----------------------------------------------------------------------------------------------
def safetensors_target(folder):
    from bluelm_v.models.reference import load_model

    folder = Path(folder)
    path = folder / "model.safetensors"
    seed = path.read_bytes()
    header = 8 + int.from_bytes(seed[:8], "little")

    def body(edits):
        path.write_bytes(apply(seed, edits))
        refused_cleanly(lambda: load_model(folder), f"load_model(safetensors), edits {edits}")
    return mutations(len(seed), (0, header)), body


def test_fuzz_safetensors_checkpoint(tmp_path):
    from bluelm_v.models.reference import load_model, save_pretrained

    folder = save_pretrained(load_model("tiny", seed=4), tmp_path / "ckpt")
    run_target("safetensors (tiny VLM seed)", safetensors_target, folder)


# ---- HF tokenizer.json / tokenizer_config.json and the chat template ------------------------------------------
def hf_tokenizer_target(folder, tok_seed, conf_seed):
    from bluelm_v import tokenizer as T
    from bluelm_v.models.tokenizer import Tokenizer

    folder = Path(folder)

    def body(args):
        which, edits = args
        tok = apply(tok_seed, edits) if which == "tokenizer.json" else tok_seed
        conf = apply(conf_seed, edits) if which == "tokenizer_config.json" else conf_seed
        (folder / "tokenizer.json").write_bytes(tok)
        (folder / "tokenizer_config.json").write_bytes(conf)

        def load():
            t = Tokenizer.from_dir(folder)
            t.encode("Hi 123 <|im_start|>")
            if isinstance(t.chat_template, str):
                try:
                    T.chat_format_from_template(t.chat_template, bos_token="<|im_start|>", eos_token="<|im_end|>")
                except ValueError:
                    pass  # the documented refusal: a template the engine cannot run

        refused_cleanly(load, f"{which}, edits {edits}")

    strategy = st.sampled_from(["tokenizer.json", "tokenizer_config.json"]).flatmap(
        lambda which: st.tuples(st.just(which), mutations(len(tok_seed if which == "tokenizer.json" else conf_seed),
                                                          (0, 4096))))
    return strategy, body


def test_fuzz_hf_tokenizer_files(tiny_q4_1_gguf, smollm2_gguf, tmp_path):
    from bluelm_v import tokenizer as T

    folder = tmp_path / "tok"
    folder.mkdir()
    tok_seed = T.hf_from_gguf(tiny_q4_1_gguf).to_str().encode()
    template = T.spec_from_gguf(smollm2_gguf).chat_template  # SmolLM2's real template
    conf_seed = json.dumps({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
                            "add_bos_token": False, "chat_template": template}).encode()
    run_target("HF tokenizer.json / tokenizer_config.json + chat template", hf_tokenizer_target, folder, tok_seed,
               conf_seed)


def test_deeply_nested_tokenizer_config_is_a_limit_error(tmp_path):
    """Found while writing the fuzzers: json.loads of 100,000 nested brackets is a RecursionError."""
    from bluelm_v.models.tokenizer import Tokenizer

    (tmp_path / "tokenizer_config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(LimitError, match="tokenizer_config.json: JSON nested deeper than 64"):
        Tokenizer.from_dir(tmp_path)


def test_hostile_chat_templates_are_value_errors():
    """Found while writing the fuzzers: a template that does not parse raised jinja2's TemplateSyntaxError through
    package(); one that multiplies a string by 10^10 would allocate 10 GB before failing."""
    from bluelm_v import tokenizer as T

    for template in ("{% for m in messages %}", "{{ 'x' * 10000000000 }}", "{{ messages[0]['content'] }}",
                     "{{ 1 / 0 }}", "{{ 2 ** 100000000 }}"):
        with pytest.raises(ValueError):
            T.chat_format_from_template(template)


# ---- evaluation: benchmark TSVs, replay (prediction) files, run logs -------------------------------------------
def tsv_target(folder):
    """A small MMStar-shaped TSV (base64 PNG images, one short reference to another row's image), mutated: loading,
    the rows and every row's images must work or be DataError (an EvaluationError) naming the file or row."""
    from bluelm_v.evaluation.data import load_dataset
    from bluelm_v.evaluation.errors import EvaluationError

    folder = Path(folder)
    path = folder / "MMStar.tsv"
    seed = path.read_bytes()

    def body(edits):
        path.write_bytes(apply(seed, edits))

        def load():
            ds = load_dataset("MMStar", path, check_md5=False)
            for row in ds.rows(limit=3):
                try:
                    ds.image_bytes(row)
                except EvaluationError:
                    pass  # one bad row is that sample's failure, not the file's
        refused_cleanly(load, f"benchmark TSV, edits {edits}", allowed=(EvaluationError,))
    return mutations(len(seed), (0, min(len(seed), 2048))), body


def test_fuzz_benchmark_tsv(tmp_path):
    from eval_helpers import mcq_rows, write_tsv

    rows = mcq_rows(4)
    rows[3]["image"] = "1"  # VLMEvalKit's short reference to row 1's image
    write_tsv(tmp_path / "MMStar.tsv", rows)
    run_target("benchmark TSV (MMStar-shaped seed)", tsv_target, tmp_path)


def replay_target(folder, seeds):
    """Prediction files of each type the replay adapter reads, mutated: read_predictions gives {index: prediction}
    or an AdapterError naming the file."""
    from bluelm_v.evaluation.adapters.replay import read_predictions
    from bluelm_v.evaluation.errors import AdapterError

    folder = Path(folder)

    def body(args):
        suffix, edits = args
        path = folder / f"model_MMStar{suffix}"
        path.write_bytes(apply(seeds[suffix], edits))
        refused_cleanly(lambda: read_predictions(path), f"replay {suffix}, edits {edits}", allowed=(AdapterError,))

    strategy = st.sampled_from(sorted(seeds)).flatmap(
        lambda suffix: st.tuples(st.just(suffix), mutations(len(seeds[suffix]), (0, len(seeds[suffix])))))
    return strategy, body


def test_fuzz_replay_files(tmp_path):
    import io

    import pandas as pd

    frame = pd.DataFrame({"index": [1, 2, 3, 10], "prediction": ["A", "The answer is B", "", "[1, 2]"],
                          "question": ["q1", "q2", "q3", "q4"]})
    xlsx = io.BytesIO()
    frame.to_excel(xlsx, index=False, engine="xlsxwriter")
    records = frame[["index", "prediction"]].to_dict("records")
    seeds = {".tsv": frame.to_csv(sep="\t", index=False).encode(), ".csv": frame.to_csv(index=False).encode(),
             ".json": json.dumps(records).encode(),
             ".jsonl": "".join(json.dumps(r) + "\n" for r in records).encode(), ".xlsx": xlsx.getvalue()}
    run_target("replay files (.tsv .csv .json .jsonl .xlsx seeds)", replay_target, tmp_path, seeds)


def log_target(folder, seed):
    """A run's prediction log (JSONL, one fsynced entry per sample), mutated as a crash or an editor could leave it:
    reading and merging it never raises, keeps only whole entries before the first damaged line, and re-opening it
    for appending cuts the damaged tail so the next entry starts on a clean line."""
    from bluelm_v.evaluation.store import PredictionLog, merge_logs, read_log

    folder = Path(folder)
    path = folder / "predictions.jsonl"

    def body(edits):
        data = apply(seed, edits)
        path.write_bytes(data)
        entries, good = read_log(path)
        assert 0 <= good <= len(data) and (good == 0 or data[good - 1:good] == b"\n"), (edits, good)
        assert all(isinstance(e, dict) and e["status"] in ("ok", "failed") for e in entries), edits
        merged = merge_logs([path])
        assert set(merged) <= {e["index"] for e in entries}, edits
        with PredictionLog(path) as log:
            log.append({"index": "new", "status": "ok", "prediction": "x"})
        again, _ = read_log(path)
        assert again == entries + [{"index": "new", "status": "ok", "prediction": "x"}], edits
    return mutations(len(seed), (0, len(seed))), body


def test_fuzz_prediction_log(tmp_path):
    entries = [{"index": i, "status": "ok" if i % 3 else "failed", "prediction": f"answer {i} \u00e9",
                "data": "md5:0123", "kind": "timeout" if i % 3 == 0 else None} for i in range(1, 7)]
    seed = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
    run_target("prediction log (JSONL seed)", log_target, tmp_path, seed)
