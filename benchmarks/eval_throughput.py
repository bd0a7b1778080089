"""Evaluation throughput against a served model: samples/s at --api-nproc 1, 4, 16, 64 against a local
OpenAI-compatible server with a fixed latency, in one run.

The server runs in its own process (so the harness's CPU time is the harness's alone) and answers every request
after exactly ``--latency`` seconds, with capacity for any number in flight. Each row: samples/s, the ratio to
N x the rate at N = 1 (target >= 0.8), the harness's CPU time per sample (target < 5 ms), the growth of the
harness's peak RSS over the run, and whether the predictions and scores equal those at N = 1. Rates are of the
inference phase (the fixed set-up checks and scoring of a run are timed apart, as ``run_wall_s``).

    python benchmarks/eval_throughput.py                  # 400 samples, 0.5 s latency (about 5 minutes)
    python benchmarks/eval_throughput.py --quick          # 100 samples, 0.2 s
    python benchmarks/eval_throughput.py --json out.json
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(port: int, latency: float) -> None:
    """The fixed-latency server (run as ``--serve``): a deterministic letter per question."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(json.dumps({"object": "list", "data": [{"id": "m"}]}).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            time.sleep(latency)
            text = "".join(p.get("text", "") for p in body["messages"][-1]["content"] if p.get("type") == "text")
            letter = "ABCD"[sum(map(ord, text)) % 4]
            self._send(json.dumps({"choices": [{"message": {"role": "assistant", "content": letter}}]}).encode())

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def make_tsv(path: Path, n: int) -> Path:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from bluelm_v.image import encode_base64

    rows = []
    for i in range(n):
        buf = io.BytesIO()
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows.append({"index": i + 1, "question": f"Which animal is number {i}?", "A": "cat", "B": "dog",
                     "C": "horse", "D": "bird", "answer": "ABCD"[i % 4], "category": "c", "image": encode_base64(buf.getvalue())})
    pd.DataFrame.from_records(rows).to_csv(path, sep="\t", index=False)
    return path


def run_once(url: str, tsv: Path, work: Path, nproc: int) -> dict:
    from bluelm_v.evaluation.runner import RunConfig, Runner

    cfg = RunConfig(model=f"openai:{url}#m", data=[f"MMStar={tsv}"], work_dir=work, api_nproc=nproc, progress=False,
                    max_model_errors=1000)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runner = Runner(cfg)
    phase = {}
    infer = runner.infer

    def timed_infer(ds):  # the inference phase alone: set-up checks and scoring are a fixed cost per run
        cpu0, t0 = time.process_time(), time.perf_counter()
        try:
            return infer(ds)
        finally:
            phase.update(wall=time.perf_counter() - t0, cpu=time.process_time() - cpu0)

    runner.infer = timed_infer
    t0 = time.perf_counter()
    status = runner.run()
    total = time.perf_counter() - t0
    wall, cpu = phase["wall"], phase["cpu"]
    entry = status["datasets"]["MMStar"]
    n = entry["counts"]["rows"]
    return {"api_nproc": nproc, "samples": n, "ok": entry["counts"]["ok"], "wall_s": round(wall, 3),
            "run_wall_s": round(total, 3), "samples_per_s": round(n / wall, 3),
            "cpu_ms_per_sample": round(cpu / n * 1000, 3),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "predictions": (runner.run_dir / "m_MMStar.tsv").read_text(), "metrics": entry.get("metrics")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--nproc", default="1,4,16,64")
    p.add_argument("--quick", action="store_true", help="100 samples at 0.2 s")
    p.add_argument("--json", default=None)
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.latency)
        return 0
    if args.quick:
        args.samples, args.latency = 100, 0.2
    levels = [int(x) for x in args.nproc.split(",")]
    server = subprocess.Popen([sys.executable, __file__, "--serve", "0", "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        with tempfile.TemporaryDirectory() as tmp:
            tsv = make_tsv(Path(tmp) / "mmstar.tsv", args.samples)
            rows = []
            for n in levels:
                print(f"api_nproc {n}: {args.samples} samples at {args.latency} s ...", file=sys.stderr, flush=True)
                rows.append(run_once(url, tsv, Path(tmp) / f"work{n}", n))
    finally:
        server.kill()
        server.wait()
    base = next((r for r in rows if r["api_nproc"] == 1), rows[0])
    print(f"\n{args.samples} samples, server latency {args.latency} s, server in its own process\n")
    print("| api_nproc | samples/s | vs N x rate(1) (target >= 0.8) | harness CPU ms/sample (target < 5) | "
          "whole run s | peak RSS growth MB | same answers as N=1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["scaling"] = round(r["samples_per_s"] / (r["api_nproc"] * base["samples_per_s"]), 3)
        r["same_as_n1"] = r["predictions"] == base["predictions"] and r["metrics"] == base["metrics"]
        print(f"| {r['api_nproc']} | {r['samples_per_s']:.2f} | {r['scaling']:.2f} | {r['cpu_ms_per_sample']:.2f} | "
              f"{r['run_wall_s']:.2f} | {r['peak_rss_growth_mb']:.1f} | {'yes' if r['same_as_n1'] else 'NO'} |")
    if args.json:
        out = [{k: v for k, v in r.items() if k != "predictions"} for r in rows]
        Path(args.json).write_text(json.dumps({"samples": args.samples, "latency_s": args.latency, "rows": out},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
