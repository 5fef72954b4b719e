"""Latency of each instrument's htmx fragment under a steady load, against a static file.

Starts the real server (`loralab serve`), then for each route runs `hey` (Debian package
`hey`) at a fixed rate, `--rate` requests/s in total (`--workers` × per-worker rate) for
`--seconds`, with `HX-Request: true` so the server renders only the result fragment. A
static file served by the same process is the floor. Latencies come from hey's per-request
CSV, so p50/p99 are ours, not hey's histogram buckets. The server remembers recent results
(the views are pure), so a repeated URL is served from memory; the second table is each
view's own computation, in-process and uncached, which is what a reader's first request of
new settings pays on top of the floor.

    .venv/bin/python bench/fragment_latency.py [--rate 100] [--seconds 20]

Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
import time
from urllib.parse import parse_qsl, urlsplit

from _server import ROOT, percentile, start_server

ROUTES = {
    "static file (floor)": "/static/css/book.css",
    "configurator": "/instruments/configurator?model=llama-2-7b&rank=16&target_modules=q_proj,k_proj,v_proj,o_proj",
    "will-it-fit": "/instruments/will-it-fit?model=llama-3-8b&rank=16",
    "nf4-viewer": "/instruments/nf4-viewer?distribution=normal&blocksize=64",
    "svd-rank": "/instruments/svd-rank?intrinsic_rank=8&noise=0.05",
    "scaling": "/instruments/scaling?alpha=16&rank=16",
    "gpu-planner": "/instruments/gpu-planner?gpu=rtx-4090&model=llama-3.1-8b&seq_len=2048",
}


def run_hey(url: str, rate: int, seconds: int, workers: int) -> list[float]:
    """Per-request latencies in ms (non-2xx responses fail the run)."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate / workers), "-o", "csv",
               "-H", "HX-Request: true", url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(output)))
    bad = [row for row in rows if not row["status-code"].startswith("2")]
    if bad:
        raise RuntimeError(f"{url}: {len(bad)} responses were not 2xx (first: {bad[0]['status-code']})")
    return [float(row["response-time"]) * 1000 for row in rows]


def view_cost_ms(path: str, runs: int = 30) -> float:
    """Median time of one uncached view computation (calculators + figure data) for a route."""
    sys.path.insert(0, str(ROOT))
    from app.instrument_registry import INSTRUMENTS

    url = urlsplit(path)
    spec = INSTRUMENTS[url.path.rsplit("/", 1)[-1]]
    query = spec.query_model.model_validate(dict(parse_qsl(url.query)))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        spec.view(query)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=100, help="requests per second, all workers together")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    process, base = start_server()
    try:
        results = {}
        for name, path in ROUTES.items():
            run_hey(base + path, args.rate, 2, args.workers)  # warm-up
            results[name] = run_hey(base + path, args.rate, args.seconds, args.workers)
    finally:
        process.terminate()
    print(f"{args.rate} requests/s for {args.seconds} s per route, {args.workers} connections, HX-Request: true")
    print()
    print("| route | requests | p50 (ms) | p99 (ms) | max (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, latencies in results.items():
        print(f"| {name} | {len(latencies)} | {statistics.median(latencies):.1f} | "
              f"{percentile(latencies, 0.99):.1f} | {max(latencies):.1f} |")
    print()
    print("| view (uncached, in-process) | median (ms) |")
    print("| --- | ---: |")
    for name, path in ROUTES.items():
        if path.startswith("/instruments/"):
            print(f"| {name} | {view_cost_ms(path):.2f} |")


if __name__ == "__main__":
    main()
